#if canImport(Glibc)
import Glibc
#endif
import Gateway
import GatewayKit
import Relay
import Socks
import Testing

// sockd's session as a pure machine: events in one at a time, no socket. What reaches the
// client is read off the actions; the driver's answers are fed by hand.

final class SocksContext: SessionContext {
    var now = Deadline(nanoseconds: 5_000_000_000)
    func localEndpoint() throws(SystemError) -> Endpoint { Endpoint(address: IPAddress("127.0.0.1")!, port: 1080) }
    func endpoint(of peer: Peer, local: Bool) throws(SystemError) -> Endpoint {
        guard peer == .server, local else { throw SystemError(errno: ENOTCONN) }
        return Endpoint(address: IPAddress("10.1.1.1")!, port: 40001)
    }
}

final class SocksRun {
    let machine: SocksSession
    let context = SocksContext()
    var actions: [SessionAction] = []

    /// The CSTC example of the issue, on 128.12.x.
    static let cstc = """
        deny   *=bonnie,clyde 128.12.6.0 255.255.255.0 : /usr/ucb/mail -s 'Rejected SOCKS access by %u' $USER
        permit *=ylee 128.12.6.4 255.255.255.255 137.12.0.0 255.255.0.0
        deny   128.12.0.0 255.255.0.0 eq telnet
        permit 128.12.0.0 255.255.0.0
        #NO_IDENTD: echo no identd on %A
        #BAD_ID: echo %U pretends to be %u on %A
        """

    init(
        _ conf: String = cstc, client: String = "128.12.6.4", ident: IdentCheck = .off, password: Bool = false,
        route: @escaping @Sendable (IPAddress, [UInt8]?) -> RouteChoice = { _, _ in .system }
    ) throws {
        let parser = SockdConfParser(
            path: "sockd.conf", readUserFile: { _ throws(SystemError) in [] },
            servicePort: { $0.elementsEqual("telnet".utf8) ? 23 : $0.elementsEqual("ftp".utf8) ? 21 : nil })
        let (configuration, _) = try parser.load(Array(conf.utf8), mode: .strict)
        let settings = SockdSessionSettings(
            configuration: configuration, route: route, identCheck: ident, identTimeout: .seconds(15),
            passwordRequired: password, pid: 636, serviceName: { [21: "ftp", 23: "telnet"][$0].map { Array($0.utf8) } })
        machine = SocksSession(settings: settings, client: Endpoint(address: IPAddress(client)!, port: 3000))
        feed(.started)
    }

    @discardableResult
    func feed(_ event: SessionEvent) -> [SessionAction] {
        var new: [SessionAction] = []
        machine.handle(event, context: context, into: &new)
        actions += new
        return new
    }

    @discardableResult
    func client(_ bytes: [UInt8]) -> [SessionAction] { feed(.received(.client, bytes[...])) }

    var sent: [UInt8] {
        var bytes: [UInt8] = []
        for case .send(.client, let chunk) in actions { bytes += chunk }
        return bytes
    }

    var logLines: [String] { actions.compactMap { if case .log(_, let line) = $0 { line } else { nil } } }
    var closed: Bool { actions.contains(.close) }
    var commands: [String] {
        actions.compactMap { if case .runDetached(let program) = $0 { program.argv.last } else { nil } }
    }
    var connected: StreamDestination? {
        for case .connect(.server, let destination, _) in actions { return destination }
        return nil
    }

    static func socks4(_ user: String, _ address: [UInt8], _ port: UInt16, host: String? = nil) -> [UInt8] {
        var bytes: [UInt8] = [4, 1, UInt8(port >> 8), UInt8(port & 0xFF)] + address + Array(user.utf8) + [0]
        if let host { bytes += Array(host.utf8) + [0] }
        return bytes
    }

    static func socks5(_ address: [UInt8], _ port: UInt16, command: UInt8 = 1) -> [UInt8] {
        [5, 1, 0] + [5, command, 0, 1] + address + [UInt8(port >> 8), UInt8(port & 0xFF)]
    }

    static func socks5(name: String, _ port: UInt16) -> [UInt8] {
        [5, 1, 0] + [5, 1, 0, 3, UInt8(name.utf8.count)] + Array(name.utf8) + [UInt8(port >> 8), UInt8(port & 0xFF)]
    }
}

@Suite("sockd's session")
struct SocksSessionTests {
    /// The six cases: user, client, destination, port → the line and the decision.
    @Test(
        arguments: [
            (
                "clyde", "128.12.6.34", [112, 3, 24, 1], 21, false,
                "refused -- Connect from clyde(unknown)@128.12.6.34 to 112.3.24.1 (ftp)"
            ),
            (
                "ylee", "128.12.6.4", [137, 12, 4, 15], 23, true,
                "connected -- Connect from ylee(unknown)@128.12.6.4 to 137.12.4.15 (telnet)"
            ),
            (
                "jane", "128.12.2.13", [137, 12, 4, 15], 23, false,
                "refused -- Connect from jane(unknown)@128.12.2.13 to 137.12.4.15 (telnet)"
            ),
            (
                "sam", "128.12.36.7", [10, 53, 23, 1], 70, true,
                "connected -- Connect from sam(unknown)@128.12.36.7 to 10.53.23.1 (70)"
            ),
            (
                "don", "23.2.6.127", [10, 0, 0, 1], 80, false,
                "refused -- Connect from don(unknown)@23.2.6.127 to 10.0.0.1 (80)"
            ),
            (
                "clyde", "128.12.1.62", [112, 3, 24, 1], 21, true,
                "connected -- Connect from clyde(unknown)@128.12.1.62 to 112.3.24.1 (ftp)"
            ),
        ] as [(String, String, [UInt8], UInt16, Bool, String)])
    func theCSTCExampleDecides(user: String, client: String, address: [UInt8], port: UInt16, permit: Bool, line: String)
        throws
    {
        let run = try SocksRun(client: client)
        run.client(SocksRun.socks4(user, address, port))
        if permit {
            #expect(run.connected == .tcp(Endpoint(address: IPAddress(bytes: address)!, port: port), from: nil))
            run.feed(.streamConnected(.server))
            #expect(run.sent == [0, 90, 0x9C, 0x41, 10, 1, 1, 1], "granted, with the bound address")
            #expect(run.actions.contains(.relayStreams(RelayConfiguration(), toServer: [])))
        } else {
            #expect(run.connected == nil)
            #expect(run.sent == [0, 91, 0, 0, 0, 0, 0, 0])
            #expect(run.closed)
        }
        #expect(run.logLines.last == line)
    }

    @Test func aDenyLinesCommandRunsSanitised() throws {
        let run = try SocksRun(client: "128.12.6.34")
        run.client(SocksRun.socks4("clyde", [112, 3, 24, 1], 21))
        #expect(run.commands == ["/usr/ucb/mail -s 'Rejected SOCKS access by clyde' $USER"])
        let hostile = try SocksRun("deny ALL 0.0.0.0 : echo %u", client: "10.0.0.1")
        hostile.client(SocksRun.socks4("`rm -rf /`$(reboot)", [1, 2, 3, 4], 80))
        #expect(hostile.commands == ["echo _rm_-rf_____reboot_"])
    }

    @Test func socks5ConnectsRepliesWithTheBoundAddressAndRelays() throws {
        let run = try SocksRun("permit ALL 0.0.0.0", client: "192.0.2.1")
        run.client(SocksRun.socks5([192, 0, 2, 80], 80) + Array("GET /".utf8))
        #expect(run.sent == [5, 0])
        #expect(run.actions.contains(.pause(.client)))
        #expect(run.connected == .tcp(Endpoint(address: IPAddress("192.0.2.80")!, port: 80), from: nil))
        run.feed(.streamConnected(.server))
        #expect(run.sent == [5, 0] + [5, 0, 0, 1, 10, 1, 1, 1, 0x9C, 0x41])
        #expect(run.actions.contains(.relayStreams(RelayConfiguration(), toServer: Array("GET /".utf8))))
        #expect(run.machine.statusLine(bytesFromClient: 5, bytesToClient: 7, now: run.context.now) != nil)
        run.feed(
            .relayEnded(
                RelaySummary(
                    bytesClientToServer: 1048, bytesServerToClient: 285143, started: run.context.now,
                    ended: run.context.now, end: .completed)))
        #expect(
            run.logLines.suffix(2) == [
                "terminated -- Connect from (unknown)@192.0.2.1 to 192.0.2.80 (80)",
                "1048 bytes from 192.0.2.1, 285143 bytes from 192.0.2.80",
            ])
        #expect(run.closed)
    }

    @Test func aNameIsResolvedBeforeTheRulesAndFailsWithHostUnreachable() throws {
        let run = try SocksRun("permit ALL 0.0.0.0 10.0.0.0 255.0.0.0", client: "192.0.2.1")
        run.client(SocksRun.socks5(name: "www.example", 443))
        #expect(run.actions.contains(.resolve("www.example")))
        run.feed(.resolved(name: "www.example", addresses: [IPAddress("10.2.3.4")!]))
        #expect(run.connected == .tcp(Endpoint(address: IPAddress("10.2.3.4")!, port: 443), from: nil))
        let lost = try SocksRun("permit ALL 0.0.0.0", client: "192.0.2.1")
        lost.client(SocksRun.socks4("ann", [0, 0, 0, 1], 80, host: "nowhere.example"))
        lost.feed(.resolveFailed(name: "nowhere.example", reason: "no such name"))
        #expect(lost.sent == [0, 91, 0, 0, 0, 0, 0, 0])
        #expect(
            lost.logLines.last
                == "failed -- Connect from ann(unknown)@192.0.2.1 to nowhere.example (80): cannot resolve nowhere.example: no such name"
        )
        #expect(lost.closed)
    }

    @Test func aClientNameCountsOnlyConfirmed() throws {
        for (forward, permitted) in [("192.0.2.1", true), ("192.0.2.99", false)] {
            let run = try SocksRun("permit .example.org 0.0.0.0", client: "192.0.2.1")
            run.client(SocksRun.socks5([10, 0, 0, 1], 80))
            #expect(run.actions.contains(.lookUpName(IPAddress("192.0.2.1")!)))
            run.feed(.nameFound(.dns("host.example.org")))
            #expect(run.actions.contains(.resolve("host.example.org")))
            run.feed(.resolved(name: "host.example.org", addresses: [IPAddress(forward)!]))
            #expect((run.connected != nil) == permitted, "\(forward)")
            if permitted { run.feed(.streamConnected(.server)) }
            #expect(run.logLines.last?.contains(permitted ? "@host.example.org" : "@192.0.2.1") == true)
        }
    }

    @Test(
        arguments: [(ECONNREFUSED, 5), (ENETUNREACH, 3), (EHOSTUNREACH, 4), (ETIMEDOUT, 6), (EACCES, 1)]
            as [(Int32, UInt8)])
    func aFailedConnectGetsItsReply(errno: Int32, code: UInt8) throws {
        let run = try SocksRun("permit ALL 0.0.0.0", client: "192.0.2.1")
        run.client(SocksRun.socks5([10, 0, 0, 1], 80))
        run.feed(.connectFailed(.server, SystemError(errno: errno)))
        #expect(Array(run.sent.suffix(10)) == [5, code, 0, 1, 0, 0, 0, 0, 0, 0])
        #expect(run.logLines.last?.hasPrefix("failed -- Connect from (unknown)@192.0.2.1 to 10.0.0.1 (80): ") == true)
        #expect(run.closed)
    }

    @Test func identdDecidesUnderStrictAndLenient() throws {
        let rules = "permit ALL 0.0.0.0\n#NO_IDENTD: echo none on %A\n#BAD_ID: echo %U is not %u"
        // Strict, no identd: 92, the manual's line, the #NO_IDENTD: command.
        let none = try SocksRun(rules, client: "192.0.2.1", ident: .strict)
        none.client(SocksRun.socks4("bob", [10, 0, 0, 1], 21))
        #expect(none.actions.contains(.askIdent(timeout: .seconds(15))))
        none.feed(.identAnswered(.failure(.system(SystemError(errno: ECONNREFUSED)))))
        let error = try SocksRun(rules, client: "192.0.2.1", ident: .strict)
        error.client(SocksRun.socks4("bob", [10, 0, 0, 1], 21))
        error.feed(.identAnswered(.success([])))  // `: ERROR : NO-USER`
        #expect(error.sent == [0, 92, 0, 0, 0, 0, 0, 0])
        #expect(none.sent == [0, 92, 0, 0, 0, 0, 0, 0])
        #expect(none.logLines.contains("cannot connect to identd on 192.0.2.1"))
        #expect(none.commands == ["echo none on 192.0.2.1"])
        // Lenient, no identd: granted.
        let lenient = try SocksRun(rules, client: "192.0.2.1", ident: .lenient)
        lenient.client(SocksRun.socks4("bob", [10, 0, 0, 1], 21))
        lenient.feed(.identAnswered(.failure(.timedOut)))
        #expect(lenient.connected != nil)
        // Another user: 93 and the alert, the #BAD_ID: command.
        let liar = try SocksRun(rules, client: "192.0.2.1", ident: .lenient)
        liar.client(SocksRun.socks4("jim", [10, 0, 0, 1], 80))
        liar.feed(.identAnswered(.success(Array("sam".utf8))))
        #expect(liar.sent == [0, 93, 0, 0, 0, 0, 0, 0])
        #expect(
            liar.logLines.suffix(2) == [
                "*Alert*: real user is sam, not jim", "refused -- Connect from jim(sam)@192.0.2.1 to 10.0.0.1 (80)",
            ])
        #expect(liar.commands == ["echo sam is not jim"])
        // The right user: connected, its ident in the line.
        let honest = try SocksRun(rules, client: "192.0.2.1", ident: .strict)
        honest.client(SocksRun.socks4("sam", [10, 0, 0, 1], 80))
        honest.feed(.identAnswered(.success(Array("sam".utf8))))
        honest.feed(.streamConnected(.server))
        #expect(honest.logLines.last == "connected -- Connect from sam(sam)@192.0.2.1 to 10.0.0.1 (80)")
        // ?=n overrides -I.
        let off = try SocksRun("permit ?=n ALL 0.0.0.0", client: "192.0.2.1", ident: .strict)
        off.client(SocksRun.socks4("bob", [10, 0, 0, 1], 21))
        #expect(off.connected != nil)
    }

    @Test func thePasswordIsCheckedBeforeTheRequestIsRead() throws {
        for accepted in [true, false] {
            let run = try SocksRun("permit *=bob ALL 0.0.0.0", client: "192.0.2.1", password: true)
            let login: [UInt8] = [1, 3] + Array("bob".utf8) + [6] + Array("secret".utf8)
            run.client([5, 1, 2] + login + SocksRun.socks5([10, 0, 0, 1], 80).dropFirst(3))
            #expect(run.sent == [5, 2])
            #expect(run.actions.contains(.checkPassword(user: Array("bob".utf8), password: Array("secret".utf8))))
            #expect(run.connected == nil)
            run.feed(.passwordChecked(accepted))
            #expect(Array(run.sent.prefix(4)) == [5, 2, 1, accepted ? 0 : 1])
            #expect((run.connected != nil) == accepted)
            #expect(run.closed != accepted)
        }
        let socks4 = try SocksRun("permit ALL 0.0.0.0", client: "192.0.2.1", password: true)
        socks4.client(SocksRun.socks4("bob", [10, 0, 0, 1], 80))
        #expect(socks4.sent == [0, 91, 0, 0, 0, 0, 0, 0])
        #expect(socks4.closed)
    }

    @Test func theRouteChoosesTheSourceOrFails() throws {
        let routed = try SocksRun("permit ALL 0.0.0.0", client: "192.0.2.1") { _, _ in
            .from(IPAddress("10.9.9.9")!, line: 1)
        }
        routed.client(SocksRun.socks5([10, 0, 0, 1], 80))
        #expect(
            routed.connected == .tcp(Endpoint(address: IPAddress("10.0.0.1")!, port: 80), from: IPAddress("10.9.9.9")!))
        let lost = try SocksRun("permit ALL 0.0.0.0", client: "192.0.2.1") { _, _ in .none }
        lost.client(SocksRun.socks5([10, 0, 0, 1], 80))
        #expect(Array(lost.sent.suffix(10)) == [5, 3, 0, 1, 0, 0, 0, 0, 0, 0])
        #expect(lost.logLines.last?.hasSuffix("no route to 10.0.0.1 in the route file") == true)
    }

    @Test func malformedRequestsAreLoggedAndClosed() throws {
        let run = try SocksRun("permit ALL 0.0.0.0", client: "192.0.2.1")
        run.client([6, 1])
        #expect(run.closed)
        #expect(run.logLines.last?.hasPrefix("malformed request from 192.0.2.1: ") == true)
        let unknown = try SocksRun("permit ALL 0.0.0.0", client: "192.0.2.1")
        unknown.client(SocksRun.socks5([10, 0, 0, 1], 80, command: 9))
        #expect(Array(unknown.sent.suffix(10)) == [5, 7, 0, 1, 0, 0, 0, 0, 0, 0], "command not supported")
        #expect(unknown.closed)
        let truncated = try SocksRun("permit ALL 0.0.0.0", client: "192.0.2.1")
        truncated.client([4, 1, 0])
        truncated.feed(.endOfFile(.client))
        #expect(truncated.closed)
        let silent = try SocksRun("permit ALL 0.0.0.0", client: "192.0.2.1")
        #expect(silent.actions.contains(.setTimer(.seconds(30))))
        silent.feed(.timerFired)
        #expect(silent.closed)
    }

    /// BIND: two replies, the listener's address and then the peer's; only the peer the
    /// request named may connect; at most two minutes.
    @Test func bindListensRepliesTwiceAndChecksThePeer() throws {
        let bindRequest: [UInt8] = [4, 2, 0x1F, 0x90, 10, 0, 0, 7] + Array("ftp".utf8) + [0]
        let run = try SocksRun("permit ALL 0.0.0.0", client: "192.0.2.1")
        run.client(bindRequest)
        #expect(run.actions.contains(.listen(.server, on: IPAddress("127.0.0.1")!)), "the client's local address")
        #expect(run.actions.contains(.setTimer(.seconds(120))))
        run.feed(.listening(.server, Endpoint(address: IPAddress("127.0.0.1")!, port: 5000)))
        #expect(run.sent == [0, 90, 0x13, 0x88, 127, 0, 0, 1])
        run.feed(.accepted(.server, from: Endpoint(address: IPAddress("10.0.0.7")!, port: 20)))
        #expect(run.sent == [0, 90, 0x13, 0x88, 127, 0, 0, 1] + [0, 90, 0, 20, 10, 0, 0, 7])
        #expect(run.actions.contains(.relayStreams(RelayConfiguration(), toServer: [])))
        #expect(run.logLines.last == "connected -- Bind from ftp(unknown)@192.0.2.1 to 10.0.0.7 (8080)")
        // Another peer: 91 and closed.
        let wrong = try SocksRun("permit ALL 0.0.0.0", client: "192.0.2.1")
        wrong.client(bindRequest)
        wrong.feed(.listening(.server, Endpoint(address: IPAddress("127.0.0.1")!, port: 5000)))
        wrong.feed(.accepted(.server, from: Endpoint(address: IPAddress("10.0.0.8")!, port: 20)))
        #expect(Array(wrong.sent.suffix(8)) == [0, 91, 0, 0, 0, 0, 0, 0])
        #expect(wrong.logLines.last?.hasSuffix("the connection came from 10.0.0.8") == true)
        #expect(wrong.closed)
        // Nobody within two minutes.
        let late = try SocksRun("permit ALL 0.0.0.0", client: "192.0.2.1")
        late.client(bindRequest)
        late.feed(.listening(.server, Endpoint(address: IPAddress("127.0.0.1")!, port: 5000)))
        late.feed(.timerFired)
        #expect(Array(late.sent.suffix(8)) == [0, 91, 0, 0, 0, 0, 0, 0])
        #expect(late.logLines.last?.hasSuffix("no connection within 120 s") == true)
        // SOCKS5 BIND from the route's address, any peer for 0.0.0.0.
        let routed = try SocksRun("permit ALL 0.0.0.0", client: "192.0.2.1") { _, _ in
            .from(IPAddress("10.9.9.9")!, line: 1)
        }
        routed.client(SocksRun.socks5([0, 0, 0, 0], 0, command: 2))
        #expect(routed.actions.contains(.listen(.server, on: IPAddress("10.9.9.9")!)))
        routed.feed(.listening(.server, Endpoint(address: IPAddress("10.9.9.9")!, port: 5000)))
        routed.feed(.accepted(.server, from: Endpoint(address: IPAddress("10.0.0.8")!, port: 20)))
        #expect(Array(routed.sent.suffix(20)) == [5, 0, 0, 1, 10, 9, 9, 9, 0x13, 0x88, 5, 0, 0, 1, 10, 0, 0, 8, 0, 20])
        // A deny line refuses the BIND as it would the CONNECT.
        let denied = try SocksRun("deny ALL 0.0.0.0", client: "192.0.2.1")
        denied.client(bindRequest)
        #expect(denied.sent == [0, 91, 0, 0, 0, 0, 0, 0])
        #expect(denied.logLines.last == "refused -- Bind from ftp(unknown)@192.0.2.1 to 10.0.0.7 (8080)")
    }
}

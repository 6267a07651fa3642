#if canImport(Glibc)
import Glibc
#endif
import Gateway
import GatewayKit
import Socks
import Testing

// SOCKS5 UDP ASSOCIATE in the pure session machine: the association, then datagrams in as
// events and out as actions.

extension SocksRun {
    /// Negotiates a UDP ASSOCIATE naming `from` as the client's UDP address, and grants it
    /// with the client's socket at 127.0.0.1:7000.
    func associate(from address: [UInt8] = [0, 0, 0, 0], port: UInt16 = 0) {
        client(Self.socks5(address, port, command: 3))
    }

    func opened() {
        feed(.datagramOpened(DatagramID(0), Endpoint(address: IPAddress("127.0.0.1")!, port: 7000)))
    }

    func datagram(_ id: UInt8, from: String, _ port: UInt16, _ bytes: [UInt8]) -> [SessionAction] {
        feed(.datagram(DatagramID(id), from: Endpoint(address: IPAddress(from)!, port: port), bytes[...]))
    }

    /// What the client sends for `payload` to `address:port` (ATYP 1).
    static func udp(_ address: [UInt8], _ port: UInt16, _ payload: String) -> [UInt8] {
        [0, 0, 0, 1] + address + [UInt8(port >> 8), UInt8(port & 0xFF)] + Array(payload.utf8)
    }

    static func udp(name: String, _ port: UInt16, _ payload: String) -> [UInt8] {
        [0, 0, 0, 3, UInt8(name.utf8.count)] + Array(name.utf8) + [UInt8(port >> 8), UInt8(port & 0xFF)]
            + Array(payload.utf8)
    }
}

func sends(_ actions: [SessionAction]) -> [(UInt8, Endpoint, [UInt8])] {
    actions.compactMap {
        if case .sendDatagram(let id, let to, let prefix, let payload) = $0 {
            (id.rawValue, to, prefix + Array(payload))
        } else {
            nil
        }
    }
}

@Suite("sockd's UDP ASSOCIATE")
struct SocksUDPTests {
    let echo = Endpoint(address: IPAddress("127.0.0.9")!, port: 7)

    @Test func anAssociationRelaysBothWaysAndEndsWithTheControlConnection() throws {
        let run = try SocksRun("permit ALL 0.0.0.0 127.0.0.0 255.0.0.0", client: "127.0.0.2")
        run.associate()
        #expect(
            run.actions.contains(.openDatagram(DatagramID(0), on: Endpoint(address: IPAddress("127.0.0.1")!, port: 0))))
        run.opened()
        #expect(run.sent == [5, 0] + [5, 0, 0, 1, 127, 0, 0, 1, 0x1B, 0x58], "granted, naming the client's socket")
        #expect(
            run.logLines.last
                == "connected -- UDP associate from (unknown)@127.0.0.2 to 0.0.0.0 (0), relaying at 127.0.0.1:7000")
        #expect(run.actions.last == .read(.client), "the control connection is watched for its end")

        let out = run.datagram(0, from: "127.0.0.2", 5353, SocksRun.udp([127, 0, 0, 9], 7, "ping"))
        #expect(out.contains(.openDatagram(DatagramID(1), on: Endpoint(address: .anyV4, port: 0))))
        #expect(out.contains(.log(.notice, "connected -- UDP from (unknown)@127.0.0.2 to 127.0.0.9 (7)")))
        #expect(sends(out).map { $0.0 } == [1] && sends(out).first?.1 == echo)
        #expect(sends(out).first?.2 == Array("ping".utf8))
        // The same destination again: no new socket, no new line.
        let again = run.datagram(0, from: "127.0.0.2", 5353, SocksRun.udp([127, 0, 0, 9], 7, "two"))
        #expect(again.count == 1 && sends(again).first?.2 == Array("two".utf8))

        // Its answer goes back under a header that names it.
        let back = run.datagram(1, from: "127.0.0.9", 7, Array("pong".utf8))
        #expect(sends(back).count == 1)
        #expect(
            sends(back).first?.0 == 0 && sends(back).first?.1 == Endpoint(address: IPAddress("127.0.0.2")!, port: 5353))
        #expect(sends(back).first?.2 == SocksRun.udp([127, 0, 0, 9], 7, "pong"))
        // Nothing from a host the client never sent to, nor from the right host's other port.
        #expect(sends(run.datagram(1, from: "127.0.0.10", 7, [1])).isEmpty)
        #expect(sends(run.datagram(1, from: "127.0.0.9", 8, [1])).isEmpty)

        // Bytes on the control connection are ignored; its end ends everything.
        #expect(run.client(Array("noise".utf8)).isEmpty)
        run.feed(.endOfFile(.client))
        #expect(
            run.logLines.suffix(2) == [
                "terminated -- UDP associate from (unknown)@127.0.0.2 to 0.0.0.0 (0)",
                "7 bytes in 2 datagrams from (unknown)@127.0.0.2, 4 bytes in 1 datagrams to it, 2 dropped",
            ])
        #expect(run.closed)
    }

    @Test func onlyTheClientsAddressAndPortMaySend() throws {
        let run = try SocksRun("permit ALL 0.0.0.0", client: "127.0.0.2")
        run.associate(from: [127, 0, 0, 2], port: 6000)
        run.opened()
        let stranger = run.datagram(0, from: "127.0.0.3", 6000, SocksRun.udp([127, 0, 0, 9], 7, "x"))
        #expect(sends(stranger).isEmpty)
        #expect(
            stranger == [
                .log(
                    .info,
                    "UDP associate from (unknown)@127.0.0.2: a datagram from 127.0.0.3:6000 dropped (not the client's)")
            ])
        #expect(run.datagram(0, from: "127.0.0.3", 6000, [0]).isEmpty, "logged once")
        #expect(sends(run.datagram(0, from: "127.0.0.2", 6001, SocksRun.udp([127, 0, 0, 9], 7, "x"))).isEmpty)
        #expect(sends(run.datagram(0, from: "127.0.0.2", 6000, SocksRun.udp([127, 0, 0, 9], 7, "x"))).count == 1)
        // Without a port in the request, the first datagram's port is the client's.
        let learnt = try SocksRun("permit ALL 0.0.0.0", client: "127.0.0.2")
        learnt.associate()
        learnt.opened()
        #expect(sends(learnt.datagram(0, from: "127.0.0.2", 4000, SocksRun.udp([127, 0, 0, 9], 7, "a"))).count == 1)
        #expect(sends(learnt.datagram(0, from: "127.0.0.2", 4001, SocksRun.udp([127, 0, 0, 9], 7, "b"))).isEmpty)
    }

    @Test func fragmentsAndMalformedHeadersAreDropped() throws {
        let run = try SocksRun("permit ALL 0.0.0.0", client: "127.0.0.2")
        run.associate()
        run.opened()
        var fragment = SocksRun.udp([127, 0, 0, 9], 7, "x")
        fragment[2] = 1
        #expect(run.datagram(0, from: "127.0.0.2", 4000, fragment).isEmpty)
        #expect(run.datagram(0, from: "127.0.0.2", 4000, [0, 0]).isEmpty)
        #expect(run.datagram(0, from: "127.0.0.2", 4000, [0, 0, 0, 9, 1, 2, 3, 4, 0, 7]).isEmpty)
        run.feed(.endOfFile(.client))
        #expect(run.logLines.last?.hasSuffix("3 dropped") == true)
    }

    @Test func eachDestinationIsDecidedByTheRulesOnceAndItsCommandRuns() throws {
        let conf = """
            deny ALL 0.0.0.0 127.0.0.66 255.255.255.255 : echo refused %c %u to %Z port %p
            permit ALL 0.0.0.0 127.0.0.0 255.0.0.0 eq 7
            """
        let run = try SocksRun(conf, client: "127.0.0.2")
        run.client([5, 1, 0] + [5, 3, 0, 1, 0, 0, 0, 0, 0, 0])
        run.opened()
        let denied = run.datagram(0, from: "127.0.0.2", 4000, SocksRun.udp([127, 0, 0, 66], 7, "x"))
        #expect(sends(denied).isEmpty)
        #expect(denied.contains(.log(.notice, "refused -- UDP from (unknown)@127.0.0.2 to 127.0.0.66 (7)")))
        #expect(run.commands == ["echo refused udp  to 127.0.0.66 port 636"])
        #expect(run.datagram(0, from: "127.0.0.2", 4000, SocksRun.udp([127, 0, 0, 66], 7, "x")).isEmpty)
        // Another port of a permitted host: no line permits it.
        #expect(sends(run.datagram(0, from: "127.0.0.2", 4000, SocksRun.udp([127, 0, 0, 9], 8, "x"))).isEmpty)
        #expect(run.logLines.last == "refused -- UDP from (unknown)@127.0.0.2 to 127.0.0.9 (8)")
        #expect(sends(run.datagram(0, from: "127.0.0.2", 4000, SocksRun.udp([127, 0, 0, 9], 7, "x"))).count == 1)
    }

    @Test func namesAreResolvedOnceWithTheirDatagramsHeld() throws {
        let run = try SocksRun("permit ALL 0.0.0.0 127.0.0.0 255.0.0.0", client: "127.0.0.2")
        run.associate()
        run.opened()
        let first = run.datagram(0, from: "127.0.0.2", 4000, SocksRun.udp(name: "echo.test", 7, "one"))
        #expect(first == [.resolve("echo.test")])
        #expect(run.datagram(0, from: "127.0.0.2", 4000, SocksRun.udp(name: "echo.test", 7, "two")).isEmpty)
        let resolved = run.feed(.resolved(name: "echo.test", addresses: [IPAddress("127.0.0.9")!]))
        #expect(sends(resolved).map { $0.2 } == [Array("one".utf8), Array("two".utf8)])
        #expect(resolved.contains(.log(.notice, "connected -- UDP from (unknown)@127.0.0.2 to echo.test (7)")))
        // Known now: sent at once.
        #expect(sends(run.datagram(0, from: "127.0.0.2", 4000, SocksRun.udp(name: "echo.test", 7, "3"))).count == 1)
        // A name without an address: its datagrams are dropped, once logged.
        #expect(
            run.datagram(0, from: "127.0.0.2", 4000, SocksRun.udp(name: "nowhere.test", 7, "x")) == [
                .resolve("nowhere.test")
            ])
        let failed = run.feed(.resolveFailed(name: "nowhere.test", reason: "no such name"))
        #expect(
            failed == [
                .log(
                    .notice,
                    "failed -- UDP from (unknown)@127.0.0.2 to nowhere.test (7): cannot resolve nowhere.test: no such name"
                )
            ])
        #expect(run.datagram(0, from: "127.0.0.2", 4000, SocksRun.udp(name: "nowhere.test", 7, "x")).isEmpty)
    }

    @Test func atMostSixteenNamesAreAskedAtOnce() throws {
        let run = try SocksRun("permit ALL 0.0.0.0", client: "127.0.0.2")
        run.associate()
        run.opened()
        for i in 0..<20 {
            _ = run.datagram(0, from: "127.0.0.2", 4000, SocksRun.udp(name: "n\(i).test", 7, "x"))
        }
        let asked = run.actions.filter { if case .resolve = $0 { true } else { false } }
        #expect(asked.count == 16)
        // One answer frees a place.
        run.feed(.resolveFailed(name: "n0.test", reason: "timed out"))
        #expect(
            run.datagram(0, from: "127.0.0.2", 4000, SocksRun.udp(name: "n30.test", 7, "x")) == [.resolve("n30.test")])
        run.feed(.endOfFile(.client))
        #expect(run.logLines.last?.hasSuffix("5 dropped") == true)
    }

    @Test func theRouteChoosesTheSourceSocket() throws {
        let run = try SocksRun("permit ALL 0.0.0.0", client: "127.0.0.2") { address, _ in
            address == IPAddress("127.0.0.9")! ? .from(IPAddress("127.0.0.5")!, line: 1) : .none
        }
        run.associate()
        run.opened()
        let out = run.datagram(0, from: "127.0.0.2", 4000, SocksRun.udp([127, 0, 0, 9], 7, "x"))
        #expect(out.contains(.openDatagram(DatagramID(1), on: Endpoint(address: IPAddress("127.0.0.5")!, port: 0))))
        #expect(sends(out).count == 1)
        let unrouted = run.datagram(0, from: "127.0.0.2", 4000, SocksRun.udp([127, 0, 0, 10], 7, "x"))
        #expect(sends(unrouted).isEmpty)
        #expect(
            run.logLines.last == "failed -- UDP from (unknown)@127.0.0.2 to 127.0.0.10 (7): no route in the route file")
        // The source socket cannot be made: what goes out of it is refused from then on.
        run.feed(.datagramFailed(DatagramID(1), SystemError(errno: EADDRNOTAVAIL)))
        #expect(
            run.logLines.last?.hasPrefix("failed -- UDP from (unknown)@127.0.0.2: cannot send from 127.0.0.5") == true)
        #expect(sends(run.datagram(0, from: "127.0.0.2", 4000, SocksRun.udp([127, 0, 0, 9], 7, "x"))).isEmpty)
    }

    @Test func identdIsAskedOnceForTheAssociation() throws {
        let noAnswer = try SocksRun("permit ALL 0.0.0.0", client: "127.0.0.2", ident: .strict)
        noAnswer.associate()
        #expect(noAnswer.actions.contains(.askIdent(timeout: .seconds(15))))
        noAnswer.feed(.identAnswered(.failure(.timedOut)))
        #expect(noAnswer.sent == [5, 0] + [5, 2, 0, 1, 0, 0, 0, 0, 0, 0], "not allowed")
        #expect(noAnswer.logLines.contains("cannot connect to identd on 127.0.0.2"))
        #expect(noAnswer.closed)
        // Lenient, with an answer that differs: refused at once (93 in SOCKS4's words).
        let liar = try SocksRun("permit ALL 0.0.0.0", client: "127.0.0.2", ident: .lenient)
        liar.associate()
        liar.feed(.identAnswered(.success(Array("mallory".utf8))))
        #expect(liar.logLines.contains("*Alert*: real user is mallory, not "))
        #expect(liar.sent == [5, 0] + [5, 2, 0, 1, 0, 0, 0, 0, 0, 0])
        #expect(liar.closed)
        // Only a line asks (?=I): the association is granted; its destinations decide.
        let perLine = try SocksRun(
            "permit ?=I ALL 0.0.0.0 127.0.0.9 255.255.255.255\npermit ALL 0.0.0.0", client: "127.0.0.2")
        perLine.associate()
        #expect(perLine.actions.contains(.askIdent(timeout: .seconds(15))))
        perLine.feed(.identAnswered(.failure(.timedOut)))
        perLine.opened()
        #expect(sends(perLine.datagram(0, from: "127.0.0.2", 1, SocksRun.udp([127, 0, 0, 9], 7, "x"))).isEmpty)
        #expect(perLine.logLines.last == "refused -- UDP from (unknown)@127.0.0.2 to 127.0.0.9 (7): no identd answer")
        #expect(sends(perLine.datagram(0, from: "127.0.0.2", 1, SocksRun.udp([127, 0, 0, 10], 7, "x"))).count == 1)
    }

    @Test func theClientsSocketFailingEndsTheAssociation() throws {
        let unopened = try SocksRun("permit ALL 0.0.0.0", client: "127.0.0.2")
        unopened.associate()
        unopened.feed(.datagramFailed(DatagramID(0), SystemError(errno: EMFILE)))
        #expect(Array(unopened.sent.suffix(10)) == [5, 1, 0, 1, 0, 0, 0, 0, 0, 0])
        #expect(unopened.closed)
        let broken = try SocksRun("permit ALL 0.0.0.0", client: "127.0.0.2")
        broken.associate()
        broken.opened()
        broken.feed(.datagramFailed(DatagramID(0), SystemError(errno: ENOMEM)))
        #expect(broken.logLines.last?.hasSuffix("0 dropped") == true)
        #expect(broken.closed)
    }
}

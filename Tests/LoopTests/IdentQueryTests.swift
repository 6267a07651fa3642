#if canImport(Glibc)
import Glibc
#endif
import GatewayKit
import Loop
import Testing

/// An identd on a loopback port, played between the loop's turns without a thread: it takes
/// one connection, reads the request line, answers as told, then closes (or stays silent).
private final class LoopbackIdentd {
    enum Answer {
        /// The reply at once, then close.
        case reply([UInt8])
        /// The reply a byte per turn, then close.
        case byteByByte([UInt8])
        /// The reply, then keep the connection open without a word more.
        case replyAndStay([UInt8])
    }

    let listener: Int32
    let port: UInt16
    let address: IPAddress
    private let answer: Answer
    private var connection: Int32 = -1
    /// The request as read, and where the connection came from.
    private(set) var request: [UInt8] = []
    private(set) var peer: Endpoint?
    private var pending: [UInt8] = []
    private var answered = false
    /// The query closed its end (a read gave end of file or an error).
    private(set) var queryClosed = false
    /// Reply bytes the query took.
    private(set) var sent = 0

    init(_ answer: Answer, family: IPAddress.Family = .v4) throws {
        (listener, port) = try Loopback.listener(family)
        address = Loopback.address(family)
        Socket.setNonBlocking(listener, true)
        self.answer = answer
    }

    deinit {
        close(listener)
        if connection >= 0 { close(connection) }
    }

    /// One step: accept, read, answer what can be answered now.
    func serve() {
        if connection < 0 && !answered {
            guard let (fd, from) = try? Socket.accept(listener, nonBlocking: true) else { return }
            (connection, peer) = (fd, from)
        }
        guard connection >= 0 else { return }
        let (read, eof) = PeerIO.receive(connection)
        request += read
        if eof || (read.isEmpty && errno != EAGAIN) { queryClosed = true }
        if !answered && request.contains(UInt8(ascii: "\n")) {
            answered = true
            switch answer {
            case .reply(let bytes), .byteByByte(let bytes), .replyAndStay(let bytes): pending = bytes
            }
        }
        guard answered else { return }
        if !pending.isEmpty && !queryClosed {
            if case .byteByByte = answer {
                let n = PeerIO.sendSome(connection, pending[0..<1])
                pending.removeFirst(n)
                sent += n
            } else {
                let n = PeerIO.sendSome(connection, pending[...])
                pending.removeFirst(n)
                sent += n
            }
        }
        if pending.isEmpty, case .replyAndStay = answer { return }
        if pending.isEmpty || queryClosed {
            close(connection)
            connection = -1
        }
    }
}

/// What a query reported, how often, and whether `start` had returned by then.
private final class Outcome {
    var result: Result<[UInt8], IdentError>?
    var calls = 0
    var startReturned = false
    var calledBeforeStartReturned = false
    let started = Deadline.now
    var milliseconds = 0
    var query: IdentQuery?

    func record(_ result: Result<[UInt8], IdentError>) {
        if !startReturned { calledBeforeStartReturned = true }
        self.result = result
        calls += 1
        milliseconds = elapsedMilliseconds(since: started)
    }

    var user: String? {
        guard case .success(let bytes)? = result else { return nil }
        return text(bytes)
    }

    var error: IdentError? {
        guard case .failure(let error)? = result else { return nil }
        return error
    }
}

/// A loop and, unless told otherwise, an identd for the queries the test starts on it.
private final class IdentFixture {
    /// The connection asked about: the client at 127.0.0.1:6191 came to our port 23.
    static let client = Endpoint(address: .loopbackV4, port: 6191)
    static let local = Endpoint(address: .loopbackV4, port: 23)

    let loop: EventLoop
    let identd: LoopbackIdentd?

    init(_ answer: LoopbackIdentd.Answer?, family: IPAddress.Family = .v4, fineTimers fine: Bool = false) throws {
        loop = try EventLoop(configuration: fine ? fineTimers() : EventLoop.Configuration())
        identd = try answer.map { try LoopbackIdentd($0, family: family) }
    }

    deinit { loop.close() }

    /// Starts a query (to the identd's port unless `port` is given); notes when start returned.
    func ask(
        port: UInt16? = nil, client: Endpoint = client, local: Endpoint = local, timeout: Duration = .seconds(2)
    ) -> Outcome {
        let outcome = Outcome()
        outcome.query = IdentQuery.start(
            loop: loop, client: client, local: local, timeout: timeout, port: port ?? identd?.port ?? 1
        ) { [weak outcome] in outcome?.record($0) }
        outcome.startReturned = true
        return outcome
    }

    /// Turns the loop, the identd serving between turns, until `done` or `seconds` pass.
    @discardableResult
    func run(seconds: Double = 3, until done: () -> Bool) -> Bool {
        turn(loop, seconds: seconds, between: { identd?.serve() }, until: done)
    }

    /// Asks and turns the loop until the query has reported.
    func exchange(
        port: UInt16? = nil, client: Endpoint = client, local: Endpoint = local, timeout: Duration = .seconds(2)
    ) -> Outcome {
        let outcome = ask(port: port, client: client, local: local, timeout: timeout)
        #expect(outcome.calls == 0)
        run { outcome.calls > 0 }
        #expect(outcome.calls == 1)
        #expect(!outcome.calledBeforeStartReturned)
        return outcome
    }
}

@Suite("Ident query on an event loop")
struct IdentQueryTests {
    @Test("a USERID reply: the request names both ports, the answer is remoteinfo's")
    func userid() throws {
        let f = try IdentFixture(.reply(bytes("6191 , 23 : USERID : UNIX : joe\r\n")))
        let outcome = f.exchange()
        #expect(outcome.user == "joe")
        #expect(f.identd?.request == bytes("6191 , 23\r\n"))
        #expect(f.loop.statistics.handlers == 0 && f.loop.statistics.timers == 0)
    }

    @Test("the reply in single bytes, one per turn of the loop")
    func byteByByte() throws {
        let reply = bytes("6191 , 23 : USERID : UNIX , UTF-8 : a:b c\r\n")
        let f = try IdentFixture(.byteByByte(reply))
        #expect(f.exchange().user == "a:bc")
        #expect(f.identd?.sent == reply.count)
    }

    @Test("the query goes out from the local address of the connection")
    func fromLocalAddress() throws {
        let f = try IdentFixture(.reply(bytes("1,2:USERID:UNIX:x\n")))
        let outcome = f.exchange(local: Endpoint(address: IPAddress(v4: 127, 0, 0, 2), port: 23))
        #expect(outcome.user == "x")
        #expect(f.identd?.peer?.address == IPAddress(v4: 127, 0, 0, 2))
    }

    @Test("v4-mapped endpoints are asked over IPv4")
    func mapped() throws {
        let f = try IdentFixture(.reply(bytes("1,2:USERID:UNIX:mapped\n")))
        let mapped = IPAddress("::ffff:127.0.0.1")!
        let outcome = f.exchange(
            client: Endpoint(address: mapped, port: 6191), local: Endpoint(address: mapped, port: 23))
        #expect(outcome.user == "mapped")
    }

    @Test("IPv6", .enabled(if: Loopback.hasIPv6, "no IPv6 loopback"))
    func ipv6() throws {
        let f = try IdentFixture(.reply(bytes("6191 , 23 : USERID : UNIX : v6user\r\n")), family: .v6)
        let outcome = f.exchange(
            client: Endpoint(address: .loopbackV6, port: 6191), local: Endpoint(address: .loopbackV6, port: 23))
        #expect(outcome.user == "v6user")
        #expect(f.identd?.request == bytes("6191 , 23\r\n"))
    }

    @Test(
        "error and odd replies give what remoteinfo keeps",
        arguments: [
            ("6191 , 23 : ERROR : NO-USER\r\n", ""),
            ("6191 , 23 : ERROR : UNKNOWN-ERROR : detail\r\n", "detail"),
            ("garbage without colons\r\n", ""),
            ("\n", ""),
            ("1,2:USERID:UNIX:joe\nmore:after:the:line\n", "joe"),
        ])
    func replies(reply: String, kept: String) throws {
        let f = try IdentFixture(.reply(bytes(reply)))
        #expect(f.exchange().user == kept)
    }

    @Test("a server that closes before the newline: connectionClosed")
    func closedEarly() throws {
        let f = try IdentFixture(.reply(bytes("6191 , 23 : USERID : UNIX : joe")))
        #expect(f.exchange().error == .connectionClosed)
    }

    @Test("nothing listening: refused, soon, and never before start returns")
    func refused() throws {
        let f = try IdentFixture(nil)
        let outcome = f.exchange(port: try Loopback.unusedPort())
        #expect(outcome.error == .system(SystemError(errno: ECONNREFUSED)))
        #expect(outcome.milliseconds < 1000)
        #expect(f.loop.statistics.handlers == 0)
    }

    @Test("an error found at once (no such local address) waits for the loop")
    func immediateError() throws {
        let f = try IdentFixture(nil)
        // 192.0.2.1 is not an address of this host: bind fails before any packet is sent.
        let outcome = f.exchange(port: 1, local: Endpoint(address: IPAddress(v4: 192, 0, 2, 1), port: 23))
        #expect(outcome.error == .system(SystemError(errno: EADDRNOTAVAIL)))
        #expect(f.loop.statistics.handlers == 0)
    }

    @Test("a silent server: timedOut after the timeout")
    func timeout() throws {
        let f = try IdentFixture(.replyAndStay([]), fineTimers: true)
        let outcome = f.exchange(timeout: .milliseconds(200))
        #expect(outcome.error == .timedOut)
        #expect(outcome.milliseconds >= 200 && outcome.milliseconds < 1500, "took \(outcome.milliseconds) ms")
        #expect(f.loop.statistics.handlers == 0 && f.loop.statistics.timers == 0)
        #expect(f.run(seconds: 1) { f.identd?.queryClosed == true })
    }

    @Test("a long user id is cut as remoteinfo cuts it (257 bytes)")
    func longUserID() throws {
        let f = try IdentFixture(.replyAndStay(bytes("1,2:USERID:UNIX:" + String(repeating: "u", count: 600))))
        #expect(f.exchange().user == String(repeating: "u", count: 257))
    }

    @Test("an endless line that the reader keeps nothing of: replyTooLong after 1000 bytes")
    func endlessLine() throws {
        let f = try IdentFixture(.replyAndStay([UInt8](repeating: UInt8(ascii: " "), count: 5000)))
        let outcome = f.exchange()
        #expect(outcome.error == .replyTooLong)
        #expect(outcome.milliseconds < 1000)
    }

    @Test("cancelled before the answer: the completion is never called, the socket is closed")
    func cancelled() throws {
        let f = try IdentFixture(.replyAndStay([]), fineTimers: true)
        let outcome = f.ask(timeout: .milliseconds(100))
        f.run { f.identd?.request.isEmpty == false }
        #expect(f.identd?.request == bytes("6191 , 23\r\n"))
        outcome.query?.cancel()
        #expect(f.loop.statistics.handlers == 0 && f.loop.statistics.timers == 0)
        #expect(f.run(seconds: 1) { f.identd?.queryClosed == true })
        // Past the timeout too: nothing.
        f.run(seconds: 0.3) { false }
        #expect(outcome.calls == 0)
    }

    @Test("cancelled before the loop ever ran: no call, even for an error found at once")
    func cancelledAtOnce() throws {
        let f = try IdentFixture(nil)
        let outcome = f.ask(port: 1, local: Endpoint(address: IPAddress(v4: 192, 0, 2, 1), port: 23))
        outcome.query?.cancel()
        turns(f.loop, 3)
        #expect(outcome.calls == 0)
        #expect(f.loop.statistics.handlers == 0)
    }
}

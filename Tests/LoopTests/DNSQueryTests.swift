#if canImport(Glibc)
import Glibc
#endif
import GatewayKit
import Loop
import Testing

/// A UDP socket on 127.0.0.1 playing a DNS server for a `DNSQuery` on the test's own loop:
/// the test reads the queries and answers them (or not) between turns of the loop.
private final class LoopbackDNS {
    let fd: Int32
    let server: DNSServer
    var queries: [[UInt8]] = []

    init() throws {
        fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue | SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SystemError.current }
        try Socket.bind(fd, to: .loopbackV4, port: 0)
        server = DNSServer(address: .loopbackV4, port: try Socket.localEndpoint(fd).port)
    }

    deinit { close(fd) }

    /// Reads the queries that arrived and answers each with the datagrams `answer` gives.
    func serve(_ answer: ([UInt8]) -> [[UInt8]]) {
        var buffer = [UInt8](repeating: 0, count: 1024)
        var peer = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        while true {
            let n = buffer.withUnsafeMutableBytes { b in
                withUnsafeMutablePointer(to: &peer) { p in
                    p.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        recvfrom(fd, b.baseAddress, b.count, 0, $0, &length)
                    }
                }
            }
            guard n > 0 else { return }
            let query = Array(buffer[0..<n])
            queries.append(query)
            for reply in answer(query) {
                _ = reply.withUnsafeBytes { b in
                    withUnsafePointer(to: &peer) { p in
                        p.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                            sendto(fd, b.baseAddress, b.count, 0, $0, length)
                        }
                    }
                }
            }
        }
    }

    /// A reply to `query` (same id and question) with one PTR record naming `name`.
    static func pointer(to query: [UInt8], name: [UInt8]) -> [UInt8] {
        var reply = query
        reply[2] |= 0x80  // QR
        reply[7] = 1  // ANCOUNT
        reply += [0xc0, 0x0c, 0, 12, 0, 1, 0, 0, 0, 60, 0, UInt8(name.count)] + name
        return reply
    }
}

/// A query and what it reported, and when.
private final class Outcome {
    var result: Result<DNSResponse, DNSError>?
    var calls = 0
    let started = Deadline.now
    var milliseconds = 0
    var query: DNSQuery?

    func record(_ result: Result<DNSResponse, DNSError>) {
        self.result = result
        calls += 1
        milliseconds = Int((Deadline.now.nanoseconds - started.nanoseconds) / 1_000_000)
    }

    var name: String? {
        guard case .success(let response)? = result, let wire = try? response.firstPointerName() else { return nil }
        return DNSWire.formatName(wire)
    }

    var error: DNSError? {
        guard case .failure(let error)? = result else { return nil }
        return error
    }
}

/// A loop with 10 ms timer ticks, for timeouts of a few hundred milliseconds.
private func finelyTimedLoop() throws -> EventLoop {
    try EventLoop(configuration: fineTimers())
}

@Suite("DNS query on an event loop")
struct DNSQueryTests {
    let question = DNSQuestion(name: DNSWire.reverseName(for: IPAddress(v4: 127, 0, 0, 9)), type: .ptr)
    let hostName: [UInt8] = [4] + Array("Host".utf8) + [4] + Array("test".utf8) + [0]

    /// Starts asking `servers` on `loop` about `question`.
    private func ask(
        _ loop: EventLoop, _ servers: [DNSServer], timeouts: [Duration] = [.seconds(1)], limit: Duration = .seconds(2)
    ) -> Outcome {
        let outcome = Outcome()
        outcome.query = DNSQuery.start(
            loop: loop, question: question, servers: servers, timeouts: timeouts, limit: limit
        ) { [weak outcome] in outcome?.record($0) }
        return outcome
    }

    /// Turns `loop` (and lets `dns` answer) until the query has reported or `seconds` pass.
    private func run(
        _ loop: EventLoop, _ outcome: Outcome, seconds: Double = 3, serving dns: LoopbackDNS? = nil,
        _ answer: ([UInt8]) -> [[UInt8]] = { _ in [] }
    ) {
        let end = Deadline.after(.milliseconds(Int(seconds * 1000)))
        while outcome.calls == 0 && !end.hasPassed {
            loop.runOnce(timeout: .milliseconds(5))
            dns?.serve(answer)
        }
    }

    @Test("an answer comes back through the loop, not before start returns")
    func answered() throws {
        let loop = try EventLoop()
        defer { loop.close() }
        let dns = try LoopbackDNS()
        let outcome = ask(loop, [dns.server])
        #expect(outcome.calls == 0)
        run(loop, outcome, serving: dns) { [LoopbackDNS.pointer(to: $0, name: hostName)] }
        #expect(outcome.name == "host.test")
        #expect(outcome.calls == 1)
        #expect(dns.queries.count == 1)
        #expect(loop.statistics.handlers == 0 && loop.statistics.timers == 0)
    }

    @Test("replies with another id or question are ignored; the right one counts")
    func decoys() throws {
        let loop = try EventLoop()
        defer { loop.close() }
        let dns = try LoopbackDNS()
        let outcome = ask(loop, [dns.server])
        run(loop, outcome, serving: dns) { query in
            var otherID = LoopbackDNS.pointer(to: query, name: [2] + Array("no".utf8) + [0])
            otherID[1] ^= 1
            var otherQuestion = LoopbackDNS.pointer(to: query, name: [2] + Array("no".utf8) + [0])
            otherQuestion[13] ^= 1
            return [otherID, otherQuestion, LoopbackDNS.pointer(to: query, name: hostName)]
        }
        #expect(outcome.name == "host.test")
        #expect(dns.queries.count == 1)
    }

    @Test("a silent server is asked once per round, then the query times out")
    func silent() throws {
        let loop = try finelyTimedLoop()
        defer { loop.close() }
        let dns = try LoopbackDNS()
        let outcome = ask(loop, [dns.server], timeouts: [.milliseconds(100), .milliseconds(200)])
        run(loop, outcome, serving: dns)
        #expect(outcome.error == .timedOut)
        #expect(dns.queries.count == 2)
        #expect(outcome.milliseconds >= 300 && outcome.milliseconds < 1000)
        #expect(loop.statistics.handlers == 0)
    }

    @Test("the limit ends the query whatever the schedule")
    func limit() throws {
        let loop = try finelyTimedLoop()
        defer { loop.close() }
        let dns = try LoopbackDNS()
        let outcome = ask(
            loop, [dns.server, dns.server], timeouts: [.seconds(1), .seconds(3)], limit: .milliseconds(250))
        run(loop, outcome, serving: dns)
        #expect(outcome.error == .timedOut)
        #expect(outcome.milliseconds >= 250 && outcome.milliseconds < 900)
        #expect(dns.queries.count == 1)
    }

    @Test("no server listening: every attempt fails at once; a later server that answers wins")
    func refused() throws {
        let loop = try EventLoop()
        defer { loop.close() }
        let unused: DNSServer
        do {
            let probe = try LoopbackDNS()
            unused = probe.server
        }
        let outcome = ask(loop, [unused], timeouts: [.seconds(1), .seconds(3)], limit: .seconds(4))
        run(loop, outcome)
        #expect(outcome.error == .system(SystemError(errno: ECONNREFUSED)))
        #expect(outcome.milliseconds < 500)

        let dns = try LoopbackDNS()
        let second = ask(loop, [unused, dns.server])
        run(loop, second, serving: dns) { [LoopbackDNS.pointer(to: $0, name: hostName)] }
        #expect(second.name == "host.test")
        #expect(second.milliseconds < 500)
    }

    @Test("cancelled: the socket closes and the completion is never called")
    func cancelled() throws {
        let loop = try EventLoop()
        defer { loop.close() }
        let dns = try LoopbackDNS()
        let outcome = ask(loop, [dns.server], limit: .seconds(1))
        run(loop, outcome, seconds: 0.1, serving: dns)
        #expect(dns.queries.count == 1)
        outcome.query?.cancel()
        #expect(loop.statistics.handlers == 0)
        dns.serve { [LoopbackDNS.pointer(to: $0, name: hostName)] }
        run(loop, outcome, seconds: 0.2)
        #expect(outcome.calls == 0)
    }
}

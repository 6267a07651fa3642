#if canImport(Glibc)
import Glibc
#endif
import AccessRules
import Gateway
import GatewayKit
import Loop
import Relay
import Testing

// The driver carries a machine's actions out on a real loop with real sockets and programs:
// a scripted machine stands in for a daemon's, and a recording host for the daemon.

/// The daemon side, recording what it is told.
final class RecordingHost: SessionHost {
    let loop: EventLoop
    var lines: [String] = []
    var adopted: [Int32: ChildProgram] = [:]
    var released: [Int32] = []
    var ended: [UInt64] = []
    var waits = 0

    init(loop: EventLoop) { self.loop = loop }

    func log(_ level: LogLevel, _ line: String) { lines.append(line) }
    func adopt(_ program: ChildProgram) { adopted[program.pid] = program }
    func release(_ pid: Int32) {
        adopted[pid] = nil
        released.append(pid)
    }
    func recorder(for request: RecordingRequest, session: SessionDriver) -> Result<
        any SessionRecorder, RecordingFailure
    > { .failure(RecordingFailure(path: request.basename, error: SystemError(errno: EACCES))) }
    func waitForDescriptors(_ session: SessionDriver, error: SystemError) { waits += 1 }
    func sessionEnded(_ session: SessionDriver) { ended.append(session.id) }
}

/// A machine that answers each event with the next step of a script, and records the events.
final class Script: @unchecked Sendable {
    var events: [SessionEvent] = []
    var depth = 0
    var deepest = 0
    var localSeen: Endpoint?
}

struct ScriptedMachine: SessionMachine {
    let script: Script
    let steps: (SessionEvent, any SessionContext) -> [SessionAction]

    mutating func handle(_ event: SessionEvent, context: any SessionContext, into actions: inout [SessionAction]) {
        script.depth += 1
        script.deepest = max(script.deepest, script.depth)
        defer { script.depth -= 1 }
        script.events.append(event)
        actions += steps(event, context)
    }

    func statusLine(bytesFromClient: UInt64, bytesToClient: UInt64, now: Deadline) -> String? {
        "\(bytesFromClient) up, \(bytesToClient) down"
    }
}

/// A loopback listener, a client connected to it, and the accepted end (non-blocking).
func loopbackConnection() throws -> (listener: Int32, port: UInt16, client: Int32, accepted: Int32, peer: Endpoint) {
    let listener = try Socket.tcp(.v4)
    try Socket.bind(listener, to: .loopbackV4, port: 0)
    try Socket.listen(listener, backlog: 16)
    let port = try Socket.localEndpoint(listener).port
    let client = try Socket.tcp(.v4)
    let r = IPAddress.loopbackV4.withSocketAddress(port: port) { sa, length in connect(client, sa, length) }
    #expect(r == 0)
    let (accepted, peer) = try Socket.accept(listener)
    Socket.setNonBlocking(accepted, true)
    return (listener, port, client, accepted, peer)
}

/// A loop, a recording host and a loopback connection whose accepted end the driver gets.
final class Fixture {
    let loop: EventLoop
    let host: RecordingHost
    let listener: Int32
    let client: Int32
    let accepted: Int32
    let peer: Endpoint

    init() throws {
        loop = try EventLoop()
        host = RecordingHost(loop: loop)
        (listener, _, client, accepted, peer) = try loopbackConnection()
    }

    deinit {
        loop.close()
        close(listener)
        close(client)
    }
}

/// Runs `loop` until `done` or 10 s; true when done.
@discardableResult
func run(_ loop: EventLoop, until done: () -> Bool) -> Bool {
    let deadline = Deadline.after(.seconds(10))
    while !done() {
        if deadline.hasPassed { return false }
        loop.runOnce(timeout: .milliseconds(20))
    }
    return true
}

/// Reads what `fd` (blocking) has until end of file or 10 s.
func readAll(_ fd: Int32) -> [UInt8] {
    var out: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    let deadline = Deadline.after(.seconds(10))
    while !deadline.hasPassed {
        guard (try? deadline.wait(for: fd, events: Int16(POLLIN))) == true else { break }
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n <= 0 { break }
        out += chunk[0..<n]
    }
    return out
}

@Suite("The session driver")
struct SessionDriverTests {
    @Test func rulesProgramAndRelayInOrder() throws {
        let fixture = try Fixture()
        defer { withExtendedLifetime(fixture) {} }
        let (loop, host, client, accepted, peer) = (
            fixture.loop, fixture.host, fixture.client, fixture.accepted, fixture.peer
        )
        // The server the relay connects to.
        let server = try Socket.tcp(.v4)
        try Socket.bind(server, to: .loopbackV4, port: 0)
        try Socket.listen(server, backlog: 4)
        defer { close(server) }
        let serverPort = try Socket.localEndpoint(server).port

        let script = Script()
        let machine = ScriptedMachine(script: script) { event, context in
            switch event {
            case .started:
                script.localSeen = try? context.localEndpoint()
                return [
                    .log(.notice, "begin"),
                    .checkRules(path: "/nonexistent/rules.cdb", client: RuleClient(ip: "127.0.0.1")),
                ]
            case .rulesChecked(.missing):
                let program = SessionProgram(
                    argv: ["sh", "-c", "echo checked >&2; printf 'hello from acp\\n'"],
                    environment: [Array("PATH=/bin:/usr/bin".utf8)])
                return [.run(program, stdout: true)]
            case .programExited(_, let status) where WaitStatus.exited(status) == 0:
                let plan = RelayPlan(
                    destination: Endpoint(address: .loopbackV4, port: serverPort), source: nil,
                    preamble: Array("P\n".utf8),
                    configuration: RelayConfiguration(), recording: RecordingRequest(basename: "/x", server: "s"),
                    traced: true)
                return [.relay(plan)]
            case .relayEnded:
                return [.log(.notice, "done"), .close]
            default:
                return []
            }
        }
        let driver = SessionDriver(host: host, machine: machine, client: accepted, peer: peer, id: 5, names: nil)
        driver.start()
        #expect(script.localSeen?.address == .loopbackV4)
        // The client gets the program's output first.
        var seen: [UInt8] = []
        #expect(
            run(loop) {
                var chunk = [UInt8](repeating: 0, count: 256)
                let n = chunk.withUnsafeMutableBytes { recv(client, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
                if n > 0 { seen += chunk[0..<n] }
                return seen.count >= 15
            })
        #expect(String(decoding: seen, as: UTF8.self) == "hello from acp\n")
        // Then the relay: the server gets the preamble and the client's bytes.
        #expect(run(loop) { driver.relay != nil && driver.relay!.isConnected })
        let (upstream, _) = try Socket.accept(server)
        defer { close(upstream) }
        #expect(send(client, "ping", 4, 0) == 4)
        shutdown(client, Int32(SHUT_WR))
        var got: [UInt8] = []
        #expect(
            run(loop) {
                var chunk = [UInt8](repeating: 0, count: 256)
                let n = chunk.withUnsafeMutableBytes { recv(upstream, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
                if n > 0 { got += chunk[0..<n] }
                return n == 0
            })
        #expect(String(decoding: got, as: UTF8.self) == "P\nping")
        #expect(driver.statusLine == "6 up, 0 down" || driver.statusLine == "4 up, 0 down")
        shutdown(upstream, Int32(SHUT_WR))
        #expect(run(loop) { host.ended == [5] })
        #expect(host.lines == ["begin", "done"])
        // Every event in order, one at a time (answers known at once were queued, not nested).
        #expect(script.deepest == 1)
        let kinds = script.events.map { event -> String in
            switch event {
            case .started: return "started"
            case .rulesChecked: return "rules"
            case .programStarted: return "program started"
            case .programSaid(let line): return "said \(line)"
            case .programExited: return "exited"
            case .connected(let local, let recording):
                return "connected \(local != nil) \(recording?.error.map { "\($0)" } ?? "recording")"
            case .finished(let direction, _): return "finished \(direction)"
            case .relayEnded(let summary): return "ended \(summary.end)"
            default: return "\(event)"
            }
        }
        #expect(kinds.prefix(3) == ["started", "rules", "program started"])
        #expect(kinds.contains("said checked"))
        #expect(kinds.contains("connected true access denied"))
        #expect(kinds.contains("finished client to server") && kinds.contains("finished server to client"))
        #expect(kinds.last == "ended done")
        #expect(kinds.firstIndex(of: "exited")! < kinds.firstIndex(of: "connected true access denied")!)
    }

    @Test func handOverLeavesTheConnectionToTheProgram() throws {
        let fixture = try Fixture()
        defer { withExtendedLifetime(fixture) {} }
        let (loop, host, client, accepted, peer) = (
            fixture.loop, fixture.host, fixture.client, fixture.accepted, fixture.peer
        )
        let script = Script()
        let machine = ScriptedMachine(script: script) { event, _ in
            switch event {
            case .started:
                return [.handOver(SessionProgram(argv: ["cat"], environment: []), endLine: "c to cat ended")]
            case .handedOver: return [.close]
            default: return []
            }
        }
        SessionDriver(host: host, machine: machine, client: accepted, peer: peer, id: 9, names: nil).start()
        #expect(host.ended == [9])
        #expect(host.adopted.count == 1)
        #expect(send(client, "echo me", 7, 0) == 7)
        shutdown(client, Int32(SHUT_WR))
        #expect(String(decoding: readAll(client), as: UTF8.self) == "echo me")
        #expect(run(loop) { host.released.count == 1 })
        #expect(host.lines.count == 1 && host.lines[0].hasPrefix("c to cat ended: exit 0, 0."), "\(host.lines)")
    }

    @Test func failuresComeBackAsEvents() throws {
        let fixture = try Fixture()
        defer { withExtendedLifetime(fixture) {} }
        let (loop, host, client, accepted, peer) = (
            fixture.loop, fixture.host, fixture.client, fixture.accepted, fixture.peer
        )
        let script = Script()
        let machine = ScriptedMachine(script: script) { event, _ in
            switch event {
            case .started:
                return [.run(SessionProgram(argv: ["/nonexistent/acp"], environment: []), stdout: false)]
            case .programFailed:
                return [.waitForDescriptors(SystemError(errno: EMFILE))]
            case .timerFired:
                // An address no socket here has: the connect fails at once.
                let plan = RelayPlan(
                    destination: Endpoint(address: .loopbackV4, port: 1), source: IPAddress("192.0.2.1"), preamble: [],
                    configuration: RelayConfiguration(), recording: nil, traced: false)
                return [.relay(plan)]
            case .relayFailed, .relayEnded:
                return [.setTimer(.milliseconds(1)), .close, .log(.error, "never")]
            default: return []
            }
        }
        let driver = SessionDriver(host: host, machine: machine, client: accepted, peer: peer, id: 3, names: nil)
        driver.start()
        #expect(host.waits == 1)
        driver.descriptorPauseOver()
        #expect(run(loop) { host.ended == [3] })
        #expect(host.lines.isEmpty, "nothing is carried out after close")
        #expect(script.events.first == .started)
        #expect(script.events.contains(.programFailed(SystemError(errno: ENOENT))))
        #expect(script.events.contains(.relayFailed(SystemError(errno: EADDRNOTAVAIL))))
        // The driver closed the client socket it still owned.
        #expect(String(decoding: readAll(client), as: UTF8.self) == "")
    }
}

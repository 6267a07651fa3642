#if canImport(Glibc)
import Glibc
#endif
import Gateway
import GatewayKit
import Loop
import Testing

// What sockd's session asks the daemon and the network about its client: a password (the
// host checks it off the loop), the client's ident server (scripted on loopback), and a
// program left to run on its own.

/// A daemon side that checks passwords as sockd will (off the loop, through BlockingWork) and
/// sends ident queries to a port of the test's choosing.
final class AskingHost: SessionHost {
    let loop: EventLoop
    var lines: [String] = []
    var adopted: [Int32: ChildProgram] = [:]
    var released: [Int32] = []
    var ended: [UInt64] = []
    var identPort: UInt16 = IdentClient.defaultPort
    var checks: [String] = []
    /// Answers held back instead of given (to give them after the session closed).
    var holdAnswers = false
    var held: [(Bool) -> Void] = []

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
    func waitForDescriptors(_ session: SessionDriver, error: SystemError) {}
    func sessionEnded(_ session: SessionDriver) { ended.append(session.id) }

    func checkPassword(user: [UInt8], password: [UInt8], session: SessionDriver, answer: @escaping (Bool) -> Void) {
        checks.append("\(text(user)):\(text(password))")
        if holdAnswers { return held.append(answer) }
        if user == Array("quick".utf8) { return answer(true) }  // at once, inside the action
        let right = user == Array("alice".utf8) && password == Array("secret".utf8)
        let ticket = loop.resource(BlockingWork.self).submit(
            { () -> Bool in
                usleep(20_000)  // as slow as a crypt(3) check
                return right
            }, completion: answer)
        #expect(ticket != nil)
    }
}

/// One step at a time between the loop's turns: an identd on 127.0.0.1 that takes one
/// connection, reads the request line and answers with a USERID reply naming `user`.
final class ScriptedIdentd {
    let listener: Int32
    let port: UInt16
    let user: String
    var connection: Int32 = -1
    var request: [UInt8] = []
    var peer: Endpoint?
    var answered = false

    init(user: String) throws {
        listener = try Socket.tcp(.v4)
        try Socket.bind(listener, to: .loopbackV4, port: 0)
        try Socket.listen(listener, backlog: 4)
        Socket.setNonBlocking(listener, true)
        port = try Socket.localEndpoint(listener).port
        self.user = user
    }

    deinit {
        close(listener)
        if connection >= 0 { close(connection) }
    }

    func serve() {
        if connection < 0 && !answered {
            guard let (fd, from) = try? Socket.accept(listener, nonBlocking: true) else { return }
            (connection, peer) = (fd, from)
        }
        guard connection >= 0 else { return }
        receiveNow(connection, into: &request)
        guard !answered, let end = request.firstIndex(of: UInt8(ascii: "\r")) else { return }
        answered = true
        let reply = Array(request[..<end]) + Array(" : USERID : UNIX : \(user)\r\n".utf8)
        _ = reply.withUnsafeBytes { send(connection, $0.baseAddress, $0.count, 0) }
        close(connection)
        connection = -1
    }
}

@Suite("The session driver asks its host and the client's host")
struct SessionHostQuestionsTests {
    @Test func passwordsAreCheckedByTheHostAndAnsweredQueuedNeverNested() throws {
        let fixture = try Fixture()
        defer { withExtendedLifetime(fixture) {} }
        let host = AskingHost(loop: fixture.loop)
        let script = Script()
        let machine = ScriptedMachine(script: script) { event, _ in
            guard event == .started else { return [] }
            return [
                .checkPassword(user: Array("alice".utf8), password: Array("secret".utf8)),
                .checkPassword(user: Array("alice".utf8), password: Array("wrong".utf8)),
                .checkPassword(user: Array("quick".utf8), password: []),
                .log(.info, "asked"),
            ]
        }
        let driver = SessionDriver(
            host: host, machine: machine, client: fixture.accepted, peer: fixture.peer, id: 1, names: nil)
        defer { withExtendedLifetime(driver) {} }
        driver.start()
        #expect(host.checks == ["alice:secret", "alice:wrong", "quick:"])
        // The answer given at once came after the batch; the others come from the workers.
        #expect(host.lines == ["asked"])
        #expect(script.events == [.started, .passwordChecked(true)])
        #expect(run(fixture.loop) { script.events.count == 4 })
        let later = script.events.dropFirst(2).map { $0 == .passwordChecked(true) ? "right" : "\($0)" }
        #expect(later.sorted() == ["passwordChecked(false)", "right"])
        #expect(script.deepest == 1)
    }

    @Test func anAnswerAfterCloseIsDropped() throws {
        let fixture = try Fixture()
        defer { withExtendedLifetime(fixture) {} }
        let host = AskingHost(loop: fixture.loop)
        host.holdAnswers = true
        let script = Script()
        let machine = ScriptedMachine(script: script) { event, _ in
            event == .started
                ? [.checkPassword(user: Array("alice".utf8), password: Array("secret".utf8)), .close] : []
        }
        let driver = SessionDriver(
            host: host, machine: machine, client: fixture.accepted, peer: fixture.peer, id: 3, names: nil)
        defer { withExtendedLifetime(driver) {} }
        driver.start()
        #expect(host.ended == [3])
        for answer in host.held { answer(true) }
        #expect(host.held.count == 1)
        #expect(script.events == [.started])
    }

    @Test func aHostThatChecksNoPasswordsSaysWrong() throws {
        let fixture = try Fixture()
        defer { withExtendedLifetime(fixture) {} }
        let script = Script()
        let machine = ScriptedMachine(script: script) { event, _ in
            event == .started ? [.checkPassword(user: Array("alice".utf8), password: Array("secret".utf8))] : []
        }
        let driver = SessionDriver(
            host: fixture.host, machine: machine, client: fixture.accepted, peer: fixture.peer, id: 4, names: nil)
        defer { withExtendedLifetime(driver) {} }
        driver.start()
        #expect(script.events == [.started, .passwordChecked(false)])
    }

    @Test func identAsksTheClientsHostAboutTheClientConnection() throws {
        let fixture = try Fixture()
        defer { withExtendedLifetime(fixture) {} }
        let identd = try ScriptedIdentd(user: "alice")
        let host = AskingHost(loop: fixture.loop)
        host.identPort = identd.port
        let script = Script()
        let machine = ScriptedMachine(script: script) { event, _ in
            event == .started ? [.askIdent(timeout: .seconds(5))] : []
        }
        let driver = SessionDriver(
            host: host, machine: machine, client: fixture.accepted, peer: fixture.peer, id: 5, names: nil)
        defer { withExtendedLifetime(driver) {} }
        driver.start()
        #expect(script.events == [.started])
        #expect(
            run(fixture.loop) {
                identd.serve()
                return script.events.count == 2
            })
        #expect(script.events.last == .identAnswered(.success(Array("alice".utf8))))
        // RFC 1413: the port on the client's host first, then ours; from our address.
        let local = try Socket.localEndpoint(fixture.accepted)
        #expect(text(identd.request) == "\(fixture.peer.port) , \(local.port)\r\n")
        #expect(identd.peer?.address == local.address)
    }

    @Test func identWithNoServerFailsAndANewQueryReplacesTheOld() throws {
        let fixture = try Fixture()
        defer { withExtendedLifetime(fixture) {} }
        let (unused, _) = try loopbackServer()
        let port = try Socket.localEndpoint(unused).port
        close(unused)  // nothing listens there now
        let host = AskingHost(loop: fixture.loop)
        host.identPort = port
        let script = Script()
        let machine = ScriptedMachine(script: script) { event, _ in
            event == .started ? [.askIdent(timeout: .seconds(5)), .askIdent(timeout: .seconds(5))] : []
        }
        let driver = SessionDriver(
            host: host, machine: machine, client: fixture.accepted, peer: fixture.peer, id: 6, names: nil)
        defer { withExtendedLifetime(driver) {} }
        driver.start()
        #expect(run(fixture.loop) { script.events.count >= 2 })
        fixture.loop.runOnce(timeout: .milliseconds(50))
        #expect(script.events == [.started, .identAnswered(.failure(.system(SystemError(errno: ECONNREFUSED))))])
    }

    @Test func aDetachedProgramRunsOnItsOwnAndTheSessionNeverHearsOfIt() throws {
        let fixture = try Fixture()
        defer { withExtendedLifetime(fixture) {} }
        let file = "/tmp/bastion-detached-test-\(getpid())"
        defer { unlink(file) }
        let script = Script()
        let program = SessionProgram(
            argv: [
                "sh", "-c",
                "echo \"$(readlink /proc/$$/fd/0) $(readlink /proc/$$/fd/1) $(readlink /proc/$$/fd/2)\" > \(file)",
            ],
            environment: [Array("PATH=/bin:/usr/bin".utf8)])
        let machine = ScriptedMachine(script: script) { event, _ in
            guard event == .started else { return [] }
            return [
                .read(.client), .runDetached(program),
                .runDetached(SessionProgram(argv: ["/nonexistent/detached"], environment: [])),
            ]
        }
        let driver = SessionDriver(
            host: fixture.host, machine: machine, client: fixture.accepted, peer: fixture.peer, id: 7, names: nil)
        defer { withExtendedLifetime(driver) {} }
        driver.start()
        #expect(fixture.host.adopted.count == 1)
        #expect(
            fixture.host.lines == ["connection 7: unable to run /nonexistent/detached: \(SystemError(errno: ENOENT))"])
        #expect(run(fixture.loop) { fixture.host.released.count == 1 })
        #expect(fixture.host.adopted.isEmpty, "reaped and released")
        let written = try FD.readWholeFile(file)
        #expect(text(written) == "/dev/null /dev/null /dev/null\n")
        // The session heard nothing, and the client got nothing of the program.
        fixture.loop.runOnce(timeout: .milliseconds(20))
        #expect(script.events == [.started])
        var got: [UInt8] = []
        #expect(!receiveNow(fixture.client, into: &got))
        #expect(got.isEmpty)
    }
}

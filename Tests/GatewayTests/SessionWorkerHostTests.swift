#if canImport(Glibc)
import Glibc
#endif
import Gateway
import GatewayKit
import Loop
import Testing

// SessionWorker as the real SessionHost: what a daemon's factory adds (password checks) and
// what the worker keeps for the daemon (a detached program).

final class NoListeners: ServingTable {
    var listenerSockets: [Listener] { [] }
    var configurationPath: String { "test" }
    func restricted(to fds: Set<Int32>) -> Self { self }
}

/// A daemon whose users are alice with the password "secret".
final class PasswordFactory: SessionFactory {
    var asked: [String] = []

    func session(
        for client: Int32, peer: Endpoint, listener: Int32, table: NoListeners, id: UInt64,
        worker: SessionWorker<PasswordFactory>
    ) -> SessionDriver? { nil }

    func checkPassword(user: [UInt8], password: [UInt8], session: SessionDriver, answer: @escaping (Bool) -> Void) {
        asked.append(text(user))
        answer(user == Array("alice".utf8) && password == Array("secret".utf8))
    }
}

/// A daemon that checks no passwords.
final class PlainFactory: SessionFactory {
    func session(
        for client: Int32, peer: Endpoint, listener: Int32, table: NoListeners, id: UInt64,
        worker: SessionWorker<PlainFactory>
    ) -> SessionDriver? { nil }
}

@Suite("The session worker as the sessions' host")
struct SessionWorkerHostTests {
    @Test func passwordChecksGoToTheFactory() throws {
        let fixture = try Fixture()
        defer { withExtendedLifetime(fixture) {} }
        let factory = PasswordFactory()
        let worker = SessionWorker(loop: fixture.loop, log: DaemonLog(targets: []), factory: factory)
        #expect(worker.identPort == 113)
        let script = Script()
        let machine = ScriptedMachine(script: script) { event, _ in
            switch event {
            case .started:
                return [
                    .checkPassword(user: Array("alice".utf8), password: Array("secret".utf8)),
                    .checkPassword(user: Array("bob".utf8), password: Array("secret".utf8)),
                ]
            case .passwordChecked(false): return [.close]
            default: return []
            }
        }
        worker.serve(
            SessionDriver(
                host: worker, machine: machine, client: fixture.accepted, peer: fixture.peer, id: 1, names: nil))
        #expect(factory.asked == ["alice", "bob"])
        #expect(script.events == [.started, .passwordChecked(true), .passwordChecked(false)])
        #expect(worker.isIdle)
    }

    @Test func aFactoryWithoutPasswordsSaysWrong() throws {
        let fixture = try Fixture()
        defer { withExtendedLifetime(fixture) {} }
        let worker = SessionWorker(loop: fixture.loop, log: DaemonLog(targets: []), factory: PlainFactory())
        let script = Script()
        let machine = ScriptedMachine(script: script) { event, _ in
            event == .started ? [.checkPassword(user: Array("alice".utf8), password: Array("secret".utf8))] : []
        }
        worker.serve(
            SessionDriver(
                host: worker, machine: machine, client: fixture.accepted, peer: fixture.peer, id: 2, names: nil))
        #expect(script.events == [.started, .passwordChecked(false)])
    }

    @Test func aDetachedProgramKeepsTheWorkerBusyUntilItExits() throws {
        let fixture = try Fixture()
        defer { withExtendedLifetime(fixture) {} }
        let worker = SessionWorker(loop: fixture.loop, log: DaemonLog(targets: []), factory: PlainFactory())
        let script = Script()
        let machine = ScriptedMachine(script: script) { event, _ in
            guard event == .started else { return [] }
            return [.runDetached(SessionProgram(argv: ["/bin/sleep", "0.2"], environment: [])), .close]
        }
        worker.serve(
            SessionDriver(
                host: worker, machine: machine, client: fixture.accepted, peer: fixture.peer, id: 3, names: nil))
        #expect(worker.sessions.isEmpty)
        // inetd mode ends when the worker is idle: not before the program has been reaped.
        #expect(!worker.isIdle)
        #expect(run(fixture.loop) { worker.isIdle })
        #expect(script.events == [.started])
    }
}

#if canImport(Glibc)
import Glibc
#endif
import GatewayKit
import Loop

/// What a daemon adds to a ``SessionWorker``: the session for a connection, and recordings.
/// Called on the worker's loop thread.
public protocol SessionFactory: AnyObject {
    associatedtype Table: ServingTable
    /// The session for `client` (non-blocking, from `peer`) accepted on `listener` of `table`,
    /// numbered `id`; nil closes the connection.
    func session(
        for client: Int32, peer: Endpoint, listener: Int32, table: Table, id: UInt64, worker: SessionWorker<Self>
    ) -> SessionDriver?
    /// Opens the recording a session's machine asked for.
    func recorder(for request: RecordingRequest, session: SessionDriver) -> Result<
        any SessionRecorder, RecordingFailure
    >
    /// Whether `password` is `user`'s, as ``SessionHost/checkPassword(user:password:session:answer:)``
    /// asks: off the loop, `answer` once on the loop's thread.
    func checkPassword(
        user: [UInt8], password: [UInt8], session: SessionDriver, answer: @escaping (Bool) -> Void)
}

extension SessionFactory {
    /// By default nothing is recorded.
    public func recorder(for request: RecordingRequest, session: SessionDriver) -> Result<
        any SessionRecorder, RecordingFailure
    > {
        .failure(RecordingFailure(path: request.basename, error: SystemError(errno: ENOSYS)))
    }

    /// By default every password is wrong.
    public func checkPassword(
        user: [UInt8], password: [UInt8], session: SessionDriver, answer: @escaping (Bool) -> Void
    ) {
        answer(false)
    }
}

/// A daemon's state on one event loop, the same for every daemon: an acceptor per listener of
/// the current table, the sessions it runs (each a ``SessionDriver``, whose ``SessionHost`` it
/// is), the programs that took connections over, and the pause when descriptors run out:
/// accepting pauses (clients wait in the listen queue rather than being accepted and closed)
/// and sessions that found no descriptor for their server connection are tried again every
/// 100 ms, ahead of new clients, so the descriptors that free up go to them first. Pauses are
/// logged at most once per 10 s. Touched only on its loop's thread.
public final class SessionWorker<Factory: SessionFactory>: AcceptorDelegate, SessionHost, LoopWorker {
    public typealias Table = Factory.Table

    public let loop: EventLoop
    public let log: DaemonLog
    public let factory: Factory
    /// The table new connections are served with.
    public private(set) var table: Table?
    private var acceptors: [Acceptor] = []
    /// The sessions running, by connection number.
    public private(set) var sessions: [UInt64: SessionDriver] = [:]
    private var children: [Int32: ChildProgram] = [:]

    public init(loop: EventLoop, log: DaemonLog, factory: Factory) {
        self.loop = loop
        self.log = log
        self.factory = factory
    }

    // MARK: - LoopWorker

    public func install(_ table: Table) {
        for acceptor in acceptors { acceptor.stop() }
        acceptors = []
        self.table = table
        for listener in table.listenerSockets {
            let acceptor = Acceptor(loop: loop, listener: listener.fd, delegate: self)
            do {
                // Sessions waiting for descriptors go first (see waitForDescriptors).
                if !waitingForDescriptors.isEmpty { acceptor.hold() }
                try acceptor.start()
                acceptors.append(acceptor)
            } catch {
                log.error("unable to accept on \(listener.key): \(error)")
            }
        }
    }

    public func stopAccepting() {
        for acceptor in acceptors { acceptor.stop() }
        acceptors = []
    }

    public var sessionCount: Int { sessions.count }

    /// SIGUSR2: one line per open connection; how many are open.
    public func logConnections() -> Int {
        var open = 0
        for session in sessions.values.sorted(by: { $0.id < $1.id }) {
            guard let line = session.statusLine else { continue }
            log.notice(line)
            open += 1
        }
        return open
    }

    /// No session and no program left (inetd mode ends then).
    public var isIdle: Bool { sessions.isEmpty && children.isEmpty }

    // MARK: - Sessions

    /// Runs `session` (one that did not come through an acceptor: inetd mode).
    public func serve(_ session: SessionDriver) {
        sessions[session.id] = session
        session.start()
    }

    public func acceptor(_ acceptor: Acceptor, accepted fd: Int32, peer: SocketAddress) {
        guard let table, let endpoint = peer.endpoint,
            let session = factory.session(
                for: fd, peer: endpoint, listener: acceptor.listener, table: table, id: ConnectionNumbers.next(),
                worker: self)
        else {
            close(fd)
            return
        }
        serve(session)
    }

    public func acceptor(_ acceptor: Acceptor, failed error: SystemError) {
        // EINVAL: the listener was shut down by a reload that removed it.
        if error.errno == EINVAL {
            acceptor.stop()
            return
        }
        log.error("accept failed: \(error)")
    }

    // MARK: - Out of descriptors

    private var lastPauseReport: UInt64 = 0
    private var pausesNotReported = 0

    public func acceptor(_ acceptor: Acceptor, pausedBy error: SystemError) {
        reportPause(error)
    }

    private func reportPause(_ error: SystemError) {
        let now = loop.now.nanoseconds
        guard lastPauseReport == 0 || now &- lastPauseReport >= 10_000_000_000 else {
            pausesNotReported += 1
            return
        }
        let more = pausesNotReported > 0 ? " (\(pausesNotReported) more pauses since the last report)" : ""
        log.warning("accepting paused for a moment: \(error)\(more)")
        lastPauseReport = now
        pausesNotReported = 0
    }

    /// Sessions whose connect found no descriptor, tried again after a pause.
    private var waitingForDescriptors: [SessionDriver] = []
    private lazy var descriptorRetry = LoopTimer(loop: loop) { [unowned self] in self.retryWaitingSessions() }

    public func waitForDescriptors(_ session: SessionDriver, error: SystemError) {
        waitingForDescriptors.append(session)
        // Accepting waits until the waiting sessions are served.
        for acceptor in acceptors { acceptor.hold() }
        reportPause(error)
        descriptorRetry.setUnlessArmed(after: .milliseconds(100))
    }

    private func retryWaitingSessions() {
        let sessions = waitingForDescriptors
        waitingForDescriptors = []
        for session in sessions { session.descriptorPauseOver() }  // may wait again
        if waitingForDescriptors.isEmpty {
            for acceptor in acceptors { acceptor.release() }
        }
    }

    // MARK: - SessionHost

    public func log(_ level: LogLevel, _ line: String) { log.log(level, line) }

    public func sessionEnded(_ session: SessionDriver) {
        sessions[session.id] = nil
    }

    /// Keeps a program that took a connection over until it exits.
    public func adopt(_ child: ChildProgram) {
        children[child.pid] = child
    }

    public func release(_ pid: Int32) {
        children[pid] = nil
    }

    public func recorder(for request: RecordingRequest, session: SessionDriver) -> Result<
        any SessionRecorder, RecordingFailure
    > {
        factory.recorder(for: request, session: session)
    }

    public func checkPassword(
        user: [UInt8], password: [UInt8], session: SessionDriver, answer: @escaping (Bool) -> Void
    ) {
        factory.checkPassword(user: user, password: password, session: session, answer: answer)
    }
}

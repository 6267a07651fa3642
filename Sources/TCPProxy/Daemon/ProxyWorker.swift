#if canImport(Glibc)
import Glibc
#endif
import CBastion
import Gateway
import GatewayKit
import Loop
import Relay

/// The state of one event loop of the daemon: its acceptors for the current service table,
/// the sessions it serves and the programs it started. Touched only on its loop's thread.
/// Each session is a ``ProxySessionMachine`` run by a ``SessionDriver``; the worker is their
/// ``SessionHost``.
final class ProxyWorker: AcceptorDelegate, SessionHost, LoopWorker {
    let loop: EventLoop
    let log: ProxyLog
    /// The environment programs start from.
    let baseEnvironment: [[UInt8]]
    private(set) var table: ServiceTable?
    private var acceptors: [Acceptor] = []
    private var listenerHandlers: [Int32: (service: Int, handler: Int)] = [:]
    var sessions: [UInt64: SessionDriver] = [:]
    private var children: [Int32: ChildProgram] = [:]

    /// The daemon's pid (the master's when there are worker processes).
    let daemonPID: Int32

    init(loop: EventLoop, log: ProxyLog, baseEnvironment: [[UInt8]], daemonPID: Int32) {
        self.daemonPID = daemonPID
        self.loop = loop
        self.log = log
        self.baseEnvironment = baseEnvironment
    }

    /// Starts serving `table`'s listeners (and stops serving the previous table's). Sessions
    /// already running keep the table they started with.
    func install(_ table: ServiceTable) {
        for acceptor in acceptors { acceptor.stop() }
        acceptors = []
        listenerHandlers = [:]
        self.table = table
        for listener in table.listeners {
            let acceptor = Acceptor(loop: loop, listener: listener.fd, delegate: self)
            // Known before start(): start accepts the connections already waiting.
            listenerHandlers[listener.fd] = (listener.service, listener.handler)
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

    /// Stops accepting (the daemon is reloading into another process or exiting).
    func stopAccepting() {
        for acceptor in acceptors { acceptor.stop() }
        acceptors = []
    }

    func acceptor(_ acceptor: Acceptor, accepted fd: Int32, peer: SocketAddress) {
        guard let table, let target = listenerHandlers[acceptor.listener], let endpoint = peer.endpoint else {
            close(fd)
            return
        }
        start(client: fd, peer: endpoint, table: table, service: target.service, handler: target.handler)
    }

    /// Serves one connection that did not come through an acceptor (inetd mode).
    func serve(client: Int32, peer: Endpoint, table: ServiceTable, service: Int) {
        start(client: client, peer: peer, table: table, service: service, handler: nil)
    }

    private func start(client: Int32, peer: Endpoint, table: ServiceTable, service: Int, handler: Int?) {
        let id = ConnectionNumbers.next()
        let setup = ProxySessionSetup(
            configurationPath: table.configuration.path, service: table.configuration.services[service],
            chosenHandler: handler, targets: table.targets[service], id: id, peer: peer, logLevel: log.maximumLevel,
            baseEnvironment: baseEnvironment, namesAvailable: table.clientNames != nil,
            relayBufferSize: table.relayBufferSize,
            nextSource: { range in table.nextRotatedSource(service: service, handler: handler ?? 0, range: range) })
        let session = SessionDriver(
            host: self, machine: ProxySessionMachine(setup), client: client, peer: peer, id: id,
            names: table.clientNames)
        sessions[id] = session
        session.start()
    }

    /// No connection and no program left.
    var isIdle: Bool { sessions.isEmpty && children.isEmpty }

    /// Pauses accepting in a shortage of descriptors are reported at most once per 10 s.
    private var lastPauseReport: UInt64 = 0
    private var pausesNotReported = 0

    func acceptor(_ acceptor: Acceptor, pausedBy error: SystemError) {
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

    // MARK: - Out of descriptors for outgoing connections

    /// Sessions whose connect found no descriptor: tried again after a pause, while accepting
    /// pauses too (clients wait in the listen queue rather than being accepted and closed).
    private var waitingForDescriptors: [SessionDriver] = []
    private lazy var descriptorRetry = LoopTimer(loop: loop) { [unowned self] in self.retryWaitingSessions() }

    func waitForDescriptors(_ session: SessionDriver, error: SystemError) {
        waitingForDescriptors.append(session)
        // Accepting waits until the waiting sessions are served, so that the descriptors
        // that free up go to them first.
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

    func acceptor(_ acceptor: Acceptor, failed error: SystemError) {
        // EINVAL: the listener was shut down by a reload that removed it.
        if error.errno == EINVAL {
            acceptor.stop()
            return
        }
        log.error("accept failed: \(error)")
    }

    // MARK: - SessionHost

    func log(_ level: LogLevel, _ line: String) { log.log(level, line) }

    func sessionEnded(_ session: SessionDriver) {
        sessions[session.id] = nil
    }

    /// Keeps a handler program's watch alive until it exits.
    func adopt(_ child: ChildProgram) {
        children[child.pid] = child
    }

    /// Called when an adopted program has exited and been waited for.
    func release(_ pid: Int32) {
        children[pid] = nil
    }

    func recorder(for request: RecordingRequest, session: SessionDriver) -> Result<
        any SessionRecorder, RecordingFailure
    > {
        do {
            return .success(
                try ConnectionRecorder(
                    basename: request.basename, pid: daemonPID, connection: session.id, client: session.peer,
                    server: request.server))
        } catch {
            let path = RecordingFormat.fileName(basename: request.basename, pid: daemonPID)
            return .failure(RecordingFailure(path: path, error: error))
        }
    }

    /// SIGUSR2: one line per open connection; how many are open.
    func logConnections() -> Int {
        var open = 0
        for session in sessions.values.sorted(by: { $0.id < $1.id }) {
            guard let line = session.statusLine else { continue }
            log.notice(line)
            open += 1
        }
        return open
    }

    var sessionCount: Int { sessions.count }
}

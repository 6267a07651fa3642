#if canImport(Glibc)
import Glibc
#endif
import CBastion
import GatewayKit
import Loop
import Relay

/// The state of one event loop of the daemon: its acceptors for the current service table,
/// the sessions it serves and the programs it started. Touched only on its loop's thread.
final class ProxyWorker: AcceptorDelegate {
    let loop: EventLoop
    let log: ProxyLog
    let inherited: [[UInt8]]
    let clearEnvironment: Bool
    private(set) var table: ServiceTable?
    private var acceptors: [Acceptor] = []
    private var listenerHandlers: [Int32: (service: Int, handler: Int)] = [:]
    var sessions: [UInt64: ProxySession] = [:]
    private var children: [Int32: ChildProgram] = [:]

    /// The daemon's pid (the master's when there are worker processes).
    let daemonPID: Int32

    init(loop: EventLoop, log: ProxyLog, inherited: [[UInt8]], clearEnvironment: Bool, daemonPID: Int32) {
        self.daemonPID = daemonPID
        self.loop = loop
        self.log = log
        self.inherited = inherited
        self.clearEnvironment = clearEnvironment
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
        let session = ProxySession(
            worker: self, table: table, service: target.service, handler: target.handler, client: fd, peer: endpoint,
            id: ConnectionNumbers.next())
        sessions[session.id] = session
        session.start()
    }

    /// Serves one connection that did not come through an acceptor (inetd mode).
    func serve(client: Int32, peer: Endpoint, table: ServiceTable, service: Int) {
        let session = ProxySession(
            worker: self, table: table, service: service, handler: nil, client: client, peer: peer,
            id: ConnectionNumbers.next())
        sessions[session.id] = session
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
    private var waitingForDescriptors: [ProxySession] = []
    private lazy var descriptorRetry = LoopTimer(loop: loop) { [unowned self] in self.retryWaitingSessions() }

    func waitForDescriptors(_ session: ProxySession, error: SystemError) {
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
        for session in sessions { session.serve() }  // may wait again
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

    func ended(_ session: ProxySession) {
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

    /// SIGUSR2: one line per open connection.
    func logConnections() {
        for session in sessions.values.sorted(by: { $0.id < $1.id }) where session.relay != nil {
            log.notice(session.statusLine)
        }
    }

    var openConnections: Int { sessions.values.filter { $0.relay != nil }.count }
}

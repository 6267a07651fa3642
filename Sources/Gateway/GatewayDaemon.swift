#if canImport(Glibc)
import Glibc
#endif
import CBastion
import GatewayKit
import Loop

// The daemon skeleton every Bastion daemon runs on: one event loop per core serving the
// current table, signals read by the main thread, SIGHUP reloads that keep unchanged
// listeners and keep the old configuration on any error, and, as root with several users to
// serve as, a master holding the listeners with one worker process per user. A daemon plugs
// in its table (``ServingTable``), its per-loop worker (``LoopWorker``) and its service
// (``GatewayService``: how to load, reload and group by user).

/// One loaded configuration of a daemon with its listening sockets, shared read-only by all
/// its loops (and inherited by its worker processes).
public protocol ServingTable: AnyObject, Sendable {
    /// The listening sockets this table serves.
    var listenerSockets: [Listener] { get }
    /// Where the configuration came from, for the log.
    var configurationPath: String { get }
    /// The same configuration serving only the listeners in `fds` (a worker process's share).
    func restricted(to fds: Set<Int32>) -> Self
}

/// A daemon's state on one event loop: its acceptors for the current table and its sessions.
/// Made and used on its loop's thread only.
public protocol LoopWorker: AnyObject {
    associatedtype Table: ServingTable
    /// Starts serving `table`'s listeners (and stops serving the previous table's); sessions
    /// already running keep the table they started with.
    func install(_ table: Table)
    /// Stops accepting (the daemon drains into another process, or exits).
    func stopAccepting()
    /// Sessions still running.
    var sessionCount: Int { get }
    /// SIGUSR2: logs one line per open connection and returns how many there are.
    func logConnections() -> Int
}

/// What a daemon tells the skeleton.
public protocol GatewayService: AnyObject, Sendable {
    associatedtype Worker: LoopWorker
    /// The daemon's log.
    var log: DaemonLog { get }
    /// The pid file to remove on exit.
    var pidFile: String? { get }
    /// Where worker processes chroot to before serving.
    var chroot: String? { get }
    /// A worker for `loop`, called on that loop's thread. `daemonPID` is the pid an admin knows
    /// (the master's when there are worker processes).
    func makeWorker(loop: EventLoop, daemonPID: Int32) -> Worker
    /// SIGHUP's first half: reopen the logs, read the configuration again and build its table
    /// reusing `current`'s unchanged listeners. Nil, with the reason logged, when the old
    /// configuration must stay.
    func reloadedTable(current: Worker.Table) -> Worker.Table?
    /// SIGUSR1: logs every listener with what it serves.
    func logListeners(_ table: Worker.Table)
    /// The listeners of `table` by the user their connections are served as (root's master).
    func credentialGroups(_ table: Worker.Table) throws(StartError) -> [Credential: [Int32]]
}

/// A daemon's event loops, one per core, each with its worker, and the main thread's signal
/// handling: HUP reload, USR1 listeners, USR2 connections, TERM/INT exit (and, in a worker
/// process, QUIT: stop accepting and exit once the last connection has ended).
public final class LoopGroup<Service: GatewayService> {
    public typealias Table = Service.Worker.Table

    public let service: Service
    /// The table the loops serve now.
    public private(set) var table: Table
    private var threads: [EventLoopThread] = []
    private var workers: [WorkerBox] = []
    /// The pid an admin knows (the pid file's).
    public let daemonPID: Int32

    /// Holds a worker; created and used on its loop's thread only.
    final class WorkerBox: @unchecked Sendable {
        var worker: Service.Worker?
    }

    public init(service: Service, table: Table, daemonPID: Int32 = getpid()) {
        self.service = service
        self.table = table
        self.daemonPID = daemonPID
    }

    /// Event loops per process: one per core, at most 16.
    public static var loopCount: Int { max(1, min(16, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))) }

    /// How many event loops serve (fewer than asked when one could not be made).
    public var loopsRunning: Int { threads.count }

    /// Starts `count` event loops serving the table. All loops are made before any accepts, so
    /// that connections taking every descriptor cannot stop the next loop from starting; if a
    /// loop cannot be made all the same (descriptors, threads), the others serve.
    public func start(count: Int = LoopGroup.loopCount) throws(StartError) {
        let service = self.service
        let pid = daemonPID
        for index in 0..<count {
            let box = WorkerBox()
            let thread: EventLoopThread
            do {
                thread = try EventLoopThread.start { loop in box.worker = service.makeWorker(loop: loop, daemonPID: pid)
                }
            } catch {
                if threads.isEmpty { throw StartError("unable to start an event loop: \(error)") }
                service.log.warning(
                    "unable to start event loop \(index + 1) of \(count): \(error); serving with \(index)")
                break
            }
            threads.append(thread)
            workers.append(box)
        }
        let table = self.table
        _ = onEveryWorker { worker in worker.install(table) }
    }

    /// Runs `body` on every loop with its worker and waits for all of them.
    public func onEveryWorker<T: Sendable>(_ body: @escaping @Sendable (Service.Worker) -> T) -> [T] {
        zip(threads, workers).map { thread, box in thread.sync { _ in body(box.worker!) } }
    }

    /// SIGHUP: read the configuration again; on any error keep serving the old one.
    public func reload() {
        Systemd.reloading()
        defer { Systemd.ready() }
        guard let next = service.reloadedTable(current: table) else { return }
        let old = table
        table = next
        _ = onEveryWorker { worker in worker.install(next) }
        Listeners.closeRemoved(old: old.listenerSockets, new: next.listenerSockets, log: service.log)
        service.log.notice(
            "SIGHUP: configuration reloaded from \(next.configurationPath): \(next.listenerSockets.count) listeners")
    }

    /// SIGUSR2: every open client connection, then their number.
    public func logConnections() {
        let counts = onEveryWorker { worker in worker.logConnections() }
        service.log.notice("\(counts.reduce(0, +)) open connections")
    }

    /// The main thread's loop: waits for signals until TERM or INT.
    public func runSignals(_ signals: SignalQueue) -> Never {
        Systemd.ready()
        while true {
            Systemd.watchdogIfDue()
            for s in signals.wait(milliseconds: Systemd.waitMilliseconds) {
                switch s {
                case SIGHUP: reload()
                case SIGUSR1: service.logListeners(table)
                case SIGUSR2: logConnections()
                case SIGTERM, SIGINT:
                    Systemd.stopping()
                    service.log.notice("exiting on signal \(s)")
                    if let pid = service.pidFile { Daemon.removePidFile(pid) }
                    exit(0)
                default: break
                }
            }
        }
    }

    /// A worker process's main thread (see ``MasterProcess``): TERM/INT exit at once; QUIT
    /// stops accepting and exits when the last connection has ended; USR2 logs the
    /// connections. `ack` (a pipe to the master) gets a byte once accepting has stopped.
    public func runWorkerSignals(_ signals: SignalQueue, ack: Int32) -> Never {
        var quitting = false
        while true {
            for s in signals.wait(milliseconds: quitting ? 200 : -1) {
                switch s {
                case SIGTERM, SIGINT: exit(0)
                case SIGQUIT:
                    quitting = true
                    _ = onEveryWorker { worker in worker.stopAccepting() }
                    // The master closes listeners it no longer serves; ours must go too, or a
                    // removed port would keep taking connections nobody accepts.
                    for listener in table.listenerSockets { close(listener.fd) }
                    if ack >= 0 {
                        var byte: UInt8 = 1
                        _ = write(ack, &byte, 1)
                        close(ack)
                    }
                case SIGUSR2: logConnections()
                default: break
                }
            }
            if quitting && onEveryWorker({ worker in worker.sessionCount }).reduce(0, +) == 0 { exit(0) }
        }
    }
}

/// Root's process when the connections are served as different users: it keeps the
/// listeners (and root, to bind new privileged ports on reload) and runs one worker process
/// per user, each serving the listeners of its users as that user. It never serves a
/// connection itself.
///
/// SIGHUP: a new table (unchanged listeners kept), new workers for it, and the old workers told
/// (SIGQUIT) to stop accepting and exit once their connections have ended. SIGUSR1: listeners.
/// SIGUSR2: passed to the workers. TERM/INT: workers end, then the master. A worker that dies
/// unexpectedly is started again.
public final class MasterProcess<Service: GatewayService> {
    public typealias Table = Service.Worker.Table

    let service: Service
    var table: Table
    var workers: [Int32: (credential: Credential, fds: [Int32], ack: Int32)] = [:]
    var draining = Set<Int32>()
    let signals: SignalQueue
    let masterPID = getpid()
    var log: DaemonLog { service.log }

    /// A master for `table`; `signals` (HUP, USR1, USR2, TERM, INT, CHLD) are already blocked.
    public init(service: Service, table: Table, signals: SignalQueue) {
        self.service = service
        self.table = table
        self.signals = signals
    }

    func spawn(_ credential: Credential, fds: [Int32]) {
        // The worker writes a byte on this pipe once it has stopped accepting (SIGQUIT).
        var ack: [Int32] = [-1, -1]
        if bastion_pipe_nonblocking(&ack) != 0 { ack = [-1, -1] }
        let pid = fork()
        if pid < 0 {
            log.error("unable to start the worker for \(credential): \(SystemError.current)")
            if ack[0] >= 0 {
                close(ack[0])
                close(ack[1])
            }
            return
        }
        if pid == 0 {
            if ack[0] >= 0 { close(ack[0]) }
            runWorker(credential, fds: Set(fds), ack: ack[1])
        }
        if ack[1] >= 0 { close(ack[1]) }
        workers[pid] = (credential, fds, ack[0])
        log.notice("worker \(pid) serves \(fds.count) listeners as \(credential)")
    }

    /// The worker process: drop to the credential, serve its listeners until told to stop.
    func runWorker(_ credential: Credential, fds: Set<Int32>, ack: Int32) -> Never {
        signals.resetForChild()
        closeListeners(except: fds)
        let workerSignals: SignalQueue
        do { workerSignals = try SignalQueue([SIGTERM, SIGINT, SIGQUIT, SIGUSR2, SIGHUP]) } catch {
            log.error("worker: unable to catch signals: \(error)")
            exit(1)
        }
        do { try Credential.become(credential, chroot: service.chroot) } catch {
            log.error("worker for \(credential): \(error)")
            exit(1)
        }
        // A worker does not outlive its master (killed with SIGKILL, say): it is told with
        // SIGTERM and ends as on SIGTERM. Set after the credential change, which clears it.
        _ = bastion_set_parent_death_signal(SIGTERM)
        if getppid() != masterPID {
            log.error("worker for \(credential): the master is gone")
            exit(1)
        }
        let group = LoopGroup(service: service, table: table.restricted(to: fds), daemonPID: masterPID)
        do { try group.start() } catch {
            log.error("worker for \(credential): \(error)")
            exit(1)
        }
        group.runWorkerSignals(workerSignals, ack: ack)
    }

    /// In a worker: closes the listeners another worker serves. (What a function that never
    /// returns makes may live on unreachable until the process exits, so `runWorker` and
    /// `run` leave such work to functions that do return.)
    private func closeListeners(except fds: Set<Int32>) {
        for listener in table.listenerSockets where !fds.contains(listener.fd) { close(listener.fd) }
    }

    /// A worker per user of the table.
    private func startWorkers() {
        do {
            for (credential, fds) in try service.credentialGroups(table) { spawn(credential, fds: fds) }
        } catch {
            log.error(error.description)
            exit(1)
        }
    }

    /// Starts a worker per user and handles signals until TERM or INT.
    public func run() -> Never {
        ConnectionNumbers.prepare()  // before the first fork: every worker shares the counter
        startWorkers()
        Systemd.ready()
        while true {
            Systemd.watchdogIfDue()
            for s in signals.wait(milliseconds: Systemd.waitMilliseconds) {
                switch s {
                case SIGHUP: reload()
                case SIGUSR1: service.logListeners(table)
                case SIGUSR2: for pid in Array(workers.keys) + Array(draining) { kill(pid, SIGUSR2) }
                case SIGCHLD: reap()
                case SIGTERM, SIGINT:
                    Systemd.stopping()
                    log.notice("exiting on signal \(s)")
                    for pid in Array(workers.keys) + Array(draining) { kill(pid, SIGTERM) }
                    if let pid = service.pidFile { Daemon.removePidFile(pid) }
                    exit(0)
                default: break
                }
            }
        }
    }

    func reap() {
        var status: Int32 = 0
        while true {
            let pid = waitpid(-1, &status, WNOHANG)
            if pid <= 0 { return }
            if draining.remove(pid) != nil {
                log.notice("worker \(pid) finished its connections and exited")
            } else if let worker = workers.removeValue(forKey: pid) {
                if worker.ack >= 0 { close(worker.ack) }
                log.error(
                    "worker \(pid) (\(worker.credential)) exited unexpectedly (\(WaitStatus.describe(status))); "
                        + "starting it again")
                spawn(worker.credential, fds: worker.fds)
            }
        }
    }

    func reload() {
        Systemd.reloading()
        defer { Systemd.ready() }
        guard let next = service.reloadedTable(current: table) else { return }
        let nextGroups: [Credential: [Int32]]
        do { nextGroups = try service.credentialGroups(next) } catch {
            log.error("SIGHUP: configuration not reloaded, keeping the old one: \(error)")
            let current = Set(table.listenerSockets.map(\.fd))
            for listener in next.listenerSockets where !current.contains(listener.fd) { close(listener.fd) }
            return
        }
        let old = table
        table = next
        // The old workers stop accepting first (each says so on its pipe; the kernel queues
        // what arrives meanwhile), so no connection reaches the old configuration afterwards.
        let oldWorkers = workers
        workers = [:]
        var acks: [pollfd] = []
        for (pid, worker) in oldWorkers {
            kill(pid, SIGQUIT)
            draining.insert(pid)
            if worker.ack >= 0 { acks.append(pollfd(fd: worker.ack, events: Int16(POLLIN), revents: 0)) }
        }
        let deadline = Deadline.after(.seconds(2))
        while !acks.isEmpty && !deadline.hasPassed {
            let waitMs = Int32(clamping: deadline.remaining.components.seconds * 1000 + 10)
            if poll(&acks, nfds_t(acks.count), waitMs) <= 0 { continue }
            acks.removeAll { $0.revents != 0 }
        }
        for worker in oldWorkers.values where worker.ack >= 0 { close(worker.ack) }
        for (credential, fds) in nextGroups { spawn(credential, fds: fds) }
        Listeners.closeRemoved(old: old.listenerSockets, new: next.listenerSockets, log: log)
        log.notice(
            "SIGHUP: configuration reloaded from \(next.configurationPath): \(next.listenerSockets.count) listeners")
    }
}

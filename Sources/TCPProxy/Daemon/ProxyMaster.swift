#if canImport(Glibc)
import Glibc
#endif
import CBastion
import GatewayKit

/// Root's process when the services name different users: it keeps the listeners (and root,
/// to bind new privileged ports on reload) and runs one worker process per user, each serving
/// the listeners of its handlers as that user. It never serves a connection itself.
///
/// SIGHUP: a new table (unchanged listeners kept), new workers for it, and the old workers told
/// (SIGQUIT) to stop accepting and exit once their connections have ended. SIGUSR1: listeners.
/// SIGUSR2: passed to the workers. TERM/INT: workers end, then the master. A worker that dies
/// unexpectedly is started again.
final class ProxyMaster {
    let options: TCPProxyOptions
    let log: ProxyLog
    let builder: TableBuilder
    var table: ServiceTable
    var workers: [Int32: (credential: Credential, fds: [Int32], ack: Int32)] = [:]
    var draining = Set<Int32>()
    let signals: SignalQueue
    let masterPID = getpid()

    init(options: TCPProxyOptions, log: ProxyLog, table: ServiceTable, builder: TableBuilder, signals: SignalQueue) {
        self.options = options
        self.log = log
        self.table = table
        self.builder = builder
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
        for listener in table.listeners where !fds.contains(listener.fd) { close(listener.fd) }
        let workerSignals: SignalQueue
        do { workerSignals = try SignalQueue([SIGTERM, SIGINT, SIGQUIT, SIGUSR2, SIGHUP]) } catch {
            log.error("worker: unable to catch signals: \(error)")
            exit(1)
        }
        do { try CredentialPlan.become(credential, chroot: options.chroot) } catch {
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
        let daemon = ProxyDaemon(
            options: options, log: log, table: table.restricted(to: fds), builder: builder, daemonPID: masterPID)
        do { try daemon.startLoops(count: ProxyDaemon.loopCount) } catch {
            log.error("worker for \(credential): \(error)")
            exit(1)
        }
        daemon.runWorkerSignals(workerSignals, ack: ack)
    }

    func groups(_ table: ServiceTable) throws(ProxyStartError) -> [Credential: [Int32]] {
        var groups: [Credential: [Int32]] = [:]
        for listener in table.listeners {
            let handler = table.configuration.services[listener.service].handlers[listener.handler]
            groups[try CredentialPlan.credential(of: handler, table.configuration.path), default: []].append(
                listener.fd)
        }
        return groups
    }

    func run() -> Never {
        ConnectionNumbers.prepare()  // before the first fork: every worker shares the counter
        do {
            for (credential, fds) in try groups(table) { spawn(credential, fds: fds) }
        } catch {
            log.error(error.description)
            exit(1)
        }
        while true {
            for s in signals.wait() {
                switch s {
                case SIGHUP: reload()
                case SIGUSR1: ProxyDaemon(options: options, log: log, table: table, builder: builder).logListeners()
                case SIGUSR2: for pid in Array(workers.keys) + Array(draining) { kill(pid, SIGUSR2) }
                case SIGCHLD: reap()
                case SIGTERM, SIGINT:
                    log.notice("exiting on signal \(s)")
                    for pid in Array(workers.keys) + Array(draining) { kill(pid, SIGTERM) }
                    if let pid = options.pidFile { Daemon.removePidFile(pid) }
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
                    "worker \(pid) (\(worker.credential)) exited unexpectedly (\(WaitStatus.describe(status))); starting it again"
                )
                spawn(worker.credential, fds: worker.fds)
            }
        }
    }

    func reload() {
        guard let next = ProxyDaemon.reloadedTable(options, builder: builder, current: table, log: log) else { return }
        let nextGroups: [Credential: [Int32]]
        do { nextGroups = try groups(next) } catch {
            log.error("SIGHUP: configuration not reloaded, keeping the old one: \(error)")
            let current = Set(table.listeners.map(\.fd))
            for listener in next.listeners where !current.contains(listener.fd) { close(listener.fd) }
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
        ProxyDaemon.closeRemovedListeners(old: old, new: next, log: log)
        log.notice("SIGHUP: configuration reloaded from \(next.configuration.path): \(next.listeners.count) listeners")
    }
}

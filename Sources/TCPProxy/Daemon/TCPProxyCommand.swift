#if canImport(Glibc)
import Glibc
#endif
import Gateway
import GatewayKit
import Loop
import Relay

/// `tcpproxy`: the command. Usage and configuration errors exit 1 with a message naming what
/// and where; the daemon exits 0 on SIGTERM/SIGINT.
public enum TCPProxyCommand {
    static func fail(_ message: String) -> Never {
        Stderr.line("tcpproxy: \(message)")
        exit(1)
    }

    public static func main(_ arguments: [String] = CommandLine.arguments) -> Never {
        Systemd.prepare()  // before anything copies the environment: no program inherits it
        let options: TCPProxyOptions
        do { options = try TCPProxyOptions.parse(Array(arguments.dropFirst())) } catch {
            Stderr.line("tcpproxy: \(error)")
            Stderr.line("usage: tcpproxy [options] [server]   (tcpproxy --help lists them)")
            exit(1)
        }
        if options.help {
            try? FD.writeAll(1, ProxyHelp.text)
            exit(0)
        }
        let mode = ProxyPlan.mode(options, stdinIsSocket: Inetd.stdinIsSocket())
        let configuration: ProxyConfiguration
        do { configuration = try ProxyPlan.configuration(options) } catch { fail(error.description) }
        // Warnings (a repeated setting) go to standard error, before the daemon detaches, so whoever
        // starts it sees them, and to the log; in inetd mode only to the log, since inetd may have
        // made the client's socket standard error.
        if mode != .inetd && !logsWarningsToStderr(options, mode) {
            for warning in configuration.warnings { Stderr.line("tcpproxy: warning: \(warning)") }
        }

        if case .list(let level) = mode {
            if level >= 3 {
                try? FD.writeAll(1, configuration.text)
            } else {
                let lines = configuration.listing(level >= 2 ? .basic : .ports)
                try? FD.writeAll(1, lines.map { $0 + "\n" }.joined())
            }
            exit(0)
        }
        let name = options.logname ?? configuration.logname ?? "tcpproxy"
        let targets =
            options.logTargets.isEmpty
            ? [LogTarget(kind: .syslog(name: name, facility: LOG_DAEMON), level: .notice)] : options.logTargets
        let log = ProxyLog(targets: targets)
        for warning in configuration.warnings { log.warning(warning.description) }
        for notice in configuration.insecureTLSNotices { log.warning(notice) }
        if mode == .inetd { serveInetd(options, configuration, log) }

        if configuration.standalone == false && !options.standalone {
            fail("\(configuration.path) says \"standalone no\": start tcpproxy from inetd, or give --standalone")
        }
        let builder = TableBuilder(bufferSize: options.bufferSize, clientNames: options.clientNames)
        let table: ServiceTable
        do { table = try builder.build(configuration, reusing: nil) } catch { fail(error.description) }
        Systemd.closeUntaken { log.warning($0) }
        if table.listeners.isEmpty { fail("\(configuration.path): nothing to listen on") }

        // Signals are blocked before any thread starts, so every thread inherits the mask and
        // only the main thread's signalfd sees them.
        let signals: SignalQueue
        do { signals = try SignalQueue([SIGHUP, SIGUSR1, SIGUSR2, SIGTERM, SIGINT, SIGCHLD]) } catch {
            fail("unable to catch signals: \(error)")
        }
        signal(SIGPIPE, SIG_IGN)
        let plan: CredentialPlan
        do {
            plan = try CredentialPlan.make(options, configuration, listeners: table.listeners, isRoot: geteuid() == 0)
        } catch { fail(error.description) }
        if options.daemonize {
            do { try Daemon.detach() } catch { fail("unable to become a daemon: \(error)") }
        }
        if let pidFile = options.pidFile {
            do { try Daemon.writePidFile(pidFile) } catch { fail("unable to write pid file \(pidFile): \(error)") }
        }
        for listener in table.listeners { log.notice("listening on \(listener.key)") }
        let service = TCPProxyService(options: options, log: log, builder: builder)
        switch plan {
        case .perCredential:
            log.notice("tcpproxy started (pid \(getpid()), a worker process per user, \(configuration.path))")
            MasterProcess(service: service, table: table, signals: signals).run()
        case .single(let credential):
            do { try Credential.become(credential, chroot: options.chroot) } catch { fail(error.description) }
        case .unchanged:
            do { try Credential.become(nil, chroot: options.chroot) } catch { fail(error.description) }
        }
        let loops = LoopGroup(service: service, table: table)
        do { try loops.start() } catch { fail(error.description) }
        log.notice("tcpproxy started (pid \(getpid()), \(loops.loopsRunning) event loops, \(configuration.path))")
        loops.runSignals(signals)
    }

    /// True when a log target already shows warnings on standard error (then configuration
    /// warnings are not printed there a second time). Listings have no log.
    static func logsWarningsToStderr(_ options: TCPProxyOptions, _ mode: ProxyMode) -> Bool {
        if case .list = mode { return false }
        return options.logTargets.contains { $0.kind == .stderr && $0.level >= .warning }
    }

    /// inetd mode: serve the connection on standard input with the service for its local
    /// port and address, then exit.
    static func serveInetd(_ options: TCPProxyOptions, _ configuration: ProxyConfiguration, _ log: ProxyLog) -> Never {
        signal(SIGPIPE, SIG_IGN)
        let local: Endpoint
        let peer: Endpoint
        do { (peer, local) = try Inetd.endpoints() } catch { fail(error.description) }
        let serviceIndex: Int
        if configuration.services.count == 1 && configuration.services[0].port == 0 {
            serviceIndex = 0
        } else {
            guard
                let found = configuration.services.indices.first(where: {
                    configuration.services[$0].port == local.port
                        && configuration.services[$0].handler(forLocalAddress: local.address) != nil
                })
            else {
                log.error("no service in \(configuration.path) for \(local)")
                exit(1)
            }
            serviceIndex = found
        }
        let table: ServiceTable
        do {
            var only = configuration
            only.services = [configuration.services[serviceIndex]]
            let builder = TableBuilder(bufferSize: options.bufferSize, clientNames: options.clientNames)
            table = try builder.resolvedOnly(only)
        } catch {
            log.error(error.description)
            exit(1)
        }
        let loop: EventLoop
        do { loop = try EventLoop() } catch { fail("unable to start an event loop: \(error)") }
        let client = Inetd.takeClient()
        let worker = ProxySessions.worker(
            loop: loop, log: log, baseEnvironment: options.clearEnvironment ? [] : Environment.current(),
            daemonPID: getpid())
        let id = ConnectionNumbers.next()
        let setup = worker.factory.setup(table: table, service: 0, handler: nil)
        worker.serve(
            SessionDriver(
                host: worker, machine: ProxySessionMachine(setup, id: id, peer: peer), client: client, peer: peer,
                id: id, names: table.clientNames))
        Inetd.run(loop) { worker.isIdle }
        exit(0)
    }
}

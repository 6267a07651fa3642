#if canImport(Glibc)
import Glibc
#endif
import Gateway
import GatewayKit
import Loop
import TLS

/// `pop3.proxy`: the command. Usage errors exit 1 with a message naming what is wrong; the
/// inetd mode exits 0 when its session has ended, the daemon on SIGTERM or SIGINT.
public enum POP3ProxyCommand {
    static func fail(_ message: String) -> Never {
        Stderr.line("pop3.proxy: \(message)")
        exit(1)
    }

    public static func main(_ arguments: [String] = CommandLine.arguments) -> Never {
        Systemd.prepare()  // before anything copies the environment: no program inherits it
        let options: POP3ProxyOptions
        do { options = try POP3ProxyOptions.parse(Array(arguments.dropFirst())) } catch {
            Stderr.line("pop3.proxy: \(error)")
            Stderr.line("usage: pop3.proxy [options] server   (pop3.proxy --help lists them)")
            exit(1)
        }
        if options.help {
            try? FD.writeAll(1, POP3ProxyHelp.text)
            exit(0)
        }
        let log = DaemonLog(targets: logTargets(options))
        var clamdVersion: String?
        if options.scan {
            do { clamdVersion = try ClamdVersion.ask(options.clamd) } catch {
                // A daemon must not start without its scanner; one inetd session goes on and
                // refuses each message it cannot have scanned.
                if options.daemon > 0 { fail("-z: \(error)") }
                log.error("-z: \(error): messages will not be delivered while it is missing")
            }
        }
        signal(SIGPIPE, SIG_IGN)
        let credential: Credential?
        do { credential = try self.credential(options) } catch { fail(error.description) }
        let settings = POP3SessionSettings(
            options: options, environment: Environment.current(), clock: { Int(time(nil)) },
            clamdVersion: clamdVersion, hostName: hostName())
        // The certificates and keys are read before the privileges are dropped.
        let tls: POP3TLSContexts
        do { tls = try POP3TLSContexts(options: options) } catch { fail("TLS: \(error)") }
        if options.daemon > 0 { serveDaemon(options, settings, tls, credential, log) }
        serveInetd(settings, tls, credential, log)
    }

    /// This host's name (gethostname), for virus notifications.
    static func hostName() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "localhost" }
        let bytes = buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
        return bytes.isEmpty ? "localhost" : String(decoding: bytes, as: UTF8.self)
    }

    /// syslog, facility mail, level notice (the original's); standard error with `-d`;
    /// `--log` replaces both.
    static func logTargets(_ options: POP3ProxyOptions) -> [LogTarget] {
        if !options.logTargets.isEmpty { return options.logTargets }
        if options.debug { return [LogTarget(kind: .stderr, level: .debug)] }
        return [LogTarget(kind: .syslog(name: "pop3.proxy", facility: LOG_MAIL), level: .notice)]
    }

    /// Root serves as `-u`'s user (nobody by default), its uid and gid; anyone else as itself.
    static func credential(_ options: POP3ProxyOptions) throws(StartError) -> Credential? {
        guard geteuid() == 0 else { return nil }
        guard let user = UserDatabase.user(options.user) else { throw StartError("-u: unknown user \(options.user)") }
        guard user.uid != 0 else { throw StartError("-u \(options.user): pop3.proxy never serves as root") }
        return Credential(uid: user.uid, gid: user.gid)
    }

    /// The default mode: the one client on standard input, then exit.
    static func serveInetd(
        _ settings: POP3SessionSettings, _ tls: POP3TLSContexts, _ credential: Credential?, _ log: DaemonLog
    ) -> Never {
        let peer: Endpoint
        let local: Endpoint
        do { (peer, local) = try Inetd.endpoints() } catch {
            fail("\(error) (start pop3.proxy from tcpserver or inetd, or give -D)")
        }
        Inetd.serve(
            POP3Sessions(settings: settings), peer: peer, local: local, credential: credential, log: log, names: nil,
            fail: fail
        ) { id in POP3Session(settings: settings, client: peer, id: id, tls: tls) }
    }

    /// `-D`: listen (port 110 of every address, or `-D -D`'s), detach unless `-d`, serve every
    /// client on the event loops.
    static func serveDaemon(
        _ options: POP3ProxyOptions, _ settings: POP3SessionSettings, _ tls: POP3TLSContexts,
        _ credential: Credential?, _ log: DaemonLog
    ) -> Never {
        let keys: [ListenerKey]
        do { keys = try listenerKeys(options.listen, defaultPort: options.pop3s ? 995 : 110) } catch {
            fail(error.description)
        }
        let listeners: [Listener]
        do { listeners = try Listeners.open(keys, reusing: []) } catch { fail(error.description) }
        Systemd.closeUntaken { log.warning($0) }
        let signals: SignalQueue
        do { signals = try SignalQueue([SIGHUP, SIGUSR1, SIGUSR2, SIGTERM, SIGINT, SIGCHLD]) } catch {
            fail("unable to catch signals: \(error)")
        }
        if !options.debug {
            do { try Daemon.detach() } catch { fail("unable to become a daemon: \(error)") }
        }
        if let pidFile = options.pidFile {
            do { try Daemon.writePidFile(pidFile) } catch { fail("unable to write pid file \(pidFile): \(error)") }
        }
        do { try Credential.become(credential, chroot: nil) } catch { fail(error.description) }
        for listener in listeners { log.notice("listening on \(listener.key)") }
        let table = POP3Table(listenerSockets: listeners, tls: tls)
        let service = POP3ProxyService(log: log, settings: settings, pidFile: options.pidFile)
        let loops = LoopGroup(service: service, table: table)
        do { try loops.start() } catch { fail(error.description) }
        log.notice("pop3.proxy started (pid \(getpid()), \(loops.loopsRunning) event loops)")
        loops.runSignals(signals)
    }

    /// Where `-D` listens: `[interface:]port`, port 110 (995 with `--pop3s`) of every address
    /// by default. An interface is an address or a name (resolved once, now).
    static func listenerKeys(_ listen: POP3ProxyOptions.Listen?, defaultPort: UInt16) throws(StartError)
        -> [ListenerKey]
    {
        let port = listen?.port ?? defaultPort
        guard let interface = listen?.interface else {
            return [ListenerKey(address: .anyV6, port: port, v6Only: false)]
        }
        let found: [IPAddress]
        do { found = try HostResolver.resolve(interface) } catch {
            throw StartError("-D -D: unable to resolve \(interface): \(error)")
        }
        guard let first = found.first?.unmapped else { throw StartError("-D -D: no address for \(interface)") }
        return [ListenerKey(address: first, port: port, v6Only: first.family == .v6)]
    }
}

/// The daemon's listeners and TLS contexts: pop3.proxy has no configuration file, so a table
/// is just them (SIGHUP makes a new one with the TLS files read again).
final class POP3Table: ServingTable {
    let listenerSockets: [Listener]
    let tls: POP3TLSContexts
    var configurationPath: String { "the command line" }

    init(listenerSockets: [Listener], tls: POP3TLSContexts) {
        self.listenerSockets = listenerSockets
        self.tls = tls
    }

    func restricted(to fds: Set<Int32>) -> POP3Table {
        POP3Table(listenerSockets: listenerSockets.filter { fds.contains($0.fd) }, tls: tls)
    }
}

/// A loop's worker: the shared ``SessionWorker`` with pop3.proxy's sessions.
typealias POP3Worker = SessionWorker<POP3Sessions>

/// Turns a connection into a ``POP3Session`` run by a ``SessionDriver``.
final class POP3Sessions: SessionFactory {
    let settings: POP3SessionSettings

    init(settings: POP3SessionSettings) { self.settings = settings }

    static func worker(loop: EventLoop, log: DaemonLog, settings: POP3SessionSettings) -> POP3Worker {
        SessionWorker(loop: loop, log: log, factory: POP3Sessions(settings: settings))
    }

    func session(
        for client: Int32, peer: Endpoint, listener: Int32, table: POP3Table, id: UInt64, worker: POP3Worker
    ) -> SessionDriver? {
        Socket.setNoDelay(client)
        return SessionDriver(
            host: worker, machine: POP3Session(settings: settings, client: peer, id: id, tls: table.tls),
            client: client,
            peer: peer, id: id, names: nil)
    }
}

/// pop3.proxy on the daemon skeleton: one table (its listeners), nothing to reload but the logs.
final class POP3ProxyService: GatewayService {
    let log: DaemonLog
    let settings: POP3SessionSettings
    let pidFile: String?
    var chroot: String? { nil }

    init(log: DaemonLog, settings: POP3SessionSettings, pidFile: String?) {
        self.log = log
        self.settings = settings
        self.pidFile = pidFile
    }

    func makeWorker(loop: EventLoop, daemonPID: Int32) -> POP3Worker {
        POP3Sessions.worker(loop: loop, log: log, settings: settings)
    }

    /// SIGHUP: the logs reopened and, when there are TLS files, those read again (a file that
    /// fails keeps the old contexts, logged; sessions in progress keep theirs).
    func reloadedTable(current: POP3Table) -> POP3Table? {
        log.reopen()
        guard POP3TLSContexts.usesFiles(settings.options) else {
            log.notice("SIGHUP: logs reopened (pop3.proxy is configured on its command line: nothing else to reload)")
            return nil
        }
        log.notice("SIGHUP: logs reopened; re-reading the TLS files (pop3.proxy is configured on its command line)")
        do {
            return POP3Table(
                listenerSockets: current.listenerSockets, tls: try POP3TLSContexts(options: settings.options))
        } catch {
            log.error("SIGHUP: TLS files not reloaded, keeping the old ones: \(error)")
            return nil
        }
    }

    func logListeners(_ table: POP3Table) {
        let server = settings.options.server.map { Endpoint.textOrName($0.host, $0.port) } ?? "none (clients select)"
        for listener in table.listenerSockets { log.notice("listener \(listener.key): server \(server)") }
    }

    func credentialGroups(_ table: POP3Table) throws(StartError) -> [Credential: [Int32]] {
        [:]  // the whole daemon serves as one user (it dropped before serving)
    }
}

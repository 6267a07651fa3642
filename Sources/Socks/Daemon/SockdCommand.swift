#if canImport(Glibc)
import Glibc
#endif
import Gateway
import GatewayKit
import Loop

/// `sockd`: the command. A command line that cannot be used, or a configuration that cannot
/// be read at all, exits 1 with a message naming what and where. The inetd mode (standard
/// input a connected TCP socket) exits 0 when its client is done; the stand-alone daemon
/// on SIGTERM or SIGINT, removing its pid file.
public enum SockdCommand {
    static func fail(_ message: String) -> Never {
        Stderr.line("sockd: \(message)")
        exit(1)
    }

    public static func main(_ arguments: [String] = CommandLine.arguments) -> Never {
        Systemd.prepare()  // before anything copies the environment: no program inherits it
        let options: SockdOptions
        do { options = try SockdOptions.parse(Array(arguments.dropFirst())) } catch {
            Stderr.line("sockd: \(error)")
            Stderr.line("usage: sockd [-ver | -I | -i] [--config PATH] [--listen [ADDRESS]:PORT] ... (sockd --help)")
            exit(1)
        }
        if options.help {
            try? FD.writeAll(1, Array(SockdHelp.text.utf8))
            exit(0)
        }
        if options.version {
            try? FD.writeAll(1, Array(SockdOptions.versionText(route: options.routePath(exists: exists)).utf8))
            exit(0)
        }
        signal(SIGPIPE, SIG_IGN)
        let log = DaemonLog(targets: logTargets(options))
        let loader = SockdLoader(options: options, log: log)
        let settings: SockdSessionSettings
        do { settings = try loader.settings(mode: .lenient) } catch { fail(error.description) }
        var passwords: PasswordFile?
        if let path = options.passwd {
            do { passwords = try loader.passwords(path) } catch { fail(error.description) }
        }
        let credential: Credential?
        do { credential = try self.credential(options) } catch { fail(error.description) }
        let factory = SockdSessions(passwords: passwords, names: try? ClientNameSource.load())
        if Inetd.stdinIsSocket(), let (peer, local) = try? Inetd.endpoints() {
            serveInetd(peer: peer, local: local, settings, factory, credential, log)
        }
        serveDaemon(options, loader, settings, factory, credential, log)
    }

    static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    /// syslog, facility daemon, ident sockd (the manual's); `--log` replaces it.
    static func logTargets(_ options: SockdOptions) -> [LogTarget] {
        if !options.logTargets.isEmpty { return options.logTargets }
        return [LogTarget(kind: .syslog(name: "sockd", facility: LOG_DAEMON), level: .notice)]
    }

    /// `--user` (root only): the user sockd serves as once its listeners are bound.
    static func credential(_ options: SockdOptions) throws(StartError) -> Credential? {
        guard let name = options.user else { return nil }
        guard geteuid() == 0 else { throw StartError("--user \(name): only root can change its user") }
        guard let user = UserDatabase.user(name) else { throw StartError("--user: unknown user \(name)") }
        return Credential(uid: user.uid, gid: user.gid)
    }

    /// inetd mode: the one client on standard input, then exit.
    static func serveInetd(
        peer: Endpoint, local: Endpoint, _ settings: SockdSessionSettings, _ factory: SockdSessions,
        _ credential: Credential?, _ log: DaemonLog
    ) -> Never {
        Inetd.serve(
            factory, peer: peer, local: local, credential: credential, log: log, names: factory.names, fail: fail
        ) { _ in SocksSession(settings: settings, client: peer) }
    }

    /// Stand-alone: bind, detach unless `--foreground`, write the pid file, drop to `--user`,
    /// serve every client on the event loops.
    static func serveDaemon(
        _ options: SockdOptions, _ loader: SockdLoader, _ settings: SockdSessionSettings, _ factory: SockdSessions,
        _ credential: Credential?, _ log: DaemonLog
    ) -> Never {
        var keys: [ListenerKey]
        do { keys = try listenerKeys(options.listen) } catch { fail(error.description) }
        if options.listen.isEmpty && !Systemd.passedEndpoints.isEmpty {
            // Socket activation without --listen: every socket systemd passed.
            keys = Systemd.passedEndpoints.map { ListenerKey(address: $0.address, port: $0.port, v6Only: false) }
        }
        let listeners: [Listener]
        do { listeners = try Listeners.open(keys, reusing: []) } catch { fail(error.description) }
        Systemd.closeUntaken { log.warning($0) }
        let signals: SignalQueue
        do { signals = try SignalQueue([SIGHUP, SIGUSR1, SIGUSR2, SIGTERM, SIGINT, SIGCHLD]) } catch {
            fail("unable to catch signals: \(error)")
        }
        if !options.foreground {
            do { try Daemon.detach() } catch { fail("unable to become a daemon: \(error)") }
        }
        do { try Daemon.writePidFile(options.pidFile) } catch {
            fail("unable to write pid file \(options.pidFile): \(error)")
        }
        do { try Credential.become(credential, chroot: nil) } catch { fail(error.description) }
        for listener in listeners { log.notice("listening on \(listener.key)") }
        let table = SockdTable(listenerSockets: listeners, settings: settings, path: loader.configPath)
        let service = SockdService(log: log, loader: loader, factory: factory, pidFile: options.pidFile)
        let loops = LoopGroup(service: service, table: table)
        do { try loops.start() } catch { fail(error.description) }
        log.notice("sockd started (pid \(getpid()), \(loops.loopsRunning) event loops)")
        loops.runSignals(signals)
    }

    /// `--listen`'s addresses (names resolved once, now); port 1080 of every address without.
    static func listenerKeys(_ listen: [SockdOptions.Listen]) throws(StartError) -> [ListenerKey] {
        guard !listen.isEmpty else {
            return [ListenerKey(address: .anyV6, port: SockdOptions.defaultPort, v6Only: false)]
        }
        var keys: [ListenerKey] = []
        for entry in listen {
            guard let host = entry.host else {
                keys.append(ListenerKey(address: .anyV6, port: entry.port, v6Only: false))
                continue
            }
            let found: [IPAddress]
            do { found = try HostResolver.resolve(host) } catch {
                throw StartError("--listen: unable to resolve \(host): \(error)")
            }
            guard let first = found.first?.unmapped else { throw StartError("--listen: no address for \(host)") }
            keys.append(ListenerKey(address: first, port: entry.port, v6Only: first.family == .v6))
        }
        return keys
    }
}

/// Reads sockd's files: the configuration and the routes (frozen or text, told by content),
/// the password file. Lenient at start (bad lines logged and skipped), strict on SIGHUP.
final class SockdLoader: Sendable {
    let options: SockdOptions
    let log: DaemonLog
    let configPath: String
    let routePath: String?

    init(options: SockdOptions, log: DaemonLog) {
        self.options = options
        self.log = log
        configPath = options.configPath(exists: SockdCommand.exists)
        routePath = options.routePath(exists: SockdCommand.exists)
    }

    /// The settings from the files as they are now.
    func settings(mode: SockdConfigMode) throws(StartError) -> SockdSessionSettings {
        let services = SockdSystemFiles.services()
        let contents: [UInt8]
        do { contents = try FD.readWholeFile(configPath) } catch {
            throw StartError("unable to read the configuration \(configPath): \(error)")
        }
        let configuration: SockdConfiguration
        do {
            let loaded = try SockdConfigurationFile.load(
                contents, path: configPath, mode: mode, readUserFile: SockdSystemFiles.userFileReader,
                servicePort: services.lookup)
            configuration = loaded.configuration
            for warning in loaded.warnings { log.error("\(warning) (line skipped)") }
        } catch {
            throw StartError("\(error)")
        }
        let (route, routeText) = try routes(mode: mode)
        var settings = SockdSessionSettings(
            configuration: configuration, route: route, identCheck: options.identCheck,
            identTimeout: .seconds(options.identTimeout), passwordRequired: options.passwd != nil, pid: getpid(),
            serviceName: { services.name(of: $0) })
        settings.routeText = routeText
        let environment = Environment.current()
        if environment.contains(where: { $0.starts(with: Array("PATH=".utf8)) }) { settings.environment = environment }
        return settings
    }

    /// The route choice for a destination, from the route file (none: the system's choice).
    /// Interfaces given by name are resolved now.
    func routes(mode: SockdConfigMode) throws(StartError) -> (
        @Sendable (IPAddress, [UInt8]?) -> RouteChoice, [UInt8]?
    ) {
        guard let routePath else { return ({ _, _ in .system }, nil) }
        let contents: [UInt8]
        do { contents = try FD.readWholeFile(routePath) } catch {
            throw StartError("unable to read the route file \(routePath): \(error)")
        }
        let loaded: SockdRoutes
        do {
            let result = try SockdConfigurationFile.loadRoutes(contents, path: routePath, mode: mode)
            for warning in result.warnings { log.error("\(warning) (line skipped)") }
            loaded = result.routes
        } catch {
            throw StartError("\(error)")
        }
        var resolved: [(SockdRoute, IPAddress)] = []
        for route in loaded.routes {
            switch route.interface {
            case .address(let address): resolved.append((route, address.unmapped))
            case .name(let name):
                let text = String(decoding: name, as: UTF8.self)
                guard let address = (try? HostResolver.resolve(text))?.first?.unmapped else {
                    let message = "\(routePath):\(route.line): unable to resolve the interface \(printable(name))"
                    if mode == .strict { throw StartError(message) }
                    log.error("\(message) (line skipped)")
                    continue
                }
                resolved.append((route, address))
            }
        }
        let table = SockdRoutes(routes: resolved.map(\.0))
        let addresses = Dictionary(resolved.map { ($0.0.line, $0.1) }, uniquingKeysWith: { first, _ in first })
        let choose: @Sendable (IPAddress, [UInt8]?) -> RouteChoice = { destination, name in
            guard let route = table.route(to: destination, name: name), let address = addresses[route.line] else {
                return .none
            }
            return .from(address, line: route.line)
        }
        return (choose, table.text)
    }

    /// `--passwd`'s file, checked whole.
    func passwords(_ path: String) throws(StartError) -> PasswordFile {
        let contents: [UInt8]
        do { contents = try FD.readWholeFile(path) } catch {
            throw StartError("--passwd: unable to read \(path): \(error)")
        }
        do { return try PasswordFile(contents, path: path) } catch { throw StartError(error.description) }
    }

    /// What SIGUSR1 logs: the effective configuration and routes, line by line.
    func listing(_ settings: SockdSessionSettings) -> [String] {
        var lines = ["configuration \(configPath):"]
        lines += String(decoding: settings.configuration.text, as: UTF8.self).split(separator: "\n").map(String.init)
        if let routePath, let text = settings.routeText {
            lines.append("routes \(routePath):")
            lines += String(decoding: text, as: UTF8.self).split(separator: "\n").map(String.init)
        } else {
            lines.append("no route file (single-homed)")
        }
        return lines
    }
}

/// The daemon's listeners and the settings their sessions start with.
final class SockdTable: ServingTable {
    let listenerSockets: [Listener]
    let settings: SockdSessionSettings
    let configurationPath: String

    init(listenerSockets: [Listener], settings: SockdSessionSettings, path: String) {
        self.listenerSockets = listenerSockets
        self.settings = settings
        configurationPath = path
    }

    func restricted(to fds: Set<Int32>) -> SockdTable {
        SockdTable(
            listenerSockets: listenerSockets.filter { fds.contains($0.fd) }, settings: settings,
            path: configurationPath)
    }
}

/// Turns a connection into a ``SocksSession``; checks passwords off the loop.
final class SockdSessions: SessionFactory {
    let passwords: PasswordFile?
    /// Where client names are looked up (only when a rule names hosts or domains).
    let names: ClientNameSource?

    init(passwords: PasswordFile?, names: ClientNameSource?) {
        self.passwords = passwords
        self.names = names
    }

    func session(
        for client: Int32, peer: Endpoint, listener: Int32, table: SockdTable, id: UInt64,
        worker: SessionWorker<SockdSessions>
    ) -> SessionDriver? {
        Socket.setNoDelay(client)
        return SessionDriver(
            host: worker, machine: SocksSession(settings: table.settings, client: peer), client: client, peer: peer,
            id: id, names: names)
    }

    func checkPassword(
        user: [UInt8], password: [UInt8], session: SessionDriver, answer: @escaping (Bool) -> Void
    ) {
        guard let passwords else { return answer(false) }
        let work = session.loop.resource(BlockingWork.self)
        if work.submit({ passwords.verify(user: user, password: password) }, completion: answer) == nil {
            answer(false)
        }
    }
}

/// sockd on the daemon skeleton: SIGHUP re-reads the files strictly, SIGUSR1 lists them.
final class SockdService: GatewayService {
    let log: DaemonLog
    let loader: SockdLoader
    let passwords: PasswordFile?
    let names: ClientNameSource?
    let pidFile: String?
    var chroot: String? { nil }

    init(log: DaemonLog, loader: SockdLoader, factory: SockdSessions, pidFile: String) {
        self.log = log
        self.loader = loader
        passwords = factory.passwords
        names = factory.names
        self.pidFile = pidFile
    }

    func makeWorker(loop: EventLoop, daemonPID: Int32) -> SessionWorker<SockdSessions> {
        SessionWorker(loop: loop, log: log, factory: SockdSessions(passwords: passwords, names: names))
    }

    func reloadedTable(current: SockdTable) -> SockdTable? {
        log.reopen()
        do {
            let settings = try loader.settings(mode: .strict)
            return SockdTable(listenerSockets: current.listenerSockets, settings: settings, path: loader.configPath)
        } catch {
            // One log line per bad line (a rejection names them all).
            for line in error.description.split(separator: "\n") { log.error("SIGHUP: \(line)") }
            log.error("SIGHUP: the old configuration stays in force")
            return nil
        }
    }

    func logListeners(_ table: SockdTable) {
        for listener in table.listenerSockets { log.notice("listening on \(listener.key)") }
        for line in loader.listing(table.settings) { log.notice(line) }
    }

    func credentialGroups(_ table: SockdTable) throws(StartError) -> [Credential: [Int32]] { [:] }
}

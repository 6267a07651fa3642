#if canImport(Glibc)
import Glibc
#endif
import Gateway
import GatewayKit
import Loop
import Relay

/// Why the daemon could not start or reload, with a message naming what and where.
public struct ProxyStartError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Builds service tables: resolves listen addresses and targets, opens (or keeps) listeners.
struct TableBuilder {
    let bufferSize: Int
    /// Look up client names for PROXY_CLIENTNAME (off with --no-client-names).
    var clientNames = true

    /// The listener keys for a service: its listen address (a host name resolved), port, family.
    static func keys(for service: ProxyService) throws(ProxyStartError) -> [ListenerKey] {
        switch service.listen {
        case .any:
            switch service.resolv {
            case .ipv4: return [ListenerKey(address: .anyV4, port: service.port, v6Only: false)]
            case .ipv6: return [ListenerKey(address: .anyV6, port: service.port, v6Only: true)]
            case .any: return [ListenerKey(address: .anyV6, port: service.port, v6Only: false)]
            }
        case .address(let address):
            return [ListenerKey(address: address.unmapped, port: service.port, v6Only: address.family == .v6)]
        case .hostname(let name):
            let family: DNSResolver.Family =
                service.resolv == .ipv4 ? .ipv4 : service.resolv == .ipv6 ? .ipv6 : .any
            let found: [IPAddress]
            do { found = try HostResolver.resolve(name, family: family) } catch {
                throw ProxyStartError("unable to resolve listen address \(name): \(error)")
            }
            guard !found.isEmpty else { throw ProxyStartError("no address for listen address \(name)") }
            var seen = Set<IPAddress>()
            return found.map(\.unmapped).filter { seen.insert($0).inserted }.map {
                ListenerKey(address: $0, port: service.port, v6Only: $0.family == .v6)
            }
        }
    }

    /// Opens a listening socket for `key`. `sharedPort` sets SO_REUSEPORT, which Linux needs to
    /// let a wildcard socket and address-specific ones of the same port coexist (only then: a
    /// second tcpproxy started by mistake should still fail with "address already used").
    static func open(_ key: ListenerKey, sharedPort: Bool) throws(ProxyStartError) -> Int32 {
        let fd: Int32
        do { fd = try Socket.tcp(key.address.family) } catch {
            throw ProxyStartError("unable to create a socket for \(key): \(error)")
        }
        var one: Int32 = 1
        if key.v6Only {
            setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &one, socklen_t(MemoryLayout<Int32>.size))
        }
        if sharedPort {
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, socklen_t(MemoryLayout<Int32>.size))
        }
        // Accepted sockets inherit TCP_NODELAY: set once here rather than per connection.
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        do {
            try Socket.bind(fd, to: key.address, port: key.port)
            try Socket.listen(fd, backlog: 1024)
        } catch {
            close(fd)
            throw ProxyStartError("unable to listen on \(key): \(error)")
        }
        Socket.setNonBlocking(fd, true)
        return fd
    }

    /// Resolves a forward target (at load time, so no DNS query ever blocks an event loop).
    static func resolve(_ target: ProxyTarget, where place: String) throws(ProxyStartError) -> ResolvedTarget? {
        guard case .forward(let host, let port, let resolv, let sourceName, let rotate) = target else { return nil }
        let family: DNSResolver.Family = resolv == .ipv4 ? .ipv4 : resolv == .ipv6 ? .ipv6 : .any
        let addresses: [IPAddress]
        do { addresses = try HostResolver.resolve(host, family: family) } catch {
            throw ProxyStartError("\(place): unable to resolve server \(host): \(error)")
        }
        guard let first = addresses.first else { throw ProxyStartError("\(place): no address for server \(host)") }
        var address = first
        var source: IPAddress?
        if let sourceName {
            let found: [IPAddress]
            do { found = try HostResolver.resolve(sourceName, family: family) } catch {
                throw ProxyStartError("\(place): unable to resolve source \(sourceName): \(error)")
            }
            // The source decides the family: take the server address of the same family.
            guard let s = found.first(where: { a in addresses.contains { $0.unmapped.family == a.unmapped.family } })
            else { throw ProxyStartError("\(place): source \(sourceName) has no address of the server's family") }
            source = s.unmapped
            address = addresses.first { $0.unmapped.family == s.unmapped.family }!
        }
        if let rotate {
            guard let a = addresses.first(where: { $0.unmapped.family == rotate.family }) else {
                throw ProxyStartError("\(place): rotate range and server \(host) are of different families")
            }
            address = a
        }
        return ResolvedTarget(host: host, port: port, address: address.unmapped, source: source, rotate: rotate)
    }

    /// A table with resolved targets and no listeners (inetd mode).
    func resolvedOnly(_ configuration: ProxyConfiguration) throws(ProxyStartError) -> ServiceTable {
        var targets: [[ResolvedTarget?]] = []
        for service in configuration.services {
            var row: [ResolvedTarget?] = []
            for handler in service.handlers {
                row.append(try Self.resolve(handler.target, where: "\(configuration.path):\(handler.line)"))
            }
            targets.append(row)
        }
        var names: ClientNameSource?
        if clientNames && configuration.runsPrograms {
            do { names = try ClientNameSource.load() } catch {
                throw ProxyStartError("client names (PROXY_CLIENTNAME): \(error)")
            }
        }
        return ServiceTable(
            configuration: configuration, listeners: [], targets: targets, bufferSize: bufferSize, clientNames: names)
    }

    /// A table for `configuration`, reusing the sockets of `current` whose keys are unchanged.
    func build(_ configuration: ProxyConfiguration, reusing current: ServiceTable?) throws(ProxyStartError)
        -> ServiceTable
    {
        let resolved = try resolvedOnly(configuration)
        var existing: [ListenerKey: Int32] = [:]
        for l in current?.listeners ?? [] { existing[l.key] = l.fd }
        var wanted: [(key: ListenerKey, service: Int, handler: Int)] = []
        for (index, service) in configuration.services.enumerated() {
            for (h, handler) in service.handlers.enumerated() {
                let keys: [ListenerKey]
                if let interface = handler.interface {
                    keys = [ListenerKey(address: interface, port: service.port, v6Only: interface.family == .v6)]
                } else {
                    keys = try Self.keys(for: service)
                }
                for key in keys {
                    if wanted.contains(where: { $0.key == key }) {
                        throw ProxyStartError("\(configuration.path):\(handler.line): \(key) is configured twice")
                    }
                    wanted.append((key, index, h))
                }
            }
        }
        var ports: [UInt16: Int] = [:]
        for w in wanted { ports[w.key.port, default: 0] += 1 }
        var listeners: [ProxyListener] = []
        var opened: [Int32] = []
        do {
            for w in wanted {
                let fd: Int32
                if let old = existing[w.key] {
                    fd = old
                } else {
                    fd = try Self.open(w.key, sharedPort: ports[w.key.port]! > 1)
                    opened.append(fd)
                }
                listeners.append(ProxyListener(key: w.key, fd: fd, service: w.service, handler: w.handler))
            }
        } catch {
            for fd in opened { close(fd) }
            throw error
        }
        return ServiceTable(
            configuration: configuration, listeners: listeners, targets: resolved.targets, bufferSize: bufferSize,
            clientNames: resolved.clientNames)
    }
}

/// The standalone daemon: event loop threads serving the current table, the main thread
/// handling signals (HUP reload, USR1 listeners, USR2 connections, TERM/INT exit).
final class ProxyDaemon {
    let options: TCPProxyOptions
    let log: ProxyLog
    var table: ServiceTable
    var threads: [EventLoopThread] = []
    var workers: [WorkerBox] = []
    let builder: TableBuilder

    /// Holds a worker; created and used on its loop's thread only.
    final class WorkerBox: @unchecked Sendable {
        var worker: ProxyWorker?
    }

    /// The pid an admin knows (the pid file's): recordings are named after it.
    let daemonPID: Int32

    init(
        options: TCPProxyOptions, log: ProxyLog, table: ServiceTable, builder: TableBuilder, daemonPID: Int32 = getpid()
    ) {
        self.daemonPID = daemonPID
        self.options = options
        self.log = log
        self.table = table
        self.builder = builder
    }

    /// Starts `count` event loops serving the table. All loops are made before any accepts, so
    /// that connections taking every descriptor cannot stop the next loop from starting; if a
    /// loop cannot be made all the same (descriptors, threads), the others serve.
    /// How many event loops serve (fewer than asked when one could not be made).
    var loopsRunning: Int { threads.count }

    func startLoops(count: Int) throws(ProxyStartError) {
        let inherited = Environment.current()
        let clear = options.clearEnvironment
        let pid = daemonPID
        let log = self.log
        for index in 0..<count {
            let box = WorkerBox()
            let thread: EventLoopThread
            do {
                thread = try EventLoopThread.start { loop in
                    box.worker = ProxyWorker(
                        loop: loop, log: log, inherited: inherited, clearEnvironment: clear, daemonPID: pid)
                }
            } catch {
                if threads.isEmpty { throw ProxyStartError("unable to start an event loop: \(error)") }
                log.warning("unable to start event loop \(index + 1) of \(count): \(error); serving with \(index)")
                break
            }
            threads.append(thread)
            workers.append(box)
        }
        let table = self.table
        for (thread, box) in zip(threads, workers) {
            thread.sync { _ in box.worker?.install(table) }
        }
    }

    /// Runs `body` on every loop with its worker and waits for all of them.
    func onEveryWorker<T: Sendable>(_ body: @escaping @Sendable (ProxyWorker) -> T) -> [T] {
        zip(threads, workers).map { thread, box in thread.sync { _ in body(box.worker!) } }
    }

    /// SIGHUP's first half, shared with ProxyMaster: reopen the logs, read the configuration
    /// again and build its table (reusing unchanged listeners). Nil, with the reason logged,
    /// when the old configuration must stay.
    static func reloadedTable(
        _ options: TCPProxyOptions, builder: TableBuilder, current: ServiceTable, log: ProxyLog
    ) -> ServiceTable? {
        log.reopen()
        guard options.localPort == nil && options.server == nil else {
            log.notice("SIGHUP: no configuration file to reload (configured on the command line), ignored")
            return nil
        }
        do {
            let configuration = try ProxyPlan.configuration(options)
            for warning in configuration.warnings { log.warning("SIGHUP: \(warning)") }
            return try builder.build(configuration, reusing: current)
        } catch {
            log.error("SIGHUP: configuration not reloaded, keeping the old one: \(error)")
            return nil
        }
    }

    /// SIGHUP: read the configuration again; on any error keep serving the old one.
    func reload() {
        guard let next = Self.reloadedTable(options, builder: builder, current: table, log: log) else { return }
        let old = table
        table = next
        _ = onEveryWorker { worker in worker.install(next) }
        Self.closeRemovedListeners(old: old, new: next, log: log)
        log.notice("SIGHUP: configuration reloaded from \(next.configuration.path): \(next.listeners.count) listeners")
    }

    /// After a reload: stops the listeners the new table no longer has and logs the changes.
    /// shutdown() on a listening socket stops it for every process holding it (a draining
    /// worker's copy included), so a removed port refuses connections at once.
    static func closeRemovedListeners(old: ServiceTable, new: ServiceTable, log: ProxyLog) {
        let kept = Set(new.listeners.map(\.fd))
        for listener in old.listeners where !kept.contains(listener.fd) {
            shutdown(listener.fd, Int32(SHUT_RDWR))
            close(listener.fd)
            log.notice("stopped listening on \(listener.key)")
        }
        let before = Set(old.listeners.map(\.fd))
        for listener in new.listeners where !before.contains(listener.fd) {
            log.notice("listening on \(listener.key)")
        }
    }

    /// SIGUSR1: every listener with what it serves.
    func logListeners() {
        for listener in table.listeners {
            let service = table.configuration.services[listener.service]
            let i = listener.handler
            let handler = service.handlers[i]
            do {
                let target: String
                switch handler.target {
                case .exec(let argv): target = "exec \(argv.joined(separator: " "))"
                case .forward(let host, let port, _, _, _):
                    let resolved = table.targets[listener.service][i]
                    let address = resolved.map { " (\($0.address))" } ?? ""
                    target =
                        "remote \(host)\(address) port \(port.map(String.init) ?? "\(service.port)")"
                        + (resolved?.source.map { " source \($0)" } ?? "")
                        + (resolved?.rotate.map { " rotate \($0)" } ?? "")
                }
                log.notice("listener \(listener.key) (port \(service.port)): \(target)")
            }
        }
    }

    /// SIGUSR2: every open client connection with its byte counts.
    func logConnections() {
        let counts = onEveryWorker { worker -> Int in
            worker.logConnections()
            return worker.openConnections
        }
        log.notice("\(counts.reduce(0, +)) open connections")
    }

    /// Event loops per process: one per core, at most 16.
    static var loopCount: Int { max(1, min(16, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))) }

    /// A worker process's main thread (see ProxyMaster): TERM/INT exit at once; QUIT stops
    /// accepting and exits when the last connection has ended; USR2 logs the connections.
    func runWorkerSignals(_ signals: SignalQueue, ack: Int32) -> Never {
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
                    for listener in table.listeners { close(listener.fd) }
                    if ack >= 0 {
                        var byte: UInt8 = 1
                        _ = write(ack, &byte, 1)
                        close(ack)
                    }
                case SIGUSR2: logConnections()
                default: break
                }
            }
            if quitting && onEveryWorker({ worker in worker.sessions.count }).reduce(0, +) == 0 { exit(0) }
        }
    }

    /// The main thread's loop: waits for signals until TERM or INT.
    func runSignals(_ signals: SignalQueue) -> Never {
        while true {
            for s in signals.wait() {
                switch s {
                case SIGHUP: reload()
                case SIGUSR1: logListeners()
                case SIGUSR2: logConnections()
                case SIGTERM, SIGINT:
                    log.notice("exiting on signal \(s)")
                    if let pid = options.pidFile { Daemon.removePidFile(pid) }
                    exit(0)
                default: break
                }
            }
        }
    }
}

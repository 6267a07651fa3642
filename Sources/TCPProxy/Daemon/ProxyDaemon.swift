#if canImport(Glibc)
import Glibc
#endif
import Gateway
import GatewayKit
import Loop
import Relay

/// Builds service tables: resolves listen addresses and targets, opens (or keeps) listeners.
struct TableBuilder {
    let bufferSize: Int
    /// Look up client names for PROXY_CLIENTNAME (off with --no-client-names).
    var clientNames = true

    /// The listener keys for a service: its listen address (a host name resolved), port, family.
    static func keys(for service: ProxyService) throws(StartError) -> [ListenerKey] {
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
                throw StartError("unable to resolve listen address \(name): \(error)")
            }
            guard !found.isEmpty else { throw StartError("no address for listen address \(name)") }
            var seen = Set<IPAddress>()
            return found.map(\.unmapped).filter { seen.insert($0).inserted }.map {
                ListenerKey(address: $0, port: service.port, v6Only: $0.family == .v6)
            }
        }
    }

    /// Resolves a forward target (at load time, so no DNS query ever blocks an event loop).
    static func resolve(_ target: ProxyTarget, where place: String) throws(StartError) -> ResolvedTarget? {
        guard case .forward(let host, let port, let resolv, let sourceName, let rotate) = target else { return nil }
        let family: DNSResolver.Family = resolv == .ipv4 ? .ipv4 : resolv == .ipv6 ? .ipv6 : .any
        let addresses: [IPAddress]
        do { addresses = try HostResolver.resolve(host, family: family) } catch {
            throw StartError("\(place): unable to resolve server \(host): \(error)")
        }
        guard let first = addresses.first else { throw StartError("\(place): no address for server \(host)") }
        var address = first
        var source: IPAddress?
        if let sourceName {
            let found: [IPAddress]
            do { found = try HostResolver.resolve(sourceName, family: family) } catch {
                throw StartError("\(place): unable to resolve source \(sourceName): \(error)")
            }
            // The source decides the family: take the server address of the same family.
            guard let s = found.first(where: { a in addresses.contains { $0.unmapped.family == a.unmapped.family } })
            else { throw StartError("\(place): source \(sourceName) has no address of the server's family") }
            source = s.unmapped
            address = addresses.first { $0.unmapped.family == s.unmapped.family }!
        }
        if let rotate {
            guard let a = addresses.first(where: { $0.unmapped.family == rotate.family }) else {
                throw StartError("\(place): rotate range and server \(host) are of different families")
            }
            address = a
        }
        return ResolvedTarget(host: host, port: port, address: address.unmapped, source: source, rotate: rotate)
    }

    /// A table with resolved targets and no listeners (inetd mode).
    func resolvedOnly(_ configuration: ProxyConfiguration) throws(StartError) -> ServiceTable {
        var targets: [[ResolvedTarget?]] = []
        var tls: [[HandlerTLS]] = []
        for service in configuration.services {
            var row: [ResolvedTarget?] = []
            var tlsRow: [HandlerTLS] = []
            for handler in service.handlers {
                let place = "\(configuration.path):\(handler.line)"
                row.append(try Self.resolve(handler.target, where: place))
                tlsRow.append(try HandlerTLS.make(handler, place: place))
            }
            targets.append(row)
            tls.append(tlsRow)
        }
        var names: ClientNameSource?
        if clientNames && configuration.runsPrograms {
            do { names = try ClientNameSource.load() } catch {
                throw StartError("client names (PROXY_CLIENTNAME): \(error)")
            }
        }
        return ServiceTable(
            configuration: configuration, listeners: [], targets: targets, tls: tls, bufferSize: bufferSize,
            clientNames: names)
    }

    /// A table for `configuration`, reusing the sockets of `current` whose keys are unchanged.
    func build(_ configuration: ProxyConfiguration, reusing current: ServiceTable?) throws(StartError)
        -> ServiceTable
    {
        let resolved = try resolvedOnly(configuration)
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
                        throw StartError("\(configuration.path):\(handler.line): \(key) is configured twice")
                    }
                    wanted.append((key, index, h))
                }
            }
        }
        let sockets = try Listeners.open(wanted.map(\.key), reusing: current?.listenerSockets ?? [])
        let listeners = zip(wanted, sockets).map { w, socket in
            ProxyListener(key: w.key, fd: socket.fd, service: w.service, handler: w.handler)
        }
        return ServiceTable(
            configuration: configuration, listeners: listeners, targets: resolved.targets, tls: resolved.tls,
            bufferSize: bufferSize, clientNames: resolved.clientNames)
    }
}

/// tcpproxy on the daemon skeleton (``LoopGroup``, ``MasterProcess``): how its tables are
/// loaded and reloaded, what a loop's worker is, whom connections are served as.
final class TCPProxyService: GatewayService {
    let options: TCPProxyOptions
    let log: ProxyLog
    let builder: TableBuilder
    /// The environment programs start from: ours, read once (empty with -c).
    let baseEnvironment: [[UInt8]]

    init(options: TCPProxyOptions, log: ProxyLog, builder: TableBuilder) {
        self.options = options
        self.log = log
        self.builder = builder
        baseEnvironment = options.clearEnvironment ? [] : Environment.current()
    }

    var pidFile: String? { options.pidFile }
    var chroot: String? { options.chroot }

    func makeWorker(loop: EventLoop, daemonPID: Int32) -> ProxyWorker {
        ProxySessions.worker(loop: loop, log: log, baseEnvironment: baseEnvironment, daemonPID: daemonPID)
    }

    func reloadedTable(current: ServiceTable) -> ServiceTable? {
        log.reopen()
        let commandLine = options.localPort != nil || options.server != nil
        if commandLine {
            guard current.configuration.usesTLSFiles else {
                log.notice("SIGHUP: no configuration file to reload (configured on the command line), ignored")
                return nil
            }
            log.notice("SIGHUP: no configuration file (configured on the command line): re-reading the TLS files")
        }
        do {
            let configuration = try ProxyPlan.configuration(options)
            for warning in configuration.warnings { log.warning("SIGHUP: \(warning)") }
            for notice in configuration.insecureTLSNotices { log.warning("SIGHUP: \(notice)") }
            return try builder.build(configuration, reusing: current)
        } catch {
            log.error("SIGHUP: configuration not reloaded, keeping the old one: \(error)")
            return nil
        }
    }

    /// SIGUSR1: every listener with what it serves.
    func logListeners(_ table: ServiceTable) {
        for listener in table.listeners {
            let service = table.configuration.services[listener.service]
            let i = listener.handler
            let handler = service.handlers[i]
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

    func credentialGroups(_ table: ServiceTable) throws(StartError) -> [Credential: [Int32]] {
        var groups: [Credential: [Int32]] = [:]
        for listener in table.listeners {
            let handler = table.configuration.services[listener.service].handlers[listener.handler]
            groups[try CredentialPlan.credential(of: handler, table.configuration.path), default: []].append(
                listener.fd)
        }
        return groups
    }
}

import GatewayKit

/// What a tcpproxy invocation does, decided from its command line alone.
public enum ProxyMode: Equatable, Sendable {
    /// Print the configured ports (-z) or the basic configuration (-zz) and exit.
    case list(Int)
    /// Listen and serve (spreadspace's daemon, Zekoll's -s/--bind or `standalone yes`).
    case standalone
    /// Serve the one connection inetd (or tcpserver, or systemd) left on standard input.
    case inetd
}

/// Turns the command line (and the configuration file it names, if any) into the one
/// configuration the daemon serves. Command-line settings are defaults for every handler
/// (a file's own setting wins), except --timeout and -v, which apply to all, and -d, which
/// turns the debug trace on for all.
public enum ProxyPlan {
    /// A command line that cannot be turned into a configuration.
    public struct Problem: Error, Equatable, CustomStringConvertible {
        public let description: String
        public init(_ description: String) { self.description = description }
    }

    /// The configuration for `options`: built from -p/-r/-o, from --bind and a server, from a
    /// lone server argument (inetd), or read from the configuration file.
    public static func configuration(
        _ options: TCPProxyOptions, serviceNames: ServiceNameSource = .system
    ) throws(Problem) -> ProxyConfiguration {
        var configuration: ProxyConfiguration
        if let localPort = options.localPort {
            let port = try self.port(localPort, "--local-port", serviceNames)
            let remotePort = try self.port(options.remotePort ?? "", "--remote-port", serviceNames)
            let handler = ProxyHandler(
                target: .forward(
                    host: options.remoteAddress ?? "", port: remotePort, resolv: options.remoteResolv,
                    source: options.sourceAddress),
                timeout: 0)
            configuration = ProxyConfiguration(
                path: "command line", dialect: .spreadspace, standalone: true,
                services: [
                    ProxyService(
                        listen: listenAddress(options.localAddress), port: port, resolv: options.localResolv,
                        handlers: [handler])
                ])
        } else if let server = options.server {
            let target: ProxyTarget
            if server.hasPrefix("/") || server.hasPrefix(".") {
                target = .exec(argv: [server] + options.serverArguments)
            } else {
                do { target = try ProxyTarget.server(server, serviceNames: serviceNames) } catch {
                    throw Problem("server argument: \(error)")
                }
            }
            var port: UInt16 = 0
            var listen = ListenAddress.any
            if let bind = options.bind {
                port = try self.port(bind.port, "--bind", serviceNames)
                listen = listenAddress(bind.interface)
            }
            configuration = ProxyConfiguration(
                path: "command line", dialect: .zekoll, standalone: options.bind != nil,
                services: [ProxyService(listen: listen, port: port, handlers: [ProxyHandler(target: target)])])
        } else {
            let path = options.configPath ?? ProxyConfiguration.defaultPath
            do { configuration = try ProxyConfiguration.load(from: path, serviceNames: serviceNames) } catch {
                throw Problem(error.description)
            }
        }
        apply(options, to: &configuration)
        return configuration
    }

    /// Command-line settings as defaults (or, for --timeout, -v and -d, overrides) of every handler.
    static func apply(_ options: TCPProxyOptions, to configuration: inout ProxyConfiguration) {
        for s in configuration.services.indices {
            for h in configuration.services[s].handlers.indices {
                var handler = configuration.services[s].handlers[h]
                if let acp = options.accessControlProgram, handler.accessControlProgram == nil {
                    handler.accessControlProgram = [acp]
                }
                if let prefix = options.variablePrefix { handler.variablePrefix = prefix }
                if let timeout = options.timeout { handler.timeout = timeout }
                if options.debugTrace { handler.debug = true }
                if let writefile = options.writefile, handler.writefile == nil { handler.writefile = writefile }
                if let rules = options.rules, handler.rules == nil { handler.rules = rules }
                if let version = options.proxyProtocol, handler.proxyProtocol == nil { handler.proxyProtocol = version }
                if let tls = try? options.tls.settings() {
                    if let server = tls.server, handler.tls == nil { handler.tls = server }
                    if let client = tls.client, handler.remoteTLS == nil { handler.remoteTLS = client }
                }
                if let protocols = options.tls.protocols {
                    handler.tls?.protocols = protocols
                    handler.remoteTLS?.protocols = protocols
                }
                if let ciphers = options.tls.ciphers {
                    handler.tls?.ciphers = ciphers
                    handler.remoteTLS?.ciphers = ciphers
                }
                configuration.services[s].handlers[h] = handler
            }
        }
        if let name = options.logname { configuration.logname = name }
    }

    /// What the invocation does: -z lists; a connected socket on standard input without
    /// --bind, --standalone or -p means inetd; otherwise standalone.
    public static func mode(_ options: TCPProxyOptions, stdinIsSocket: Bool) -> ProxyMode {
        if options.list > 0 { return .list(options.list) }
        if options.localPort == nil && options.bind == nil && !options.standalone && stdinIsSocket { return .inetd }
        return .standalone
    }

    static func listenAddress(_ text: String?) -> ListenAddress {
        guard let text, !text.isEmpty, text != "*" else { return .any }
        var inner = Substring(text)
        if inner.hasPrefix("[") && inner.hasSuffix("]") { inner = inner.dropFirst().dropLast() }
        if let address = IPAddress(String(inner)) { return .address(address.unmapped) }
        return .hostname(text)
    }

    static func port(_ text: String, _ option: String, _ names: ServiceNameSource) throws(Problem) -> UInt16 {
        if let n = UInt16(text), n > 0 { return n }
        if let p = names.port(of: text) { return p }
        throw Problem("\(option): \"\(text)\" is neither a port number (1-65535) nor a service in \(names.name)")
    }
}

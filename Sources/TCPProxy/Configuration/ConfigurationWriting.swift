// MARK: - The configuration written back as a file

extension ProxyConfiguration {
    /// The configuration as a file of its own dialect that reads back to the same services
    /// (`tcpproxy -zzz` prints it): what tcpproxy understood, with every inherited setting and
    /// default written out where it applies, comments and repeated lines gone.
    ///
    /// In Zekoll's dialect each port's handler for every local address comes first, its
    /// settings in the port's section (where the interface handlers inherit them, as they did
    /// when the file was read), then one section per interface with the settings that differ.
    /// In spreadspace's each service is one `listen` stanza.
    public var text: String {
        var lines: [String] = []
        switch dialect {
        case .zekoll:
            if let standalone { lines.append("standalone " + (standalone ? "yes" : "no")) }
            if let logname { lines.append("logname \(logname)") }
            for service in services { lines += zekollLines(service) }
        case .spreadspace:
            for service in services { lines += spreadspaceLines(service) }
        }
        return lines.map { $0 + "\n" }.joined()
    }

    private func zekollLines(_ service: ProxyService) -> [String] {
        var lines = ["", "port \(service.port)"]
        let wide = service.handlers.first { $0.interface == nil }
        if let wide {
            lines += Self.zekollTarget(wide.target) + Self.zekollSettings(wide, over: nil, logname: logname)
        }
        for handler in service.handlers where handler.interface != nil {
            lines.append("interface \(handler.interface!)")
            lines += Self.zekollTarget(handler.target)
            lines += Self.zekollSettings(handler, over: wide, logname: logname)
        }
        return lines
    }

    private static func zekollTarget(_ target: ProxyTarget) -> [String] {
        switch target {
        case .forward(let host, let port, _, _, let rotate):
            let shown = host.contains(":") ? "[\(host)]" : host
            var lines = ["server " + shown + (port.map { ":\($0)" } ?? "")]
            if let rotate { lines.append("rotate \(rotate.start) \(rotate.end)") }
            return lines
        case .exec(let argv):
            return ["exec " + argv.joined(separator: " ")]
        }
    }

    /// The settings of `handler` that it does not inherit from `outer` (the port's handler for
    /// every address) or, for the logname, from the file's.
    private static func zekollSettings(_ handler: ProxyHandler, over outer: ProxyHandler?, logname: String?) -> [String]
    {
        var lines: [String] = []
        func add<T: Equatable>(_ value: T?, _ inherited: T?, _ line: (T) -> String) {
            guard let value, value != inherited else { return }
            lines.append(line(value))
        }
        add(handler.accessControlProgram, outer?.accessControlProgram) { "acp " + $0.joined(separator: " ") }
        add(handler.uid, outer?.uid) { "uid \($0)" }
        add(handler.gid, outer?.gid) { "gid \($0)" }
        add(handler.user, outer?.user) { "user \($0)" }
        add(handler.logname, outer?.logname ?? logname) { "logname \($0)" }
        let prefix = handler.variablePrefix
        add(prefix, outer?.variablePrefix ?? ProxyHandler.defaultVariablePrefix) { "setenv \($0)" }
        add(handler.timeout, outer?.timeout ?? ProxyHandler.defaultTimeout) { "timeout \($0)" }
        if let writefile = handler.writefile,
            writefile != outer?.writefile || handler.debug != (outer?.debug ?? false)
        {
            lines.append((handler.debug ? "debug " : "writefile ") + writefile)
        }
        add(handler.rules, outer?.rules) { "rules \($0)" }
        add(handler.proxyProtocol, outer?.proxyProtocol) { "proxy-protocol \($0 == .v1 ? "v1" : "v2")" }
        // TLS is the handler's own, never inherited.
        lines += TLSDirectives.words(server: handler.tls, client: handler.remoteTLS).map { "\($0) \($1)" }
        return lines
    }

    private func spreadspaceLines(_ service: ProxyService) -> [String] {
        var lines = ["listen \(service.listen) \(service.port)", "{"]
        if service.resolv != .any { lines.append("  resolv: \(service.resolv);") }
        for handler in service.handlers {
            guard case .forward(let host, let port, let resolv, let source, _) = handler.target else { continue }
            lines.append("  remote: \(host) \(port.map { String($0) } ?? String(service.port));")
            if resolv != .any { lines.append("  remote-resolv: \(resolv);") }
            if let source { lines.append("  source: \(source);") }
            if let rules = handler.rules { lines.append("  rules: \(rules);") }
            if let version = handler.proxyProtocol {
                lines.append("  proxy-protocol: \(version == .v1 ? "v1" : "v2");")
            }
            for (name, value) in TLSDirectives.words(server: handler.tls, client: handler.remoteTLS) {
                lines.append("  \(name): \(value);")
            }
        }
        lines.append("};")
        return lines
    }
}

extension ProxyConfiguration {
    /// The configuration without what only places it in its file (the line of each service and
    /// handler, the warnings): two of these are equal when they serve the same.
    public var withoutSourcePositions: ProxyConfiguration {
        var copy = self
        copy.warnings = []
        for s in copy.services.indices {
            copy.services[s].line = 0
            for h in copy.services[s].handlers.indices { copy.services[s].handlers[h].line = 0 }
        }
        return copy
    }
}

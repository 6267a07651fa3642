import GatewayKit

// MARK: - Ports

/// Parses a port: a decimal number 1-65535 or a tcp service name looked up in `serviceNames`.
/// `directive` names the setting in messages (`port`, `server port`, `remote port`, ...).
func parsePort(
    _ text: String,
    directive: String,
    serviceNames: ServiceNameSource
) throws(ConfigurationProblem) -> UInt16 {
    if !text.isEmpty, text.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) {
        guard let value = Int(text), value >= 1, value <= 65535 else {
            throw .invalidValue(directive: directive, value: text, expected: "a port number 1-65535 or a service name")
        }
        return UInt16(value)
    }
    guard let port = serviceNames.port(of: text), port != 0 else {
        throw .unknownService(text, servicesFile: serviceNames.name)
    }
    return port
}

// MARK: - Addresses

/// An IP address literal, optionally in brackets (`[2001:db8::1]`), IPv4-mapped IPv6 turned into IPv4.
func parseAddressLiteral(_ text: String) -> IPAddress? {
    var inner = Substring(text)
    if inner.first == "[" && inner.last == "]" { inner = inner.dropFirst().dropLast() }
    return IPAddress(String(inner))?.unmapped
}

func isIPv6Literal(_ text: Substring) -> Bool { HostSyntax.isIPv6Literal(text) }

func isValidHost(_ text: Substring) -> Bool { HostSyntax.isValidHost(text) }

/// The family of a host that is an IP literal; nil for host names.
/// IPv4-mapped IPv6 literals count as IPv4.
func literalFamily(_ host: String) -> IPAddress.Family? {
    guard isValidHost(Substring(host)) else { return nil }
    let address = host.split(separator: "%", maxSplits: 1, omittingEmptySubsequences: false)[0]
    return IPAddress(String(address))?.unmapped.family
}

/// A host with its brackets removed when it is a bracketed IPv6 literal (`[::1]` -> `::1`).
func unbracketedHost(_ text: String) -> String {
    if text.first == "[" && text.last == "]" && text.count >= 2 { return String(text.dropFirst().dropLast()) }
    return text
}

// MARK: - host[:port]

extension ProxyTarget {
    /// Splits Zekoll's `host[:port]` into a host and the port text (nil when omitted).
    ///
    /// Accepted forms: `host`, `host:port`, `1.2.3.4`, `1.2.3.4:port`, `[2001:db8::1]`, `[2001:db8::1]:port`
    /// and a bare IPv6 literal such as `2001:db8::1` or `::1`, which never carries a port (write brackets for
    /// one). `port` may be a number or a service name; the host is returned without brackets.
    public static func splitServer(_ text: String) throws(ConfigurationProblem) -> (host: String, port: String?) {
        let expected = "HOST, HOST:PORT, [IPV6-ADDRESS]:PORT or an IPv6 address"
        guard let split = HostSyntax.split(text) else {
            throw ConfigurationProblem.invalidValue(directive: "server", value: text, expected: expected)
        }
        return split
    }

    /// Parses Zekoll's `server host[:port]` (see ``splitServer(_:)``) into a forward target, looking a port
    /// name up in `serviceNames`. A port of nil means the port the connection arrived on.
    public static func server(
        _ text: String,
        serviceNames: ServiceNameSource = .system
    ) throws(ConfigurationProblem) -> ProxyTarget {
        if text.hasPrefix("/") || text.hasPrefix(".") { throw .serverIsProgram(text) }
        let (host, portText) = try splitServer(text)
        var port: UInt16?
        if let portText { port = try parsePort(portText, directive: "server port", serviceNames: serviceNames) }
        return .forward(host: host, port: port)
    }
}

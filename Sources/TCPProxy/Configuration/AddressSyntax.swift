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

/// True when `text` is an IPv6 literal, possibly with a `%zone` suffix (`fe80::1%eth0`).
func isIPv6Literal(_ text: Substring) -> Bool {
    let parts = text.split(separator: "%", maxSplits: 1, omittingEmptySubsequences: false)
    guard IPAddress(parsing: String(parts[0]), family: .v6) != nil else { return false }
    return parts.count == 1 || (!parts[1].isEmpty && parts[1].utf8.allSatisfy(isNameByte))
}

/// A host as a file may give it: an IP literal (IPv6 with an optional zone) or a host name of letters, digits,
/// `-`, `_` and dots. Words of digits and dots only must be valid IPv4 addresses.
func isValidHost(_ text: Substring) -> Bool {
    guard !text.isEmpty else { return false }
    if text.contains(":") { return isIPv6Literal(text) }
    if text.utf8.allSatisfy({ ($0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9")) || $0 == UInt8(ascii: ".") }) {
        return IPAddress(parsing: String(text), family: .v4) != nil
    }
    return text.utf8.allSatisfy { isNameByte($0) || $0 == UInt8(ascii: ".") }
        && text.first != "." && text.first != "-"
}

private func isNameByte(_ byte: UInt8) -> Bool {
    switch byte {
    case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
        UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"):
        return true
    default:
        return false
    }
}

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
        let invalid = ConfigurationProblem.invalidValue(directive: "server", value: text, expected: expected)
        if text.first == "[" {
            guard let close = text.firstIndex(of: "]") else { throw invalid }
            let inner = text[text.index(after: text.startIndex)..<close]
            guard isIPv6Literal(inner) || IPAddress(parsing: String(inner), family: .v4) != nil else { throw invalid }
            let rest = text[text.index(after: close)...]
            if rest.isEmpty { return (String(inner), nil) }
            guard rest.first == ":", rest.count > 1 else { throw invalid }
            return (String(inner), String(rest.dropFirst()))
        }
        let colons = text.filter { $0 == ":" }.count
        if colons >= 2 {
            guard isIPv6Literal(Substring(text)) else { throw invalid }
            return (text, nil)
        }
        if colons == 1 {
            let parts = text.split(separator: ":", omittingEmptySubsequences: false)
            guard isValidHost(parts[0]), !parts[1].isEmpty else { throw invalid }
            return (String(parts[0]), String(parts[1]))
        }
        guard isValidHost(Substring(text)) else { throw invalid }
        return (text, nil)
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

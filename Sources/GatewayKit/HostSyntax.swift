/// Host syntax shared by the daemons' command lines and files: IP literals (IPv6 with an
/// optional `%zone`), host names, and `host[:port]`.
public enum HostSyntax {
    /// True when `text` is an IPv6 literal, possibly with a `%zone` suffix (`fe80::1%eth0`).
    public static func isIPv6Literal(_ text: Substring) -> Bool {
        let parts = text.split(separator: "%", maxSplits: 1, omittingEmptySubsequences: false)
        guard IPAddress(parsing: String(parts[0]), family: .v6) != nil else { return false }
        return parts.count == 1 || (!parts[1].isEmpty && parts[1].utf8.allSatisfy(isNameByte))
    }

    /// A host as a file may give it: an IP literal (IPv6 with an optional zone) or a host name of letters, digits,
    /// `-`, `_` and dots. Words of digits and dots only must be valid IPv4 addresses.
    public static func isValidHost(_ text: Substring) -> Bool {
        guard !text.isEmpty else { return false }
        if text.contains(":") { return isIPv6Literal(text) }
        if text.utf8.allSatisfy({ ($0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9")) || $0 == UInt8(ascii: ".") }) {
            return IPAddress(parsing: String(text), family: .v4) != nil
        }
        return text.utf8.allSatisfy { isNameByte($0) || $0 == UInt8(ascii: ".") }
            && text.first != "." && text.first != "-"
    }

    static func isNameByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"):
            return true
        default:
            return false
        }
    }

    /// Splits `host[:port]` into a host (without brackets) and the port text (nil when
    /// omitted); nil when the text is neither. Accepted: `host`, `host:port`, `1.2.3.4`,
    /// `1.2.3.4:port`, `[2001:db8::1]`, `[2001:db8::1]:port` and a bare IPv6 literal such as
    /// `2001:db8::1` or `::1`, which never carries a port (brackets are needed for one).
    public static func split(_ text: String) -> (host: String, port: String?)? {
        if text.first == "[" {
            guard let close = text.firstIndex(of: "]") else { return nil }
            let inner = text[text.index(after: text.startIndex)..<close]
            guard isIPv6Literal(inner) || IPAddress(parsing: String(inner), family: .v4) != nil else { return nil }
            let rest = text[text.index(after: close)...]
            if rest.isEmpty { return (String(inner), nil) }
            guard rest.first == ":", rest.count > 1 else { return nil }
            return (String(inner), String(rest.dropFirst()))
        }
        let colons = text.filter { $0 == ":" }.count
        if colons >= 2 {
            guard isIPv6Literal(Substring(text)) else { return nil }
            return (text, nil)
        }
        if colons == 1 {
            let parts = text.split(separator: ":", omittingEmptySubsequences: false)
            guard isValidHost(parts[0]), !parts[1].isEmpty else { return nil }
            return (String(parts[0]), String(parts[1]))
        }
        guard isValidHost(Substring(text)) else { return nil }
        return (text, nil)
    }
}

#if canImport(Glibc)
import Glibc
#endif

/// Service names from /etc/services, read directly rather than through getservbyname: the
/// tools are static binaries, and glibc's name-service switch would need its shared modules.
public enum ServiceNames {
    /// The port of `name` (a service name or an alias) for `proto` ("tcp") in a services file's
    /// text; nil when absent.
    public static func port(of name: String, proto: String, in text: [UInt8]) -> UInt16? {
        var found: UInt16?
        entries(proto: proto, in: text) { port, names in
            guard names.contains(where: { $0.elementsEqual(name.utf8) }) else { return true }
            found = port
            return false
        }
        return found
    }

    /// Every port's first (canonical) name for `proto` in a services file's text: what a log
    /// line calls a port (sockd's `(telnet)`).
    public static func names(proto: String = "tcp", in text: [UInt8]) -> [UInt16: String] {
        var names: [UInt16: String] = [:]
        entries(proto: proto, in: text) { port, words in
            if names[port] == nil { names[port] = String(decoding: words[0], as: UTF8.self) }
            return true
        }
        return names
    }

    /// Calls `body` with each `proto` line's port and names (the name, then its aliases) until
    /// it returns false.
    private static func entries(
        proto: String, in text: [UInt8], _ body: (UInt16, [ArraySlice<UInt8>]) -> Bool
    ) {
        for rawLine in text.split(separator: UInt8(ascii: "\n")) {
            let line = rawLine.prefix { $0 != UInt8(ascii: "#") }
            let words = line.split { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") || $0 == UInt8(ascii: "\r") }
            guard words.count >= 2 else { continue }
            let portProto = words[1].split(separator: UInt8(ascii: "/"))
            guard portProto.count == 2, portProto[1].elementsEqual(proto.utf8),
                let port = UInt16(String(decoding: portProto[0], as: UTF8.self))
            else { continue }
            if !body(port, [words[0]] + words[2...]) { return }
        }
    }

    /// The port of `name` for `proto` in `path` (default /etc/services).
    public static func port(of name: String, proto: String = "tcp", path: String = "/etc/services") -> UInt16? {
        guard let text = try? FD.readWholeFile(path) else { return nil }
        return port(of: name, proto: proto, in: text)
    }
}

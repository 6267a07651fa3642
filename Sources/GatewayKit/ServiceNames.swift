#if canImport(Glibc)
import Glibc
#endif

/// Service names from /etc/services, read directly rather than through getservbyname: the
/// tools are static binaries, and glibc's name-service switch would need its shared modules.
public enum ServiceNames {
    /// The port of `name` (a service name or an alias) for `proto` ("tcp") in a services file's
    /// text; nil when absent.
    public static func port(of name: String, proto: String, in text: [UInt8]) -> UInt16? {
        for rawLine in text.split(separator: UInt8(ascii: "\n")) {
            let line = rawLine.prefix { $0 != UInt8(ascii: "#") }
            let words = line.split { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") || $0 == UInt8(ascii: "\r") }
            guard words.count >= 2 else { continue }
            let portProto = words[1].split(separator: UInt8(ascii: "/"))
            guard portProto.count == 2, String(decoding: portProto[1], as: UTF8.self) == proto,
                let port = UInt16(String(decoding: portProto[0], as: UTF8.self))
            else { continue }
            let names = [words[0]] + words[2...]
            if names.contains(where: { String(decoding: $0, as: UTF8.self) == name }) { return port }
        }
        return nil
    }

    /// The port of `name` for `proto` in `path` (default /etc/services).
    public static func port(of name: String, proto: String = "tcp", path: String = "/etc/services") -> UInt16? {
        guard let text = try? FD.readWholeFile(path) else { return nil }
        return port(of: name, proto: proto, in: text)
    }
}

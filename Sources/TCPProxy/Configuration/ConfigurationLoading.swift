#if canImport(Glibc)
import Glibc
#endif
import GatewayKit

extension ProxyConfiguration {
    /// Parses a configuration file's text in whichever dialect it is written (see
    /// ``ConfigurationDialect/detect(in:)``). `path` names the file in messages; port and service names are looked
    /// up in `serviceNames`. Throws the first problem in the file; nothing is half-applied.
    public init(
        parsing text: [UInt8],
        path: String = ProxyConfiguration.defaultPath,
        serviceNames: ServiceNameSource = .system
    ) throws(ConfigurationError) {
        switch ConfigurationDialect.detect(in: text) {
        case .zekoll:
            var parser = ZekollParser(path: path, serviceNames: serviceNames)
            self = try parser.parse(text)
        case .spreadspace:
            var parser = SpreadspaceParser(path: path, serviceNames: serviceNames)
            self = try parser.parse(text)
        }
    }

    /// Parses configuration text given as a string, like the initializer that takes bytes.
    public init(
        parsing text: String,
        path: String = ProxyConfiguration.defaultPath,
        serviceNames: ServiceNameSource = .system
    ) throws(ConfigurationError) {
        try self.init(parsing: Array(text.utf8), path: path, serviceNames: serviceNames)
    }

    /// Reads and parses the file at `path` (by default /etc/tcpproxy.conf).
    public static func load(
        from path: String = ProxyConfiguration.defaultPath,
        serviceNames: ServiceNameSource = .system
    ) throws(ConfigurationError) -> ProxyConfiguration {
        let text: [UInt8]
        do { text = try FD.readWholeFile(path) } catch {
            throw ConfigurationError(path: path, line: nil, problem: .unreadable(error))
        }
        return try ProxyConfiguration(parsing: text, path: path, serviceNames: serviceNames)
    }
}

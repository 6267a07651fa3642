import GatewayKit

/// Where service names such as `smtp` in `port smtp` are looked up.
public enum ServiceNameSource: Sendable, Equatable {
    /// A services(5) file.
    case file(String)
    /// Services text held in memory; `name` stands for it in messages.
    case text([UInt8], name: String)

    /// The system's /etc/services.
    public static let system = ServiceNameSource.file("/etc/services")

    /// The tcp port of `name` (a service name or alias); nil when the source has none.
    public func port(of name: String) -> UInt16? {
        switch self {
        case .file(let path): return ServiceNames.port(of: name, proto: "tcp", path: path)
        case .text(let text, _): return ServiceNames.port(of: name, proto: "tcp", in: text)
        }
    }

    /// The file's path, or the name given to the text.
    public var name: String {
        switch self {
        case .file(let path): return path
        case .text(_, let name): return name
        }
    }
}

/// The tcp services of an /etc/services text, read once, both ways: names (and aliases) to
/// ports for sockd.conf's `op service`, ports to their first name for `%S`.
public struct ServiceTable: Sendable {
    private var ports: [[UInt8]: UInt16] = [:]
    private var names: [UInt16: [UInt8]] = [:]

    /// Parses `name port/proto [aliases...]` lines (`#` comments); only `tcp` lines count, and
    /// the first line for a name or a port wins, as getservbyname and getservbyport answer.
    public init(text: [UInt8]) {
        ConfigWords.forEachLine(text) { line, _ in
            let words = ConfigWords.words(line.prefix { $0 != ConfigWords.hash })
            guard words.count >= 2, let slash = words[1].firstIndex(of: ConfigWords.slash),
                words[1][(slash + 1)...].elementsEqual("tcp".utf8)
            else { return }
            let digits = words[1][..<slash]
            guard !digits.isEmpty, digits.count <= 5, digits.allSatisfy({ $0 >= 48 && $0 <= 57 }),
                let port = UInt16(String(decoding: digits, as: UTF8.self))
            else { return }
            if names[port] == nil { names[port] = Array(words[0]) }
            for name in [words[0]] + words[2...] where ports[Array(name)] == nil {
                ports[Array(name)] = port
            }
        }
    }

    /// The port of a service name or alias.
    public func port(of name: [UInt8]) -> UInt16? { ports[name] }

    /// The first name of a port (for `%S`).
    public func name(of port: UInt16) -> [UInt8]? { names[port] }

    /// ``port(of:)`` as the parser takes it.
    public var lookup: ServiceLookup {
        let ports = ports
        return { ports[$0] }
    }
}

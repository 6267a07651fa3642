import CDB

/// The client facts a rule lookup uses, as tcpserver knows them. Bytes, not text: a host
/// name or ident answer may hold any byte, and the lookup must match them exactly.
public struct RuleClient: Equatable, Sendable {
    /// TCPREMOTEIP: dotted IPv4, or IPv6 text as the IPv6 variant prints it.
    public var ip: [UInt8]
    /// TCPREMOTEHOST, nil when unknown.
    public var host: [UInt8]?
    /// TCPREMOTEINFO, nil when unknown.
    public var info: [UInt8]?

    public init(ip: [UInt8], host: [UInt8]? = nil, info: [UInt8]? = nil) {
        self.ip = ip
        self.host = host
        self.info = info
    }

    public init(ip: String, host: String? = nil, info: String? = nil) {
        self.init(ip: Array(ip.utf8), host: host.map { Array($0.utf8) }, info: info.map { Array($0.utf8) })
    }
}

/// tcpserver's lookup order, first match wins:
/// `info@ip`, `info@=host`, `ip`, `=host`, the ip cut after each `.` or `:` (longest first),
/// `=.domain` suffixes of the host (longest first), `=`, and finally the empty key.
/// Keys needing a host or info are skipped when that is unknown.
public enum RuleLookup {
    private static let at = UInt8(ascii: "@")
    private static let equals = UInt8(ascii: "=")

    /// Every key tried for `client`, in order.
    public static func keys(for client: RuleClient) -> [[UInt8]] {
        var keys: [[UInt8]] = []
        let ip = client.ip
        if let info = client.info {
            keys.append(info + [at] + ip)
            if let host = client.host { keys.append(info + [at, equals] + host) }
        }
        keys.append(ip)
        if let host = client.host { keys.append([equals] + host) }
        var n = ip.count
        while n > 0 {
            if ip[n - 1] == UInt8(ascii: ".") || ip[n - 1] == UInt8(ascii: ":") { keys.append(Array(ip[0..<n])) }
            n -= 1
        }
        if let host = client.host {
            for i in host.indices where host[i] == UInt8(ascii: ".") { keys.append([equals] + host[i...]) }
            keys.append([equals])
        }
        keys.append([])
        return keys
    }

    /// The first rule that applies, or nil when none does (no default rule either).
    public static func find(_ client: RuleClient, in reader: CDBReader) throws(CDBReadError) -> MatchedRule? {
        for key in keys(for: client) {
            if let range = try reader.find(key) {
                return MatchedRule(key: key, instructions: Array(reader.bytes[range]))
            }
        }
        return nil
    }
}

/// A rule found for a client: the key that matched and its encoded instructions.
public struct MatchedRule: Equatable, Sendable {
    public let key: [UInt8]
    public let instructions: [UInt8]

    public init(key: [UInt8], instructions: [UInt8]) {
        self.key = key
        self.instructions = instructions
    }

    /// The instructions as tcpserver applies them.
    public var decision: RuleDecision { RuleDecision(instructions) }
}

/// One instruction of an encoded rule, as tcprulescheck lists them.
public enum RuleInstruction: Equatable, Sendable {
    case deny
    /// `+NAME=value`, kept as the raw bytes after the `+` (up to its NUL).
    case setenv([UInt8])
}

/// What tcpserver does with a rule: deny, and the variables it sets.
public struct RuleDecision: Equatable, Sendable {
    public var deny = false
    /// Variables in rule order, as raw `name` and `value` bytes; a later one with the same
    /// name wins when applied.
    public var environment: [Variable] = []

    public struct Variable: Equatable, Sendable {
        public var name: [UInt8]
        public var value: [UInt8]

        public init(name: [UInt8], value: [UInt8]) {
            self.name = name
            self.value = value
        }
    }

    public init(_ data: [UInt8]) {
        for item in RuleDecision.instructions(data) {
            switch item {
            case .deny: deny = true
            case .setenv(let text):
                // tcpserver sets a variable only when the text has a '='.
                guard let eq = text.firstIndex(of: UInt8(ascii: "=")) else { continue }
                environment.append(Variable(name: Array(text[..<eq]), value: Array(text[(eq + 1)...])))
            }
        }
    }

    /// Splits encoded instructions into items: each item ends at a NUL; an unterminated tail
    /// is ignored; items starting with anything but `D` or `+` are ignored.
    public static func instructions(_ data: [UInt8]) -> [RuleInstruction] {
        var out: [RuleInstruction] = []
        var start = 0
        while let end = data[start...].firstIndex(of: 0) {
            switch data[start] {
            case UInt8(ascii: "D"): out.append(.deny)
            case UInt8(ascii: "+"): out.append(.setenv(Array(data[(start + 1)..<end])))
            default: break
            }
            start = end + 1
        }
        return out
    }
}

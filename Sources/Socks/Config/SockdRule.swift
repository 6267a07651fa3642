import GatewayKit

/// What a matching line decides.
public enum RuleAction: UInt8, Hashable, Sendable {
    case deny = 0
    case permit = 1

    public var word: String { self == .permit ? "permit" : "deny" }
}

/// How identd (RFC 1413) verifies the user a client claims: sockd's `-I` and `-i`, or a line's
/// `?=I`, `?=i`, `?=n`.
public enum IdentCheck: UInt8, Hashable, Sendable {
    /// Not asked (`?=n`, or neither option).
    case off = 1
    /// Denied only when identd names another user (`-i`, `?=i`).
    case lenient = 2
    /// Denied when identd cannot be reached or names another user (`-I`, `?=I`).
    case strict = 3

    /// The letter after `?=`.
    public var letter: UInt8 {
        switch self {
        case .off: UInt8(ascii: "n")
        case .lenient: UInt8(ascii: "i")
        case .strict: UInt8(ascii: "I")
        }
    }
}

/// `op dst_port`: the destination port compared with a number.
public struct PortCondition: Hashable, Sendable {
    public enum Operator: UInt8, Hashable, Sendable, CaseIterable {
        case eq = 1, neq, lt, gt, le, ge

        public var word: String {
            switch self {
            case .eq: "eq"
            case .neq: "neq"
            case .lt: "lt"
            case .gt: "gt"
            case .le: "le"
            case .ge: "ge"
            }
        }

        init?(word: some Collection<UInt8>) {
            guard let found = Operator.allCases.first(where: { $0.word.utf8.elementsEqual(word) }) else { return nil }
            self = found
        }
    }

    public var op: Operator
    public var port: UInt16
    /// The /etc/services name the file gave instead of a number (kept for the listing).
    public var service: [UInt8]?

    public init(op: Operator, port: UInt16, service: [UInt8]? = nil) {
        self.op = op
        self.port = port
        self.service = service
    }

    public func matches(_ candidate: UInt16) -> Bool {
        switch op {
        case .eq: candidate == port
        case .neq: candidate != port
        case .lt: candidate < port
        case .gt: candidate > port
        case .le: candidate <= port
        case .ge: candidate >= port
        }
    }

    public var text: [UInt8] { Array("\(op.word) ".utf8) + (service ?? Array(String(port).utf8)) }
}

/// One entry of a `*=` user list.
public enum UserEntry: Hashable, Sendable {
    /// A user name.
    case name([UInt8])
    /// A file of user names (`/path`), with the names it held when the configuration was read.
    case file(path: [UInt8], names: [[UInt8]])
}

/// A `*=` list: the users a line applies to.
public struct UserList: Hashable, Sendable {
    public let entries: [UserEntry]
    private let members: Set<[UInt8]>

    public init(_ entries: [UserEntry]) {
        self.entries = entries
        var members = Set<[UInt8]>()
        for entry in entries {
            switch entry {
            case .name(let name): members.insert(name)
            case .file(_, let names): members.formUnion(names)
            }
        }
        self.members = members
    }

    public func contains(_ user: [UInt8]) -> Bool { members.contains(user) }

    /// `*=a,b,/path`.
    public var text: [UInt8] {
        let parts = entries.map { entry -> [UInt8] in
            switch entry {
            case .name(let name): name
            case .file(let path, _): path
            }
        }
        return Array("*=".utf8) + Array(parts.joined(separator: [ConfigWords.comma]))
    }

    /// A user name as a list can hold it: not empty, no blank, comma, LF or `#`.
    static func isUserName(_ name: [UInt8]) -> Bool {
        ConfigWords.isWord(name) && !name.contains(ConfigWords.comma)
    }

    /// The names in a user list file: blank, tab or comma separated, `#` to the end of the
    /// line a comment.
    static func names(inFile text: [UInt8]) -> [[UInt8]] {
        var names: [[UInt8]] = []
        ConfigWords.forEachLine(text) { line, _ in
            let content = line.prefix { $0 != ConfigWords.hash }
            for name in content.split(whereSeparator: { ConfigWords.isBlank($0) || $0 == ConfigWords.comma }) {
                names.append(Array(name))
            }
        }
        return names
    }
}

/// One line of sockd.conf:
/// `permit|deny [?=I|?=i|?=n] [*=userlist] src_addr src_mask [dst_addr dst_mask] [op dst_port] [: shell_command]`.
public struct SockdRule: Hashable, Sendable {
    /// The line's number in the file: what the log and SIGUSR1's listing name.
    public var line: Int
    public var action: RuleAction
    /// The line's `?=` override of `-I`/`-i`; nil leaves the daemon's setting.
    public var ident: IdentCheck?
    /// The users the line applies to; nil (no `*=`, or `*=` alone) for every user.
    public var users: UserList?
    public var source: AddressPattern
    /// nil: any destination.
    public var destination: AddressPattern?
    /// nil: any port.
    public var port: PortCondition?
    /// The `: shell_command`, run with the `%` substitutions when the line matches.
    public var command: [UInt8]?

    public init(
        line: Int, action: RuleAction, ident: IdentCheck? = nil, users: UserList? = nil, source: AddressPattern,
        destination: AddressPattern? = nil, port: PortCondition? = nil, command: [UInt8]? = nil
    ) {
        self.line = line
        self.action = action
        self.ident = ident
        self.users = users
        self.source = source
        self.destination = destination
        self.port = port
        self.command = command
    }

    /// The identd check for this line when the daemon's own (from -I/-i) is `daemon`.
    public func identCheck(default daemon: IdentCheck) -> IdentCheck { ident ?? daemon }

    /// True when the line applies to `query`.
    public func matches(_ query: RuleQuery) -> Bool {
        if let users, !users.contains(query.user) { return false }
        guard source.matches(query.client, normalisedName: query.clientName) else { return false }
        if let destination, !destination.matches(query.destination, normalisedName: query.destinationName) {
            return false
        }
        if let port, !port.matches(query.port) { return false }
        return true
    }

    /// The line as sockd.conf text, in the canonical order of its fields.
    public var text: [UInt8] {
        var out = Array(action.word.utf8)
        if let ident { out += Array(" ?=".utf8) + [ident.letter] }
        if let users { out += [ConfigWords.space] + users.text }
        out += [ConfigWords.space] + source.text
        if let destination { out += [ConfigWords.space] + destination.text }
        if let port { out += [ConfigWords.space] + port.text }
        if let command { out += Array(" : ".utf8) + command }
        return out
    }
}

/// What the matcher is asked: one request as sockd sees it.
public struct RuleQuery: Hashable, Sendable {
    /// The user the client claims (the SOCKS4 user id, the SOCKS5 user name).
    public var user: [UInt8]
    public var client: IPAddress
    /// The client's name, only when reverse lookup found it and a forward lookup confirmed it.
    public var clientName: [UInt8]?
    public var destination: IPAddress
    /// The destination's name when the request gave one (SOCKS4a, SOCKS5 domain) or it is known.
    public var destinationName: [UInt8]?
    public var port: UInt16

    public init(
        user: [UInt8], client: IPAddress, clientName: [UInt8]? = nil, destination: IPAddress,
        destinationName: [UInt8]? = nil, port: UInt16
    ) {
        self.user = user
        self.client = client
        self.clientName = AddressPattern.normalisedName(clientName)
        self.destination = destination
        self.destinationName = AddressPattern.normalisedName(destinationName)
        self.port = port
    }
}

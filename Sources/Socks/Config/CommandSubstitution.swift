import GatewayKit

/// What a sockd.conf shell command's `%` sequences stand for, for one request (sockd.conf(5)).
public struct CommandValues: Hashable, Sendable {
    /// `connect`, `bind`, or `udp` for a datagram of a UDP association (`%c`).
    public enum Direction: String, Sendable {
        case connect, bind, udp
    }

    /// `%a`; `%A` when no name is known.
    public var clientAddress: IPAddress
    /// `%A`: the client's (reverse-confirmed) name.
    public var clientName: [UInt8]?
    /// `%c`.
    public var direction: Direction
    /// `%p`: sockd's process id.
    public var pid: Int32
    /// `%s`; `%S` when the port has no service name.
    public var port: UInt16
    /// `%S`: the port's /etc/services name.
    public var service: [UInt8]?
    /// `%U`: the user identd reported (`unknown` when it was not asked or did not answer).
    public var identUser: [UInt8]?
    /// `%u`: the user the client claims.
    public var user: [UInt8]
    /// `%z`; `%Z` when no name is known.
    public var destinationAddress: IPAddress
    /// `%Z`: the destination's name.
    public var destinationName: [UInt8]?

    public init(
        clientAddress: IPAddress, clientName: [UInt8]? = nil, direction: Direction, pid: Int32, port: UInt16,
        service: [UInt8]? = nil, identUser: [UInt8]? = nil, user: [UInt8], destinationAddress: IPAddress,
        destinationName: [UInt8]? = nil
    ) {
        self.clientAddress = clientAddress
        self.clientName = clientName
        self.direction = direction
        self.pid = pid
        self.port = port
        self.service = service
        self.identUser = identUser
        self.user = user
        self.destinationAddress = destinationAddress
        self.destinationName = destinationName
    }
}

/// The `%` substitutions of sockd.conf's shell commands:
///
/// | | |
/// |---|---|
/// | `%A` | the client's host name if known, else its address |
/// | `%a` | the client's address |
/// | `%c` | `connect` or `bind` |
/// | `%p` | sockd's process id |
/// | `%S` | the destination port's service name if known, else the number |
/// | `%s` | the destination port number |
/// | `%U` | the user identd reported (`unknown` without one) |
/// | `%u` | the user the client claims |
/// | `%Z` | the destination's host name if known, else its address |
/// | `%z` | the destination's address |
/// | `%%` | `%` |
///
/// Any other `%` sequence is kept as it is. Every substituted value is sanitised first: the
/// command goes to /bin/sh, and the values come from the network (a user id, a name from DNS or
/// from the request), so only `A-Z a-z 0-9 . _ @ : + -` pass and every other byte becomes `_`;
/// a leading `-` becomes `_` too, so a value can never be taken for an option of the command.
/// A user id of `` `rm -rf /` `` reaches the shell as `_rm_-rf___`.
public enum CommandSubstitution {
    public static func expand(_ command: [UInt8], with values: CommandValues) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(command.count)
        var index = command.startIndex
        while index < command.endIndex {
            let byte = command[index]
            guard byte == UInt8(ascii: "%"), index + 1 < command.endIndex else {
                out.append(byte)
                index += 1
                continue
            }
            let letter = command[index + 1]
            if letter == UInt8(ascii: "%") {
                out.append(byte)
            } else if let value = value(of: letter, values) {
                out += sanitised(value)
            } else {
                out += [byte, letter]
            }
            index += 2
        }
        return out
    }

    /// The raw value of `%letter`; nil for a letter without a meaning.
    static func value(of letter: UInt8, _ values: CommandValues) -> [UInt8]? {
        switch letter {
        case UInt8(ascii: "A"): return nonEmpty(values.clientName) ?? Array(values.clientAddress.description.utf8)
        case UInt8(ascii: "a"): return Array(values.clientAddress.description.utf8)
        case UInt8(ascii: "c"): return Array(values.direction.rawValue.utf8)
        case UInt8(ascii: "p"): return Array(String(values.pid).utf8)
        case UInt8(ascii: "S"): return nonEmpty(values.service) ?? Array(String(values.port).utf8)
        case UInt8(ascii: "s"): return Array(String(values.port).utf8)
        case UInt8(ascii: "U"): return nonEmpty(values.identUser) ?? Array("unknown".utf8)
        case UInt8(ascii: "u"): return values.user
        case UInt8(ascii: "Z"):
            return nonEmpty(values.destinationName) ?? Array(values.destinationAddress.description.utf8)
        case UInt8(ascii: "z"): return Array(values.destinationAddress.description.utf8)
        default: return nil
        }
    }

    private static func nonEmpty(_ value: [UInt8]?) -> [UInt8]? {
        guard let value, !value.isEmpty else { return nil }
        return value
    }

    /// `value` with every byte outside the safe set, and a leading `-`, replaced by `_`.
    public static func sanitised(_ value: [UInt8]) -> [UInt8] {
        var out = value.map { isSafe($0) ? $0 : UInt8(ascii: "_") }
        if out.first == UInt8(ascii: "-") { out[0] = UInt8(ascii: "_") }
        return out
    }

    static func isSafe(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        case UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "@"), UInt8(ascii: ":"), UInt8(ascii: "+"),
            UInt8(ascii: "-"):
            return true
        default:
            return false
        }
    }
}

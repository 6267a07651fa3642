import GatewayKit

/// A bad line in sockd.conf or sockd.route, and where: `/etc/sockd.conf:12: unknown action "permt" (...)`.
public struct SockdConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The file, as it was named to the parser.
    public var path: String
    /// The line (1-based).
    public var line: Int
    /// What is wrong.
    public var problem: SockdConfigProblem

    public init(path: String, line: Int, problem: SockdConfigProblem) {
        self.path = path
        self.line = line
        self.problem = problem
    }

    /// `PATH:LINE: MESSAGE`.
    public var description: String { "\(path):\(line): \(problem)" }
}

/// The things that can be wrong on a line of sockd.conf or sockd.route, each message saying
/// what was expected. Words from the file are kept as bytes and shown with ``printable(_:)``.
public enum SockdConfigProblem: Error, Sendable, Equatable, CustomStringConvertible {
    /// The first word is neither `permit` nor `deny`.
    case unknownAction([UInt8])
    /// The line ends where `what` was expected.
    case missing(String)
    /// A word that is no address, name, `.domain`, `ALL` or `address/prefix`.
    case invalidAddress([UInt8])
    /// A mask that is no address of its address's family.
    case invalidMask([UInt8], family: IPAddress.Family)
    /// The part after `/` is no prefix length of the address's family.
    case invalidPrefix([UInt8])
    /// A word in the operator's place that is none of the six.
    case unknownOperator([UInt8])
    /// Neither a port number nor a tcp service in /etc/services.
    case unknownService([UInt8])
    /// `?=` with something other than `I`, `i` or `n`.
    case invalidIdentOption([UInt8])
    /// `?=` or `*=` given twice on one line.
    case repeatedOption([UInt8])
    /// A user list naming a file without a full path, or a name holding a byte a list cannot.
    case invalidUserEntry([UInt8])
    /// A user list file that could not be read.
    case unreadableUserFile([UInt8], SystemError)
    /// Words after everything the line can hold.
    case unexpectedWord([UInt8], expected: String)
    /// A second `#NO_IDENTD:` or `#BAD_ID:` line.
    case repeatedSpecial(String, firstLine: Int)

    public var description: String {
        switch self {
        case .unknownAction(let word):
            return "unknown action \(quote(word)) (expected permit or deny)"
        case .missing(let what):
            return "missing \(what)"
        case .invalidAddress(let word):
            return "invalid address \(quote(word)) (expected an IPv4 or IPv6 address, address/prefix, "
                + "a host name, .domain or ALL)"
        case .invalidMask(let word, let family):
            return "invalid mask \(quote(word)) (expected "
                + (family == .v4 ? "a dotted IPv4 mask such as 255.255.255.0)" : "an IPv6 mask such as ffff:ffff::)")
        case .invalidPrefix(let word):
            return "invalid prefix length in \(quote(word)) (expected 0-32 for IPv4, 0-128 for IPv6)"
        case .unknownOperator(let word):
            return "unknown operator \(quote(word)) (expected eq, neq, lt, gt, le or ge)"
        case .unknownService(let word):
            return "unknown service \(quote(word)) (expected a port number 0-65535 or a tcp service in /etc/services)"
        case .invalidIdentOption(let word):
            return "invalid identd option \(quote(word)) (expected ?=I, ?=i or ?=n)"
        case .repeatedOption(let word):
            return "option \(quote(word)) given twice"
        case .invalidUserEntry(let word):
            return "invalid user list entry \(quote(word)) (expected a user name or a file's full path, /...)"
        case .unreadableUserFile(let path, let error):
            return "unable to read user list \(printable(path)): \(error)"
        case .unexpectedWord(let word, let expected):
            return "unexpected \(quote(word)) (expected \(expected))"
        case .repeatedSpecial(let keyword, let firstLine):
            return "\(keyword) is already given at line \(firstLine)"
        }
    }
}

/// A file with bad lines that must not be applied (a reload, or make_sockdfc): every bad line, in order.
public struct SockdConfigRejection: Error, Sendable, Equatable, CustomStringConvertible {
    public var path: String
    public var errors: [SockdConfigError]

    public init(path: String, errors: [SockdConfigError]) {
        self.path = path
        self.errors = errors
    }

    /// A summary line, then each bad line.
    public var description: String {
        let count = errors.count == 1 ? "1 bad line" : "\(errors.count) bad lines"
        return (["\(path): \(count), not applied"] + errors.map(\.description)).joined(separator: "\n")
    }
}

/// How a parse treats bad lines.
public enum SockdConfigMode: Sendable {
    /// At start-up, as CSTC sockd did: a bad line is reported and skipped.
    case lenient
    /// On reload and in make_sockdfc: any bad line rejects the whole file.
    case strict
}

/// A word in double quotes, its odd bytes escaped.
func quote(_ word: some Collection<UInt8>) -> String { "\"" + printable(word) + "\"" }

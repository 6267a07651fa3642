import GatewayKit

/// A client's command line, as pop3.proxy judges it: one of the commands it forwards (with
/// arguments checked as RFC 1939 defines them), CAPA (answered by the proxy), or a line it
/// refuses. Pure: bytes in, a value out.
///
/// RFC 1939 section 3: a case-insensitive keyword of 3 or 4 characters, arguments separated
/// by a single space, each at most 40 characters; message numbers are decimal and start at 1.
/// PASS takes the rest of the line (a password may hold spaces: RFC 1939 lets the server
/// treat them as part of it). A line is given without its CRLF (or bare LF).
public enum POP3Command: Equatable, Sendable {
    case user([UInt8])
    case pass([UInt8])
    /// LIST or UIDL with an optional message number.
    case list(UInt32?)
    case uidl(UInt32?)
    case stat
    case retr(UInt32)
    case dele(UInt32)
    /// TOP msg n: the headers and `n` lines of the body (n may be 0).
    case top(UInt32, lines: UInt32)
    case last
    case noop
    case rset
    case quit
    case capa
    /// STLS (RFC 2595): TLS before the login, answered by the proxy when it has a certificate.
    case stls
    /// A keyword pop3.proxy does not forward (APOP, AUTH, XTND, anything else).
    case unsupported(keyword: String)
    /// A supported keyword with arguments RFC 1939 does not allow.
    case malformed(keyword: String, reason: String)

    /// The longest argument RFC 1939 allows.
    public static let maximumArgument = 40

    /// The command on `line` (without its line end).
    public static func parse(_ line: some Collection<UInt8>) -> POP3Command {
        let bytes = Array(line)
        let keywordEnd = bytes.firstIndex(of: UInt8(ascii: " ")) ?? bytes.count
        let upper = bytes[..<keywordEnd].map(uppercased)
        let keyword = String(decoding: upper, as: UTF8.self)
        let rest = keywordEnd < bytes.count ? Array(bytes[(keywordEnd + 1)...]) : nil
        // The keyword as a log line shows it (a hostile one may hold any byte).
        let shown = printable(upper)

        switch keyword {
        case "PASS":
            // The whole rest, spaces included; it may not be empty.
            guard let rest, !rest.isEmpty else { return .malformed(keyword: shown, reason: "a password is needed") }
            // No byte that could end the line early on its way to the server.
            guard !rest.contains(where: { $0 == 0 || $0 == 13 || $0 == 10 }) else {
                return .malformed(keyword: shown, reason: "a password holds NUL, CR or LF")
            }
            return .pass(rest)
        case "USER":
            switch arguments(rest) {
            case .success(let words) where words.count == 1: return .user(words[0])
            case .success: return .malformed(keyword: shown, reason: "one user name is needed")
            case .failure(let problem): return .malformed(keyword: shown, reason: problem.text)
            }
        case "STAT", "LAST", "NOOP", "RSET", "QUIT", "CAPA", "STLS":
            guard rest == nil else { return .malformed(keyword: shown, reason: "no arguments are allowed") }
            switch keyword {
            case "STAT": return .stat
            case "LAST": return .last
            case "NOOP": return .noop
            case "RSET": return .rset
            case "QUIT": return .quit
            case "STLS": return .stls
            default: return .capa
            }
        case "LIST", "UIDL":
            let numbers = numbers(rest, count: 0...1, keyword: shown)
            guard case .success(let values) = numbers else { return numbers.failureCommand! }
            return keyword == "LIST" ? .list(values.first) : .uidl(values.first)
        case "RETR", "DELE":
            let numbers = numbers(rest, count: 1...1, keyword: shown)
            guard case .success(let values) = numbers else { return numbers.failureCommand! }
            return keyword == "RETR" ? .retr(values[0]) : .dele(values[0])
        case "TOP":
            let numbers = numbers(rest, count: 2...2, keyword: shown, zeroAllowedAt: 1)
            guard case .success(let values) = numbers else { return numbers.failureCommand! }
            return .top(values[0], lines: values[1])
        default:
            return .unsupported(keyword: shown)
        }
    }

    /// The keyword as the log names it.
    public var keyword: String {
        switch self {
        case .user: return "USER"
        case .pass: return "PASS"
        case .list: return "LIST"
        case .uidl: return "UIDL"
        case .stat: return "STAT"
        case .retr: return "RETR"
        case .dele: return "DELE"
        case .top: return "TOP"
        case .last: return "LAST"
        case .noop: return "NOOP"
        case .rset: return "RSET"
        case .quit: return "QUIT"
        case .capa: return "CAPA"
        case .stls: return "STLS"
        case .unsupported(let keyword), .malformed(let keyword, _): return keyword
        }
    }

    /// Whether the server answers with a multi-line response (after `+OK`): LIST and UIDL
    /// without a number, RETR, TOP, CAPA.
    public var expectsMultiline: Bool {
        switch self {
        case .list(nil), .uidl(nil), .retr, .top, .capa: return true
        default: return false
        }
    }

    /// The line sent to the server for a forwarded command (keyword in capitals, CRLF).
    /// USER and PASS are not sent as the client gave them (see ``ServerLogin``).
    public var line: [UInt8] {
        var text: [UInt8]
        switch self {
        case .user(let name): text = Array("USER ".utf8) + name
        case .pass(let password): text = Array("PASS ".utf8) + password
        case .list(let n): text = Array(("LIST" + (n.map { " \($0)" } ?? "")).utf8)
        case .uidl(let n): text = Array(("UIDL" + (n.map { " \($0)" } ?? "")).utf8)
        case .retr(let n): text = Array("RETR \(n)".utf8)
        case .dele(let n): text = Array("DELE \(n)".utf8)
        case .top(let n, let lines): text = Array("TOP \(n) \(lines)".utf8)
        default: text = Array(keyword.utf8)
        }
        return text + [13, 10]
    }

    // MARK: - Arguments

    struct Problem: Error {
        let text: String
    }

    /// The arguments of `rest`: words separated by single spaces, none empty or longer than 40.
    static func arguments(_ rest: [UInt8]?) -> Result<[[UInt8]], Problem> {
        guard let rest else { return .success([]) }
        let words = rest.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: false).map(Array.init)
        if words.contains(where: \.isEmpty) {
            return .failure(Problem(text: "arguments are separated by one space"))
        }
        if words.contains(where: { $0.count > maximumArgument }) {
            return .failure(Problem(text: "an argument is longer than \(maximumArgument) characters"))
        }
        if words.contains(where: { $0.contains { $0 < 32 || $0 == 127 } }) {
            return .failure(Problem(text: "an argument holds a control character"))
        }
        return .success(words)
    }

    /// `count` message numbers (decimal, 1 or more; 0 also allowed at `zeroAllowedAt`).
    static func numbers(
        _ rest: [UInt8]?, count: ClosedRange<Int>, keyword: String, zeroAllowedAt: Int? = nil
    ) -> NumberResult {
        let words: [[UInt8]]
        switch arguments(rest) {
        case .success(let w): words = w
        case .failure(let problem): return .failure(.malformed(keyword: keyword, reason: problem.text))
        }
        guard count.contains(words.count) else {
            let reason: String
            switch count.upperBound {
            case 2: reason = "a message number and a line count are needed"
            case _ where count.lowerBound == 0: reason = "at most one message number is allowed"
            default: reason = "a message number is needed"
            }
            return .failure(.malformed(keyword: keyword, reason: reason))
        }
        var values: [UInt32] = []
        for (i, word) in words.enumerated() {
            guard word.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
                let value = UInt32(String(decoding: word, as: UTF8.self))
            else {
                return .failure(.malformed(keyword: keyword, reason: "not a number: \(printable(word))"))
            }
            if value == 0 && zeroAllowedAt != i {
                return .failure(.malformed(keyword: keyword, reason: "message numbers start at 1"))
            }
            values.append(value)
        }
        return .success(values)
    }

    enum NumberResult {
        case success([UInt32])
        case failure(POP3Command)

        var failureCommand: POP3Command? {
            if case .failure(let command) = self { return command }
            return nil
        }
    }
}

/// ASCII upper case, other bytes unchanged.
@inline(__always)
func uppercased(_ byte: UInt8) -> UInt8 {
    byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z") ? byte - 32 : byte
}

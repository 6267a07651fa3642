import GatewayKit

/// Why a configuration file was rejected, and where: `/etc/tcpproxy.conf:12: unknown directive "sevrer" (...)`.
public struct ConfigurationError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The file.
    public var path: String
    /// The line (1-based); nil when the problem concerns the whole file.
    public var line: Int?
    /// The column (1-based, in bytes) of the offending word, when there is one.
    public var column: Int?
    /// What is wrong.
    public var problem: ConfigurationProblem

    /// An error at a place in a file.
    public init(path: String, line: Int?, column: Int? = nil, problem: ConfigurationProblem) {
        self.path = path
        self.line = line
        self.column = column
        self.problem = problem
    }

    /// `PATH:LINE: MESSAGE`, `PATH: MESSAGE` for the whole file, djb's `unable to read PATH: REASON` when
    /// the file cannot be read.
    public var description: String {
        if case .unreadable(let error) = problem { return "unable to read \(path): \(error)" }
        if let line { return "\(path):\(line): \(problem)" }
        return "\(path): \(problem)"
    }
}

/// The things that can be wrong in a configuration file, each with a message saying what was expected.
public enum ConfigurationProblem: Error, Sendable, Equatable, CustomStringConvertible {
    /// The file could not be read.
    case unreadable(SystemError)
    /// A word that is no directive of Zekoll's dialect; `expected` lists the directives.
    case unknownDirective(String, expected: [String])
    /// A setting inside a listen stanza that spreadspace's dialect does not have.
    case unknownSetting(String, stanza: String, expected: [String])
    /// A directive without its argument(s); `usage` shows the form.
    case missingArgument(directive: String, usage: String)
    /// A directive with words left over.
    case tooManyArguments(directive: String, extra: String, usage: String)
    /// An argument of the wrong form.
    case invalidValue(directive: String, value: String, expected: String)
    /// A name that is neither a port number nor a tcp service in the services file.
    case unknownService(String, servicesFile: String)
    /// A directive that names one handler, used before the first `port`.
    case needsPort(directive: String, defaults: [String])
    /// A setting given twice in one stanza of spreadspace's dialect; `section` says which (`in listen * 8080`).
    /// (Zekoll's dialect lets the later line win, with a ``ConfigurationWarning``.)
    case duplicate(directive: String, line: Int, section: String)
    /// A second section for a port that already has one.
    case duplicatePort(String, line: Int)
    /// A second `interface` section for the same address and port.
    case duplicateInterface(String, port: String, line: Int)
    /// A second stanza for the same listen address and port.
    case duplicateListen(String, line: Int)
    /// A handler with neither `server` nor `exec`.
    case missingTarget(String)
    /// `rotate` with addresses of two families.
    case rotateFamilies
    /// `rotate` whose first address is above its last.
    case rotateReversed(start: String, end: String)
    /// `rotate` in a section without `server`.
    case rotateWithoutServer
    /// Two settings that name addresses of different families (or contradict a resolv preference).
    case familyConflict(String)
    /// `interface 0.0.0.0` or `interface ::`.
    case wildcardInterface(String)
    /// `server /path`: a program given where a host is expected.
    case serverIsProgram(String)
    /// A file with no service at all.
    case noServices(ConfigurationDialect)
    /// A spreadspace stanza in a file of Zekoll's dialect (or a `listen` line without a stanza).
    case mixedDialect(String)
    /// spreadspace's grammar wanted one thing and found another (`found` is quoted, or "end of file").
    case expected(String, found: String)
    /// A listen stanza without its required `remote`.
    case missingRemote(stanza: String, line: Int)
    /// A listen stanza not closed before the end of the file.
    case unterminatedStanza(stanza: String, line: Int)
    /// TLS settings that do not fit together (a certificate without its key, say).
    case tls(String)

    public var description: String {
        switch self {
        case .unreadable(let error):
            return "unable to read: \(error)"
        case .unknownDirective(let word, let expected):
            return "unknown directive \(quoted(word)) (expected one of: \(expected.joined(separator: ", ")))"
        case .unknownSetting(let word, let stanza, let expected):
            return "unknown setting \(quoted(word)) in \(stanza) (expected one of: "
                + expected.joined(separator: ", ") + ")"
        case .missingArgument(let directive, let usage):
            return "missing argument to \(directive) (usage: \(usage))"
        case .tooManyArguments(let directive, let extra, let usage):
            return "too many arguments to \(directive): \(quoted(extra)) (usage: \(usage))"
        case .invalidValue(let directive, let value, let expected):
            return "invalid \(directive) \(quoted(value)) (expected \(expected))"
        case .unknownService(let name, let servicesFile):
            return "unknown service \(quoted(name)) "
                + "(expected a port number 1-65535 or a tcp service in \(servicesFile))"
        case .needsPort(let directive, let defaults):
            return "\(directive) must follow a \"port\" directive (before the first port only defaults may be set: "
                + defaults.joined(separator: ", ") + ")"
        case .duplicate(let directive, let line, let section):
            return "\(directive) is already set at line \(line) \(section)"
        case .duplicatePort(let port, let line):
            return "port \(port) is already defined at line \(line)"
        case .duplicateInterface(let interface, let port, let line):
            return "interface \(interface) is already defined for port \(port) at line \(line)"
        case .duplicateListen(let stanza, let line):
            return "\(stanza) is already defined at line \(line)"
        case .missingTarget(let handler):
            return "\(handler) needs a server or an exec directive"
        case .rotateFamilies:
            return "rotate needs two addresses of the same family"
        case .rotateReversed(let start, let end):
            return "rotate range \(start) \(end) is reversed (the first address must not be above the last)"
        case .rotateWithoutServer:
            return "rotate needs a server in the same section "
                + "(it picks the source address of connections to the server)"
        case .familyConflict(let text):
            return text
        case .wildcardInterface(let address):
            return "interface \(address) is the wildcard address "
                + "(settings for every local address go after port, before its first interface)"
        case .serverIsProgram(let path):
            return "server \(quoted(path)) is a program, not a host (use \"exec \(path)\" to run a program)"
        case .noServices(.zekoll):
            return "no services defined (expected \"port PORT\" followed by \"server HOST[:PORT]\" or \"exec COMMAND\")"
        case .noServices(.spreadspace):
            return "no services defined (expected \"listen HOST PORT { remote: HOST PORT; };\")"
        case .mixedDialect(let text):
            return text
        case .expected(let what, let found):
            return "expected \(what), found \(found)"
        case .missingRemote(let stanza, let line):
            return "\"remote\" is missing in \(stanza) (started at line \(line))"
        case .unterminatedStanza(let stanza, let line):
            return "\(stanza) (started at line \(line)) is not closed (expected \"};\" before the end of the file)"
        case .tls(let text):
            return text
        }
    }
}

/// A word in double quotes, as messages show what the file said.
func quoted(_ word: String) -> String { "\"" + word + "\"" }

/// Something a configuration file says that tcpproxy accepts but its administrator should know about:
/// `/etc/tcpproxy.conf:12: timeout repeated in this section; it replaces line 9`.
///
/// Zekoll's tcpproxy let a later line overwrite an earlier one of the same section, so configurations written for
/// it may repeat a setting. Bastion does the same (the last line wins) and says so, where the original was silent.
/// Warnings are data: the parser collects them in ``ProxyConfiguration/warnings`` and the command prints or logs
/// them.
public struct ConfigurationWarning: Sendable, Equatable, CustomStringConvertible {
    /// The file.
    public var path: String
    /// The line (1-based) of the directive that wins.
    public var line: Int
    /// The column (1-based, in bytes) of that directive.
    public var column: Int
    /// What happened.
    public var kind: Kind

    /// Where a repeated directive counts once: a section of Zekoll's dialect, or the whole file (`standalone`).
    public enum Scope: Sendable, Equatable {
        case section
        case file
    }

    /// The kinds of warning.
    public enum Kind: Sendable, Equatable {
        /// A directive repeated in its scope; the earlier one at `line` no longer counts.
        case repeated(directive: String, line: Int, scope: Scope)
        /// A directive that replaces another one holding the same setting (`server` and `exec`, `writefile` and
        /// `debug`) at `line` in the same section.
        case replaces(directive: String, previous: String, line: Int)
    }

    /// A warning about the directive at `line`, `column` of `path`.
    public init(path: String, line: Int, column: Int, kind: Kind) {
        self.path = path
        self.line = line
        self.column = column
        self.kind = kind
    }

    /// `PATH:LINE: MESSAGE`.
    public var description: String { "\(path):\(line): \(message)" }

    /// The message without the place.
    public var message: String {
        switch kind {
        case .repeated(let directive, let line, let scope):
            let place = scope == .section ? "in this section" : "in this file"
            return "\(directive) repeated \(place); it replaces line \(line)"
        case .replaces(let directive, let previous, let line):
            let why: String
            switch directive {
            case "server", "exec": why = "a handler uses either server or exec"
            case "debug": why = "debug is writefile with the debug trace on"
            default: why = "the debug trace that debug turned on is off again"
            }
            return "\(directive) replaces \(previous) at line \(line) in this section (\(why))"
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif

/// Message levels of spreadspace's tcpproxy `-L target:level`: 0 disables a target, 5 is debug.
public enum LogLevel: Int, Comparable, Sendable, CaseIterable {
    case off = 0, error, warning, notice, info, debug

    public static func < (a: LogLevel, b: LogLevel) -> Bool { a.rawValue < b.rawValue }

    /// The word shown in file and console lines.
    public var name: String {
        switch self {
        case .off: return "NONE"
        case .error: return "ERROR"
        case .warning: return "WARNING"
        case .notice: return "NOTICE"
        case .info: return "INFO"
        case .debug: return "DEBUG"
        }
    }

    /// The syslog severity for this level.
    public var syslogSeverity: Int32 {
        switch self {
        case .off, .error: return LOG_ERR
        case .warning: return LOG_WARNING
        case .notice: return LOG_NOTICE
        case .info: return LOG_INFO
        case .debug: return LOG_DEBUG
        }
    }
}

/// Where log lines go, as `-L target:level[,param...]` says.
public struct LogTarget: Equatable, Sendable {
    public enum Kind: Equatable, Sendable {
        /// syslog with a program name and a facility (LOG_DAEMON etc.).
        case syslog(name: String, facility: Int32)
        case file(path: String)
        case stdout
        case stderr
    }

    public var kind: Kind
    public var level: LogLevel

    public init(kind: Kind, level: LogLevel) {
        self.kind = kind
        self.level = level
    }

    /// A `-L` argument that cannot be used, with the reason.
    public struct ParseError: Error, Equatable, CustomStringConvertible {
        public let description: String
        public init(description: String) { self.description = description }
    }

    /// syslog facility names (as in syslog.conf).
    public static let facilities: [String: Int32] = [
        "auth": LOG_AUTH, "authpriv": LOG_AUTHPRIV, "cron": LOG_CRON, "daemon": LOG_DAEMON, "ftp": LOG_FTP,
        "kern": LOG_KERN, "lpr": LOG_LPR, "mail": LOG_MAIL, "news": LOG_NEWS, "syslog": LOG_SYSLOG,
        "user": LOG_USER, "uucp": LOG_UUCP, "local0": LOG_LOCAL0, "local1": LOG_LOCAL1, "local2": LOG_LOCAL2,
        "local3": LOG_LOCAL3, "local4": LOG_LOCAL4, "local5": LOG_LOCAL5, "local6": LOG_LOCAL6,
        "local7": LOG_LOCAL7,
    ]

    /// Parses `target:level[,param...]`: `syslog:3,tcpproxy,daemon`, `file:4,/var/log/x.log`,
    /// `stdout:5`, `stderr:2`. `defaultName` is the syslog name when none is given.
    public static func parse(_ text: String, defaultName: String) throws(ParseError) -> LogTarget {
        guard let colon = text.firstIndex(of: ":") else {
            throw ParseError(description: "log target \"\(text)\" needs a level: target:level[,params]")
        }
        let target = String(text[..<colon])
        let params = text[text.index(after: colon)...].split(separator: ",", omittingEmptySubsequences: false)
            .map(String.init)
        guard let levelText = params.first, let n = Int(levelText), let level = LogLevel(rawValue: n) else {
            throw ParseError(description: "log target \"\(text)\": the level must be a number from 0 to 5")
        }
        let rest = Array(params.dropFirst())
        func noMore(_ allowed: Int) throws(ParseError) {
            if rest.count > allowed {
                throw ParseError(description: "log target \"\(text)\": too many parameters for \(target)")
            }
        }
        switch target {
        case "syslog":
            try noMore(2)
            let name = rest.first.flatMap { $0.isEmpty ? nil : $0 } ?? defaultName
            var facility = LOG_DAEMON
            if rest.count > 1 {
                guard let f = facilities[rest[1]] else {
                    throw ParseError(description: "log target \"\(text)\": unknown syslog facility \"\(rest[1])\"")
                }
                facility = f
            }
            return LogTarget(kind: .syslog(name: name, facility: facility), level: level)
        case "file":
            try noMore(1)
            guard let path = rest.first, !path.isEmpty else {
                throw ParseError(description: "log target \"\(text)\": file needs a path: file:level,/path")
            }
            return LogTarget(kind: .file(path: path), level: level)
        case "stdout":
            try noMore(0)
            return LogTarget(kind: .stdout, level: level)
        case "stderr":
            try noMore(0)
            return LogTarget(kind: .stderr, level: level)
        default:
            throw ParseError(
                description: "unknown log target \"\(target)\" (expected syslog, file, stdout or stderr)")
        }
    }
}

/// Formats and delivers log lines to several targets. Files are opened for appending and
/// reopened by `reopen()` (after log rotation, on SIGHUP). Syslog lines go straight to
/// /dev/log as RFC 3164 datagrams, so each target keeps its own name and facility.
public final class Logger {
    public private(set) var targets: [LogTarget]
    private var files: [Int32]
    private var syslogSocket: Int32 = -1

    public init(targets: [LogTarget]) {
        self.targets = targets
        files = Array(repeating: -1, count: targets.count)
        reopen()
    }

    deinit {
        for fd in files where fd >= 0 { close(fd) }
        if syslogSocket >= 0 { close(syslogSocket) }
    }

    /// The most detailed level any target wants; callers may skip building messages above it.
    public var maximumLevel: LogLevel { targets.map(\.level).max() ?? .off }

    /// (Re)opens every file target; a file that cannot be opened is reported on stderr.
    public func reopen() {
        for (i, target) in targets.enumerated() {
            guard case .file(let path) = target.kind else { continue }
            if files[i] >= 0 { close(files[i]) }
            files[i] = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o640)
            if files[i] < 0 { Stderr.line("unable to open log file \(path): \(SystemError.current)") }
        }
    }

    /// Logs `message` at `level` to every target that wants it.
    public func log(_ level: LogLevel, _ message: @autoclosure () -> String) {
        guard level != .off, level <= maximumLevel else { return }
        let text = message()
        var stamp: String?
        for (i, target) in targets.enumerated() where level <= target.level {
            switch target.kind {
            case .syslog(let name, let facility):
                sendSyslog(name: name, priority: facility | level.syslogSeverity, text)
            case .file, .stdout, .stderr:
                if stamp == nil { stamp = LogFormat.timestamp() }
                let line = "\(stamp!) [\(level.name)] \(text)\n"
                let fd: Int32
                switch target.kind {
                case .file: fd = files[i]
                case .stdout: fd = 1
                default: fd = 2
                }
                if fd >= 0 { try? FD.writeAll(fd, line) }
            }
        }
    }

    private func sendSyslog(name: String, priority: Int32, _ text: String) {
        let datagram = LogFormat.syslogDatagram(priority: priority, name: name, pid: getpid(), message: text)
        for attempt in 0..<2 {
            if syslogSocket < 0 { syslogSocket = LogFormat.connectDevLog() }
            guard syslogSocket >= 0 else { return }
            let sent = datagram.withUnsafeBytes { send(syslogSocket, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if sent >= 0 { return }
            close(syslogSocket)
            syslogSocket = -1
            if attempt == 1 { return }
        }
    }
}

/// The pure parts of log formatting.
public enum LogFormat {
    /// Local time as `2026-11-21 07:15:04`.
    public static func timestamp(_ seconds: Int = time(nil)) -> String {
        var t = time_t(seconds)
        var parts = tm()
        localtime_r(&t, &parts)
        func two(_ n: Int32) -> String { n < 10 ? "0\(n)" : "\(n)" }
        return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday)) "
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec))"
    }

    static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    /// An RFC 3164 line as syslog(3) sends it: `<PRI>Mmm dd hh:mm:ss name[pid]: message`.
    public static func syslogDatagram(
        priority: Int32, name: String, pid: Int32, message: String, seconds: Int = time(nil)
    ) -> [UInt8] {
        var t = time_t(seconds)
        var parts = tm()
        localtime_r(&t, &parts)
        func two(_ n: Int32) -> String { n < 10 ? "0\(n)" : "\(n)" }
        let day = parts.tm_mday < 10 ? " \(parts.tm_mday)" : "\(parts.tm_mday)"
        let head =
            "<\(priority)>\(months[Int(parts.tm_mon)]) \(day) \(two(parts.tm_hour)):\(two(parts.tm_min)):"
            + "\(two(parts.tm_sec)) \(name)[\(pid)]: "
        return Array(head.utf8) + Array(message.utf8)
    }

    /// A datagram socket connected to /dev/log (or to $BASTION_SYSLOG_SOCKET, which tests use
    /// to read what would reach syslog), or -1.
    static func connectDevLog() -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return -1 }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let path = Array((Environment.get("BASTION_SYSLOG_SOCKET") ?? "/dev/log").utf8)
        guard path.count < MemoryLayout.size(ofValue: address.sun_path) else {
            close(fd)
            return -1
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in path.enumerated() { raw[i] = b }
        }
        let ok = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        if ok != 0 {
            close(fd)
            return -1
        }
        return fd
    }
}

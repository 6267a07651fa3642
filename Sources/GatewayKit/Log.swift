#if canImport(Glibc)
import Glibc
#endif
import CBastion

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

extension LogTarget {
    /// The bytes this target gets for `text` at `level`: an RFC 3164 datagram for syslog (with
    /// the calling process's pid), `STAMP [LEVEL] text` and a newline for the others. `stamp`
    /// is made on first use and shared by the targets of one line. Control characters in
    /// `text` are written as `\ooo` (``LogFormat/printable(_:)``): one message is one line,
    /// whatever a name, a program or a damaged file put into it.
    public func line(_ level: LogLevel, _ text: String, stamp: inout String?) -> [UInt8] {
        let text = LogFormat.printable(text)
        if case .syslog(let name, let facility) = kind {
            return LogFormat.syslogDatagram(
                priority: facility | level.syslogSeverity, name: name, pid: getpid(), message: text)
        }
        if stamp == nil { stamp = LogFormat.timestamp() }
        return Array("\(stamp!) [\(level.name)] \(text)\n".utf8)
    }
}

/// Formats and delivers log lines to several targets, synchronously: every call writes (and
/// may block on a stalled target). For a single thread that may wait, such as a tool or a
/// test; daemons use `DaemonLog`, which never blocks its caller.
public final class Logger {
    public private(set) var targets: [LogTarget]
    private var sinks: [LogSink]

    public init(targets: [LogTarget]) {
        self.targets = targets
        sinks = targets.map { LogSink(target: $0) }
    }

    deinit {
        for i in sinks.indices { sinks[i].close() }
    }

    /// The most detailed level any target wants; callers may skip building messages above it.
    public var maximumLevel: LogLevel { targets.map(\.level).max() ?? .off }

    /// Reopens every file target; a file that cannot be opened is reported on stderr.
    public func reopen() {
        for i in sinks.indices { sinks[i].reopen() }
    }

    /// Logs `message` at `level` to every target that wants it.
    public func log(_ level: LogLevel, _ message: @autoclosure () -> String) {
        guard level != .off, level <= maximumLevel else { return }
        let text = message()
        var stamp: String?
        for i in sinks.indices where level <= targets[i].level {
            var bytes = targets[i].line(level, text, stamp: &stamp)[...]
            while !bytes.isEmpty, case .wrote(let n) = sinks[i].write(bytes) { bytes = bytes.dropFirst(n) }
        }
    }
}

/// One target's descriptor and how bytes reach it: a log file opened for appending, standard
/// output or error, or a datagram socket connected to /dev/log. Used by one thread at a time.
///
/// The descriptor keeps its number once it has one: reopening a file and reconnecting to
/// syslog replace the open file under the same number (dup3). So a process forked at any
/// moment inherits a number that is open and still this target's, never one that was
/// closed and perhaps reused for a client's socket.
struct LogSink {
    /// What became of a write.
    enum Outcome: Equatable {
        /// This many bytes (at least one) were written.
        case wrote(Int)
        /// Nothing was written and the target asks to be tried later (full disk, full
        /// buffers, a non-blocking descriptor that would block).
        case later
        /// The target cannot take these bytes (no syslog socket, no log file open, any other
        /// error): give them up.
        case refused
    }

    let target: LogTarget
    private(set) var fd: Int32 = -1

    /// Opens a file target, connects a syslog target (now, so that a chroot later does not
    /// hide /dev/log); a file that cannot be opened is reported on stderr.
    init(target: LogTarget) {
        self.target = target
        switch target.kind {
        case .file: reopen()
        case .syslog: fd = LogFormat.connectDevLog()
        case .stdout: fd = 1
        case .stderr: fd = 2
        }
    }

    /// At most this many bytes go out in one write: one datagram for syslog; PIPE_BUF for
    /// standard output and error, whose writes are atomic up to that size, so the lines of
    /// processes sharing a pipe never interleave; 64 KiB for an O_APPEND file.
    var batchLimit: Int {
        switch target.kind {
        case .syslog: return 0
        case .stdout, .stderr: return Int(PIPE_BUF)
        case .file: return 65536
        }
    }

    /// (Re)opens a file target (after log rotation). When the file cannot be opened the old
    /// one stays in use, and the reason goes to stderr.
    mutating func reopen() {
        guard case .file(let path) = target.kind else { return }
        let new = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o640)
        guard new >= 0 else {
            Stderr.line("unable to open log file \(path): \(SystemError.current)")
            return
        }
        replace(with: new)
    }

    /// Closes a descriptor of its own (not standard output or error).
    mutating func close() {
        switch target.kind {
        case .file, .syslog:
            if fd >= 0 { FD.close(fd) }
            fd = -1
        case .stdout, .stderr: break
        }
    }

    /// One write (one datagram for syslog) of `bytes`, which must not be empty.
    mutating func write(_ bytes: ArraySlice<UInt8>) -> Outcome {
        guard case .syslog = target.kind else { return Self.outcome(bytes.withUnsafeBytes { Self.write(fd, $0) }) }
        var outcome = Outcome.refused
        if fd >= 0 { outcome = Self.outcome(bytes.withUnsafeBytes { Self.send(fd, $0) }) }
        guard outcome == .refused else { return outcome }
        // The syslog daemon may have restarted (ECONNREFUSED) or come up: connect once more.
        let new = LogFormat.connectDevLog()
        guard new >= 0 else { return .refused }
        replace(with: new)
        return Self.outcome(bytes.withUnsafeBytes { Self.send(fd, $0) })
    }

    /// Puts `new` under our descriptor's number (or makes it our descriptor).
    private mutating func replace(with new: Int32) {
        if fd < 0 {
            fd = new
            return
        }
        _ = bastion_dup3(new, fd, O_CLOEXEC)  // should it fail, the old file stays in use
        FD.close(new)
    }

    private static func write(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Int {
        guard fd >= 0 else {
            errno = EBADF
            return -1
        }
        while true {
            let n = Glibc.write(fd, bytes.baseAddress, bytes.count)
            if n >= 0 || errno != EINTR { return n }
        }
    }

    private static func send(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Int {
        while true {
            let n = Glibc.send(fd, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL))
            if n >= 0 || errno != EINTR { return n }
        }
    }

    /// A write's result (bytes, or -1 with errno) as an outcome.
    private static func outcome(_ n: Int) -> Outcome {
        if n > 0 { return .wrote(n) }
        if n == 0 { return .later }
        switch errno {
        case EAGAIN, EWOULDBLOCK, ENOSPC, EDQUOT, ENOBUFS, ENOMEM: return .later
        default: return .refused
        }
    }
}

/// `bytes` for a log line or a message: printable ASCII as it is, anything else (and the
/// backslash itself) as `\ooo`, so that bytes from the network or a file (a POP3 keyword, a
/// SOCKS user id, a word of a configuration line) can never break a line or forge one.
public func printable(_ bytes: some Collection<UInt8>) -> String {
    var out = ""
    for byte in bytes {
        if byte >= 32 && byte < 127 && byte != UInt8(ascii: "\\") {
            out.unicodeScalars.append(Unicode.Scalar(byte))
        } else {
            out += "\\" + String(byte >> 6) + String((byte >> 3) & 7) + String(byte & 7)
        }
    }
    return out
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

    /// `text` with every control character (below 0x20 but tab, and 0x7f) written as a
    /// backslash and three octal digits, as a DNS name's odd bytes are: `a\nb` becomes
    /// `a\012b`. The text itself when it has none (the usual case costs one scan).
    public static func printable(_ text: String) -> String {
        func isControl(_ byte: UInt8) -> Bool { (byte < 0x20 && byte != 9) || byte == 0x7f }
        guard text.utf8.contains(where: isControl) else { return text }
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count + 12)
        for byte in text.utf8 {
            if isControl(byte) {
                out += [UInt8(ascii: "\\"), 0x30 + (byte >> 6), 0x30 + ((byte >> 3) & 7), 0x30 + (byte & 7)]
            } else {
                out.append(byte)
            }
        }
        return String(decoding: out, as: UTF8.self)
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
        let path = Environment.get("BASTION_SYSLOG_SOCKET") ?? "/dev/log"
        return (try? Socket.connectUnix(path, type: Int32(SOCK_DGRAM.rawValue))) ?? -1
    }
}

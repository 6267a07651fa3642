#if canImport(Glibc)
import Glibc
#endif
import Gateway
import GatewayKit
import Relay

/// Which way a recorded chunk went.
public enum RecordedDirection: Sendable, Hashable, CustomStringConvertible {
    /// Read from the client, sent on to the server.
    case clientToServer
    /// Read from the server, sent on to the client.
    case serverToClient

    /// `client>server` or `server>client`, as in the recording.
    public var description: String { self == .clientToServer ? "client>server" : "server>client" }
}

// MARK: - Recorder

/// Zekoll's tcpproxy `-w writefile` (`writefile NAME`): the client/server communication of a
/// connection appended to `writefile.PID.log` in a form a person can read.
///
/// Zekoll's tcpproxy served one connection per process, hence one file per process id. One
/// process now serves many connections, so every line carries the connection's number and
/// several connections share the file. Each record (heading plus dump) is one write(2) on a
/// descriptor opened with O_APPEND, so records from concurrent connections, threads or
/// processes never interleave. See ``RecordingFormat`` for the layout.
///
/// Recording is best effort: once the file is open, a failed write loses that record and the
/// connection goes on.
public final class ConnectionRecorder: Sendable {
    /// The file's path, `BASENAME.PID.log`.
    public let path: String
    /// The connection's number, written on every line as `#N`.
    public let connection: UInt64

    /// The descriptor; -1 once finished.
    private let descriptor: Locked<Int32>

    /// Opens (creating it with mode 0640 if needed) `basename.pid.log` for appending and
    /// records the start of connection number `connection` from `client` to `server` (a
    /// description of where tcpproxy connected, such as `10.0.0.5:80` or a program).
    public init(
        basename: String, pid: Int32, connection: UInt64, client: Endpoint, server: String
    ) throws(SystemError) {
        path = RecordingFormat.fileName(basename: basename, pid: pid)
        self.connection = connection
        let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o640)
        if fd < 0 { throw SystemError.current }
        descriptor = Locked(fd)
        let line = RecordingFormat.startLine(
            time: RecordingFormat.now(), connection: connection, client: client, server: server)
        do {
            try FD.writeAll(fd, Array(line.utf8) + [0x0A])
        } catch {
            descriptor.withLock { fd in
                FD.close(fd)
                fd = -1
            }
            throw error
        }
    }

    deinit {
        descriptor.withLock { fd in
            if fd >= 0 { FD.close(fd) }
        }
    }

    /// Appends one chunk that went `direction`: a heading line and the bytes as a dump.
    /// Ignored after ``finish(clientToServer:serverToClient:seconds:)``.
    public func record(direction: RecordedDirection, bytes: UnsafeRawBufferPointer) {
        let text = RecordingFormat.record(
            time: RecordingFormat.now(), connection: connection, direction: direction, bytes: bytes)
        write(text)
    }

    /// Appends the summary line (bytes each way, how long the connection lasted) and closes
    /// the file. Later calls and records are ignored.
    public func finish(clientToServer: UInt64, serverToClient: UInt64, seconds: Double) {
        let line = RecordingFormat.endLine(
            time: RecordingFormat.now(), connection: connection,
            clientToServer: clientToServer, serverToClient: serverToClient, seconds: seconds)
        descriptor.withLock { fd in
            guard fd >= 0 else { return }
            try? FD.writeAll(fd, Array(line.utf8) + [0x0A])
            FD.close(fd)
            fd = -1
        }
    }

    /// One write(2) of a whole record (FD.writeAll loops only after a short write, which a
    /// regular file gives only when the disk is full).
    private func write(_ bytes: [UInt8]) {
        descriptor.withLock { fd in
            guard fd >= 0 else { return }
            try? FD.writeAll(fd, bytes)
        }
    }
}

// MARK: - Format

/// The pure layout of a recording. A connection looks like this:
///
/// ```
/// 2026-11-21 07:15:04.123 #17 start client 192.0.2.7:40000 server 10.0.0.5:80
/// 2026-11-21 07:15:04.125 #17 client>server 18 bytes
///     GET / HTTP/1.0\r\n
///     \r\n
/// 2026-11-21 07:15:04.131 #17 server>client 4 bytes
///     \x00\x01ok
/// 2026-11-21 07:15:04.140 #17 end client>server 18 bytes, server>client 4 bytes, 0.017 s
/// ```
///
/// Dumps keep printable ASCII as it is, write `\r`, `\n`, `\t` and `\\` as escapes and any
/// other byte as `\xHH` (lowercase hex). Dump lines are indented by four spaces, end after
/// every `\n` escape (so text protocols read line by line) and are wrapped at 76 columns
/// without splitting an escape.
public enum RecordingFormat {
    /// The widest a dump line gets, indentation included.
    public static let width = 76
    /// What each dump line starts with.
    public static let indent = "    "

    /// `BASENAME.PID.log`.
    public static func fileName(basename: String, pid: Int32) -> String {
        "\(basename).\(pid).log"
    }

    /// Local time with milliseconds: `2026-11-21 07:15:04.123`.
    public static func timestamp(seconds: Int, milliseconds: Int) -> String {
        let ms = min(max(milliseconds, 0), 999)
        return LogFormat.timestamp(seconds) + "." + threeDigits(ms)
    }

    /// The current local time as ``timestamp(seconds:milliseconds:)`` writes it.
    public static func now() -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return timestamp(seconds: Int(ts.tv_sec), milliseconds: Int(ts.tv_nsec / 1_000_000))
    }

    /// An endpoint as `1.2.3.4:80` or `[2001:db8::1]:80` (`[fe80::1%2]:80` with a scope id).
    /// An IPv4-mapped address is written as plain IPv4.
    public static func endpoint(_ endpoint: Endpoint) -> String {
        let address = endpoint.address.unmapped
        if address.family == .v4 { return "\(address):\(endpoint.port)" }
        let scope = endpoint.scopeID == 0 ? "" : "%\(endpoint.scopeID)"
        return "[\(address)\(scope)]:\(endpoint.port)"
    }

    /// `1 byte`, `42 bytes`.
    public static func byteCount(_ count: UInt64) -> String {
        count == 1 ? "1 byte" : "\(count) bytes"
    }

    /// Seconds with three decimals: `0.017`, `12.500`. Negative or not-a-number counts as 0.
    public static func seconds(_ value: Double) -> String {
        guard value.isFinite, value > 0 else { return value == .infinity ? "inf" : "0.000" }
        let total = (value * 1000).rounded()
        guard total < 9.0e18 else { return "inf" }
        let ms = UInt64(total)
        return "\(ms / 1000).\(threeDigits(Int(ms % 1000)))"
    }

    /// The line opening a connection: `TIME #N start client ENDPOINT server DESCRIPTION`.
    /// The server description is escaped as a dump is, so it stays on one line.
    public static func startLine(time: String, connection: UInt64, client: Endpoint, server: String) -> String {
        "\(time) #\(connection) start client \(endpoint(client)) server \(escape(Array(server.utf8)))"
    }

    /// The heading of one chunk: `TIME #N client>server 42 bytes`.
    public static func chunkLine(time: String, connection: UInt64, direction: RecordedDirection, count: Int) -> String {
        "\(time) #\(connection) \(direction) \(byteCount(UInt64(max(count, 0))))"
    }

    /// The line closing a connection:
    /// `TIME #N end client>server 42 bytes, server>client 7 bytes, 1.234 s`.
    public static func endLine(
        time: String, connection: UInt64, clientToServer: UInt64, serverToClient: UInt64, seconds: Double
    ) -> String {
        "\(time) #\(connection) end client>server \(byteCount(clientToServer)), "
            + "server>client \(byteCount(serverToClient)), \(self.seconds(seconds)) s"
    }

    /// One byte as the dump writes it: itself, `\r`, `\n`, `\t`, `\\` or `\xHH`.
    public static func escape(_ byte: UInt8) -> String {
        var out: [UInt8] = []
        appendEscaped(byte, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// Bytes escaped one by one, as the dump writes them, without wrapping.
    public static func escape(_ bytes: some Sequence<UInt8>) -> String {
        var out: [UInt8] = []
        for byte in bytes { appendEscaped(byte, to: &out) }
        return String(decoding: out, as: UTF8.self)
    }

    /// The dump of `bytes` as lines without their newlines: each starts with `indent`, holds
    /// escaped bytes up to `width` columns (at least one escape per line, however narrow),
    /// and ends early after an escaped newline. No lines for no bytes.
    public static func dump(
        _ bytes: some Sequence<UInt8>, width: Int = Self.width, indent: String = Self.indent
    ) -> [String] {
        var out: [UInt8] = []
        appendDump(bytes, width: width, indent: Array(indent.utf8), to: &out)
        var lines = out.split(separator: 0x0A, omittingEmptySubsequences: false).map {
            String(decoding: $0, as: UTF8.self)
        }
        lines.removeLast()
        return lines
    }

    /// A whole record as written to the file: the chunk heading and the dump, every line
    /// ending in a newline.
    public static func record(
        time: String, connection: UInt64, direction: RecordedDirection, bytes: some Collection<UInt8>
    ) -> [UInt8] {
        var out = Array(chunkLine(time: time, connection: connection, direction: direction, count: bytes.count).utf8)
        out.reserveCapacity(out.count + 1 + bytes.count * 2 + bytes.count / 16)
        out.append(0x0A)
        appendDump(bytes, width: width, indent: Array(indent.utf8), to: &out)
        return out
    }

    // MARK: Internals

    private static let hexDigits = Array("0123456789abcdef".utf8)

    /// How many columns `byte` takes escaped.
    private static func escapedWidth(_ byte: UInt8) -> Int {
        switch byte {
        case 0x5C, 0x0D, 0x0A, 0x09: return 2
        case 0x20...0x7E: return 1
        default: return 4
        }
    }

    private static func appendEscaped(_ byte: UInt8, to out: inout [UInt8]) {
        switch byte {
        case 0x5C: out += [0x5C, 0x5C]
        case 0x0D: out += [0x5C, UInt8(ascii: "r")]
        case 0x0A: out += [0x5C, UInt8(ascii: "n")]
        case 0x09: out += [0x5C, UInt8(ascii: "t")]
        case 0x20...0x7E: out.append(byte)
        default: out += [0x5C, UInt8(ascii: "x"), hexDigits[Int(byte >> 4)], hexDigits[Int(byte & 0x0F)]]
        }
    }

    /// Appends the dump lines of `bytes`, each ending in a newline.
    private static func appendDump(_ bytes: some Sequence<UInt8>, width: Int, indent: [UInt8], to out: inout [UInt8]) {
        var column = 0
        var open = false
        for byte in bytes {
            let size = escapedWidth(byte)
            if open && column + size > width {
                out.append(0x0A)
                open = false
            }
            if !open {
                out += indent
                column = indent.count
                open = true
            }
            appendEscaped(byte, to: &out)
            column += size
            if byte == 0x0A {
                out.append(0x0A)
                open = false
            }
        }
        if open { out.append(0x0A) }
    }

    private static func threeDigits(_ n: Int) -> String {
        n < 10 ? "00\(n)" : n < 100 ? "0\(n)" : "\(n)"
    }
}

extension ConnectionRecorder: SessionRecorder {
    public func record(_ bytes: UnsafeRawBufferPointer, direction: RelayDirection) {
        record(direction: direction == .clientToServer ? .clientToServer : .serverToClient, bytes: bytes)
    }

    public func finish(_ summary: RelaySummary, seconds: Double) {
        finish(
            clientToServer: summary.bytesClientToServer, serverToClient: summary.bytesServerToClient, seconds: seconds)
    }
}

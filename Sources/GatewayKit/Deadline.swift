#if canImport(Glibc)
import Glibc
#endif

/// A point in time on the monotonic clock, for bounding blocking I/O as djb's `taia`
/// deadlines do: every wait is a poll() that ends at the deadline at the latest.
public struct Deadline: Comparable, Sendable {
    /// Nanoseconds on CLOCK_MONOTONIC.
    public let nanoseconds: UInt64

    /// A deadline at `nanoseconds` on CLOCK_MONOTONIC.
    public init(nanoseconds: UInt64) { self.nanoseconds = nanoseconds }

    /// The current time.
    public static var now: Deadline {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Deadline(nanoseconds: UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec))
    }

    /// `duration` from now (a negative duration counts as zero).
    public static func after(_ duration: Duration) -> Deadline {
        Deadline(nanoseconds: now.nanoseconds &+ duration.nanosecondsClamped)
    }

    /// True once the deadline has been reached.
    public var hasPassed: Bool { Deadline.now.nanoseconds >= nanoseconds }

    /// The time left, zero once the deadline has passed.
    public var remaining: Duration {
        let now = Deadline.now.nanoseconds
        return now >= nanoseconds ? .zero : .nanoseconds(Int64(clamping: nanoseconds - now))
    }

    public static func < (lhs: Deadline, rhs: Deadline) -> Bool { lhs.nanoseconds < rhs.nanoseconds }

    /// Milliseconds for poll(): the time left rounded up, at most Int32.max.
    var pollMilliseconds: Int32 {
        let now = Deadline.now.nanoseconds
        guard nanoseconds > now else { return 0 }
        let ms = (nanoseconds - now + 999_999) / 1_000_000
        return Int32(clamping: ms)
    }

    /// Waits until `fd` is ready for `events` (POLLIN, POLLOUT) or the deadline passes.
    /// Returns false when the deadline passed first. Errors and hang-ups count as ready, so
    /// that the following read or write reports them.
    public func wait(for fd: Int32, events: Int16) throws(SystemError) -> Bool {
        while true {
            if hasPassed { return false }
            var p = pollfd(fd: fd, events: events, revents: 0)
            let r = poll(&p, 1, pollMilliseconds)
            if r > 0 { return true }
            if r < 0 && errno != EINTR { throw SystemError.current }
        }
    }
}

// MARK: - Deadline-bounded socket operations

/// Socket calls shared by the DNS and ident clients. Sockets are non-blocking; every wait is
/// bounded by a `Deadline`, after which the call fails with ETIMEDOUT.
enum BoundedSocket {
    /// A new non-blocking, close-on-exec socket of `type` (SOCK_STREAM, SOCK_DGRAM).
    static func open(family: IPAddress.Family, type: __socket_type) throws(SystemError) -> Int32 {
        let domain = family == .v4 ? AF_INET : AF_INET6
        let fd = socket(domain, Int32(type.rawValue | SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue), 0)
        if fd < 0 { throw SystemError.current }
        return fd
    }

    /// bind(2) to `address` and `port`.
    static func bind(_ fd: Int32, to address: IPAddress, port: UInt16, scopeID: UInt32 = 0) throws(SystemError) {
        let r = address.withSocketAddress(port: port, scopeID: scopeID) { sa, len in Glibc.bind(fd, sa, len) }
        if r != 0 { throw SystemError.current }
    }

    /// connect(2); for a stream socket waits for the handshake until `deadline`.
    static func connect(
        _ fd: Int32, to address: IPAddress, port: UInt16, scopeID: UInt32 = 0, before deadline: Deadline
    ) throws(SystemError) {
        let r = address.withSocketAddress(port: port, scopeID: scopeID) { sa, len in Glibc.connect(fd, sa, len) }
        if r == 0 { return }
        guard errno == EINPROGRESS || errno == EINTR else { throw SystemError.current }
        guard try deadline.wait(for: fd, events: Int16(POLLOUT)) else { throw SystemError(errno: ETIMEDOUT) }
        var soError: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        if getsockopt(fd, SOL_SOCKET, SO_ERROR, &soError, &length) != 0 { throw SystemError.current }
        if soError != 0 { throw SystemError(errno: soError) }
    }

    /// Writes every byte before `deadline`.
    static func writeAll(_ fd: Int32, _ bytes: [UInt8], before deadline: Deadline) throws(SystemError) {
        var offset = 0
        while offset < bytes.count {
            guard try deadline.wait(for: fd, events: Int16(POLLOUT)) else { throw SystemError(errno: ETIMEDOUT) }
            let n = bytes.withUnsafeBytes { b in
                send(fd, b.baseAddress! + offset, b.count - offset, Int32(MSG_NOSIGNAL))
            }
            if n < 0 {
                if errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK { continue }
                throw SystemError.current
            }
            offset += n
        }
    }

    /// Reads once, waiting until `deadline`: at most `count` bytes, empty at end of file.
    static func read(_ fd: Int32, upTo count: Int, before deadline: Deadline) throws(SystemError) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: count)
        while true {
            guard try deadline.wait(for: fd, events: Int16(POLLIN)) else { throw SystemError(errno: ETIMEDOUT) }
            let n = buffer.withUnsafeMutableBytes { b in recv(fd, b.baseAddress, b.count, 0) }
            if n < 0 {
                if errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK { continue }
                throw SystemError.current
            }
            return Array(buffer[0..<n])
        }
    }

    /// Reads exactly `count` bytes before `deadline`; end of file before that is EPROTO.
    static func readExactly(_ fd: Int32, _ count: Int, before deadline: Deadline) throws(SystemError) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(count)
        while out.count < count {
            let chunk = try read(fd, upTo: count - out.count, before: deadline)
            if chunk.isEmpty { throw SystemError(errno: EPROTO) }
            out += chunk
        }
        return out
    }
}

extension Duration {
    /// The duration in whole nanoseconds; negative durations count as zero, huge ones are
    /// clamped to about 146 years (so that adding one to a clock reading cannot overflow).
    public var nanosecondsClamped: UInt64 {
        let (seconds, attoseconds) = components
        if seconds < 0 || (seconds == 0 && attoseconds <= 0) { return 0 }
        let (whole, overflow) = UInt64(seconds).multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return UInt64.max / 4 }
        return min(whole + UInt64(max(attoseconds, 0) / 1_000_000_000), UInt64.max / 4)
    }
}

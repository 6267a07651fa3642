#if canImport(Glibc)
import Glibc
#endif
import CBastion  // its headers make the socket constants (SOCK_*, MSG_*) visible in every build

/// What systemd tells a service it starts, and what the service tells it back, written
/// directly (no libsystemd): sd_notify's datagrams on `$NOTIFY_SOCKET` (READY=1, RELOADING=1,
/// STOPPING=1, WATCHDOG=1) and sd_listen_fds' sockets (`$LISTEN_PID`, `$LISTEN_FDS`, fds 3
/// on). ``prepare(_:)`` reads the environment once, at start, and removes those variables so
/// that no program the daemon runs inherits them (they speak of this process only).
public enum Systemd {
    /// The environment's part, read by ``prepare(_:)``. Pure: parsed from the variables.
    public struct Environment: Equatable, Sendable {
        /// `$NOTIFY_SOCKET`: a path, or an abstract name (written `@name`).
        public var notifySocket: [UInt8]?
        /// `$WATCHDOG_USEC`, when `$WATCHDOG_PID` is unset or this process.
        public var watchdog: Duration?
        /// The passed sockets' descriptors (3, 4, ...), when `$LISTEN_PID` is this process.
        public var listenFDs: [Int32] = []

        public init(notifySocket: [UInt8]? = nil, watchdog: Duration? = nil, listenFDs: [Int32] = []) {
            self.notifySocket = notifySocket
            self.watchdog = watchdog
            self.listenFDs = listenFDs
        }

        /// From the variables' values (nil: unset) and this process's id. A malformed number
        /// means the variable is ignored, as sd_listen_fds and sd_watchdog_enabled do.
        public static func parse(value: (String) -> [UInt8]?, pid: Int32) -> Environment {
            var parsed = Environment()
            if let socket = value("NOTIFY_SOCKET"), socket.count > 1 || socket.first == UInt8(ascii: "/") {
                parsed.notifySocket = socket
            }
            func number(_ name: String) -> UInt64? {
                guard let bytes = value(name), !bytes.isEmpty, bytes.count <= 19,
                    bytes.allSatisfy({ $0 >= 48 && $0 <= 57 })
                else { return nil }
                return bytes.reduce(0) { $0 * 10 + UInt64($1 - 48) }
            }
            func forUs(_ name: String) -> Bool { value(name) == nil || number(name) == UInt64(pid) }
            if let usec = number("WATCHDOG_USEC"), usec > 0, forUs("WATCHDOG_PID") {
                parsed.watchdog = .microseconds(Int64(usec))
            }
            if value("LISTEN_PID") != nil, number("LISTEN_PID") == UInt64(pid), let count = number("LISTEN_FDS"),
                count > 0, count <= 1024
            {
                parsed.listenFDs = (0..<Int32(count)).map { 3 + $0 }
            }
            return parsed
        }
    }

    nonisolated(unsafe) private static var environment = Environment()
    nonisolated(unsafe) private static var lastWatchdog: Deadline?

    /// Reads and removes the variables (call once, at start, before any thread or program).
    /// Passed sockets get FD_CLOEXEC and O_NONBLOCK and are kept for ``takeListener(_:_:)``.
    public static func prepare(pid: Int32 = getpid()) {
        environment = Environment.parse(
            value: { name in getenv(name).map { Array(String(cString: $0).utf8) } }, pid: pid)
        for name in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
            unsetenv(name)
        }
        for fd in environment.listenFDs {
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            Socket.setNonBlocking(fd, true)
        }
        passed = environment.listenFDs.compactMap { fd in
            guard let local = try? Socket.localEndpoint(fd) else {
                close(fd)  // not a socket of ours to serve
                return nil
            }
            return (fd, local)
        }
    }

    // MARK: - Socket activation

    nonisolated(unsafe) private static var passed: [(fd: Int32, local: Endpoint)] = []

    /// The local addresses of the passed sockets not taken yet.
    public static var passedEndpoints: [Endpoint] { passed.map(\.local) }

    /// A passed listening socket bound to `address:port` (IPv4-mapped and plain IPv4 are the
    /// same), removed from the passed ones; nil when systemd passed none such.
    public static func takeListener(_ address: IPAddress, _ port: UInt16) -> Int32? {
        guard
            let index = passed.firstIndex(where: {
                $0.local.port == port && $0.local.address.unmapped == address.unmapped
            })
        else { return nil }
        return passed.remove(at: index).fd
    }

    /// Closes the passed sockets nothing took, with the reason for each in `log`.
    public static func closeUntaken(_ log: (String) -> Void) {
        for socket in passed {
            log("socket \(socket.local) passed by systemd matches no listener: closed")
            close(socket.fd)
        }
        passed = []
    }

    // MARK: - Notification

    /// Whether systemd listens for notifications.
    public static var notifying: Bool { environment.notifySocket != nil }

    /// The interval at which ``watchdogIfDue()`` pings: half of `$WATCHDOG_USEC`.
    public static var watchdogInterval: Duration? { environment.watchdog.map { $0 / 2 } }

    /// READY=1 (with MAINPID, in case the daemon detached).
    public static func ready() { notify("READY=1\nMAINPID=\(getpid())") }

    /// RELOADING=1 with the monotonic time, as systemd's reload protocol asks.
    public static func reloading() { notify("RELOADING=1\nMONOTONIC_USEC=\(Deadline.now.nanoseconds / 1000)") }

    /// STOPPING=1.
    public static func stopping() { notify("STOPPING=1") }

    /// WATCHDOG=1 when half the watchdog interval has passed since the last one.
    public static func watchdogIfDue() {
        guard let interval = watchdogInterval else { return }
        let now = Deadline.now
        if let last = lastWatchdog, now.nanoseconds < last.nanoseconds + interval.nanosecondsClamped { return }
        lastWatchdog = now
        notify("WATCHDOG=1")
    }

    /// How long a signal wait may last so that the watchdog is pinged in time (-1: forever).
    public static var waitMilliseconds: Int32 {
        guard let interval = watchdogInterval else { return -1 }
        return Int32(clamping: max(1, interval.nanosecondsClamped / 1_000_000))
    }

    /// One datagram to `$NOTIFY_SOCKET`; never blocks, and a failure is ignored (the daemon
    /// serves whether or not systemd hears).
    public static func notify(_ message: String) {
        guard var path = environment.notifySocket else { return }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard path.count < capacity else { return }
        if path.first == UInt8(ascii: "@") { path[0] = 0 }  // abstract namespace
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: path)
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + path.count + (path.first == 0 ? 0 : 1))
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue | SOCK_CLOEXEC.rawValue | SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { return }
        defer { close(fd) }
        let bytes = Array(message.utf8)
        _ = withUnsafePointer(to: &address) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                bytes.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL), sa, length) }
            }
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif
import GatewayKit
import Loop
import Testing

// MARK: - Loopback sockets

enum Loopback {
    static func address(_ family: IPAddress.Family) -> IPAddress {
        family == .v4 ? .loopbackV4 : .loopbackV6
    }

    /// True when this host has an IPv6 loopback (::1) to test on.
    static let hasIPv6: Bool = {
        guard let fd = try? Socket.tcp(.v6) else { return false }
        defer { close(fd) }
        return (try? Socket.bind(fd, to: .loopbackV6, port: 0)) != nil
    }()

    /// A listening socket on loopback port 0 and the port it got.
    static func listener(_ family: IPAddress.Family = .v4) throws -> (fd: Int32, port: UInt16) {
        let fd = try Socket.tcp(family)
        try Socket.bind(fd, to: address(family), port: 0)
        try Socket.listen(fd, backlog: 16)
        return (fd, try Socket.localEndpoint(fd).port)
    }

    /// A loopback port with nothing listening (bound, then closed).
    static func unusedPort() throws -> UInt16 {
        let fd = try Socket.tcp(.v4)
        defer { close(fd) }
        try Socket.bind(fd, to: .loopbackV4, port: 0)
        return try Socket.localEndpoint(fd).port
    }

    /// A connected TCP pair on 127.0.0.1: (the end the test gives the code under test, the
    /// end the test plays the peer with). Both blocking, TCP_NODELAY.
    static func tcpPair() throws -> (owner: Int32, peer: Int32) {
        let (listener, port) = try listener()
        defer { close(listener) }
        let owner = try Socket.tcp(.v4)
        let r = IPAddress.loopbackV4.withSocketAddress(port: port) { sa, length in Glibc.connect(owner, sa, length) }
        if r != 0 {
            let error = SystemError.current
            close(owner)
            throw error
        }
        let (peer, _) = try Socket.accept(listener)
        Socket.setNoDelay(owner)
        Socket.setNoDelay(peer)
        return (owner, peer)
    }

    /// A connected Unix stream pair: (the code's end, the peer's end), small send buffers so
    /// that a peer that does not read makes writes wait soon.
    static func unixPair(sendBuffer: Int32 = 4096) -> (owner: Int32, peer: Int32) {
        var fds: [Int32] = [-1, -1]
        let r = socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds)
        precondition(r == 0, "socketpair failed")
        for fd in fds {
            var size = sendBuffer
            setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        return (fds[0], fds[1])
    }

    static func isOpen(_ fd: Int32) -> Bool { fcntl(fd, F_GETFD) >= 0 }
}

// MARK: - The peer's side, played without the loop

enum PeerIO {
    /// Sends all of `bytes` on a blocking socket.
    static func send(_ fd: Int32, _ bytes: [UInt8]) {
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { p in
                Glibc.send(fd, p.baseAddress! + sent, p.count - sent, Int32(MSG_NOSIGNAL))
            }
            precondition(n > 0, "peer send failed: \(errno)")
            sent += n
        }
    }

    static func send(_ fd: Int32, _ text: String) { send(fd, Array(text.utf8)) }

    /// Sends what the socket takes now: the count sent (0 when it would block).
    static func sendSome(_ fd: Int32, _ bytes: ArraySlice<UInt8>) -> Int {
        let n = bytes.withUnsafeBytes { p in
            Glibc.send(fd, p.baseAddress!, p.count, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT))
        }
        return max(n, 0)
    }

    /// Reads what is there now, without waiting; `eof` once the other end has shut down.
    static func receive(_ fd: Int32) -> (bytes: [UInt8], eof: Bool) {
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if n > 0 {
                out += chunk[0..<n]
                continue
            }
            return (out, n == 0)
        }
    }

    /// Closes with a reset (SO_LINGER 0).
    static func reset(_ fd: Int32) {
        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
        close(fd)
    }
}

// MARK: - Turning the loop

/// Turns `loop` until `done` holds or `seconds` pass, calling `between` after every turn
/// (a peer's next step); true when done.
@discardableResult
func turn(
    _ loop: EventLoop, seconds: Double = 3, between: () -> Void = {}, until done: () -> Bool
) -> Bool {
    let end = Deadline.after(.milliseconds(Int(seconds * 1000)))
    while !done() {
        if end.hasPassed { return false }
        loop.runOnce(timeout: .milliseconds(5))
        between()
    }
    return true
}

/// Turns `loop` `count` times without waiting (what is due now, and nothing more).
func turns(_ loop: EventLoop, _ count: Int, between: () -> Void = {}) {
    for _ in 0..<count {
        loop.runOnce(timeout: .milliseconds(1))
        between()
    }
}

/// A loop configuration with 10 ms timer ticks, for timeouts of a few hundred milliseconds.
func fineTimers() -> EventLoop.Configuration {
    var configuration = EventLoop.Configuration()
    configuration.timerTick = .milliseconds(10)
    return configuration
}

/// Milliseconds since `start`.
func elapsedMilliseconds(since start: Deadline) -> Int {
    Int((Deadline.now.nanoseconds - start.nanoseconds) / 1_000_000)
}

/// The bytes of `text`.
func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

/// Bytes as text, for readable expectations.
func text(_ bytes: some Sequence<UInt8>) -> String { String(decoding: Array(bytes), as: UTF8.self) }

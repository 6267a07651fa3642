#if canImport(Glibc)
import Glibc
#endif
import GatewayKit
import Loop
import Relay
import Testing

// MARK: - Loopback sockets

enum Loopback {
    static func address(_ family: IPAddress.Family) -> IPAddress {
        family == .v4 ? .loopbackV4 : .loopbackV6
    }

    /// A listening socket on loopback port 0 and the port it got.
    static func listener(_ family: IPAddress.Family, backlog: Int32 = 64) throws -> (fd: Int32, port: UInt16) {
        let fd = try Socket.tcp(family)
        try Socket.bind(fd, to: address(family), port: 0)
        try Socket.listen(fd, backlog: backlog)
        return (fd, try Socket.localEndpoint(fd).port)
    }

    /// A blocking connect to loopback `port`.
    static func connect(_ family: IPAddress.Family, port: UInt16) throws -> Int32 {
        let fd = try Socket.tcp(family)
        let r = address(family).withSocketAddress(port: port) { sa, length in Glibc.connect(fd, sa, length) }
        if r != 0 {
            let error = SystemError.current
            close(fd)
            throw error
        }
        return fd
    }

    /// A connected pair: (the connecting end, the accepted end).
    static func pair(_ family: IPAddress.Family) throws -> (connected: Int32, accepted: Int32) {
        let (listener, port) = try listener(family)
        defer { close(listener) }
        let a = try connect(family, port: port)
        let (b, _) = try Socket.accept(listener)
        Socket.setNoDelay(a)
        Socket.setNoDelay(b)
        return (a, b)
    }

    static func isOpen(_ fd: Int32) -> Bool { fcntl(fd, F_GETFD) >= 0 }
}

// MARK: - Data

/// Deterministic pseudo-random bytes (SplitMix64).
func randomBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var state = seed
    var out = [UInt8](repeating: 0, count: count)
    var i = 0
    while i < count {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        var k = 0
        while k < 8 && i < count {
            out[i] = UInt8(truncatingIfNeeded: z >> (8 * UInt64(k)))
            k += 1
            i += 1
        }
    }
    return out
}

/// FNV-1a, 64 bits: a checksum that names a mismatch briefly in test output.
func fnv1a(_ bytes: [UInt8]) -> UInt64 {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for b in bytes {
        h ^= UInt64(b)
        h &*= 0x100_0000_01b3
    }
    return h
}

/// Byte equality that reports (once) where two byte strings first differ, instead of
/// printing megabytes.
func expectSame(_ a: [UInt8], _ b: [UInt8], sourceLocation: SourceLocation = #_sourceLocation) {
    if a == b { return }
    let first = (0..<min(a.count, b.count)).first { a[$0] != b[$0] } ?? min(a.count, b.count)
    Issue.record(
        "\(a.count) bytes (fnv \(fnv1a(a))) vs \(b.count) (fnv \(fnv1a(b))), first difference at \(first)",
        sourceLocation: sourceLocation
    )
}

// MARK: - Test-side peers

/// One end the test plays (client or server), driven without blocking.
struct Peer {
    var fd: Int32
    var outgoing: [UInt8] = []
    var sent = 0
    var received: [UInt8] = []
    var eof = false
    var error: Int32 = 0
    /// Start sending only after end of file arrived (a server answering a whole request).
    var sendAfterEOF = false
    /// Shut down the sending side once everything is sent.
    var shutdownAfterSend = true
    var shutDown = false

    init(fd: Int32, sending: [UInt8] = [], sendAfterEOF: Bool = false, shutdownAfterSend: Bool = true) {
        self.fd = fd
        outgoing = sending
        self.sendAfterEOF = sendAfterEOF
        self.shutdownAfterSend = shutdownAfterSend
        Socket.setNonBlocking(fd, true)
    }

    var wantsToSend: Bool { sent < outgoing.count && (!sendAfterEOF || eof) }
    var finished: Bool {
        (eof || error != 0) && sent == outgoing.count && (!shutdownAfterSend || shutDown || error != 0)
    }

    mutating func step(_ revents: Int16) {
        if revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 && !eof && error == 0 {
            var chunk = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if n > 0 {
                    received += chunk[0..<n]
                    continue
                }
                if n == 0 { eof = true }
                if n < 0 && errno != EAGAIN && errno != EINTR { error = errno }
                break
            }
        }
        while wantsToSend && error == 0 {
            let n = outgoing.withUnsafeBytes { b in
                send(fd, b.baseAddress! + sent, min(b.count - sent, 65536), Int32(MSG_NOSIGNAL))
            }
            if n > 0 {
                sent += n
                continue
            }
            if n < 0 && errno != EAGAIN && errno != EINTR { error = errno }
            break
        }
        if !wantsToSend && sent == outgoing.count && shutdownAfterSend && !shutDown && error == 0 {
            shutdown(fd, Int32(SHUT_WR))
            shutDown = true
        }
    }
}

/// Drives `peers` until `done` (by default: all are finished) or `seconds` pass; true when
/// done.
@discardableResult
func drive(
    _ peers: inout [Peer], seconds: Double = 4, until done: ([Peer]) -> Bool = { $0.allSatisfy(\.finished) }
) -> Bool {
    let deadline = Deadline.after(.milliseconds(Int(seconds * 1000)))
    for i in peers.indices { peers[i].step(0) }
    while !done(peers) {
        if deadline.hasPassed { return false }
        var fds = peers.map { p in
            pollfd(fd: p.fd, events: Int16(POLLIN) | (p.wantsToSend ? Int16(POLLOUT) : 0), revents: 0)
        }
        let r = poll(&fds, nfds_t(fds.count), 50)
        if r < 0 && errno != EINTR { return false }
        for i in peers.indices where fds[i].revents != 0 { peers[i].step(fds[i].revents) }
    }
    return true
}

// MARK: - Relay fixture

/// Collects what relays report, for the test thread to wait on.
final class RelayEvents: RelayDelegate, Sendable {
    private let summaries = Locked<[RelaySummary]>([])
    private let directions = Locked<[(direction: RelayDirection, bytes: UInt64)]>([])

    func relayDidEnd(_ relay: RelayConnection, summary: RelaySummary) {
        summaries.withLock { $0.append(summary) }
    }

    func relay(_ relay: RelayConnection, finished direction: RelayDirection, bytes: UInt64) {
        directions.withLock { $0.append((direction, bytes)) }
    }

    var all: [RelaySummary] { summaries.withLock { $0 } }

    /// The directions reported finished, in order, with their byte counts.
    var finished: [(direction: RelayDirection, bytes: UInt64)] { directions.withLock { $0 } }

    /// Waits up to `seconds` for `count` summaries.
    func wait(count: Int = 1, seconds: Double = 4) -> [RelaySummary] {
        let deadline = Deadline.after(.milliseconds(Int(seconds * 1000)))
        while !deadline.hasPassed {
            let now = all
            if now.count >= count { return now }
            usleep(2000)
        }
        return all
    }
}

/// Records what a relay reads, per direction.
final class Recording: RelayRecorder, Sendable {
    private let bytes = Locked<(up: [UInt8], down: [UInt8], chunks: Int)>(([], [], 0))

    func relay(_ relay: RelayConnection, read: UnsafeRawBufferPointer, direction: RelayDirection) {
        bytes.withLock { b in
            if direction == .clientToServer { b.up += read } else { b.down += read }
            b.chunks += 1
        }
    }

    var clientToServer: [UInt8] { bytes.withLock { $0.up } }
    var serverToClient: [UInt8] { bytes.withLock { $0.down } }
    var chunks: Int { bytes.withLock { $0.chunks } }
}

/// A loop thread with one relay between two loopback connections whose other ends the test
/// holds: `client` (talks to the relay's client side) and `server` (the relay's server side
/// talks to it).
final class RelayFixture {
    let thread: EventLoopThread
    let events = RelayEvents()
    let client: Int32
    let server: Int32

    init(
        client clientFamily: IPAddress.Family = .v4,
        server serverFamily: IPAddress.Family = .v4,
        configuration: RelayConfiguration = RelayConfiguration(),
        recorder: Recording? = nil,
        loop loopConfiguration: EventLoop.Configuration = EventLoop.Configuration(),
        transports: @escaping @Sendable (_ client: Int32, _ server: Int32) -> RelayTransports? = { _, _ in nil },
        first: (toServer: [UInt8], toClient: [UInt8])? = nil
    ) throws {
        let (client, relayClient) = try Loopback.pair(clientFamily)
        let (relayServer, server) = try Loopback.pair(serverFamily)
        self.client = client
        self.server = server
        thread = try EventLoopThread.start(configuration: loopConfiguration)
        let events = self.events
        thread.sync { loop in
            let relay = RelayConnection(
                loop: loop, client: relayClient, server: relayServer, configuration: configuration,
                delegate: events, recorder: recorder,
                transports: transports(relayClient, relayServer)
            )
            if let first { relay.deliverFirst(toServer: first.toServer, toClient: first.toClient) }
            relay.start()
        }
    }

    var relayStatistics: RelayStatistics { thread.sync { $0.relayStatistics } }

    /// Waits for the relay's summary.
    func summary(seconds: Double = 4) -> RelaySummary? { events.wait(seconds: seconds).first }

    deinit {
        thread.stopAndJoin()
        close(client)
        close(server)
    }
}

/// A loop configuration with 10 ms timer ticks, for timeouts of a few hundred milliseconds.
func fineTimers() -> EventLoop.Configuration {
    var configuration = EventLoop.Configuration()
    configuration.timerTick = .milliseconds(10)
    return configuration
}

/// Seconds since `start`.
func elapsed(since start: Deadline) -> Double {
    Double(Deadline.now.nanoseconds - start.nanoseconds) / 1e9
}

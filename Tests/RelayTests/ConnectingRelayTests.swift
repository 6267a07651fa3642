#if canImport(Glibc)
import Glibc
#endif
import GatewayKit
import Loop
import Relay
import Testing

/// What a connecting relay told its delegate, in order.
final class ConnectingEvents: RelayDelegate, RelayRecorder, Sendable {
    enum Event: Equatable {
        case connected
        case read(RelayDirection, Int)
        case finished(RelayDirection, UInt64)
        case ended(RelayEnd)
    }

    private let events = Locked<[Event]>([])
    private let summaries = Locked<[RelaySummary]>([])

    func relayDidConnect(_ relay: RelayConnection) { events.withLock { $0.append(.connected) } }

    func relayDidEnd(_ relay: RelayConnection, summary: RelaySummary) {
        events.withLock { $0.append(.ended(summary.end)) }
        summaries.withLock { $0.append(summary) }
    }

    func relay(_ relay: RelayConnection, finished direction: RelayDirection, bytes: UInt64) {
        events.withLock { $0.append(.finished(direction, bytes)) }
    }

    func relay(_ relay: RelayConnection, read bytes: UnsafeRawBufferPointer, direction: RelayDirection) {
        events.withLock { $0.append(.read(direction, bytes.count)) }
    }

    var all: [Event] { events.withLock { $0 } }

    /// Waits up to `seconds` for the relay's end.
    func summary(seconds: Double = 4) -> RelaySummary? {
        let deadline = Deadline.after(.milliseconds(Int(seconds * 1000)))
        while !deadline.hasPassed {
            if let first = summaries.withLock({ $0.first }) { return first }
            usleep(2000)
        }
        return nil
    }
}

/// Hands a relay from one `sync` on its loop's thread to the next.
final class RelayBox: @unchecked Sendable {
    var relay: RelayConnection?
}

/// A listener whose accept queue is full (backlog 0, never accepted): further SYNs are dropped,
/// so a connect to it hangs until `release` accepts the queued connections.
final class StalledListener {
    let fd: Int32
    let port: UInt16
    private var fillers: [Int32] = []

    init() throws {
        (fd, port) = try Loopback.listener(.v4, backlog: 0)
        for _ in 0..<3 {
            let filler = try Socket.tcp(.v4)
            Socket.setNonBlocking(filler, true)
            _ = IPAddress.loopbackV4.withSocketAddress(port: port) { sa, length in connect(filler, sa, length) }
            fillers.append(filler)
        }
        // Wait until the queue really is full: a probe's connect stays in progress.
        let deadline = Deadline.after(.seconds(2))
        while !deadline.hasPassed {
            var info = tcp_info()
            var length = socklen_t(MemoryLayout<tcp_info>.size)
            if getsockopt(fillers[2], Int32(IPPROTO_TCP), TCP_INFO, &info, &length) == 0
                && info.tcpi_state == 2  // TCP_SYN_SENT: its SYN was dropped
            {
                break
            }
            usleep(2000)
        }
    }

    /// Closes the fillers (aborting their pending connects) and empties the accept queue, so
    /// that the next SYN retransmission of another connect gets through.
    func release() {
        fillers.forEach { close($0) }
        fillers = []
        Socket.setNonBlocking(fd, true)
        while let (a, _) = try? Socket.accept(fd) { close(a) }
    }

    deinit {
        fillers.forEach { close($0) }
        close(fd)
    }
}

@Suite("RelayConnection.connecting")
struct ConnectingRelayTests {
    /// Starts a connecting relay on `thread` for a new client connection; returns the test's
    /// end of the client connection, or the error the relay's constructor threw.
    static func start(
        _ thread: EventLoopThread, to port: UInt16, family: IPAddress.Family = .v4, preamble: [UInt8] = [],
        connectTimeout: Duration = .seconds(10), events: ConnectingEvents, record: Bool = false
    ) throws -> (client: Int32, thrown: SystemError?) {
        let (client, relayClient) = try Loopback.pair(.v4)
        Socket.setNonBlocking(relayClient, true)
        let thrown = thread.sync { loop -> SystemError? in
            do {
                let relay = try RelayConnection.connecting(
                    loop: loop, client: relayClient, to: Endpoint(address: Loopback.address(family), port: port),
                    connectTimeout: connectTimeout, serverNoDelay: true, preamble: preamble,
                    configuration: RelayConfiguration(transfer: .copy), delegate: events,
                    recorder: record ? events : nil)
                relay.start()
                return nil
            } catch let error as SystemError {
                close(relayClient)
                return error
            } catch {
                close(relayClient)
                return SystemError(errno: EIO)
            }
        }
        return (client, thrown)
    }

    @Test(
        "connects and relays both ways; the preamble goes first and is not counted",
        arguments: [IPAddress.Family.v4, .v6], [false, true])
    func relays(family: IPAddress.Family, record: Bool) throws {
        let (listener, port) = try Loopback.listener(family)
        defer { close(listener) }
        let thread = try EventLoopThread.start()
        defer { thread.stopAndJoin() }
        let events = ConnectingEvents()
        let preamble = Array("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n".utf8)
        let (client, thrown) = try Self.start(
            thread, to: port, family: family, preamble: preamble, events: events, record: record)
        defer { close(client) }
        #expect(thrown == nil)
        let (server, _) = try Socket.accept(listener)
        defer { close(server) }
        let up = randomBytes(300_000, seed: 41)
        let down = randomBytes(200_000, seed: 42)
        var peers = [Peer(fd: client, sending: up), Peer(fd: server, sending: down)]
        #expect(drive(&peers))
        expectSame(peers[1].received, preamble + up)
        expectSame(peers[0].received, down)
        let summary = try #require(events.summary())
        #expect(summary.end == .completed)
        #expect(summary.bytesClientToServer == UInt64(up.count))
        #expect(summary.bytesServerToClient == UInt64(down.count))
        let all = events.all
        #expect(all.filter { $0 == .connected }.count == 1)
        // Each direction's end is told once, with the bytes delivered, after the connection.
        let finishes = all.filter { if case .finished = $0 { true } else { false } }
        #expect(Set(finishes.map { "\($0)" }).count == 2)
        #expect(finishes.contains(.finished(.clientToServer, UInt64(up.count))))
        #expect(finishes.contains(.finished(.serverToClient, UInt64(down.count))))
        #expect(all.firstIndex(of: .connected)! < all.firstIndex(of: finishes[0])!)
        if record {
            // A recorder hears of the connection before the first chunk it is shown.
            #expect(all.first == .connected)
            let recorded = all.reduce(0) { n, e in if case .read(.clientToServer, let c) = e { n + c } else { n } }
            #expect(recorded == up.count)
        }
        #expect(thread.sync { $0.relayStatistics.relays } == 0)
    }

    @Test("a connect noticed in the round that also passes on the client's end of file is told first")
    func connectToldBeforeTheEndOfFileOfTheSameRound() throws {
        let (listener, port) = try Loopback.listener(.v4)
        defer { close(listener) }
        let thread = try EventLoopThread.start()
        defer { thread.stopAndJoin() }
        let events = ConnectingEvents()
        let (client, relayClient) = try Loopback.pair(.v4)
        defer { close(client) }
        Socket.setNonBlocking(relayClient, true)
        // Request and end of file wait, and the handshake is done (the server has accepted),
        // before the relay starts: its first round writes the request, which proves the
        // connection, and, the request filling its buffer exactly (a full read does not end
        // the round), reads and passes on the end of file too.
        let request = randomBytes(RelayConfiguration().bufferSize, seed: 45)
        let sent = request.withUnsafeBytes { send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        #expect(sent == request.count)
        shutdown(client, Int32(SHUT_WR))
        let box = RelayBox()
        thread.sync { loop in
            box.relay = try? RelayConnection.connecting(
                loop: loop, client: relayClient, to: Endpoint(address: .loopbackV4, port: port),
                configuration: RelayConfiguration(transfer: .copy), delegate: events)
        }
        let (server, _) = try Socket.accept(listener)
        defer { close(server) }
        thread.sync { _ in box.relay?.start() }
        var peers = [
            Peer(fd: client, sending: []), Peer(fd: server, sending: Array("answer".utf8), sendAfterEOF: true),
        ]
        #expect(drive(&peers))
        expectSame(peers[1].received, request)
        #expect(events.summary()?.end == .completed)
        #expect(
            events.all == [
                .connected, .finished(.clientToServer, UInt64(request.count)), .finished(.serverToClient, 6),
                .ended(.completed),
            ])
    }

    @Test("a refused connect ends the relay with connectFailed (or throws at once), closing the client")
    func refused() throws {
        let (listener, port) = try Loopback.listener(.v4)
        close(listener)  // nothing listens on that port any more
        let thread = try EventLoopThread.start()
        defer { thread.stopAndJoin() }
        let events = ConnectingEvents()
        let (client, thrown) = try Self.start(thread, to: port, events: events)
        defer { close(client) }
        if let thrown {
            #expect(thrown == SystemError(errno: ECONNREFUSED))
            #expect(events.all.isEmpty)
            return
        }
        let summary = try #require(events.summary())
        #expect(summary.end == .connectFailed(SystemError(errno: ECONNREFUSED)))
        #expect(summary.bytesClientToServer == 0 && summary.bytesServerToClient == 0)
        #expect(!events.all.contains(.connected))
        // The relay closed the client: the test's end sees end of file.
        var byte: UInt8 = 0
        #expect(recv(client, &byte, 1, 0) == 0)
    }

    @Test("a connect that gets no answer ends with connectFailed(ETIMEDOUT) after the connect timeout")
    func timeout() throws {
        let stalled = try StalledListener()
        let thread = try EventLoopThread.start(configuration: fineTimers())
        defer { thread.stopAndJoin() }
        let events = ConnectingEvents()
        let started = Deadline.now
        let (client, thrown) = try Self.start(
            thread, to: stalled.port, connectTimeout: .milliseconds(250), events: events)
        defer { close(client) }
        #expect(thrown == nil)
        // Bytes sent meanwhile wait; they are never delivered anywhere.
        _ = send(client, "early", 5, Int32(MSG_NOSIGNAL))
        let summary = try #require(events.summary())
        #expect(summary.end == .connectFailed(SystemError(errno: ETIMEDOUT)))
        let seconds = elapsed(since: started)
        #expect(seconds >= 0.24 && seconds < 1.5)
        #expect(summary.bytesClientToServer == 0)
    }

    @Test(
        "bytes and end of file a client sends while the connect is pending reach the server once connected",
        arguments: [0, 5000])
    func endOfFileWhileConnecting(requestSize: Int) throws {
        let stalled = try StalledListener()
        let thread = try EventLoopThread.start()
        defer { thread.stopAndJoin() }
        let events = ConnectingEvents()
        let (client, thrown) = try Self.start(thread, to: stalled.port, events: events)
        defer { close(client) }
        #expect(thrown == nil)
        let request = randomBytes(requestSize, seed: 43)
        if requestSize > 0 {
            #expect(request.withUnsafeBytes { send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } == 5000)
            // The relay holds the whole request (its optimistic write found the connect pending).
            let seen = Deadline.after(.seconds(2))
            while !seen.hasPassed && thread.sync({ $0.relayStatistics.bufferedBytes }) < requestSize { usleep(2000) }
            #expect(thread.sync { $0.relayStatistics.bufferedBytes } == requestSize)
        }
        // The end of file reaches the relay at once; the connect completes only with the SYN's
        // retransmission, about a second after the queue is freed below. A shutdown of the
        // connecting socket meanwhile would abort the connect.
        shutdown(client, Int32(SHUT_WR))
        #expect(events.all.isEmpty)
        // Free the accept queue: the SYN's retransmission (about a second later) gets through.
        stalled.release()
        Socket.setNonBlocking(stalled.fd, false)
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(stalled.fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let (server, _) = try Socket.accept(stalled.fd)
        defer { close(server) }
        let answer = randomBytes(7000, seed: 44)
        var peers = [Peer(fd: client, sending: []), Peer(fd: server, sending: answer, sendAfterEOF: true)]
        #expect(drive(&peers, seconds: 6))
        expectSame(peers[1].received, request)
        #expect(peers[1].eof)
        expectSame(peers[0].received, answer)
        let summary = try #require(events.summary())
        #expect(summary.end == .completed)
        #expect(summary.bytesClientToServer == UInt64(requestSize) && summary.bytesServerToClient == 7000)
    }
}

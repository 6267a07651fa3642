#if canImport(Glibc)
import Glibc
#endif
import GatewayKit
import Loop
import Relay
import Testing

@Suite("RelayConnection")
struct RelayConnectionTests {
    static let transfers: [RelayTransfer] = [.copy, .splice, .automatic]

    @Test("bulk data both ways at once arrives whole and in order", arguments: transfers)
    func bulkBothWays(transfer: RelayTransfer) throws {
        let fixture = try RelayFixture(configuration: RelayConfiguration(transfer: transfer))
        let up = randomBytes(4 << 20, seed: 1)
        let down = randomBytes(4 << 20, seed: 2)
        var peers = [Peer(fd: fixture.client, sending: up), Peer(fd: fixture.server, sending: down)]
        #expect(drive(&peers))
        #expect(peers[1].received.count == up.count)
        #expect(fnv1a(peers[1].received) == fnv1a(up))
        expectSame(peers[1].received, up)
        #expect(peers[0].received.count == down.count)
        expectSame(peers[0].received, down)
        let summary = try #require(fixture.summary())
        #expect(summary.end == .completed)
        #expect(summary.bytesClientToServer == UInt64(up.count))
        #expect(summary.bytesServerToClient == UInt64(down.count))
        let stats = fixture.relayStatistics
        #expect(stats.relays == 0 && stats.bufferedBytes == 0 && stats.buffersInUse == 0 && stats.pipesInUse == 0)
        // Splicing used pipes (now pooled); copying never made one.
        #expect((stats.pipesPooled > 0) == (transfer != .copy))
    }

    @Test(
        "IPv4 and IPv6 sockets relay in every combination",
        arguments: [(IPAddress.Family.v6, IPAddress.Family.v4), (.v4, .v6), (.v6, .v6)]
    )
    func families(client: IPAddress.Family, server: IPAddress.Family) throws {
        for transfer in [RelayTransfer.copy, .splice] {
            let fixture = try RelayFixture(
                client: client, server: server, configuration: RelayConfiguration(transfer: transfer)
            )
            let up = randomBytes(300_000, seed: 3)
            let down = randomBytes(200_000, seed: 4)
            var peers = [Peer(fd: fixture.client, sending: up), Peer(fd: fixture.server, sending: down)]
            #expect(drive(&peers))
            expectSame(peers[1].received, up)
            expectSame(peers[0].received, down)
            #expect(fixture.summary()?.end == .completed)
        }
    }

    @Test(
        "an answer followed by the server's FIN reaches a client that keeps its side open, with the FIN",
        arguments: transfers)
    func answerThenFin(transfer: RelayTransfer) throws {
        // The relay sends such bytes with MSG_MORE so that the FIN leaves in the same segment;
        // nothing may stay held back while the client waits.
        for size in [1, 1000, 10 * 1024 - 1, 10 * 1024 + 1, 300_000] {
            let fixture = try RelayFixture(configuration: RelayConfiguration(transfer: transfer))
            let answer = randomBytes(size, seed: UInt64(size))
            #expect(
                answer.withUnsafeBytes { send(fixture.server, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } == size)
            shutdown(fixture.server, Int32(SHUT_WR))
            var peers = [Peer(fd: fixture.client, shutdownAfterSend: false)]
            #expect(drive(&peers, seconds: 2) { $0[0].eof })
            expectSame(peers[0].received, answer)
        }
    }

    @Test("bytes delivered first go out before anything read, both ways, and count as relayed", arguments: transfers)
    func deliverFirst(transfer: RelayTransfer) throws {
        // Larger than the sockets take at once, so that they go out over several writes.
        let firstUp = randomBytes(600_000, seed: 21)
        let firstDown = randomBytes(1 << 20, seed: 22)
        let fixture = try RelayFixture(
            configuration: RelayConfiguration(transfer: transfer), first: (firstUp, firstDown))
        let up = randomBytes(300_000, seed: 23)
        let down = randomBytes(200_000, seed: 24)
        var peers = [Peer(fd: fixture.client, sending: up), Peer(fd: fixture.server, sending: down)]
        #expect(drive(&peers))
        expectSame(peers[1].received, firstUp + up)
        expectSame(peers[0].received, firstDown + down)
        let summary = try #require(fixture.summary())
        #expect(summary.end == .completed)
        #expect(summary.bytesClientToServer == UInt64(firstUp.count + up.count))
        #expect(summary.bytesServerToClient == UInt64(firstDown.count + down.count))
    }

    @Test("a client that shuts down its sending side still receives the whole answer", arguments: transfers)
    func clientHalfClose(transfer: RelayTransfer) throws {
        let fixture = try RelayFixture(configuration: RelayConfiguration(transfer: transfer))
        let request = randomBytes(100_000, seed: 5)
        let answer = randomBytes(2 << 20, seed: 6)
        var peers = [
            Peer(fd: fixture.client, sending: request),
            Peer(fd: fixture.server, sending: answer, sendAfterEOF: true),
        ]
        #expect(drive(&peers))
        expectSame(peers[1].received, request)
        #expect(peers[1].eof)
        expectSame(peers[0].received, answer)
        #expect(peers[0].eof)
        let summary = try #require(fixture.summary())
        #expect(summary.end == .completed)
        #expect(summary.bytesServerToClient == UInt64(answer.count))
        // The delegate hears of each half-close once, the client's first, with what was delivered.
        let finished = fixture.events.finished
        #expect(finished.map(\.direction) == [.clientToServer, .serverToClient])
        #expect(finished.map(\.bytes) == [UInt64(request.count), UInt64(answer.count)])
    }

    @Test("a server that shuts down first still receives everything the client sends", arguments: transfers)
    func serverHalfClose(transfer: RelayTransfer) throws {
        let fixture = try RelayFixture(configuration: RelayConfiguration(transfer: transfer))
        let greeting = randomBytes(1 << 20, seed: 7)
        let upload = randomBytes(1 << 20, seed: 8)
        var peers = [
            Peer(fd: fixture.client, sending: upload, sendAfterEOF: true),
            Peer(fd: fixture.server, sending: greeting),
        ]
        #expect(drive(&peers))
        expectSame(peers[0].received, greeting)
        expectSame(peers[1].received, upload)
        #expect(peers[1].eof)
        #expect(fixture.summary()?.end == .completed)
        let finished = fixture.events.finished
        #expect(finished.map(\.direction) == [.serverToClient, .clientToServer])
        #expect(finished.map(\.bytes) == [UInt64(greeting.count), UInt64(upload.count)])
    }

    @Test(
        "a peer that never reads: the relay stops reading and holds at most one buffer or pipe",
        arguments: [
            RelayTransfer.copy, .splice,
        ])
    func neverReads(transfer: RelayTransfer) throws {
        let bufferSize = 10 * 1024
        let pipeSize = 64 * 1024
        let fixture = try RelayFixture(
            configuration: RelayConfiguration(transfer: transfer, bufferSize: bufferSize, pipeSize: pipeSize)
        )
        Socket.setNonBlocking(fixture.client, true)
        let chunk = randomBytes(65536, seed: 9)
        var written = 0
        var stalledSince: Deadline?
        let deadline = Deadline.after(.seconds(3))
        // Write until nothing more is taken for 200 ms (or 256 MiB: the relay would be buffering).
        while !deadline.hasPassed && written < 256 << 20 {
            let offset = written % chunk.count
            let n = chunk.withUnsafeBytes {
                send(fixture.client, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL))
            }
            if n > 0 {
                written += n
                stalledSince = nil
                continue
            }
            #expect(errno == EAGAIN)
            if let since = stalledSince {
                if elapsed(since: since) > 0.2 { break }
            } else {
                stalledSince = .now
            }
            usleep(5000)
        }
        #expect(written < 256 << 20, "the writer never stalled")
        #expect(stalledSince != nil)
        let stats = fixture.relayStatistics
        #expect(stats.relays == 1)
        #expect(stats.bufferedBytes <= (transfer == .copy ? bufferSize : pipeSize))
        #expect(stats.buffersInUse <= 1)
        #expect(stats.pipesInUse <= 1)
        // Now the server reads everything: nothing was lost.
        var peers = [Peer(fd: fixture.client), Peer(fd: fixture.server)]
        #expect(drive(&peers))
        #expect(peers[1].received.count == written)
        var expected: [UInt8] = []
        expected.reserveCapacity(written)
        while expected.count < written { expected += chunk.prefix(written - expected.count) }
        expectSame(peers[1].received, expected)
        #expect(fixture.summary()?.end == .completed)
    }

    @Test("nothing moving for the idle timeout ends the relay; activity keeps it alive")
    func idleTimeout() throws {
        let fixture = try RelayFixture(
            configuration: RelayConfiguration(idleTimeout: .milliseconds(300)),
            loop: {
                var c = EventLoop.Configuration(); c.timerTick = .milliseconds(20); return c
            }()
        )
        let start = Deadline.now
        var byte: UInt8 = 42
        var sink = [UInt8](repeating: 0, count: 16)
        for _ in 0..<6 {
            usleep(120_000)
            #expect(send(fixture.client, &byte, 1, Int32(MSG_NOSIGNAL)) == 1)
            #expect(recv(fixture.server, &sink, 16, 0) == 1)
        }
        #expect(fixture.events.all.isEmpty, "ended although bytes kept moving")
        let quiet = Deadline.now
        let summary = try #require(fixture.summary(seconds: 2))
        #expect(summary.end == .idleTimeout)
        let idle = elapsed(since: quiet)
        #expect(idle >= 0.28 && idle < 1.0, "idle for \(idle) s")
        #expect(elapsed(since: start) > 0.9)
        #expect(summary.bytesClientToServer == 6)
        // Both sockets were closed: the peers see end of file.
        Socket.setNonBlocking(fixture.client, false)
        #expect(recv(fixture.client, &sink, 16, 0) == 0)
    }

    @Test("a client resetting mid-transfer ends the relay cleanly", arguments: [RelayTransfer.copy, .splice])
    func clientReset(transfer: RelayTransfer) throws {
        let fixture = try RelayFixture(configuration: RelayConfiguration(transfer: transfer))
        let data = randomBytes(1 << 20, seed: 10)
        var peers = [Peer(fd: fixture.client, sending: data, shutdownAfterSend: false)]
        _ = drive(&peers, seconds: 0.2)
        var linger = linger(l_onoff: 1, l_linger: 0)
        setsockopt(fixture.client, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<linger>.size))
        // Close with linger 0 (RST), keeping the descriptor number taken (the fixture closes it).
        let null = open("/dev/null", O_RDONLY)
        dup2(null, fixture.client)
        close(null)
        let summary = try #require(fixture.summary())
        guard case .failed(.client, let error) = summary.end else {
            Issue.record("ended with \(summary.end)")
            return
        }
        #expect([ECONNRESET, EPIPE].contains(error.errno))
        // The server side was closed: the server sees end of file after what was delivered.
        var server = [Peer(fd: fixture.server)]
        #expect(drive(&server))
        #expect(server[0].received.count <= data.count)
        expectSame(server[0].received, Array(data[0..<server[0].received.count]))
        let stats = fixture.relayStatistics
        #expect(stats.relays == 0 && stats.bufferedBytes == 0 && stats.buffersInUse == 0 && stats.pipesInUse == 0)
    }

    @Test("a server resetting while the client sends ends the relay with a server error")
    func serverReset() throws {
        let fixture = try RelayFixture(configuration: RelayConfiguration(transfer: .automatic))
        var peers = [Peer(fd: fixture.client, sending: randomBytes(4 << 20, seed: 11), shutdownAfterSend: false)]
        _ = drive(&peers, seconds: 0.1)
        var linger = linger(l_onoff: 1, l_linger: 0)
        setsockopt(fixture.server, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<linger>.size))
        let null = open("/dev/null", O_RDONLY)
        dup2(null, fixture.server)  // closes the socket: RST, since it has unread data
        close(null)
        let summary = try #require(fixture.summary())
        guard case .failed(.server, let error) = summary.end else {
            Issue.record("ended with \(summary.end)")
            return
        }
        #expect([ECONNRESET, EPIPE].contains(error.errno))
    }

    @Test("the recorder sees exactly the bytes, both ways, even when splice was asked for")
    func recorder() throws {
        let recording = Recording()
        let fixture = try RelayFixture(configuration: RelayConfiguration(transfer: .splice), recorder: recording)
        let up = randomBytes(1 << 20, seed: 12)
        let down = randomBytes(700_001, seed: 13)
        var peers = [Peer(fd: fixture.client, sending: up), Peer(fd: fixture.server, sending: down)]
        #expect(drive(&peers))
        #expect(fixture.summary()?.end == .completed)
        expectSame(recording.clientToServer, up)
        expectSame(recording.serverToClient, down)
        #expect(recording.chunks >= (up.count + down.count) / (10 * 1024))
        #expect(fixture.relayStatistics.pipesPooled == 0, "a recorded relay must not splice")
    }

    @Test("tiny buffers and pipes still move everything, in order", arguments: [RelayTransfer.copy, .splice])
    func tinyBuffers(transfer: RelayTransfer) throws {
        let fixture = try RelayFixture(
            configuration: RelayConfiguration(transfer: transfer, bufferSize: 7, pipeSize: 4096)
        )
        let up = randomBytes(150_001, seed: 15)
        let down = randomBytes(99_999, seed: 16)
        var peers = [Peer(fd: fixture.client, sending: up), Peer(fd: fixture.server, sending: down)]
        #expect(drive(&peers))
        expectSame(peers[1].received, up)
        expectSame(peers[0].received, down)
        #expect(fixture.summary()?.end == .completed)
    }

    @Test("a recorder may cancel the relay mid-chunk (a content filter)")
    func recorderCancels() throws {
        final class Filter: RelayRecorder, Sendable {
            func relay(_ relay: RelayConnection, read bytes: UnsafeRawBufferPointer, direction: RelayDirection) {
                if bytes.contains(0x21) { relay.cancel() }
            }
        }
        let (client, relayClient) = try Loopback.pair(.v4)
        let (relayServer, server) = try Loopback.pair(.v4)
        defer {
            close(client)
            close(server)
        }
        let thread = try EventLoopThread.start()
        defer { thread.stopAndJoin() }
        let events = RelayEvents()
        let filter = Filter()
        thread.sync { loop in
            RelayConnection(
                loop: loop, client: relayClient, server: relayServer, delegate: events, recorder: filter
            ).start()
        }
        var peers = [Peer(fd: client, sending: Array("hello ".utf8), shutdownAfterSend: false), Peer(fd: server)]
        #expect(drive(&peers) { $0[1].received.count == 6 })
        #expect(events.all.isEmpty)
        peers[0].outgoing += Array("world!".utf8)
        #expect(drive(&peers) { $0[1].eof })
        #expect(events.wait().map(\.end) == [.cancelled])
        let stats = thread.sync { $0.relayStatistics }
        #expect(stats.relays == 0 && stats.bufferedBytes == 0 && stats.buffersInUse == 0)
    }

    @Test("cancel closes both sockets and reports .cancelled")
    func cancel() throws {
        let (client, relayClient) = try Loopback.pair(.v4)
        let (relayServer, server) = try Loopback.pair(.v4)
        defer {
            close(client)
            close(server)
        }
        let thread = try EventLoopThread.start()
        defer { thread.stopAndJoin() }
        let events = RelayEvents()
        let open = thread.sync { loop -> Bool in
            let relay = RelayConnection(loop: loop, client: relayClient, server: relayServer, delegate: events)
            relay.start()
            let running = relay.isRunning
            relay.cancel()
            return running && !relay.isRunning
        }
        #expect(open)
        #expect(events.all.map(\.end) == [.cancelled])
        var byte: UInt8 = 0
        #expect(recv(client, &byte, 1, 0) == 0)
        #expect(recv(server, &byte, 1, 0) == 0)
    }

    @Test("stopping the loop cancels its relays")
    func loopClose() throws {
        let fixture = try RelayFixture()
        fixture.thread.stopAndJoin()
        #expect(fixture.events.all.map(\.end) == [.cancelled])
    }

    @Test(
        "idle relays hold no buffers and no pipes, also after traffic", arguments: [RelayTransfer.splice, .automatic])
    func idleHoldsNothing(transfer: RelayTransfer) throws {
        let thread = try EventLoopThread.start()
        defer { thread.stopAndJoin() }
        let events = RelayEvents()
        var ends: [(Int32, Int32)] = []
        defer {
            for (a, b) in ends {
                close(a)
                close(b)
            }
        }
        let count = 200
        for _ in 0..<count {
            let (client, relayClient) = try Loopback.pair(.v4)
            let (relayServer, server) = try Loopback.pair(.v4)
            ends.append((client, server))
            thread.execute { loop in
                RelayConnection(
                    loop: loop, client: relayClient, server: relayServer,
                    configuration: RelayConfiguration(transfer: transfer), delegate: events
                ).start()
            }
        }
        var stats = thread.sync { $0.relayStatistics }
        #expect(stats.relays == count)
        #expect(stats.buffersInUse == 0 && stats.pipesInUse == 0 && stats.pipesPooled == 0 && stats.bufferedBytes == 0)
        #expect(stats.buffersPooled == 0)
        // A request and an answer of 100 KB through each, then idle again.
        let request = randomBytes(100_000, seed: 14)
        for (client, server) in ends {
            var peers = [
                Peer(fd: client, sending: request, shutdownAfterSend: false),
                Peer(fd: server, sending: request, shutdownAfterSend: false),
            ]
            #expect(drive(&peers, seconds: 2) { $0.allSatisfy { $0.received.count >= request.count } })
            expectSame(peers[0].received, request)
            expectSame(peers[1].received, request)
        }
        // The peers have everything; the loop may still be finishing its last turn (an empty
        // pipe goes back to the pool on the next EAGAIN), so give it up to five seconds (two
        // were too few once, with a ThreadSanitizer suite loading both cores).
        let settle = Deadline.after(.seconds(5))
        repeat {
            stats = thread.sync { $0.relayStatistics }
            if stats.buffersInUse == 0 && stats.pipesInUse == 0 && stats.bufferedBytes == 0 { break }
            usleep(5000)
        } while !settle.hasPassed
        #expect(stats.relays == count)
        #expect(stats.buffersInUse == 0 && stats.pipesInUse == 0 && stats.bufferedBytes == 0)
        #expect(stats.pipesPooled <= 64)
        #expect(events.all.isEmpty)
    }
}

#if canImport(Glibc)
import Glibc
#endif
import GatewayKit
import Loop
import Relay
import Synchronization
import Testing

/// A transport that XORs every byte with a key both ways: what a TLS or filtering stream
/// does to the bytes (they differ on the wire), without a library.
final class XorTransport: RelayTransport {
    let fd: Int32
    let key: UInt8
    let counters: TransportCounters

    init(fd: Int32, key: UInt8, counters: TransportCounters) {
        self.fd = fd
        self.key = key
        self.counters = counters
    }

    func read(into buffer: UnsafeMutableRawPointer, count: Int) -> Int {
        let n = recv(fd, buffer, count, Int32(MSG_DONTWAIT))
        if n > 0 {
            let bytes = buffer.assumingMemoryBound(to: UInt8.self)
            for i in 0..<n { bytes[i] ^= key }
        }
        return n
    }

    func write(from buffer: UnsafeRawPointer, count: Int, more: Bool) -> Int {
        var copy = [UInt8](UnsafeRawBufferPointer(start: buffer, count: count))
        for i in copy.indices { copy[i] ^= key }
        return copy.withUnsafeBytes { send(fd, $0.baseAddress, count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
    }

    func shutdownWrite() {
        counters.shutdowns.add(1, ordering: .relaxed)
        shutdown(fd, Int32(SHUT_WR))
    }

    func close() { counters.closes.add(1, ordering: .relaxed) }
}

/// A transport that reads everything the socket has into a buffer of its own and hands it out
/// 7 bytes at a time: as TLS holds decrypted records, input that raises no new edge.
final class HoardingTransport: RelayTransport {
    let fd: Int32
    var held: [UInt8] = []
    var eof = false

    init(fd: Int32) { self.fd = fd }

    func read(into buffer: UnsafeMutableRawPointer, count: Int) -> Int {
        if held.isEmpty && !eof {
            var chunk = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
                if n > 0 {
                    held += chunk[0..<n]
                    continue
                }
                if n == 0 { eof = true }
                if n < 0 && held.isEmpty && !eof { return -1 }  // errno from recv: EAGAIN or an error
                break
            }
        }
        if held.isEmpty { return 0 }
        let n = min(7, count, held.count)
        held.withUnsafeBytes { buffer.copyMemory(from: $0.baseAddress!, byteCount: n) }
        held.removeFirst(n)
        return n
    }

    func write(from buffer: UnsafeRawPointer, count: Int, more: Bool) -> Int {
        send(fd, buffer, count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
    }

    func shutdownWrite() { shutdown(fd, Int32(SHUT_WR)) }
    func close() {}
}

/// What the transports were asked, read from the test thread.
final class TransportCounters: Sendable {
    let shutdowns = Atomic(0)
    let closes = Atomic(0)
}

@Suite("The relay's transport seam")
struct RelayTransportTests {
    @Test("a transport on the server side changes the bytes both ways and passes the half-close on")
    func xorOnTheServerSide() throws {
        let counters = TransportCounters()
        let fixture = try RelayFixture(configuration: RelayConfiguration(transfer: .splice)) { _, server in
            RelayTransports(server: XorTransport(fd: server, key: 0x5A, counters: counters))
        }
        let (client, server, events, thread) = (fixture.client, fixture.server, fixture.events, fixture.thread)
        let up = randomBytes(300_000, seed: 11)
        let down = randomBytes(200_000, seed: 12)
        var peers = [Peer(fd: client, sending: up), Peer(fd: server, sending: down.map { $0 ^ 0x5A })]
        #expect(drive(&peers))
        expectSame(peers[1].received, up.map { $0 ^ 0x5A })
        expectSame(peers[0].received, down)
        let summary = try #require(events.wait().first)
        #expect(summary.end == .completed)
        #expect(summary.bytesClientToServer == UInt64(up.count))
        let stats = thread.sync { $0.relayStatistics }
        _ = fixture
        #expect(stats.pipesPooled == 0 && stats.pipesInUse == 0, "a side with a transport must not splice")
        #expect(counters.closes.load(ordering: .relaxed) == 1)
        // The client's FIN went to the server through the transport, unless the server's came
        // first and both closed at once.
        #expect(counters.shutdowns.load(ordering: .relaxed) <= 1)
    }

    @Test("input a transport holds without a new edge is read to the end")
    func heldInputIsDrained() throws {
        let fixture = try RelayFixture { client, _ in RelayTransports(client: HoardingTransport(fd: client)) }
        let (client, server, events) = (fixture.client, fixture.server, fixture.events)
        let up = randomBytes(1 << 18, seed: 13)
        var peers = [Peer(fd: client, sending: up), Peer(fd: server, sending: [])]
        #expect(drive(&peers, seconds: 20))
        #expect(peers[1].received.count == up.count)
        expectSame(peers[1].received, up)
        #expect(events.wait().first?.end == .completed)
    }
}

#if canImport(Glibc)
import Glibc
#endif
import GatewayKit
import Loop
import Relay
import TLSTestSupport
import Testing

@testable import TLS

/// A TLS peer driven by hand between the loop's turns: sends its bytes, then close_notify and
/// its FIN, and reads everything until the end.
final class TLSPeer {
    let fd: Int32
    let connection: TLSConnection
    var sending: [UInt8]
    var sent = 0
    var received: [UInt8] = []
    var ended = false
    var shut = false
    var error: Int32 = 0

    init(fd: Int32, connection: TLSConnection, sending: [UInt8]) {
        self.fd = fd
        self.connection = connection
        self.sending = sending
    }

    func pump() {
        while sent < sending.count {
            let n = sending.withUnsafeBytes {
                connection.write(from: $0.baseAddress! + sent, count: min(64 * 1024, $0.count - sent), more: true)
            }
            if n <= 0 {
                if errno != EAGAIN { error = errno }
                break
            }
            sent += n
        }
        if sent == sending.count && !shut && connection.isEstablished {
            shut = true
            connection.shutdownWrite()
        }
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while !ended {
            let n = chunk.withUnsafeMutableBytes { connection.read(into: $0.baseAddress!, count: $0.count) }
            if n > 0 {
                received += chunk[..<n]
            } else if n == 0 {
                ended = true
            } else {
                if errno != EAGAIN { error = errno; ended = true }
                break
            }
        }
    }

    var done: Bool { ended && shut }
}

final class Ends: RelayDelegate {
    var summary: RelaySummary?
    func relayDidEnd(_ relay: RelayConnection, summary: RelaySummary) { self.summary = summary }
}

@Suite("The relay through TLS on both sides")
struct TLSRelayTests {
    @Test("re-encryption: bytes both ways intact, half-closes passed on as close_notify")
    func reencryption() throws {
        let loop = try EventLoop()
        let (a, relayClient) = try socketPair()
        let (relayServer, b) = try socketPair()
        defer { [a, relayClient, relayServer, b].forEach { close($0) } }
        let up = (0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        let down = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 17 &+ 3) }
        let peerA = TLSPeer(fd: a, connection: try clientContext().connection(on: a, host: "localhost"), sending: up)
        let peerB = TLSPeer(fd: b, connection: try serverContext().connection(on: b), sending: down)

        // The relay's client side shakes hands first, as a terminating proxy does; its server
        // side's handshake is made by the relay's first write.
        var terminated: Result<TLSFacts, TLSError>?
        let handshake = TLSHandshake(loop: loop, connection: try serverContext().connection(on: relayClient)) {
            terminated = $0
        }
        handshake.start(timeout: .seconds(5))
        let deadline = Deadline.after(.seconds(30))
        while terminated == nil && !deadline.hasPassed {
            peerA.pump()
            loop.runOnce(timeout: .milliseconds(5))
        }
        #expect(terminated?.facts?.version == "TLSv1.3")

        let origin = try clientContext().connection(host: "localhost")
        origin.attach(relayServer)
        var established: TLSFacts?
        origin.established = { established = $0.facts }
        let ends = Ends()
        let relay = RelayConnection(
            loop: loop, client: relayClient, server: relayServer,
            configuration: RelayConfiguration(transfer: .copy, bufferSize: 64 * 1024), delegate: ends,
            transports: RelayTransports(client: handshake.connection, server: origin))
        relay.start()
        while ends.summary == nil && !deadline.hasPassed {
            peerA.pump()
            peerB.pump()
            loop.runOnce(timeout: .milliseconds(2))
        }
        while !(peerA.done && peerB.done) && !deadline.hasPassed {
            peerA.pump()
            peerB.pump()
            loop.runOnce(timeout: .milliseconds(2))
        }
        #expect(ends.summary?.end == .completed)
        #expect(ends.summary?.bytesClientToServer == UInt64(up.count))
        #expect(ends.summary?.bytesServerToClient == UInt64(down.count))
        #expect(peerB.received == up, "\(peerB.received.count) of \(up.count) bytes up")
        #expect(peerA.received == down, "\(peerA.received.count) of \(down.count) bytes down")
        #expect(
            peerA.error == 0 && peerB.error == 0,
            "errors \(peerA.error) \(peerB.error) \(String(describing: peerB.connection.failure))")
        #expect(established?.version == "TLSv1.3")
        #expect(established?.serverName == "localhost")
    }

    @Test("a server whose certificate fails verification ends the relay with the reason kept")
    func refusedServer() throws {
        let loop = try EventLoop()
        let (relayServer, b) = try socketPair()
        let (a, relayClient) = try socketPair()
        defer { [a, relayClient, relayServer, b].forEach { close($0) } }
        let peerB = TLSPeer(fd: b, connection: try serverContext(["stranger"]).connection(on: b), sending: [])
        let origin = try clientContext().connection(host: "localhost")
        origin.attach(relayServer)
        let ends = Ends()
        let relay = RelayConnection(
            loop: loop, client: relayClient, server: relayServer, configuration: RelayConfiguration(transfer: .copy),
            delegate: ends, transports: RelayTransports(server: origin))
        relay.start()
        _ = "hello".utf8.withContiguousStorageIfAvailable { send(a, $0.baseAddress, $0.count, 0) }
        let deadline = Deadline.after(.seconds(10))
        while ends.summary == nil && !deadline.hasPassed {
            peerB.pump()
            loop.runOnce(timeout: .milliseconds(5))
        }
        guard case .failed(.server, let error) = ends.summary?.end else {
            Issue.record("ended \(String(describing: ends.summary?.end))")
            return
        }
        #expect(error.errno == EPROTO)
        #expect(origin.failure?.description == "certificate verify failed: unable to get local issuer certificate")
    }
}

#if canImport(Glibc)
import Glibc
#endif
import Gateway
import GatewayKit
import Loop
import Relay
import Testing

// What sockd's machine asks of the driver, on a real loop with real loopback sockets: the
// CONNECT path (relaying the streams, the connections' addresses).

/// What a non-blocking receive gives now is appended to `out`; true at end of file.
@discardableResult
func receiveNow(_ fd: Int32, into out: inout [UInt8]) -> Bool {
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
        if n > 0 {
            out += chunk[0..<n]
            continue
        }
        return n == 0
    }
}

/// A listener on 127.0.0.1 standing in for the server a session connects to.
func loopbackServer() throws -> (fd: Int32, endpoint: Endpoint) {
    let server = try Socket.tcp(.v4)
    try Socket.bind(server, to: .loopbackV4, port: 0)
    try Socket.listen(server, backlog: 4)
    return (server, try Socket.localEndpoint(server))
}

/// Bytes as text, for messages.
func text(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }

/// What the machine of the CONNECT test saw of the connections' addresses.
final class Addresses: @unchecked Sendable {
    var serverLocal: Endpoint?
    var serverRemote: Endpoint?
    var clientLocal: Endpoint?
    var clientRemote: Endpoint?
    var scanner: SystemError?
    var summary: RelaySummary?
}

@Suite("The session driver relays its streams")
struct SessionRelayStreamsTests {
    @Test(arguments: [RelayTransfer.copy, .splice, .automatic])
    func connectPathMovesLeftoversAndQueuedRepliesFirstThenBothWaysWithHalfClose(transfer: RelayTransfer) throws {
        let fixture = try Fixture()
        defer { withExtendedLifetime(fixture) {} }
        let (server, serverEndpoint) = try loopbackServer()
        defer { close(server) }
        let script = Script()
        let seen = Addresses()
        // A reply larger than the socket buffers take at once: it must wait in the client's
        // queue, and the relay may start only once it is written.
        let reply = [UInt8](repeating: UInt8(ascii: "R"), count: 3 * 1024 * 1024)
        let machine = ScriptedMachine(script: script) { event, context in
            switch event {
            case .started:
                return [.read(.client), .connect(.server, to: .tcp(serverEndpoint, from: nil), timeout: .seconds(5))]
            case .streamConnected(.server):
                seen.serverLocal = try? context.endpoint(of: .server, local: true)
                seen.serverRemote = try? context.endpoint(of: .server, local: false)
                seen.clientLocal = try? context.endpoint(of: .client, local: true)
                seen.clientRemote = try? context.endpoint(of: .client, local: false)
                do throws(SystemError) {
                    _ = try context.endpoint(of: .scanner, local: true)
                } catch {
                    seen.scanner = error
                }
                // The server's first bytes wait in its stream's buffer.
                return [.pause(.server)]
            case .received(.client, let bytes):
                // The request and what came with it; what comes next waits in the buffer.
                #expect(Array(bytes) == Array("REQextra".utf8))
                return [.pause(.client), .setTimer(.milliseconds(300))]
            case .timerFired:
                return [
                    .send(.client, reply[...]),
                    .relayStreams(RelayConfiguration(transfer: transfer), toServer: Array("extra".utf8)),
                ]
            case .relayEnded(let summary):
                seen.summary = summary
                return [.close]
            default:
                return []
            }
        }
        let driver = SessionDriver(
            host: fixture.host, machine: machine, client: fixture.accepted, peer: fixture.peer, id: 21, names: nil)
        driver.start()
        #expect(run(fixture.loop) { script.events.contains(.streamConnected(.server)) })
        let (upstream, upstreamPeer) = try Socket.accept(server)
        defer { close(upstream) }
        #expect(seen.serverRemote == serverEndpoint)
        #expect(seen.serverLocal == upstreamPeer)
        #expect(seen.clientRemote == fixture.peer)
        #expect(seen.clientLocal == (try Socket.remoteEndpoint(fixture.client)))
        #expect(seen.scanner == SystemError(errno: ENOTCONN))

        #expect(send(fixture.client, "REQextra", 8, 0) == 8)
        #expect(run(fixture.loop) { script.events.contains { if case .received = $0 { true } else { false } } })
        // Sent while both streams are paused: read into their buffers, never delivered.
        #expect(send(fixture.client, "later", 5, 0) == 5)
        #expect(send(upstream, "early", 5, 0) == 5)

        var toClient: [UInt8] = []
        var toServer: [UInt8] = []
        // The reply drains as the client reads; then the relay takes over.
        #expect(
            run(fixture.loop) {
                receiveNow(fixture.client, into: &toClient)
                receiveNow(upstream, into: &toServer)
                return toClient.count >= reply.count + 5 && toServer.count >= 10
            })
        #expect(driver.relay != nil)
        #expect(toClient.count == reply.count + 5)
        #expect(toClient.prefix(reply.count).allSatisfy { $0 == UInt8(ascii: "R") }, "the queued reply first")
        #expect(text(Array(toClient.suffix(5))) == "early", "then the server's unread bytes")
        #expect(text(toServer) == "extralater", "toServer, then the client's unread bytes")
        // The machine got nothing of the bytes the relay moved.
        #expect(!script.events.contains(.received(.client, Array("later".utf8)[...])))
        #expect(!script.events.contains(.received(.server, Array("early".utf8)[...])))
        // While relaying, the addresses are still there.
        #expect((try driver.endpoint(of: Peer.server, local: true)) == upstreamPeer)
        #expect((try driver.endpoint(of: Peer.client, local: false)) == fixture.peer)

        // Half-close: the client is done, the server still answers.
        #expect(send(fixture.client, "more", 4, 0) == 4)
        shutdown(fixture.client, Int32(SHUT_WR))
        var serverEOF = false
        #expect(
            run(fixture.loop) {
                serverEOF = receiveNow(upstream, into: &toServer)
                return serverEOF
            })
        #expect(text(toServer) == "extralatermore")
        #expect(seen.summary == nil, "the relay goes on the other way")
        #expect(send(upstream, "bye", 3, 0) == 3)
        shutdown(upstream, Int32(SHUT_WR))
        var clientEOF = false
        #expect(
            run(fixture.loop) {
                clientEOF = receiveNow(fixture.client, into: &toClient)
                return clientEOF && fixture.host.ended == [21]
            })
        #expect(text(Array(toClient.suffix(8))) == "earlybye")
        let summary = try #require(seen.summary)
        #expect(summary.end == .completed)
        // The peers' own bytes count, the machine's reply does not.
        #expect(summary.bytesClientToServer == 14)
        #expect(summary.bytesServerToClient == 8)
        #expect(script.deepest == 1)
        #expect(driver.relay == nil)
    }

    @Test func relayStreamsWithoutAServerFailsAtOnceAndQueued() throws {
        let fixture = try Fixture()
        defer { withExtendedLifetime(fixture) {} }
        let script = Script()
        let machine = ScriptedMachine(script: script) { event, _ in
            switch event {
            case .started:
                return [.read(.client), .relayStreams(RelayConfiguration(), toServer: []), .log(.info, "after")]
            case .relayFailed: return [.close]
            default: return []
            }
        }
        let driver = SessionDriver(
            host: fixture.host, machine: machine, client: fixture.accepted, peer: fixture.peer, id: 2, names: nil)
        defer { withExtendedLifetime(driver) {} }
        driver.start()
        #expect(script.events == [.started, .relayFailed(SystemError(errno: ENOTCONN))])
        #expect(fixture.host.lines == ["after"], "the answer came after the batch")
        #expect(script.deepest == 1)
        #expect(fixture.host.ended == [2])
    }

    @Test func closeEndsARelayOfTheStreams() throws {
        let fixture = try Fixture()
        defer { withExtendedLifetime(fixture) {} }
        let (server, serverEndpoint) = try loopbackServer()
        defer { close(server) }
        let script = Script()
        let machine = ScriptedMachine(script: script) { event, _ in
            switch event {
            case .started:
                return [.connect(.server, to: .tcp(serverEndpoint, from: nil), timeout: .seconds(5))]
            case .streamConnected:
                return [.relayStreams(RelayConfiguration(), toServer: []), .setTimer(.milliseconds(50))]
            case .timerFired:
                return [.close]
            default:
                return []
            }
        }
        let driver = SessionDriver(
            host: fixture.host, machine: machine, client: fixture.accepted, peer: fixture.peer, id: 4, names: nil)
        driver.start()
        #expect(run(fixture.loop) { fixture.host.ended == [4] })
        let (upstream, _) = try Socket.accept(server)
        defer { close(upstream) }
        // Both ends see the relay's sockets closed.
        #expect(readAll(upstream).isEmpty)
        #expect(readAll(fixture.client).isEmpty)
        #expect(driver.relay == nil)
        #expect(!script.events.contains { if case .relayEnded = $0 { true } else { false } }, "nothing after close")
    }
}

/// sockd's BIND path: a listener for one connection that becomes the server's stream.
@Suite("The session driver listens for a peer")
struct SessionListenTests {
    @Test func aListenerTakesOneConnectionAsTheServersStreamThenCloses() throws {
        let fixture = try Fixture()
        defer { withExtendedLifetime(fixture) {} }
        let script = Script()
        var bound: Endpoint?
        var from: Endpoint?
        let machine = ScriptedMachine(script: script) { event, _ in
            switch event {
            case .started: return [.read(.client), .listen(.server, on: .loopbackV4)]
            case .listening(.server, let local):
                bound = local
                return []
            case .accepted(.server, let peer):
                from = peer
                return [.send(.server, Array("hello".utf8)[...])]
            case .received(.server, let bytes):
                return [.send(.client, bytes)]
            default: return []
            }
        }
        let driver = SessionDriver(
            host: fixture.host, machine: machine, client: fixture.accepted, peer: fixture.peer, id: 31, names: nil)
        driver.start()
        #expect(run(fixture.loop) { bound != nil })
        let listening = try #require(bound)
        #expect(listening.address == .loopbackV4 && listening.port != 0)
        let peer = try Socket.tcp(.v4)
        defer { close(peer) }
        try Socket.bind(peer, to: IPAddress("127.0.0.5")!, port: 0)
        #expect(listening.address.withSocketAddress(port: listening.port, scopeID: 0) { connect(peer, $0, $1) } == 0)
        #expect(run(fixture.loop) { from != nil })
        #expect(from == (try Socket.localEndpoint(peer)))
        var got: [UInt8] = []
        #expect(run(fixture.loop) { receiveNow(peer, into: &got) || got.count >= 5 })
        #expect(text(got) == "hello")
        #expect(send(peer, "data", 4, 0) == 4)
        var toClient: [UInt8] = []
        #expect(run(fixture.loop) { receiveNow(fixture.client, into: &toClient) || toClient.count >= 4 })
        #expect(text(toClient) == "data")
        // The listener is gone: a second connection is refused.
        let second = try Socket.tcp(.v4)
        defer { close(second) }
        #expect(listening.address.withSocketAddress(port: listening.port, scopeID: 0) { connect(second, $0, $1) } != 0)
    }
}

#if canImport(Glibc)
import Glibc
#endif
import Gateway
import GatewayKit
import Loop
import Relay
import TLS
import TLSTestSupport
import Testing

/// Bytes from a non-blocking plain socket, or nil when there are none yet.
private func take(_ fd: Int32) -> [UInt8]? {
    var chunk = [UInt8](repeating: 0, count: 4096)
    let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
    return n > 0 ? Array(chunk[..<n]) : nil
}

/// A TLS server context with the test certificate for localhost.
private func localhostServer() throws -> TLSServerContext {
    try TLSServerContext(
        TLSServerSettings(certificates: [
            TLSCertificateFiles(
                certificate: TestCertificates.path("server.pem"), key: TestCertificates.path("server.key"))
        ]))
}

@Suite("The driver's TLS on streams")
struct SessionTLSTests {
    static let bulk = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 % 251) }

    @Test("STLS: a reply in the clear, the handshake, the stream read through TLS, then relayed")
    func upgradeThenRelay() throws {
        let fixture = try Fixture()
        let server = try localhostServer()
        let backend = try Socket.tcp(.v4)
        defer { close(backend) }
        try Socket.bind(backend, to: .loopbackV4, port: 0)
        try Socket.listen(backend, backlog: 4)
        let backendEnd = try Socket.localEndpoint(backend)

        let script = Script()
        var upgraded = false
        let machine = ScriptedMachine(script: script) { event, _ in
            switch event {
            case .started: return [.read(.client)]
            case .received(.client, let bytes) where !upgraded:
                #expect(Array(bytes) == Array("STLS\r\n".utf8))
                upgraded = true
                return [
                    .send(.client, ArraySlice("+OK begin TLS\r\n".utf8)),
                    .startTLS(.client, .accept(server), timeout: .seconds(5)),
                ]
            case .tlsEstablished(.client, _): return [.read(.client)]
            case .received(.client, let bytes):
                // A reply of many TLS records in one send: the stream writes on past each one
                // (a record is a short write, not a full socket).
                return [
                    .send(.client, ArraySlice("ECHO ".utf8) + bytes + Self.bulk),
                    .connect(.server, to: .tcp(backendEnd, from: nil), timeout: .seconds(5)),
                ]
            case .streamConnected(.server):
                return [.relayStreams(RelayConfiguration(), toServer: Array("via relay\n".utf8))]
            case .relayEnded: return [.close]
            default: return []
            }
        }
        let driver = SessionDriver(
            host: fixture.host, machine: machine, client: fixture.accepted, peer: fixture.peer, id: 5, names: nil)
        driver.start()
        Socket.setNonBlocking(fixture.client, true)
        _ = "STLS\r\n".utf8.withContiguousStorageIfAvailable { send(fixture.client, $0.baseAddress, $0.count, 0) }
        var clear: [UInt8] = []
        #expect(
            run(fixture.loop) {
                clear += take(fixture.client) ?? []
                return clear.count >= 15
            })
        #expect(clear == Array("+OK begin TLS\r\n".utf8))

        // The client's handshake, step by step between the loop's turns.
        let tls = try TLSClientContext(TLSClientSettings(ca: TestCertificates.path("ca.pem")))
            .connection(on: fixture.client, host: "localhost")
        var step = TLSConnection.Step.wantWrite
        #expect(
            run(fixture.loop) {
                if step != .done { step = tls.handshake() }
                return step == .done && script.events.contains { if case .tlsEstablished = $0 { true } else { false } }
            })
        guard case .tlsEstablished(.client, let facts)? = script.events.last else {
            Issue.record("no tlsEstablished: \(script.events)")
            return
        }
        #expect(facts.version == "TLSv1.3" && facts.serverName == "localhost")

        func sendTLS(_ text: String) {
            _ = Array(text.utf8).withUnsafeBytes { tls.write(from: $0.baseAddress!, count: $0.count, more: false) }
        }
        func receiveTLS(_ count: Int) -> [UInt8] {
            var got: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 4096)
            _ = run(fixture.loop) {
                let n = chunk.withUnsafeMutableBytes { tls.read(into: $0.baseAddress!, count: $0.count) }
                if n > 0 { got += chunk[..<n] }
                return got.count >= count
            }
            return got
        }
        sendTLS("hello")
        let echoed = receiveTLS(10 + Self.bulk.count)
        let whole = echoed == Array("ECHO hello".utf8) + Self.bulk
        #expect(whole, "\(echoed.count) bytes of \(10 + Self.bulk.count)")

        // relayStreams: the TLS stream's transport goes to the relay with it.
        #expect(run(fixture.loop) { script.events.contains(.streamConnected(.server)) })
        let (upstream, _) = try Socket.accept(backend)
        defer { close(upstream) }
        Socket.setNonBlocking(upstream, true)
        var up: [UInt8] = []
        #expect(
            run(fixture.loop) {
                up += take(upstream) ?? []
                return up.count >= 10
            })
        #expect(up == Array("via relay\n".utf8))
        sendTLS("ping")
        #expect(
            run(fixture.loop) {
                up += take(upstream) ?? []
                return up.count >= 14
            })
        #expect(up.suffix(4) == Array("ping".utf8))
        _ = "pong".utf8.withContiguousStorageIfAvailable { Glibc.send(upstream, $0.baseAddress, $0.count, 0) }
        #expect(receiveTLS(4) == Array("pong".utf8))
    }

    @Test("a failed handshake is told, with the reason, and the stream is gone")
    func failure() throws {
        let fixture = try Fixture()
        let server = try localhostServer()
        let script = Script()
        let machine = ScriptedMachine(script: script) { event, _ in
            switch event {
            case .started: return [.read(.client)]
            case .received(.client, _): return [.startTLS(.client, .accept(server), timeout: .seconds(5))]
            case .tlsFailed: return [.close]
            default: return []
            }
        }
        let driver = SessionDriver(
            host: fixture.host, machine: machine, client: fixture.accepted, peer: fixture.peer, id: 6, names: nil)
        driver.start()
        _ = "STLS\r\n".utf8.withContiguousStorageIfAvailable { send(fixture.client, $0.baseAddress, $0.count, 0) }
        #expect(run(fixture.loop) { script.events.contains { if case .received = $0 { true } else { false } } })
        // Not TLS: a plain line where the ClientHello should be.
        _ = "GET / HTTP/1.0\r\n\r\n".utf8.withContiguousStorageIfAvailable {
            send(fixture.client, $0.baseAddress, $0.count, 0)
        }
        #expect(run(fixture.loop) { script.events.contains { if case .tlsFailed = $0 { true } else { false } } })
        guard case .tlsFailed(.client, let error)? = script.events.last else { return }
        #expect(!error.description.isEmpty)
    }
}

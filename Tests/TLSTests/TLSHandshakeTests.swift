#if canImport(Glibc)
import Glibc
#endif
import GatewayKit
import Loop
import Relay
import TLSTestSupport
import Testing

@testable import TLS

/// A connected pair of loopback TCP sockets, non-blocking.
func socketPair() throws -> (client: Int32, server: Int32) {
    let listener = try Socket.tcp(.v4)
    defer { close(listener) }
    try Socket.bind(listener, to: .loopbackV4, port: 0)
    try Socket.listen(listener, backlog: 4)
    let port = try Socket.localEndpoint(listener).port
    let client = try Socket.tcp(.v4)
    let r = IPAddress.loopbackV4.withSocketAddress(port: port) { sa, length in Glibc.connect(client, sa, length) }
    precondition(r == 0, "connect failed")
    let (server, _) = try Socket.accept(listener)
    Socket.setNonBlocking(client, true)
    Socket.setNonBlocking(server, true)
    return (client, server)
}

func serverContext(
    _ names: [String] = ["server"], clientCA: String? = nil, protocols: TLSProtocols = .default
) throws -> TLSServerContext {
    try TLSServerContext(
        TLSServerSettings(
            certificates: names.map {
                TLSCertificateFiles(
                    certificate: TestCertificates.path("\($0).pem"), key: TestCertificates.path("\($0).key"))
            }, clientCA: clientCA.map(TestCertificates.path), protocols: protocols))
}

func clientContext(
    ca: String? = "ca.pem", verify: Bool = true, name: String? = nil, certificate: String? = nil,
    protocols: TLSProtocols = .default
) throws -> TLSClientContext {
    try TLSClientContext(
        TLSClientSettings(
            ca: ca.map(TestCertificates.path), verify: verify, name: name,
            certificate: certificate.map {
                TLSCertificateFiles(
                    certificate: TestCertificates.path("\($0).pem"), key: TestCertificates.path("\($0).key"))
            }, protocols: protocols))
}

/// Both ends of a handshake on one loop; their results.
func shake(
    _ server: TLSServerContext, _ client: TLSClientContext, host: String = "localhost"
) throws -> (server: Result<TLSFacts, TLSError>?, client: Result<TLSFacts, TLSError>?) {
    let loop = try EventLoop()
    let (c, s) = try socketPair()
    defer {
        close(c)
        close(s)
    }
    var results: (server: Result<TLSFacts, TLSError>?, client: Result<TLSFacts, TLSError>?) = (nil, nil)
    let serving = TLSHandshake(loop: loop, connection: try server.connection(on: s)) { results.server = $0 }
    let connecting = TLSHandshake(loop: loop, connection: try client.connection(on: c, host: host)) {
        results.client = $0
        // A failed client closes, as a real one does: the server's handshake ends too.
        if case .failure = $0 { shutdown(c, Int32(SHUT_RDWR)) }
    }
    serving.start(timeout: .seconds(5))
    connecting.start(timeout: .seconds(5))
    let deadline = Deadline.after(.seconds(10))
    while (results.server == nil || results.client == nil) && !deadline.hasPassed {
        loop.runOnce(timeout: .milliseconds(20))
    }
    return results
}

extension Result where Failure == TLSError {
    var facts: Success? { if case .success(let facts) = self { facts } else { nil } }
    var error: String? { if case .failure(let error) = self { error.description } else { nil } }
}

@Suite("TLS handshakes on a loop")
struct TLSHandshakeTests {
    @Test("TLS 1.3 by default, the client's SNI seen by the server")
    func defaults() throws {
        let (server, client) = try shake(try serverContext(), try clientContext())
        let facts = try #require(server?.facts)
        #expect(facts.version == "TLSv1.3")
        #expect(facts.cipher.hasPrefix("TLS_"))
        #expect(facts.serverName == "localhost")
        #expect(facts.peerSubject == nil && !facts.resumed)
        #expect(client?.facts?.version == "TLSv1.3")
    }

    @Test("an address is checked against the certificate's addresses")
    func address() throws {
        let (server, client) = try shake(try serverContext(), try clientContext(), host: "127.0.0.1")
        #expect(client?.facts != nil, "\(String(describing: client?.error))")
        #expect(server?.facts?.serverName == nil, "no SNI for an address")
    }

    @Test("SNI chooses the certificate: exact names, wildcards, the first by default")
    func sni() throws {
        let context = try serverContext(["server", "other"])
        #expect(context.names == [["localhost"], ["other.test", "*.wild.test"]])
        #expect(try shake(context, try clientContext(), host: "other.test").client?.facts != nil)
        #expect(try shake(context, try clientContext(), host: "a.wild.test").client?.facts?.serverName == "a.wild.test")
        #expect(try shake(context, try clientContext(), host: "localhost").client?.facts != nil)
        let unknown = try shake(context, try clientContext(), host: "unknown.test")
        #expect(unknown.client?.error == "certificate verify failed: hostname mismatch")
        #expect(unknown.server?.facts == nil)
    }

    @Test("a server certificate from an untrusted CA, or for another name, is refused with the reason")
    func refusals() throws {
        let rogue = try shake(try serverContext(["stranger"]), try clientContext())
        #expect(rogue.client?.error == "certificate verify failed: unable to get local issuer certificate")
        let name = try shake(try serverContext(["other"]), try clientContext())
        #expect(name.client?.error == "certificate verify failed: hostname mismatch")
        let insecure = try shake(try serverContext(["stranger"]), try clientContext(verify: false))
        #expect(insecure.client?.facts != nil, "verification off: the handshake goes on")
        let named = try shake(try serverContext(["other"]), try clientContext(name: "other.test"))
        #expect(named.client?.facts?.serverName == "other.test", "the configured name is checked and sent")
    }

    @Test("mutual TLS: a client without a certificate is refused, one with a certificate is named")
    func clientCertificates() throws {
        let context = try serverContext(clientCA: "ca.pem")
        let anonymous = try shake(context, try clientContext())
        #expect(anonymous.server?.error?.contains("certificate") == true, "\(String(describing: anonymous.server))")
        let known = try shake(context, try clientContext(certificate: "client"))
        #expect(known.server?.facts?.peerSubject == "CN=client1,O=Bastion")
        let stranger = try shake(context, try clientContext(certificate: "stranger"))
        #expect(stranger.server?.facts == nil)
    }

    @Test("the versions allowed bound the handshake")
    func versions() throws {
        let tls12 = TLSProtocols(minimum: .tls1_2, maximum: .tls1_2)
        let tls13 = TLSProtocols(minimum: .tls1_3, maximum: .tls1_3)
        let old = try shake(try serverContext(protocols: tls12), try clientContext())
        #expect(old.server?.facts?.version == "TLSv1.2")
        #expect(old.server?.facts?.cipher.hasPrefix("ECDHE-ECDSA-") == true)
        let none = try shake(try serverContext(protocols: tls13), try clientContext(protocols: tls12))
        #expect(none.server?.facts == nil && none.client?.facts == nil)
    }

    @Test("a bad file names itself")
    func badFiles() throws {
        #expect(throws: TLSError.self) { try serverContext(["missing"]) }
        do {
            _ = try TLSServerContext(
                TLSServerSettings(certificates: [
                    TLSCertificateFiles(
                        certificate: TestCertificates.path("server.pem"), key: TestCertificates.path("other.key"))
                ]))
            Issue.record("a key of another certificate was taken")
        } catch {
            #expect(error.description.contains("other.key"), "\(error)")
        }
        #expect(throws: TLSError("cannot read the CA file /missing/ca.pem: file does not exist")) {
            try TLSClientContext(TLSClientSettings(ca: "/missing/ca.pem"))
        }
        #expect(throws: TLSError("cannot read the key /missing.key: file does not exist")) {
            try TLSServerContext(
                TLSServerSettings(certificates: [
                    TLSCertificateFiles(certificate: TestCertificates.path("server.pem"), key: "/missing.key")
                ]))
        }
        #expect(throws: TLSError("TLS needs a certificate and its key")) {
            try TLSServerContext(TLSServerSettings(certificates: []))
        }
    }

    @Test("a peer that says nothing times the handshake out")
    func timeout() throws {
        let loop = try EventLoop()
        let (c, s) = try socketPair()
        defer {
            close(c)
            close(s)
        }
        var result: Result<TLSFacts, TLSError>?
        let handshake = TLSHandshake(loop: loop, connection: try serverContext().connection(on: s)) { result = $0 }
        handshake.start(timeout: .milliseconds(100))
        let deadline = Deadline.after(.seconds(5))
        while result == nil && !deadline.hasPassed { loop.runOnce(timeout: .milliseconds(20)) }
        #expect(result?.error?.hasPrefix("the handshake took longer than") == true)
    }
}

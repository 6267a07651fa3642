#if canImport(Glibc)
import Glibc
#endif
import Testing
@testable import GatewayKit

@Suite("Ident replies")
struct IdentReplyTests {
    /// Replies and what ucspi-tcp's remoteinfo keeps of them (nil: it fails, no newline).
    @Test(
        arguments: [
            ("6191, 23 : USERID : UNIX : joe\r\n", "joe"),
            ("6191,23:USERID:UNIX:joe\n", "joe"),
            ("6191 , 23 : USERID : OTHER : joe\r\n", "joe"),
            ("6193, 23 : USERID : UNIX , US-ASCII : stjohns\r\n", "stjohns"),
            // Colons after the third are part of the user id.
            ("6191, 23 : USERID : UNIX : a:b:c\r\n", "a:b:c"),
            ("1,2:USERID:UNIX::x\n", ":x"),
            // Spaces, tabs and CRs vanish everywhere, even inside the user id.
            ("6191, 23 : USERID : UNIX :  joe smith \t\r\n", "joesmith"),
            ("6191, 23 : USERID : UNIX : j\ro\te\n", "joe"),
            // Errors have only two colons: nothing is kept.
            ("6195, 23 : ERROR : NO-USER\r\n", ""),
            ("6195, 23 : ERROR : HIDDEN-USER\r\n", ""),
            ("6195, 23 : ERROR : UNKNOWN-ERROR : detail\r\n", "detail"),
            ("\n", ""),
            (":::\n", ""),
            ("no colons at all\r\n", ""),
            // Anything after the newline is ignored.
            ("1,2:USERID:UNIX:joe\nmore:stuff\n", "joe"),
            // Missing newline: incomplete.
            ("6191, 23 : USERID : UNIX : joe", nil),
            ("", nil),
            ("6191, 23 : USERID : UNIX : joe\r", nil),
        ] as [(String, String?)])
    func interprets(reply: String, expected: String?) {
        #expect(IdentReplyReader.interpret(Array(reply.utf8)).map { String(decoding: $0, as: UTF8.self) } == expected)
    }

    @Test func keepsAtMost257Bytes() {
        let name = String(repeating: "u", count: 300)
        let kept = IdentReplyReader.interpret(Array("1,2:USERID:UNIX:\(name)".utf8))
        #expect(kept == Array(repeating: UInt8(ascii: "u"), count: 257))
        let exact = String(repeating: "v", count: 256)
        #expect(IdentReplyReader.interpret(Array("1,2:USERID:UNIX:\(exact)".utf8)) == nil)
        #expect(IdentReplyReader.interpret(Array("1,2:USERID:UNIX:\(exact)\n".utf8))?.count == 256)
        // Whitespace does not count towards the bound.
        let spaced = String(repeating: "w ", count: 256)
        #expect(IdentReplyReader.interpret(Array("1,2:USERID:UNIX:\(spaced)\n".utf8))?.count == 256)
    }

    @Test func keepsRawBytes() {
        let reply: [UInt8] = Array("1,2:USERID:UNIX:".utf8) + [0xff, 0x00, 0x80] + [10]
        #expect(IdentReplyReader.interpret(reply) == [0xff, 0x00, 0x80])
    }

    @Test func readerStaysFinished() {
        var reader = IdentReplyReader()
        for byte in Array("a:b:c:d\n".utf8) { _ = reader.consume(byte) }
        #expect(reader.isFinished)
        #expect(reader.consume(UInt8(ascii: "x")) == .finished)
        #expect(reader.collected == Array("d".utf8))
        #expect(reader.colons == 3)
    }

    @Test func request() {
        #expect(IdentReplyReader.request(remotePort: 6191, localPort: 23) == Array("6191 , 23\r\n".utf8))
        #expect(IdentReplyReader.request(remotePort: 0, localPort: 65535) == Array("0 , 65535\r\n".utf8))
    }
}

// MARK: - Loopback

/// A one-connection ident server on 127.0.0.1 (or ::1): accepts, reads the request line, writes
/// `reply`, then closes (or keeps the connection open, silent, until stopped).
final class TestIdentServer: @unchecked Sendable {
    let port: UInt16
    let log = PeerLog()
    private let listener: Int32
    private let stopSignal = StopSignal()
    private var thread: TestThread?

    init(reply: [UInt8], closeAfterReply: Bool = true, address: IPAddress = .loopbackV4) {
        let bound = TestSocket.bound(type: SOCK_STREAM, address: address)!
        (listener, port) = (bound.fd, bound.port)
        let (listener, stop, log) = (listener, stopSignal, log)
        thread = TestThread {
            guard TestSocket.readable(listener, milliseconds: 4000) else { return }
            let connection = accept(listener, nil, nil)
            guard connection >= 0 else { return }
            defer { close(connection) }
            var request: [UInt8] = []
            while request.last != UInt8(ascii: "\n") && request.count < 100 {
                guard let byte = TestSocket.readExactly(connection, 1) else { break }
                request += byte
            }
            log.requests.append(request)
            if !reply.isEmpty { TestSocket.write(connection, reply) }
            if !closeAfterReply { _ = TestSocket.readable(stop.readEnd, milliseconds: 4000) }
        }
    }

    @discardableResult
    func stop() -> [[UInt8]] {
        stopSignal.fire()
        thread?.join()
        thread = nil
        close(listener)
        stopSignal.close()
        return log.requests
    }
}

@Suite("Ident client over loopback")
struct IdentClientTests {
    func ask(_ server: TestIdentServer, timeout: Duration = .seconds(2)) throws(IdentError) -> String {
        try IdentClient.remoteInfo(
            remote: .loopbackV4, remotePort: 6191, local: .loopbackV4, localPort: 23,
            timeout: timeout, identPort: server.port
        )
    }

    @Test func userid() throws {
        let server = TestIdentServer(reply: Array("6191 , 23 : USERID : UNIX : joe\r\n".utf8))
        defer { server.stop() }
        #expect(try ask(server) == "joe")
        #expect(server.stop() == [Array("6191 , 23\r\n".utf8)])
    }

    @Test func errorReplyIsEmpty() throws {
        let server = TestIdentServer(reply: Array("6191 , 23 : ERROR : NO-USER\r\n".utf8))
        defer { server.stop() }
        #expect(try ask(server) == "")
    }

    @Test func replyInPiecesAndMapped() throws {
        // The reply arrives with the connection kept open; mapped addresses work as IPv4.
        let server = TestIdentServer(reply: Array("6191 , 23 : USERID : UNIX : a:b\nrest".utf8), closeAfterReply: false)
        defer { server.stop() }
        let answer = try IdentClient.remoteInfo(
            remote: IPAddress("::ffff:127.0.0.1")!, remotePort: 6191,
            local: IPAddress("::ffff:127.0.0.1")!, localPort: 23,
            timeout: .seconds(2), identPort: server.port
        )
        #expect(answer == "a:b")
    }

    @Test(.enabled(if: TestSocket.hasIPv6Loopback, "no IPv6 loopback"))
    func ipv6() throws {
        let server = TestIdentServer(reply: Array("6191 , 23 : USERID : UNIX : v6user\r\n".utf8), address: .loopbackV6)
        defer { server.stop() }
        let answer = try IdentClient.remoteInfo(
            remote: .loopbackV6, remotePort: 6191, local: .loopbackV6, localPort: 23,
            timeout: .seconds(2), identPort: server.port
        )
        #expect(answer == "v6user")
        #expect(server.stop() == [Array("6191 , 23\r\n".utf8)])
    }

    @Test func overlongReplyIsCut() throws {
        let server = TestIdentServer(
            reply: Array(("1,2:USERID:UNIX:" + String(repeating: "z", count: 600)).utf8), closeAfterReply: false
        )
        defer { server.stop() }
        #expect(try ask(server).utf8.count == 257)
    }

    @Test func endOfFileBeforeNewlineFails() throws {
        let server = TestIdentServer(reply: Array("6191 , 23 : USERID : UNIX : joe".utf8))
        defer { server.stop() }
        #expect(throws: IdentError.connectionClosed) { try ask(server) }
    }

    @Test func silentServerTimesOut() throws {
        let server = TestIdentServer(reply: [], closeAfterReply: false)
        defer { server.stop() }
        let start = Deadline.now
        #expect(throws: IdentError.timedOut) { try ask(server, timeout: .milliseconds(300)) }
        let elapsed = elapsedMilliseconds(since: start)
        #expect(elapsed >= 290 && elapsed < 2000, "took \(elapsed) ms")
    }

    @Test func refusedConnectionFails() throws {
        let port = TestSocket.unusedPort(type: SOCK_STREAM)
        #expect(throws: IdentError.system(SystemError(errno: ECONNREFUSED))) {
            try IdentClient.remoteInfo(
                remote: .loopbackV4, remotePort: 1, local: .loopbackV4, localPort: 2,
                timeout: .seconds(2), identPort: port
            )
        }
    }

    @Test func unbindableLocalAddressFails() throws {
        // 192.0.2.1 is not an address of this host: bind fails before any packet is sent.
        #expect(throws: IdentError.system(SystemError(errno: EADDRNOTAVAIL))) {
            try IdentClient.remoteInfo(
                remote: .loopbackV4, remotePort: 1, local: IPAddress(v4: 192, 0, 2, 1), localPort: 2,
                timeout: .seconds(1), identPort: 1
            )
        }
    }
}

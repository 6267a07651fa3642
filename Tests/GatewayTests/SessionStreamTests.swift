#if canImport(Glibc)
import Glibc
#endif
import Gateway
import GatewayKit
import Loop
import Testing

// The driver's byte streams (pop3.proxy's way: the session stays in the middle), on a real
// loop with real sockets and a real program, a scripted machine deciding.

/// A machine whose script runs on every event, with what arrived from each peer kept.
final class StreamScript: @unchecked Sendable {
    var received: [Peer: [UInt8]] = [:]
    var events: [String] = []
}

@Suite("The session driver's streams")
struct SessionStreamTests {
    @Test func aProgramsOutputAServerAndTheClientAsStreams() throws {
        let fixture = try Fixture()
        defer { withExtendedLifetime(fixture) {} }
        let server = try Socket.tcp(.v4)
        try Socket.bind(server, to: .loopbackV4, port: 0)
        try Socket.listen(server, backlog: 4)
        defer { close(server) }
        let serverPort = try Socket.localEndpoint(server).port
        let directory = "/tmp/bastion-stream-test-\(getpid())"
        mkdir(directory, 0o755)
        defer {
            unlink(directory + "/file")
            rmdir(directory)
        }

        let script = StreamScript()
        let machine = ScriptedMachine(script: Script()) { event, _ in
            switch event {
            case .started:
                let program = SessionProgram(
                    argv: ["sh", "-c", "printf 'from the program\\n'"], environment: [Array("PATH=/bin:/usr/bin".utf8)])
                return [.send(.client, Array("hello\r\n".utf8)[...]), .read(.client), .runCapturing(program)]
            case .received(let peer, let bytes):
                script.received[peer, default: []] += bytes
                switch peer {
                case .program: return [.send(.client, bytes)]
                case .client: return [.send(.server, bytes)]
                case .server: return [.send(.client, bytes)]
                case .scanner: return []
                }
            case .endOfFile(.program):
                script.events.append("program output ended")
                return [
                    .connect(
                        .server, to: .tcp(Endpoint(address: .loopbackV4, port: serverPort), from: nil),
                        timeout: .seconds(5)),
                    .replaceFile(path: directory + "/file", contents: Array("one line\n".utf8)),
                ]
            case .fileReplaced(_, let error):
                script.events.append("file \(error.map { "\($0)" } ?? "written")")
                return []
            case .streamConnected(let peer):
                script.events.append("\(peer) connected")
                return []
            case .endOfFile(.server):
                return [.send(.client, Array("bye\r\n".utf8)[...]), .close]
            default:
                return []
            }
        }
        let driver = SessionDriver(
            host: fixture.host, machine: machine, client: fixture.accepted, peer: fixture.peer, id: 8, names: nil)
        driver.start()
        #expect(run(fixture.loop) { script.events.contains("server connected") })
        let (upstream, _) = try Socket.accept(server)
        defer { close(upstream) }
        #expect(send(fixture.client, "up\n", 3, 0) == 3)
        #expect(run(fixture.loop) { script.received[.client] == Array("up\n".utf8) })
        #expect(send(upstream, "down\n", 5, 0) == 5)
        #expect(run(fixture.loop) { script.received[.server] == Array("down\n".utf8) })
        shutdown(upstream, Int32(SHUT_WR))
        #expect(run(fixture.loop) { fixture.host.ended == [8] })
        // Everything reached the client in order, the last line included (close lingers).
        #expect(String(decoding: readAll(fixture.client), as: UTF8.self) == "hello\r\nfrom the program\ndown\nbye\r\n")
        var upstreamGot = [UInt8](repeating: 0, count: 16)
        let n = upstreamGot.withUnsafeMutableBytes { recv(upstream, $0.baseAddress, $0.count, 0) }
        #expect(Array(upstreamGot.prefix(max(n, 0))) == Array("up\n".utf8))
        #expect(script.events.contains("file written"))
        #expect(String(decoding: try FD.readWholeFile(directory + "/file"), as: UTF8.self) == "one line\n")
    }

    @Test func aClientThatDoesNotReadStopsTheServersStream() throws {
        let fixture = try Fixture()
        defer { withExtendedLifetime(fixture) {} }
        let server = try Socket.tcp(.v4)
        try Socket.bind(server, to: .loopbackV4, port: 0)
        try Socket.listen(server, backlog: 4)
        defer { close(server) }
        let serverPort = try Socket.localEndpoint(server).port
        var small: Int32 = 4096
        setsockopt(fixture.client, SOL_SOCKET, SO_RCVBUF, &small, socklen_t(MemoryLayout<Int32>.size))

        let script = StreamScript()
        let machine = ScriptedMachine(script: Script()) { event, _ in
            switch event {
            case .started:
                return [
                    .connect(
                        .server, to: .tcp(Endpoint(address: .loopbackV4, port: serverPort), from: nil),
                        timeout: .seconds(5))
                ]
            case .received(.server, let bytes):
                script.received[.server, default: []] += bytes
                return [.send(.client, bytes)]
            default:
                return []
            }
        }
        let driver = SessionDriver(
            host: fixture.host, machine: machine, client: fixture.accepted, peer: fixture.peer, id: 9, names: nil)
        driver.start()
        #expect(
            run(fixture.loop) {
                (try? Deadline.after(.milliseconds(1)).wait(for: server, events: Int16(POLLIN))) == true
            })
        let (upstream, _) = try Socket.accept(server)
        defer { close(upstream) }
        Socket.setNonBlocking(upstream, true)
        // The server writes as fast as it can; the client reads nothing.
        let chunk = [UInt8](repeating: 65, count: 65536)
        var written = 0
        let deadline = Deadline.after(.seconds(1))
        while !deadline.hasPassed {
            let n = chunk.withUnsafeBytes { send(upstream, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if n > 0 { written += n }
            fixture.loop.runOnce(timeout: .milliseconds(5))
        }
        // What the session holds is bounded by the high-water mark and one read, not by what
        // the server offered: the rest waits in the kernel (the server's window closed).
        let held = (script.received[.server]?.count ?? 0)
        let limit =
            SessionDriver.streamConfiguration(for: .client).highWaterMark
            + SessionDriver.streamConfiguration(for: .server).readCapacity + 4 * 1024 * 1024
        #expect(held < limit, "held \(held) of \(written) written")
        #expect(written > held)
    }
}

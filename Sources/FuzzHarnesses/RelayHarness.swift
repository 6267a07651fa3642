#if canImport(Glibc)
import Glibc
#endif
import GatewayKit
import Loop
import Relay

/// The relay engine against whatever its two peers do, chosen by the input: how much each
/// sends and in which pieces, when each half-closes, resets or goes away, how small the
/// socket buffers are, copy or splice, a transport (the seam TLS will use) on either side
/// that reads in pieces of any size and may fail with a reset, and how many loop turns pass
/// between the peers' moves. Unix socket pairs stand in for the network; one event loop on
/// the fuzzer's thread runs the relay turn by turn.
///
/// Checked: the relay always ends (never stalls, never spins: bounded turns); each peer
/// receives a prefix of what the other sent, all of it when nobody reset or went away; the
/// summary counts exactly the bytes delivered; a relay nobody disturbed ends `.completed`.
enum RelayHarness {
    /// The input, shared by the transports and the peers.
    final class Script {
        var input: FuzzReader
        init(_ input: FuzzReader) { self.input = input }
    }

    /// A socket read in pieces the script chooses, which may fail with a reset.
    final class PiecewiseTransport: RelayTransport {
        let fd: Int32
        let script: Script
        var failed = false

        init(fd: Int32, script: Script) {
            self.fd = fd
            self.script = script
        }

        func read(into buffer: UnsafeMutableRawPointer, count: Int) -> Int {
            let choice = script.input.byte()
            if choice == 255 {
                failed = true
                errno = ECONNRESET
                return -1
            }
            let piece = choice < 128 ? count : Int(choice) - 127
            return recv(fd, buffer, min(count, piece), Int32(MSG_DONTWAIT))
        }

        func write(from buffer: UnsafeRawPointer, count: Int, more: Bool) -> Int {
            send(fd, buffer, count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT) | (more ? Int32(MSG_MORE) : 0))
        }

        func shutdownWrite() { shutdown(fd, Int32(SHUT_WR)) }
        func close() {}
    }

    final class Ending: RelayDelegate {
        var summary: RelaySummary?
        func relayDidEnd(_ relay: RelayConnection, summary: RelaySummary) { self.summary = summary }
    }

    /// One end the harness plays.
    struct Peer {
        let fd: Int32
        var outgoing: [UInt8]
        var sent = 0
        var received: [UInt8] = []
        var eof = false
        var shutDown = false
        /// Closed early (a reset or a peer gone): what is in flight may be lost.
        var gone = false
        let halfClose: Bool

        mutating func step(_ script: Script) {
            guard !gone else { return }
            var chunk = [UInt8](repeating: 0, count: 8192)
            while !eof {
                let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
                if n > 0 {
                    received += chunk[0..<n]
                } else {
                    if n == 0 || (errno != EAGAIN && errno != EINTR) { eof = true }
                    break
                }
            }
            let move = script.input.byte()
            if move == 254 {
                // Gone in the middle, both ways (the relay reads the end, its writes fail).
                shutdown(fd, Int32(SHUT_RDWR))
                gone = true
                return
            }
            if sent < outgoing.count {
                // 0 (all a spent input reads): everything left.
                let piece = move == 0 ? Int.max : Int(move) * 16
                let n = outgoing.withUnsafeBytes { b in
                    send(fd, b.baseAddress! + sent, min(b.count - sent, piece), Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
                }
                if n > 0 { sent += n }
            } else if halfClose && !shutDown {
                shutdown(fd, Int32(SHUT_WR))
                shutDown = true
            }
        }
    }

    static func pair(_ script: Script) -> (Int32, Int32) {
        var fds: [Int32] = [-1, -1]
        let made = socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds)
        precondition(made == 0, "socketpair: \(SystemError.current)")
        // Small buffers (down to the kernel's minimum) make writes short and the relay hold bytes.
        var size = Int32(script.input.below(4) == 0 ? 2048 : 65536)
        for fd in fds { setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size)) }
        return (fds[0], fds[1])
    }

    static func run(_ data: UnsafeRawBufferPointer) {
        let script = Script(FuzzReader(data))
        // A loop of its own per input: the unit tests run harnesses on several threads at once.
        let loop = try! EventLoop()
        defer { loop.close() }
        let upload = script.input.bytes(upTo: 255).count * 97 + script.input.below(64)
        let download = script.input.bytes(upTo: 255).count * 131 + script.input.below(64)
        let (clientPeer, relayClient) = pair(script)
        let (relayServer, serverPeer) = pair(script)
        var configuration = RelayConfiguration()
        configuration.transfer = [RelayTransfer.copy, .splice, .automatic][script.input.below(3)]
        configuration.bufferSize = [16, 1024, 16384][script.input.below(3)]
        let sides = script.input.below(4)
        let clientTransport = sides & 1 == 1 ? PiecewiseTransport(fd: relayClient, script: script) : nil
        let serverTransport = sides & 2 == 2 ? PiecewiseTransport(fd: relayServer, script: script) : nil
        let ending = Ending()
        let relay = RelayConnection(
            loop: loop, client: relayClient, server: relayServer, configuration: configuration, delegate: ending,
            transports: sides == 0 ? nil : RelayTransports(client: clientTransport, server: serverTransport))
        var client = Peer(
            fd: clientPeer, outgoing: pattern(upload, seed: 1), halfClose: script.input.below(8) != 0)
        var server = Peer(
            fd: serverPeer, outgoing: pattern(download, seed: 2), halfClose: script.input.below(8) != 0)
        relay.start()

        var turns = 0
        while ending.summary == nil {
            turns += 1
            if turns == 100_000 {
                let state: [Any] = [
                    client.sent, client.outgoing.count, client.received.count, client.eof, client.shutDown, client.gone,
                    server.sent, server.outgoing.count, server.received.count, server.eof, server.shutDown, server.gone,
                    relay.bytesClientToServer, relay.bytesServerToClient, relay.bufferedBytes,
                ]
                preconditionFailure("the relay neither ends nor lets its peers end (peers and relay: \(state))")
            }
            if script.input.isAtEnd {
                client.step(script)
                server.step(script)
            } else if script.input.bool() {
                client.step(script)
            } else {
                server.step(script)
            }
            loop.runOnce(timeout: .zero)
            // Once the input is spent, each peer still there finishes sending and half-closes,
            // or the relay would wait for it for ever (as it should: nothing says it is done).
            if script.input.isAtEnd {
                for i in 0..<2 {
                    var peer = i == 0 ? client : server
                    if !peer.gone && !peer.shutDown && peer.sent == peer.outgoing.count {
                        shutdown(peer.fd, Int32(SHUT_WR))
                        peer.shutDown = true
                    }
                    if i == 0 { client = peer } else { server = peer }
                }
            }
        }
        let summary = ending.summary!
        // The relay has closed its ends: drain what reached the peers.
        for _ in 0..<4 {
            client.step(Script(FuzzReader(UnsafeRawBufferPointer(start: nil, count: 0))))
            server.step(Script(FuzzReader(UnsafeRawBufferPointer(start: nil, count: 0))))
        }
        close(clientPeer)
        close(serverPeer)

        let disturbed =
            client.gone || server.gone || clientTransport?.failed == true || serverTransport?.failed == true
        precondition(client.outgoing.starts(with: server.received), "the server got other bytes than were sent")
        precondition(server.outgoing.starts(with: client.received), "the client got other bytes than were sent")
        if !server.gone {
            precondition(summary.bytesClientToServer == UInt64(server.received.count), "upload count")
        }
        if !client.gone {
            precondition(summary.bytesServerToClient == UInt64(client.received.count), "download count")
        }
        if !disturbed {
            precondition(summary.end == .completed, "an undisturbed relay ends completed: \(summary.end)")
            precondition(server.received == client.outgoing, "the whole upload")
            precondition(client.received == server.outgoing, "the whole download")
        }
    }

    /// `count` bytes that tell their position (a shifted or dropped byte shows).
    static func pattern(_ count: Int, seed: UInt8) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ Int(seed) &+ $0 >> 8) }
    }
}

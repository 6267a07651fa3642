#if canImport(Glibc)
import Glibc
#endif
import GatewayKit
@testable import Loop
import Testing

/// What a socket told its delegate, in order, and the largest buffer seen meanwhile.
private final class SocketLog: BufferedSocketDelegate {
    enum Event: Equatable {
        case line(String)
        case bytes([UInt8])
        case tooLong
        case endOfFile
        case drained
        case failed(SystemError)
    }

    var events: [Event] = []
    var largestBuffer = 0
    /// Called after a line is logged (the owner's reaction).
    var onLine: ((BufferedSocket, String) -> Void)?
    var onEndOfFile: ((BufferedSocket) -> Void)?

    func bufferedSocket(_ socket: BufferedSocket, receivedLine line: ArraySlice<UInt8>) {
        note(socket, line.count)
        events.append(.line(text(line)))
        onLine?(socket, text(line))
    }

    func bufferedSocket(_ socket: BufferedSocket, receivedBytes bytes: ArraySlice<UInt8>) {
        note(socket, bytes.count)
        events.append(.bytes(Array(bytes)))
    }

    func bufferedSocketLineTooLong(_ socket: BufferedSocket) { events.append(.tooLong) }

    func bufferedSocketDidReachEndOfFile(_ socket: BufferedSocket) {
        events.append(.endOfFile)
        onEndOfFile?(socket)
    }

    func bufferedSocketDidDrain(_ socket: BufferedSocket) { events.append(.drained) }

    func bufferedSocket(_ socket: BufferedSocket, failed error: SystemError) { events.append(.failed(error)) }

    /// What was handed over plus what is still buffered: the buffer's bound is checked here.
    private func note(_ socket: BufferedSocket, _ delivered: Int) {
        largestBuffer = max(largestBuffer, socket.bufferedBytes + delivered)
    }

    var lines: [String] {
        events.compactMap {
            if case .line(let line) = $0 { return line }
            return nil
        }
    }

    var bytes: [UInt8] {
        events.flatMap {
            if case .bytes(let bytes) = $0 { return bytes }
            return []
        }
    }

    func count(_ event: Event) -> Int { events.count(where: { $0 == event }) }
}

/// A loop, a `BufferedSocket` on one end of a loopback connection, and the other end, which
/// the test plays the peer with (blocking). Everything is closed when the fixture goes.
private final class Conversation {
    enum Transport {
        /// 127.0.0.1, with a fixed send buffer for the socket's end when given.
        case tcp(sendBuffer: Int32? = nil)
        /// A Unix stream pair with small send buffers, so that a peer that does not read
        /// makes writes wait soon.
        case unix(sendBuffer: Int32 = 4096)
    }

    let loop: EventLoop
    let log = SocketLog()
    let socket: BufferedSocket
    /// The socket's descriptor, as given to it.
    let owner: Int32
    /// The peer's end; -1 once the test has closed it.
    private(set) var peer: Int32
    /// What the peer has read so far, and whether it has seen end of file.
    private(set) var received: [UInt8] = []
    private(set) var peerSawEndOfFile = false

    init(
        _ transport: Transport = .tcp(), framing: BufferedSocket.Framing = .lines, start: Bool = true,
        configure: (inout BufferedSocket.Configuration) -> Void = { _ in }
    ) throws {
        switch transport {
        case .tcp(let sendBuffer):
            (owner, peer) = try Loopback.tcpPair()
            if var size = sendBuffer {
                setsockopt(owner, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
            }
        case .unix(let sendBuffer):
            (owner, peer) = Loopback.unixPair(sendBuffer: sendBuffer)
        }
        loop = try EventLoop()
        var configuration = BufferedSocket.Configuration()
        configure(&configuration)
        socket = BufferedSocket(
            loop: loop, descriptor: owner, framing: framing, configuration: configuration, delegate: log)
        if start { try socket.start() }
    }

    deinit {
        socket.close()
        if peer >= 0 { close(peer) }
        loop.close()
    }

    // MARK: The peer

    func send(_ bytes: [UInt8]) { PeerIO.send(peer, bytes) }
    func send(_ text: String) { PeerIO.send(peer, text) }
    func shutdownPeer() { shutdown(peer, Int32(SHUT_WR)) }

    func closePeer(reset: Bool = false) {
        if reset { PeerIO.reset(peer) } else { close(peer) }
        peer = -1
    }

    /// Reads what has arrived for the peer.
    func receive() {
        let (bytes, eof) = PeerIO.receive(peer)
        received += bytes
        peerSawEndOfFile = peerSawEndOfFile || eof
    }

    // MARK: The loop

    /// Turns the loop until `done` (or `seconds` pass), `between` after every turn.
    @discardableResult
    func run(seconds: Double = 3, between: () -> Void = {}, until done: () -> Bool) -> Bool {
        turn(loop, seconds: seconds, between: between, until: done)
    }

    /// Turns the loop until the socket has told end of file.
    func runToEndOfFile(seconds: Double = 3, between: () -> Void = {}) {
        run(seconds: seconds, between: between) { log.events.last == .endOfFile }
    }

    /// Sends `bytes` one per turn, then end of file, and turns until the socket has told it;
    /// `between` after every turn.
    func dribble(_ bytes: [UInt8], between: () -> Void = {}) {
        var next = 0
        runToEndOfFile {
            between()
            guard next < bytes.count else { return }
            send([bytes[next]])
            next += 1
            if next == bytes.count { shutdownPeer() }
        }
    }

    /// A few turns for whatever might still (wrongly) come.
    func settle() { turns(loop, 3) }
}

/// The complete lines of `bytes` (LF or CRLF), and how many bytes follow the last LF.
private func framed(_ bytes: ArraySlice<UInt8>) -> (lines: [String], rest: Int) {
    var lines: [String] = []
    var start = bytes.startIndex
    for i in bytes.indices where bytes[i] == UInt8(ascii: "\n") {
        var end = i
        if end > start && bytes[end - 1] == UInt8(ascii: "\r") { end -= 1 }
        lines.append(text(bytes[start..<end]))
        start = i + 1
    }
    return (lines, bytes.endIndex - start)
}

@Suite("Buffered socket on an event loop")
struct BufferedSocketTests {
    let conversation = bytes("USER joe\r\nPASS secret\nQUIT\r\n\r\n\nlast")
    let conversationLines = ["USER joe", "PASS secret", "QUIT", "", "", "last"]

    @Test("lines arrive a byte at a time: CRLF and LF, a last line ended by end of file")
    func byteByByte() throws {
        let c = try Conversation()
        c.dribble(conversation)
        #expect(c.log.lines == conversationLines)
        #expect(c.log.events.last == .endOfFile)
        #expect(c.socket.hasReachedEndOfFile)
        c.settle()
        #expect(c.log.count(.endOfFile) == 1)
    }

    @Test("the conversation split in two at every byte gives the same lines")
    func everySplit() throws {
        for split in 0...conversation.count {
            let c = try Conversation(.unix())
            let first = conversation[0..<split]
            c.send(Array(first))
            let expected = framed(first)
            let settled = c.run { c.log.lines == expected.lines && c.socket.bufferedBytes == expected.rest }
            #expect(settled, "split at \(split): \(c.log.lines), \(c.socket.bufferedBytes) buffered")
            c.send(Array(conversation[split...]))
            c.shutdownPeer()
            c.runToEndOfFile()
            #expect(c.log.lines == conversationLines, "split at \(split)")
            #expect(c.log.count(.endOfFile) == 1)
        }
    }

    @Test(
        "an over-long line is reported once and dropped; the buffer stays bounded",
        arguments: [false, true])
    func overlongLine(byteByByte: Bool) throws {
        let c = try Conversation {
            $0.readCapacity = 64
            $0.maximumLineLength = 16
        }
        let fifteen = String(repeating: "a", count: 15)  // with its LF: 16, the limit
        let fourteen = String(repeating: "b", count: 14)  // with CRLF: 16
        let sixteen = String(repeating: "c", count: 16)  // with its LF: 17, too long
        let input = bytes(
            "short\n" + String(repeating: "x", count: 100) + "\r\n" + fifteen + "\n" + fourteen + "\r\n" + sixteen
                + "\nafter\n")
        var largestBetweenTurns = 0
        let measure = { largestBetweenTurns = max(largestBetweenTurns, c.socket.bufferedBytes) }
        if byteByByte {
            c.dribble(input, between: measure)
        } else {
            c.send(input)
            c.shutdownPeer()
            c.runToEndOfFile(between: measure)
        }
        #expect(
            c.log.events == [
                .line("short"), .tooLong, .line(fifteen), .line(fourteen), .tooLong, .line("after"), .endOfFile,
            ])
        #expect(c.log.largestBuffer <= 64 && largestBetweenTurns <= 64)
        if byteByByte { #expect(largestBetweenTurns < 16) }
    }

    @Test("bytes framing hands over whatever arrived, never more than the buffer")
    func bytesFraming() throws {
        let c = try Conversation(framing: .bytes) { $0.readCapacity = 8 }
        c.send("abc")
        c.run { c.log.bytes.count == 3 }
        #expect(c.log.events == [.bytes(bytes("abc"))])
        let more = (0..<100).map { UInt8($0) }
        c.send(more)
        c.shutdownPeer()
        c.runToEndOfFile()
        #expect(c.log.bytes == bytes("abc") + more)
        #expect(c.log.largestBuffer <= 8)
    }

    @Test("a line can switch the framing: the bytes already buffered follow the new framing")
    func switchFraming() throws {
        let c = try Conversation()
        c.log.onLine = { socket, line in
            if line == "BINARY" { socket.framing = .bytes }
        }
        c.send(bytes("HELO\nBINARY\r\n") + [0, 1, 2, 10, 3])
        c.run { c.log.bytes.count == 5 }
        #expect(c.log.events == [.line("HELO"), .line("BINARY"), .bytes([0, 1, 2, 10, 3])])
        c.socket.framing = .lines
        c.send("text again\n")
        c.run { c.log.lines.count == 3 }
        #expect(c.log.lines.last == "text again")
    }

    @Test("nothing is told before start returns, even with bytes waiting")
    func nothingBeforeStart() throws {
        let c = try Conversation(start: false)
        c.send("+OK ready\r\n")
        c.shutdownPeer()
        try c.socket.start()
        #expect(c.log.events.isEmpty)
        c.runToEndOfFile()
        #expect(c.log.events == [.line("+OK ready"), .endOfFile])
    }

    @Test("back-pressure: paused, the buffer fills to its bound and the peer's writes stop being read")
    func backPressure() throws {
        let c = try Conversation(.unix()) { $0.readCapacity = 1024 }
        c.log.onLine = { socket, line in
            if line == "line 0010" { socket.pauseReading() }
        }
        let input = (1...3000).flatMap { bytes("line \(String(1_0000 + $0).dropFirst())\n") }
        var sent = 0
        var blockedTurns = 0
        let feed = {
            guard sent < input.count else { return }
            let n = PeerIO.sendSome(c.peer, input[sent...])
            sent += n
            if sent == input.count { c.shutdownPeer() }
            blockedTurns = n == 0 ? blockedTurns + 1 : 0
        }
        // Paused at line 10: the buffer fills, then the peer can send no more.
        let full = c.run(between: feed) { c.socket.bufferedBytes == 1024 && blockedTurns >= 3 }
        #expect(full)
        #expect(c.socket.isReadingPaused)
        #expect(c.log.lines.count == 10)
        let sentWhenFull = sent
        turns(c.loop, 20, between: feed)
        #expect(sent == sentWhenFull)
        #expect(c.socket.bufferedBytes == 1024)
        #expect(c.log.lines.count == 10)
        #expect(sent < input.count)

        c.socket.resumeReading()
        c.runToEndOfFile(seconds: 5, between: feed)
        #expect(c.log.lines == framed(input[...]).lines)
        #expect(c.log.largestBuffer <= 1024)
    }

    @Test("while paused, the end of file waits behind the buffered lines")
    func endOfFileWaits() throws {
        let c = try Conversation()
        c.socket.pauseReading()
        c.send("one\ntwo\n")
        c.shutdownPeer()
        c.run { c.socket.bufferedBytes == 8 }
        c.settle()
        #expect(c.log.events.isEmpty)
        c.socket.resumeReading()
        #expect(c.log.events.isEmpty)  // from the loop, not from inside resumeReading
        c.runToEndOfFile()
        #expect(c.log.events == [.line("one"), .line("two"), .endOfFile])
    }

    @Test("a turn reads at most its budget; the rest follows in later turns without a new edge")
    func budget() throws {
        let c = try Conversation(.unix(sendBuffer: 65536), framing: .bytes, start: false) { $0.readCapacity = 64 }
        let input = (0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        c.send(input)
        try c.socket.start()
        // One turn: the socket's event (a budget of reads), then the deferred call it asked
        // for (another budget; the one that one asks for waits for the next turn).
        c.loop.runOnce(timeout: .seconds(1))
        #expect(c.log.bytes.count > 0 && c.log.bytes.count <= 2 * BufferedSocket.budget * 64)
        #expect(c.log.bytes.count < input.count)
        c.run { c.log.bytes.count == input.count }
        #expect(c.log.bytes == input)
    }

    @Test("a peer that does not read: the queue passes the high-water mark; drained once it reads")
    func writeQueue() throws {
        let c = try Conversation(.unix()) { $0.highWaterMark = 16 * 1024 }
        let chunk = (0..<4096).map { UInt8(truncatingIfNeeded: $0) }
        var written: [UInt8] = []
        while !c.socket.isAboveHighWaterMark && written.count < 1 << 20 {
            c.socket.write(chunk)
            written += chunk
        }
        #expect(c.socket.isAboveHighWaterMark)
        #expect(c.socket.queuedBytes > 16 * 1024 && c.socket.queuedBytes <= 20 * 1024)
        turns(c.loop, 5)
        #expect(c.log.events.isEmpty)
        c.run(between: c.receive) { c.log.events == [.drained] }
        #expect(c.log.events == [.drained])
        #expect(c.socket.queuedBytes == 0 && !c.socket.isAboveHighWaterMark)
        c.receive()
        #expect(c.received == written)
    }

    @Test("a write the kernel takes whole is not followed by drained")
    func noDrainForDirectWrite() throws {
        let c = try Conversation()
        c.socket.write(bytes("+OK\r\n"))
        #expect(c.socket.queuedBytes == 0)
        c.run(between: c.receive) { c.received.count == 5 }
        c.settle()
        #expect(c.received == bytes("+OK\r\n"))
        #expect(c.log.events.isEmpty)
    }

    @Test("half-close by the owner: end of file after the whole queue; reading goes on")
    func ownerHalfClose() throws {
        // A fixed send buffer (no autotuning): the kernel cannot take the megabyte at once.
        let c = try Conversation(.tcp(sendBuffer: 32 * 1024))
        let big = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 >> 3) }
        c.socket.write(big)
        c.socket.shutdownWrite()
        #expect(c.socket.queuedBytes > 0)
        c.run(seconds: 5, between: c.receive) { c.peerSawEndOfFile }
        #expect(c.received == big)
        #expect(c.log.events == [.drained])
        // The other direction still works.
        c.send("still here\n")
        c.shutdownPeer()
        c.runToEndOfFile()
        #expect(c.log.events == [.drained, .line("still here"), .endOfFile])
    }

    @Test("half-close by the peer: end of file once; the owner answers and shuts down")
    func peerHalfClose() throws {
        let c = try Conversation()
        c.log.onEndOfFile = { socket in
            socket.write(bytes("+OK bye\r\n"))
            socket.shutdownWrite()
        }
        c.send("QUIT\r\n")
        c.shutdownPeer()
        c.run(between: c.receive) { c.peerSawEndOfFile }
        c.settle()
        #expect(c.log.events == [.line("QUIT"), .endOfFile])
        #expect(c.received == bytes("+OK bye\r\n"))
    }

    @Test("release in a line's callback gives back the descriptor and the bytes after the line")
    func releaseWithLeftover() throws {
        let c = try Conversation()
        var released: (descriptor: Int32, leftover: [UInt8], unsent: [UInt8])?
        c.log.onLine = { socket, _ in released = socket.release() }
        c.send("CONNECT host\r\nfirst bytes\nfor the server")
        c.run { released != nil }
        let taken = try #require(released)
        defer { close(taken.descriptor) }
        #expect(taken.descriptor == c.owner)
        #expect(Loopback.isOpen(c.owner))
        #expect(c.socket.descriptor == -1)
        #expect(taken.unsent.isEmpty)
        #expect(c.log.events == [.line("CONNECT host")])
        #expect(c.loop.statistics.handlers == 0)
        // The loop watches it no more; what it did not read is still in the kernel.
        c.send("!")
        c.settle()
        #expect(c.log.events == [.line("CONNECT host")])
        var rest: [UInt8] = []
        let end = Deadline.after(.seconds(2))
        while rest.last != UInt8(ascii: "!") && !end.hasPassed { rest += PeerIO.receive(c.owner).bytes }
        #expect(taken.leftover + rest == bytes("first bytes\nfor the server!"))
    }

    @Test("release returns what the queue still held, and what was buffered while paused")
    func releaseWithUnsent() throws {
        let c = try Conversation(.unix())
        c.socket.pauseReading()
        c.send("abc")
        c.run { c.socket.bufferedBytes == 3 }
        let reply = (0..<65536).map { UInt8(truncatingIfNeeded: $0 * 31) }
        c.socket.write(reply)
        #expect(c.socket.queuedBytes > 0)
        let taken = c.socket.release()
        defer { close(taken.descriptor) }
        #expect(taken.leftover == bytes("abc"))
        #expect(!taken.unsent.isEmpty)
        c.receive()
        #expect(c.received + taken.unsent == reply)
        #expect(c.log.events.isEmpty)
        #expect(c.loop.statistics.handlers == 0)
    }

    @Test("close in a callback: nothing more is told, the peer sees the end")
    func closeInCallback() throws {
        let c = try Conversation()
        c.log.onLine = { socket, _ in socket.close() }
        c.send("one\ntwo\nthree\n")
        c.run { !c.log.events.isEmpty }
        c.settle()
        #expect(c.log.events == [.line("one")])
        #expect(c.socket.descriptor == -1)
        #expect(c.loop.statistics.handlers == 0)
        // End of file, or a reset if the close found bytes unread in the kernel.
        var ended = false
        c.run(between: { ended = PeerIO.receive(c.peer).eof || errno == ECONNRESET }) { ended }
        #expect(ended)
    }

    @Test("a reset is reported once as failed, also while the paused buffer is full", arguments: [false, true])
    func reset(paused: Bool) throws {
        let c = try Conversation { $0.readCapacity = 16 }
        if paused {
            c.socket.pauseReading()
            c.send(String(repeating: "z", count: 64))
            c.run { c.socket.bufferedBytes == 16 }
        }
        c.closePeer(reset: true)
        c.run { !c.log.events.isEmpty }
        c.settle()
        #expect(c.log.events == [.failed(SystemError(errno: ECONNRESET))])
        c.socket.write(bytes("ignored"))
        c.settle()
        #expect(c.log.events.count == 1)
    }

    @Test("writing to a peer that has gone fails with the error, from the loop")
    func writeToClosedPeer() throws {
        let c = try Conversation(.unix())
        c.closePeer()
        c.runToEndOfFile()
        c.socket.write(bytes("anyone?"))
        #expect(c.log.events == [.endOfFile])
        c.run { c.log.events.count == 2 }
        #expect(c.log.events == [.endOfFile, .failed(SystemError(errno: EPIPE))])
    }
}

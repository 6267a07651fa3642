#if canImport(Glibc)
import Glibc
#endif
import GatewayKit

/// Told what a `BufferedSocket` observed, on the loop's thread. Calls come from the loop (an
/// event or a deferred call), never before `start` returns and never from inside a call the
/// owner makes to the socket: what a callback asks of the socket (write, pause, another
/// framing, release) takes effect when it returns, before the next callback.
public protocol BufferedSocketDelegate: AnyObject {
    /// A line arrived (framing `.lines`), without its LF or CRLF; a last line that the peer
    /// ended with end of file instead is delivered too. The slice's indices are those of the
    /// socket's buffer (start at `line.startIndex`); keeping it costs a copy of the buffer at
    /// the socket's next read, so take what is needed instead.
    func bufferedSocket(_ socket: BufferedSocket, receivedLine line: ArraySlice<UInt8>)
    /// Bytes arrived (framing `.bytes`): everything buffered, at most the read capacity. The
    /// same remark on indices and keeping as for lines.
    func bufferedSocket(_ socket: BufferedSocket, receivedBytes bytes: ArraySlice<UInt8>)
    /// A line was longer than `maximumLineLength`: it is dropped, up to and including its LF
    /// (as it arrives: the buffer never holds more than the limit of it), and the lines after
    /// it are delivered as usual. Told once per such line.
    func bufferedSocketLineTooLong(_ socket: BufferedSocket)
    /// The peer sent end of file, and everything before it has been delivered. Told once;
    /// writing goes on until `shutdownWrite` or `close`.
    func bufferedSocketDidReachEndOfFile(_ socket: BufferedSocket)
    /// The write queue has been written out: bytes that had to wait are all with the kernel
    /// (and after `shutdownWrite`, the end of file with them). Told only after a write that
    /// had to queue, not after one the kernel took whole.
    func bufferedSocketDidDrain(_ socket: BufferedSocket)
    /// Reading or writing failed (reset, broken pipe...): the socket has stopped, and tells
    /// nothing more. Close or release it.
    func bufferedSocket(_ socket: BufferedSocket, failed error: SystemError)
}

extension BufferedSocketDelegate {
    /// By default an over-long line is dropped silently.
    public func bufferedSocketLineTooLong(_ socket: BufferedSocket) {}
    /// By default a drained queue goes unremarked.
    public func bufferedSocketDidDrain(_ socket: BufferedSocket) {}
}

/// A connected non-blocking socket on an `EventLoop` for the conversations of line
/// protocols (POP3, a SOCKS greeting, clamd) before a session hands the socket to the relay
/// or closes it.
///
/// - Ownership: the socket owns the descriptor from `init` on and closes it on `close` (or
///   when released without being started); `release` gives it back, with the bytes read but
///   not delivered and the bytes queued but not written. While started, the loop keeps the
///   socket alive, and the socket its delegate, until `close` or `release`.
/// - Thread: everything on the loop's thread.
/// - Reading: edge-triggered, registered once for reading and writing. Reads go into one
///   buffer of `readCapacity` bytes (made at the first read, kept until the end); framing
///   `.lines` delivers each line (LF or CRLF; longer than `maximumLineLength` with its LF:
///   dropped and reported), `.bytes` whatever is buffered. Delivered bytes are consumed. A
///   socket is read until EAGAIN, at most `budget` reads per turn of the loop (then it goes
///   on after the loop's other events, as `Acceptor` does).
/// - Back-pressure: `pauseReading` stops the deliveries; the socket still reads until the
///   buffer is full, then stops reading, so the peer's TCP window closes instead of the
///   buffer growing. `resumeReading` delivers what waits and reads on.
/// - Writing: `write` sends at once what the kernel takes and queues the rest, which goes
///   out as the socket becomes writable; `bufferedSocketDidDrain` tells when the queue is
///   empty again. The queue is not bounded by the socket: a producer tests
///   `isAboveHighWaterMark` and waits for the drain.
/// - Half-close: `shutdownWrite` sends end of file once the queue is written; the peer's end
///   of file is told once, after the bytes before it.
/// - Transport: with a ``transport`` (TLS), bytes are read and written through it, every
///   event counts as both readable and writable (it may need the other direction), reads go
///   on until it says EAGAIN (it may hold bytes that raise no edge), `shutdownWrite` ends its
///   stream, and `close` frees it; `release` leaves it to the caller.
/// - Errors end the socket's work (`failed`); a pending error that no read or write met is
///   read with SO_ERROR when epoll reports one. Nothing raises SIGPIPE.
public final class BufferedSocket: EventHandler {
    /// Sizes and limits of a socket.
    public struct Configuration: Sendable {
        /// Bytes the read buffer holds: what arrives beyond it waits in the kernel.
        public var readCapacity = 4096
        /// The longest line with its LF (or CRLF) that `.lines` delivers; at most
        /// `readCapacity` (a larger value counts as `readCapacity`).
        public var maximumLineLength = 1024
        /// Queued bytes beyond which `isAboveHighWaterMark` tells the owner to stop producing.
        public var highWaterMark = 64 * 1024

        /// The defaults: 4 KiB read buffer, lines up to 1 KiB, 64 KiB write queue.
        public init() {}
    }

    /// How received bytes are handed to the delegate.
    public enum Framing: Sendable, Hashable {
        /// One `receivedLine` per line.
        case lines
        /// One `receivedBytes` with whatever is buffered.
        case bytes
    }

    private enum State: UInt8 {
        case created
        case open
        case failed
        case closed
    }

    /// Reads per turn of the loop before yielding to other handlers.
    static let budget = 16
    private static let interest: IOEvents = [.readable, .writable, .readHangup, .edgeTriggered]
    private static let lineFeed = UInt8(ascii: "\n")
    private static let carriageReturn = UInt8(ascii: "\r")

    private unowned let loop: EventLoop
    private var delegate: (any BufferedSocketDelegate)?
    private var registration = EventLoop.Registration.none
    private var state = State.created
    /// The socket; -1 once closed or released.
    public private(set) var descriptor: Int32
    private let readCapacity: Int
    /// The longest line with its LF that is delivered.
    public let maximumLineLength: Int
    /// Queued bytes beyond which the owner should stop producing.
    public let highWaterMark: Int

    /// How the next bytes are delivered. It can change at any time (in a callback: from the
    /// next delivery on), for a protocol that turns from lines to bytes or back; bytes already
    /// buffered are delivered the new way. Leaving `.lines` forgets an over-long line.
    public var framing: Framing {
        didSet {
            guard framing != oldValue else { return }
            dropping = false
            scanned = head
            scheduleService()
        }
    }

    // Reading: `input[head..<tail]` is buffered, `input[head..<scanned]` holds no LF.
    private var input: [UInt8] = []
    private var head = 0
    private var tail = 0
    private var scanned = 0
    /// The rest of an over-long line is dropped as it arrives, up to its LF.
    private var dropping = false
    private var readable = false
    private var readHangup = false
    private var endOfFile = false
    private var endOfFileTold = false
    private var paused = false

    // Writing: `output[written...]` waits for the kernel.
    private var output: [UInt8] = []
    private var written = 0
    private var writable = true
    /// Bytes had to be queued: tell the delegate when the queue is empty again.
    private var drainDue = false
    private var shutdownRequested = false
    private var shutDown = false

    /// What the bytes go through instead of the socket's system calls; set before `start`.
    public var transport: (any StreamTransport)?

    /// The errno that stops the socket, reported by the next service.
    private var pendingError: Int32 = 0
    private var servicing = false
    private var deferPending = false

    /// A socket for `descriptor` (a connected TCP or Unix stream socket; made non-blocking
    /// here) on `loop`, delivering to `delegate`. Nothing happens before `start`.
    public init(
        loop: EventLoop, descriptor: Int32, framing: Framing = .lines,
        configuration: Configuration = Configuration(), delegate: any BufferedSocketDelegate
    ) {
        self.loop = loop
        self.descriptor = descriptor
        self.framing = framing
        self.delegate = delegate
        readCapacity = max(configuration.readCapacity, 1)
        maximumLineLength = min(max(configuration.maximumLineLength, 1), readCapacity)
        highWaterMark = max(configuration.highWaterMark, 0)
        let flags = fcntl(descriptor, F_GETFL)
        if flags >= 0 && flags & O_NONBLOCK == 0 { _ = fcntl(descriptor, F_SETFL, flags | O_NONBLOCK) }
    }

    deinit {
        // Only when never started, or the loop was dropped without close().
        if descriptor >= 0 { Glibc.close(descriptor) }
    }

    /// Registers the socket with the loop; what arrives is delivered from the loop's next
    /// turn on. If the registration fails the socket stays as it was (close it).
    public func start() throws(SystemError) {
        guard state == .created else { return }
        let registration = loop.register(self)
        do {
            try loop.add(descriptor, interest: BufferedSocket.interest, for: registration)
        } catch {
            loop.unregister(registration)
            throw error
        }
        self.registration = registration
        state = .open
        // Epoll reports the socket's present readiness as a first edge. A write before
        // `start` that failed or queued is seen to by the service.
        if pendingError != 0 || drainDue { scheduleService() }
    }

    // MARK: - Public view

    /// Bytes read and not yet delivered.
    public var bufferedBytes: Int { tail - head }
    /// Bytes queued and not yet taken by the kernel.
    public var queuedBytes: Int { output.count - written }
    /// True while more than `highWaterMark` bytes are queued: stop producing until drained.
    public var isAboveHighWaterMark: Bool { queuedBytes > highWaterMark }
    /// True between `pauseReading` and `resumeReading`.
    public var isReadingPaused: Bool { paused }
    /// True once the peer's end of file has been told.
    public var hasReachedEndOfFile: Bool { endOfFileTold }

    // MARK: - Reading

    /// Stops the deliveries (lines, bytes, end of file); the buffer still fills, then the
    /// socket is no longer read.
    public func pauseReading() { paused = true }

    /// Delivers what is buffered and reads on (from the loop: after the present callback, or
    /// in a deferred call).
    public func resumeReading() {
        guard paused else { return }
        paused = false
        scheduleService()
    }

    // MARK: - Writing

    /// Sends `bytes`: what the kernel takes now, the rest when the socket becomes writable.
    /// After a failure or `close` nothing is sent; writing after `shutdownWrite` is a mistake
    /// (the bytes are dropped).
    public func write(_ bytes: some Collection<UInt8>) {
        let done: Void? = bytes.withContiguousStorageIfAvailable { send(UnsafeRawBufferPointer($0)) }
        if done == nil { Array(bytes).withUnsafeBytes { send($0) } }
    }

    /// Sends end of file once everything queued is written (at once when nothing is).
    public func shutdownWrite() {
        guard !shutdownRequested, state == .created || state == .open else { return }
        shutdownRequested = true
        if queuedBytes == 0 { shutdownNow() }
    }

    private func send(_ bytes: UnsafeRawBufferPointer) {
        guard state == .created || state == .open, pendingError == 0, bytes.count > 0 else { return }
        guard !shutdownRequested else {
            assertionFailure("BufferedSocket.write after shutdownWrite")
            return
        }
        var offset = 0
        if queuedBytes == 0 && writable {
            while offset < bytes.count {
                let n = out(bytes.baseAddress! + offset, bytes.count - offset)
                if n > 0 {
                    offset += n
                    // A short send: the socket's buffer is full (a transport's: one record).
                    if offset < bytes.count && transport == nil {
                        writable = false
                        break
                    }
                    continue
                }
                let e = n == 0 ? EIO : errno
                if e == EINTR { continue }
                if Sys.wouldBlock(e) {
                    writable = false
                    break
                }
                return stop(e)
            }
        }
        guard offset < bytes.count else { return }
        if written > 0 && written * 2 >= output.count {
            output.removeFirst(written)
            written = 0
        }
        output.append(contentsOf: bytes[offset...])
        drainDue = true
        if writable { scheduleService() }
    }

    /// Writes what the queue holds while the kernel takes it.
    private func flush() {
        while writable && written < output.count {
            let n = output.withUnsafeBytes { p in out(p.baseAddress! + written, p.count - written) }
            if n > 0 {
                written += n
                // A short send means a full kernel buffer; a transport's short write may be one
                // TLS record of many (16 KiB each): write on until it says EAGAIN.
                if written < output.count && transport == nil { writable = false }
                continue
            }
            let e = n == 0 ? EIO : errno
            if e == EINTR { continue }
            if Sys.wouldBlock(e) {
                writable = false
            } else {
                pendingError = e
            }
            return
        }
        if written > 0 && written == output.count {
            // A queue that grew past the high-water mark gives its memory back.
            output.removeAll(keepingCapacity: output.capacity <= highWaterMark)
            written = 0
        }
    }

    /// send(2), or the transport's write.
    @inline(__always)
    private func out(_ bytes: UnsafeRawPointer, _ count: Int) -> Int {
        if let transport { return transport.write(from: bytes, count: count, more: false) }
        return Sys.send(descriptor, bytes, count)
    }

    private func shutdownNow() {
        guard !shutDown else { return }
        shutDown = true
        if let transport { return transport.shutdownWrite() }
        if shutdown(descriptor, Int32(SHUT_WR)) != 0 && errno != ENOTCONN { stop(errno) }
    }

    // MARK: - Ending

    /// Closes the socket: queued bytes are dropped, the delegate is told nothing more.
    public func close() {
        guard state != .closed else { return }
        if state != .created { loop.unregister(registration) }
        state = .closed
        transport?.close()
        transport = nil
        Glibc.close(descriptor)  // also takes it out of epoll (nobody else holds it)
        forget()
    }

    /// Gives the descriptor back, out of the loop's epoll set and still non-blocking, for the
    /// relay or a program: `leftover` is what was read and not delivered (the client's first
    /// bytes for the server), `unsent` what was queued and not written (a reply the relay
    /// must send first). The delegate is told nothing more. Not after `close`.
    public func release() -> (descriptor: Int32, leftover: [UInt8], unsent: [UInt8]) {
        precondition(state != .closed, "BufferedSocket.release after close or release")
        let fd = descriptor
        let leftover = Array(input[head..<tail])
        let unsent = Array(output[written...])
        if state != .created {
            loop.remove(fd)
            loop.unregister(registration)
        }
        state = .closed
        forget()
        return (fd, leftover, unsent)
    }

    private func forget() {
        descriptor = -1
        delegate = nil
        input = []
        output = []
        (head, tail, scanned, written) = (0, 0, 0, 0)
    }

    /// Stops the socket's work with `e`: the delegate is told from the loop.
    private func stop(_ e: Int32) {
        if pendingError == 0 { pendingError = e }
        scheduleService()
    }

    // MARK: - Events

    /// Readiness of the socket: deliver, read and write what can be.
    public func handle(events: IOEvents, tag: UInt8) {
        guard state == .open else { return }
        if !events.isDisjoint(with: [.readable, .readHangup, .hangup, .error]) { readable = true }
        if !events.isDisjoint(with: [.readHangup, .hangup]) { readHangup = true }
        if !events.isDisjoint(with: [.writable, .hangup, .error]) { writable = true }
        if transport != nil {
            // It may need the other direction to progress (TLS reads while writing): try both.
            readable = true
            writable = true
        }
        service()
        // A pending error (a reset) that no read or write met, as while the buffer is full.
        if state == .open && events.contains(.error) {
            let e = Sys.socketError(descriptor)
            if e != 0 {
                pendingError = e
                service()
            }
        }
    }

    /// The next turn after a full budget, or after a call of the owner: go on.
    public func handleDeferred() {
        deferPending = false
        service()
    }

    /// The loop closes: close quietly.
    public func handleLoopClose() { close() }

    /// Has `service` run soon: at once if it is running (it looks again before it returns),
    /// else after the loop's present batch.
    private func scheduleService() {
        guard state == .open, !servicing, !deferPending else { return }
        deferPending = true
        loop.deferCall(registration)
    }

    /// Writes, reports and delivers until nothing can move, reading at most `budget` times.
    private func service() {
        guard state == .open, !servicing else { return }
        servicing = true
        defer { servicing = false }
        var reads = 0
        while state == .open {
            if pendingError == 0 { flush() }
            if pendingError != 0 {
                state = .failed
                delegate?.bufferedSocket(self, failed: SystemError(errno: pendingError))
                return
            }
            if drainDue && queuedBytes == 0 {
                drainDue = false
                if shutdownRequested {
                    shutdownNow()
                    if pendingError != 0 { continue }
                }
                delegate?.bufferedSocketDidDrain(self)
                continue
            }
            if !paused {
                if deliver() { continue }
                if endOfFile && head == tail && !endOfFileTold {
                    endOfFileTold = true
                    delegate?.bufferedSocketDidReachEndOfFile(self)
                    continue
                }
            }
            guard readable && !endOfFile && !(head == 0 && tail == readCapacity) else { return }
            reads += 1
            if reads > BufferedSocket.budget {
                // Budget spent with bytes possibly still waiting: go on after this batch.
                if !deferPending {
                    deferPending = true
                    loop.deferCall(registration)
                }
                return
            }
            read()
        }
    }

    /// Reads once into the buffer's free end (moving what is buffered to the front first).
    private func read() {
        if head == tail {
            (head, tail, scanned) = (0, 0, 0)
        } else if tail == readCapacity {
            let (from, count) = (head, tail - head)
            input.withUnsafeMutableBytes { p in _ = memmove(p.baseAddress!, p.baseAddress! + from, count) }
            (head, tail, scanned) = (0, count, scanned - from)
        }
        if input.isEmpty { input = [UInt8](repeating: 0, count: readCapacity) }
        let room = readCapacity - tail
        let n = input.withUnsafeMutableBytes { p in
            transport?.read(into: p.baseAddress! + tail, count: room)
                ?? Sys.recv(descriptor, p.baseAddress! + tail, room)
        }
        if n > 0 {
            tail += n
            // A short read emptied the socket: new bytes raise a new edge. (After the peer's
            // FIN, read on: only the next read tells whether it was all. A transport hands out
            // a record at a time: only its EAGAIN says it holds nothing.)
            if n < room && !readHangup && transport == nil { readable = false }
        } else if n == 0 {
            endOfFile = true
            readable = false
        } else if errno != EINTR {
            if Sys.wouldBlock(errno) { readable = false } else { pendingError = errno }
        }
    }

    /// Hands the delegate the next line (or the buffered bytes); false when nothing is due.
    private func deliver() -> Bool {
        guard head < tail else { return false }
        if framing == .bytes {
            let bytes = input[head..<tail]
            (head, scanned) = (tail, tail)
            delegate?.bufferedSocket(self, receivedBytes: bytes)
            return true
        }
        let lineFeed = input.withUnsafeBytes { p -> Int? in
            guard let found = memchr(p.baseAddress! + scanned, Int32(BufferedSocket.lineFeed), tail - scanned) else {
                return nil
            }
            return UnsafeRawPointer(found) - UnsafeRawPointer(p.baseAddress!)
        }
        guard let lineFeed else {
            scanned = tail
            if dropping {
                head = tail
                return false
            }
            if tail - head >= maximumLineLength {
                // Even an LF next would make the line too long: drop it as it comes.
                (head, dropping) = (tail, true)
                delegate?.bufferedSocketLineTooLong(self)
                return true
            }
            guard endOfFile else { return false }
            let line = input[head..<tail]
            head = tail
            delegate?.bufferedSocket(self, receivedLine: line)
            return true
        }
        let lineStart = head
        (head, scanned) = (lineFeed + 1, lineFeed + 1)
        if dropping {
            dropping = false
            return true
        }
        if lineFeed + 1 - lineStart > maximumLineLength {
            delegate?.bufferedSocketLineTooLong(self)
            return true
        }
        let lineEnd =
            lineFeed > lineStart && input[lineFeed - 1] == BufferedSocket.carriageReturn ? lineFeed - 1 : lineFeed
        delegate?.bufferedSocket(self, receivedLine: input[lineStart..<lineEnd])
        return true
    }
}

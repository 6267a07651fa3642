#if canImport(Glibc)
import Glibc
#endif
import GatewayKit
import Loop

/// Relays bytes both ways between two connected non-blocking TCP sockets, on one
/// `EventLoop`, until both directions are finished; then closes both sockets and tells its
/// delegate what happened.
///
/// - Ownership: the relay owns both descriptors from `init` on and closes them when it ends
///   (or, if it never started, when it is released). While running, the loop keeps it alive.
/// - Back-pressure: a direction holds at most `bufferSize` bytes in user space (or one
///   pipe's worth in the kernel when splicing); while they wait for the writer, the relay
///   stops reading that side, so the sender's TCP window closes instead of memory growing.
/// - Half-close: when a side sends end of file, the relay delivers what is left, shuts down
///   the other socket for writing, tells its delegate, and keeps relaying the opposite direction.
/// - Errors (reset, broken pipe) end the relay with `.failed`; nothing raises SIGPIPE.
/// - Idle memory: sockets are registered once, edge-triggered, for both directions; buffers
///   and pipes come from the loop's pools only while bytes are in flight, so an idle relay
///   is this object (about 250 bytes) and its slot in the loop.
/// - Connecting: `connecting(...)` makes a relay whose server socket is still connecting. It
///   is registered once, for everything, and the relay writes to it optimistically: what the
///   client sent goes out as soon as the kernel takes it (on loopback, before the connect
///   event is even read). Bytes are never read from the server, nor end of file passed on to
///   it, before the connection is known to be established. A failed or timed-out connect ends
///   the relay with `.connectFailed`; success is told through `relayDidConnect` first.
public final class RelayConnection: EventHandler {
    private enum State: UInt8 {
        case created
        case running
        case finished
    }

    /// One socket and what is known about it. Edge-triggered epoll reports changes only, so
    /// these flags remember readiness until a call returns EAGAIN.
    private struct Side {
        var fd: Int32
        var readable = false
        var writable = false
        /// The peer has sent FIN: keep reading until read returns 0.
        var readHangup = false
        let role: RelaySide
    }

    /// One direction: bytes held (in a user-space buffer or a pipe, never both) and progress.
    private struct Flow {
        var buffer: UnsafeMutableRawPointer?
        var start: Int32 = 0
        var end: Int32 = 0
        var pipe: Pipe?
        var inPipe: Int32 = 0
        /// Bytes delivered to the destination.
        var bytes: UInt64 = 0
        /// The source sent end of file.
        var eof = false
        /// End of file was passed on (shutdown of the destination's sending side).
        var done = false
        /// A read filled the whole buffer: with `.automatic`, splice until a splice moves less
        /// than a buffer's worth.
        var bulk = false
        /// Bytes were sent with MSG_MORE (the source's FIN was known to follow them): the
        /// destination must be pushed, shut down or closed before the relay waits.
        var corked = false

        var held: Int { Int(end - start) + Int(inPipe) }
    }

    private enum Outcome {
        case waiting
        case moreWork
        case failed(RelaySide, Int32)
    }

    /// Read/write rounds per direction before yielding to other connections.
    private static let budget = 16
    private static let interest: IOEvents = [.readable, .writable, .readHangup, .edgeTriggered]

    /// Unowned without reference counting: a relay is used only on its loop's thread while the
    /// loop exists (the loop holds running relays; `deinit` does not touch the loop).
    private unowned(unsafe) let loop: EventLoop
    /// The pools and counters of the loop's relays.
    private unowned(unsafe) let shared: RelayResources
    private let delegate: (any RelayDelegate)?
    private let recorder: (any RelayRecorder)?
    /// Sides that are not plain sockets (nil for a plain relay: the fast path).
    private let transports: RelayTransports?
    private var registration = EventLoop.Registration.none
    private var client: Side
    private var server: Side
    private var upstream = Flow()
    private var downstream = Flow()
    private var startedAt: UInt64 = 0
    private var lastActivity: UInt64 = 0
    private let idleNanoseconds: UInt64
    private let bufferSize: Int32
    private let pipeSize: Int32
    private let transfer: RelayTransfer
    private let noDelay: Bool
    private let assumeNonBlocking: Bool
    /// The server socket is still in the loop's epoll set (from a Connector that kept it).
    public var serverRegistered = false
    /// The server socket's connect is in progress (a relay made by `connecting`).
    private var connecting = false
    /// The connect's deadline (loop clock), 0 for none.
    private var connectDeadline: UInt64 = 0
    /// Read nothing from the client while connecting (a recorder must learn of the connection
    /// before its first chunk).
    private var waitForConnection = false
    /// The connection was found established inside `pumpBoth`: tell the delegate after it.
    private var connectNoticePending = false
    /// Bytes the server gets before anything from the client (a PROXY protocol header), and how
    /// many of them went out. Not counted in `bytesClientToServer`.
    private var preamble: [UInt8] = []
    private var preambleSent = 0
    /// Bytes each direction delivers before anything it reads (``deliverFirst(toServer:toClient:)``),
    /// and how many of them went out. Counted as relayed.
    private var firstToServer: [UInt8] = []
    private var firstToServerSent = 0
    private var firstToClient: [UInt8] = []
    private var firstToClientSent = 0
    private var state = State.created
    private var deferPending = false
    /// Inside `service`, where the state lives in local copies: `cancel` waits for the end.
    private var pumping = false
    private var cancelRequested = false

    /// A relay between `client` and `server` (connected TCP sockets; made non-blocking here)
    /// on `loop`. It does nothing until `start`. Call on the loop's thread.
    public init(
        loop: EventLoop,
        client: Int32,
        server: Int32,
        configuration: RelayConfiguration = RelayConfiguration(),
        delegate: (any RelayDelegate)? = nil,
        recorder: (any RelayRecorder)? = nil,
        transports: RelayTransports? = nil
    ) {
        self.loop = loop
        self.transports = transports
        shared = loop.resource(RelayResources.self)
        self.delegate = delegate
        self.recorder = recorder
        self.client = Side(fd: client, role: .client)
        self.server = Side(fd: server, role: .server)
        idleNanoseconds = configuration.idleTimeout.nanosecondsClamped
        bufferSize = Int32(clamping: max(configuration.bufferSize, 1))
        pipeSize = Int32(clamping: max(configuration.pipeSize, 0))
        transfer = recorder == nil && transports == nil ? configuration.transfer : .copy
        noDelay = configuration.noDelay
        assumeNonBlocking = configuration.assumeNonBlocking
    }

    /// A relay between `client` and a new connection to `destination` (from `source` when
    /// given), whose connect is started here and finished by the relay once started:
    /// `relayDidConnect` when it is established, or the end `.connectFailed` (refused,
    /// unreachable, or `connectTimeout` passed; zero for no limit). `preamble` goes to the
    /// server before the client's bytes. The new socket gets TCP_NODELAY when
    /// `serverNoDelay`. Errors of this host, and a connect refused at once, are thrown (the
    /// client socket then stays the caller's). Call `start` next, on the loop's thread.
    public static func connecting(
        loop: EventLoop,
        client: Int32,
        to destination: Endpoint,
        from source: IPAddress? = nil,
        connectTimeout: Duration = .seconds(10),
        serverNoDelay: Bool = false,
        preamble: [UInt8] = [],
        configuration: RelayConfiguration = RelayConfiguration(),
        delegate: (any RelayDelegate)? = nil,
        recorder: (any RelayRecorder)? = nil,
        transports: RelayTransports? = nil
    ) throws(SystemError) -> RelayConnection {
        let (fd, error) = try Connector.openSocket(to: destination, from: source, noDelay: serverNoDelay)
        if error != 0 {
            Glibc.close(fd)
            throw SystemError(errno: error)
        }
        let relay = RelayConnection(
            loop: loop, client: client, server: fd, configuration: configuration, delegate: delegate,
            recorder: recorder, transports: transports)
        relay.connecting = true
        relay.waitForConnection = recorder != nil
        let nanoseconds = connectTimeout.nanosecondsClamped
        relay.connectDeadline = nanoseconds > 0 ? loop.nowNanoseconds &+ nanoseconds : 0
        relay.preamble = preamble
        return relay
    }

    deinit {
        // Only when the loop was dropped without close(), or the relay never started.
        guard state != .finished else { return }
        Glibc.close(client.fd)
        Glibc.close(server.fd)
        for flow in [upstream, downstream] {
            flow.buffer?.deallocate()
            flow.pipe?.close()
        }
    }

    // MARK: - Public view

    /// The client's descriptor (closed once the relay has ended).
    public var clientDescriptor: Int32 { client.fd }
    /// The server's descriptor (closed once the relay has ended).
    public var serverDescriptor: Int32 { server.fd }
    /// Bytes delivered from the client to the server so far.
    public var bytesClientToServer: UInt64 { upstream.bytes }
    /// False while the server socket of a relay made by `connecting` is still connecting.
    public var isConnected: Bool { !connecting }
    /// Bytes delivered from the server to the client so far.
    public var bytesServerToClient: UInt64 { downstream.bytes }
    /// Bytes read but not yet written, both directions, user space and pipes.
    public var bufferedBytes: Int { upstream.held + downstream.held }
    /// True between `start` and the end.
    public var isRunning: Bool { state == .running }

    /// Bytes that go out before anything the relay reads: `toServer` to the server (after a
    /// preamble), `toClient` to the client. They are the peers' own bytes that someone read
    /// before the relay took the sockets over (a session's leftovers: what a SOCKS client sent
    /// behind its request, what a server sent before the relay began), so they count in
    /// ``bytesClientToServer`` and ``bytesServerToClient``. Call before `start`.
    public func deliverFirst(toServer: [UInt8], toClient: [UInt8]) {
        precondition(state == .created, "RelayConnection.deliverFirst after start")
        firstToServer = toServer
        firstToServerSent = 0
        firstToClient = toClient
        firstToClientSent = 0
    }

    // MARK: - Life cycle

    /// Registers both sockets with the loop and starts relaying. If that fails the relay ends
    /// at once (the delegate is told before `start` returns).
    public func start() {
        guard state == .created else { return }
        state = .running
        registration = loop.register(self)
        startedAt = loop.nowNanoseconds
        lastActivity = startedAt
        shared.relays += 1
        shared.relaysStarted += 1
        prepare(client.fd)
        prepare(server.fd)
        do {
            try loop.add(client.fd, interest: RelayConnection.interest, for: registration, tag: 0)
        } catch {
            finish(.failed(.client, error))
            return
        }
        do {
            if serverRegistered {
                try loop.modify(server.fd, interest: RelayConnection.interest, for: registration, tag: 1)
            } else {
                try loop.add(server.fd, interest: RelayConnection.interest, for: registration, tag: 1)
            }
        } catch {
            connecting = false  // the loop's failure (ENOMEM, the epoll watch limit), not the connect's
            finish(.failed(.server, error))
            return
        }
        if connecting {
            if connectDeadline > 0 { loop.setTimer(registration, at: Deadline(nanoseconds: connectDeadline)) }
        } else if idleNanoseconds > 0 {
            loop.setTimer(registration, at: Deadline(nanoseconds: startedAt + idleNanoseconds))
        }
        // A client usually has sent its first bytes already: try at once (except when splicing,
        // where a pipe would be taken for nothing if it has not). The server's readiness, if
        // any, arrives with the first events. A connecting server is written to optimistically
        // (EAGAIN until the handshake is done), unless the relay waits for the connection.
        client.readable = transfer != .splice
        client.writable = true
        server.writable = !waitForConnection
        service()
    }

    private func prepare(_ fd: Int32) {
        if !assumeNonBlocking {
            let flags = fcntl(fd, F_GETFL)
            if flags & O_NONBLOCK == 0 { _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK) }
        }
        if noDelay { _ = Sys.setIntOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1) }
    }

    /// Ends the relay now (`.cancelled`), closing both sockets; bytes in flight are lost.
    /// Called from the recorder, it takes effect as soon as the current chunk is handled.
    public func cancel() {
        if pumping {
            cancelRequested = true
        } else {
            finish(.cancelled)
        }
    }

    // MARK: - Events

    /// Readiness of the client (tag 0) or server (tag 1) socket: move what can be moved.
    public func handle(events: IOEvents, tag: UInt8) {
        guard state == .running else { return }
        if tag == 1 && connecting {
            guard let e = Connector.outcome(of: events, fd: server.fd) else { return }
            if e != 0 { return finish(.connectFailed(SystemError(errno: e))) }
            established()
            guard state == .running else { return }  // the delegate may have cancelled
        }
        if tag == 0 {
            RelayConnection.note(events, &client)
        } else {
            RelayConnection.note(events, &server)
        }
        if let transports, transports.transport(tag == 0 ? .client : .server) != nil {
            // A transport may need either readiness to progress: try both.
            if tag == 0 {
                client.readable = true
                client.writable = true
            } else {
                server.readable = true
                server.writable = true
            }
        }
        service()
        // A pending error (a reset) that no read or write surfaced, for instance on a side
        // that has nothing more to send and nothing to receive yet. Data the peer sent before
        // resetting has been read by service() first.
        if state == .running && events.contains(.error) {
            let e = Sys.socketError(tag == 0 ? client.fd : server.fd)
            if e != 0 { finish(.failed(tag == 0 ? .client : .server, SystemError(errno: e))) }
        }
    }

    @inline(__always)
    private static func note(_ events: IOEvents, _ side: inout Side) {
        if !events.isDisjoint(with: [.readable, .readHangup, .hangup, .error]) { side.readable = true }
        if !events.isDisjoint(with: [.readHangup, .hangup]) { side.readHangup = true }
        if !events.isDisjoint(with: [.writable, .hangup, .error]) { side.writable = true }
    }

    /// The next turn after a full budget of work: go on moving.
    public func handleDeferred() {
        deferPending = false
        guard state == .running else { return }
        service()
    }

    /// The idle timer: end the relay if nothing moved for the idle timeout, else set it again.
    public func handleTimer() {
        guard state == .running else { return }
        if connecting {
            guard connectDeadline > 0 else { return }
            if loop.nowNanoseconds >= connectDeadline {
                finish(.connectFailed(SystemError(errno: ETIMEDOUT)))
            } else {
                loop.setTimer(registration, at: Deadline(nanoseconds: connectDeadline))
            }
            return
        }
        guard idleNanoseconds > 0 else { return }
        let due = lastActivity &+ idleNanoseconds
        if loop.nowNanoseconds >= due {
            finish(.idleTimeout)
        } else {
            loop.setTimer(registration, at: Deadline(nanoseconds: due))
        }
    }

    /// The loop closes: end as `.cancelled`.
    public func handleLoopClose() { finish(.cancelled) }

    // MARK: - Moving bytes

    /// Moves whatever can be moved both ways, then ends the relay if both are finished.
    private func service() {
        pumping = true
        let (end, moreWork) = pumpBoth()
        pumping = false
        if connectNoticePending {
            connectNoticePending = false
            delegate?.relayDidConnect(self)
        }
        if cancelRequested { return finish(.cancelled) }
        if let end { return finish(end) }
        if moreWork { scheduleMoreWork() }
    }

    /// The server's connect is done (seen in an event, or a write to it went through).
    private func established() {
        connecting = false
        lastActivity = loop.nowNanoseconds
        if idleNanoseconds > 0 {
            loop.setTimer(registration, at: Deadline(nanoseconds: lastActivity &+ idleNanoseconds))
        } else {
            loop.cancelTimer(registration)
        }
        if pumping {
            connectNoticePending = true
        } else {
            delegate?.relayDidConnect(self)
        }
    }

    /// Sends what is left of the preamble to the server: nil when all of it is out, else what
    /// the upstream pump returns for now.
    private func sendPreamble(_ server: inout Side) -> Outcome? {
        while true {
            guard server.writable else { return .waiting }
            let n = preamble.withUnsafeBytes { p in
                send(server, p.baseAddress! + preambleSent, p.count - preambleSent)
            }
            if n > 0 {
                if connecting { established() }
                preambleSent += n
                if preambleSent == preamble.count {
                    preamble = []
                    return nil
                }
                server.writable = false  // a short write: the socket's buffer is full
                return .waiting
            }
            let e = n == 0 ? EIO : errno
            if e == EINTR { continue }
            if Sys.wouldBlock(e) {
                server.writable = false
                return .waiting
            }
            return .failed(.server, e)
        }
    }

    /// Sends what is left of a direction's first bytes (``deliverFirst(toServer:toClient:)``):
    /// nil when all of it is out, else what the pump returns for now.
    private func sendFirst(
        _ direction: RelayDirection, _ flow: inout Flow, _ destination: inout Side
    ) -> Outcome? {
        while true {
            guard destination.writable else { return .waiting }
            let toServer = direction == .clientToServer
            let sent = toServer ? firstToServerSent : firstToClientSent
            let n =
                (toServer ? firstToServer : firstToClient).withUnsafeBytes { p in
                    send(destination, p.baseAddress! + sent, p.count - sent)
                }
            if n > 0 {
                if toServer && connecting { established() }
                flow.bytes &+= UInt64(n)
                lastActivity = loop.nowNanoseconds
                let total = toServer ? firstToServer.count : firstToClient.count
                if toServer { firstToServerSent += n } else { firstToClientSent += n }
                if sent + n == total {
                    if toServer { firstToServer = [] } else { firstToClient = [] }
                    return nil
                }
                destination.writable = false  // a short write: the socket's buffer is full
                return .waiting
            }
            let e = n == 0 ? EIO : errno
            if e == EINTR { continue }
            if Sys.wouldBlock(e) {
                destination.writable = false
                return .waiting
            }
            return .failed(destination.role, e)
        }
    }

    private func pumpBoth() -> (RelayEnd?, Bool) {
        var flow = upstream
        var source = client
        var destination = server
        let up = pump(&flow, &source, &destination, .clientToServer)
        upstream = flow
        client = source
        server = destination
        if case .failed(let side, let e) = up { return (.failed(side, SystemError(errno: e)), false) }
        if cancelRequested { return (nil, false) }

        flow = downstream
        source = server
        destination = client
        let down = pump(&flow, &source, &destination, .serverToClient)
        downstream = flow
        server = source
        client = destination
        if case .failed(let side, let e) = down { return (.failed(side, SystemError(errno: e)), false) }

        if upstream.done && downstream.done { return (.completed, false) }
        if case .moreWork = up { return (nil, true) }
        if case .moreWork = down { return (nil, true) }
        return (nil, false)
    }

    private func scheduleMoreWork() {
        guard !deferPending else { return }
        deferPending = true
        loop.deferCall(registration)
    }

    /// One direction: flush what is held, pass on end of file, read and write while both
    /// sides are ready. Works on copies of the state (the caller stores them back), so that
    /// the recorder may look at the relay while it runs.
    private func pump(
        _ flow: inout Flow, _ source: inout Side, _ destination: inout Side, _ direction: RelayDirection
    ) -> Outcome {
        if direction == .clientToServer && !preamble.isEmpty, let outcome = sendPreamble(&destination) {
            return outcome
        }
        if !(direction == .clientToServer ? firstToServer.isEmpty : firstToClient.isEmpty),
            let outcome = sendFirst(direction, &flow, &destination)
        {
            return outcome
        }
        var rounds = 0
        while true {
            // 1. Deliver what is held.
            if flow.inPipe > 0, let pipe = flow.pipe {
                guard destination.writable else { return .waiting }
                let n = Sys.splice(pipe.readFD, destination.fd, Int(flow.inPipe))
                if n > 0 {
                    flow.inPipe -= Int32(n)
                    delivered(n, &flow, held: true)
                    if flow.inPipe > 0 {
                        // A short write means the socket's buffer is full (and an edge follows).
                        destination.writable = false
                        return .waiting
                    }
                } else {
                    let e = n == 0 ? EIO : errno
                    if Sys.wouldBlock(e) {
                        destination.writable = false
                        return .waiting
                    }
                    if e == EINTR { continue }
                    return .failed(destination.role, e)
                }
            } else if flow.end > flow.start, let buffer = flow.buffer {
                guard destination.writable else { return .waiting }
                let n = send(destination, buffer + Int(flow.start), Int(flow.end - flow.start))
                if n > 0 {
                    flow.corked = false
                    flow.start += Int32(n)
                    delivered(n, &flow, held: true)
                    if flow.start < flow.end {
                        destination.writable = false
                        return .waiting
                    }
                    releaseBuffer(&flow)
                } else {
                    let e = n == 0 ? EIO : errno
                    if Sys.wouldBlock(e) {
                        destination.writable = false
                        return .waiting
                    }
                    if e == EINTR { continue }
                    return .failed(destination.role, e)
                }
            }

            // 2. Nothing is held: pass on end of file, or read more.
            if flow.eof {
                // A shutdown now would abort the connect: pass it on once connected.
                if direction == .clientToServer && connecting { return .waiting }
                if !flow.done {
                    // A connect seen in this same round is told first, as it happened first (and
                    // before the end of file passed on below may let the server close both ways).
                    if connectNoticePending {
                        connectNoticePending = false
                        delegate?.relayDidConnect(self)
                    }
                    flow.done = true
                    // Half-close the destination, unless the other direction is over too: then
                    // both sockets are closed right away, which sends the FIN anyway. A transport
                    // ends its stream either way (TLS's close_notify is no FIN).
                    let otherDone = direction == .clientToServer ? downstream.done : upstream.done
                    if let transport = transports?.transport(destination.role) {
                        transport.shutdownWrite()
                    } else if !otherDone {
                        _ = shutdown(destination.fd, Int32(SHUT_WR))
                    }
                    flow.corked = false  // the FIN (or the close) takes the held bytes along
                    releasePipe(&flow)
                    delegate?.relay(self, finished: direction, bytes: flow.bytes)
                }
                return .waiting
            }
            guard source.readable && destination.writable && !(connecting && direction == .serverToClient) else {
                if !source.readable { releasePipe(&flow) }
                return .waiting
            }
            rounds += 1
            if rounds > RelayConnection.budget { return .moreWork }

            // 3a. Splice: socket -> pipe, then (next round) pipe -> socket.
            if transfer == .splice || (transfer == .automatic && flow.bulk), takePipe(&flow), let pipe = flow.pipe {
                let n = Sys.splice(source.fd, pipe.writeFD, Int(pipe.capacity))
                if n > 0 {
                    flow.inPipe = Int32(n)
                    shared.bufferedBytes += n
                    lastActivity = loop.nowNanoseconds
                    // Small chunks again: `.automatic` copies the next one.
                    if n < Int(bufferSize) { flow.bulk = false }
                    // A short splice may mean an empty socket or a full pipe (its slots can
                    // fill before its bytes do): stay readable and find out after draining.
                    continue
                }
                if n == 0 {
                    flow.eof = true
                    continue
                }
                let e = errno
                if Sys.wouldBlock(e) {
                    // The pipe is empty, so it was the socket that had nothing.
                    source.readable = false
                    releasePipe(&flow)
                    return .waiting
                }
                if e == EINTR { continue }
                return .failed(source.role, e)
            }

            // 3b. Copy: read into the loop's scratch buffer and write on at once; only what
            // the writer does not take is kept, in a buffer from the loop's pool.
            let size = Int(bufferSize)
            let scratch = shared.buffers.scratch(size)
            let n = receive(source, scratch, size)
            if n > 0 {
                lastActivity = loop.nowNanoseconds
                if let recorder {
                    recorder.relay(self, read: UnsafeRawBufferPointer(start: scratch, count: n), direction: direction)
                    if cancelRequested { return .waiting }
                }
                if n == size {
                    flow.bulk = true
                } else if !source.readHangup && transports?.transport(source.role) == nil {
                    // A short read drained the socket; new data will raise a new edge. (After a
                    // hang-up, read on: the end may be a FIN, a reset with its error, or data
                    // behind an urgent mark, and only the next read tells which. A transport's
                    // short read proves nothing: it is read until it says EAGAIN.)
                    source.readable = false
                }
                // After the source's FIN (RDHUP) a short read most likely took the last bytes:
                // hold them back (MSG_MORE) so that the FIN passed on next leaves in the same
                // segment. Whatever comes instead, the destination is pushed before waiting.
                let more = source.readHangup && n < size
                flow.corked = more  // a send without MSG_MORE pushes what was held too
                var written = 0
                while true {
                    let m = send(destination, scratch + written, n - written, more: more)
                    if m > 0 {
                        written += m
                        delivered(m, &flow, held: false)
                        if written == n { break }
                        destination.writable = false
                    } else if m < 0 && errno == EINTR {
                        continue
                    } else if m < 0 && !Sys.wouldBlock(errno) {
                        return .failed(destination.role, errno)
                    } else {
                        destination.writable = false
                    }
                    keep(scratch + written, n - written, &flow)
                    return .waiting
                }
                continue
            }
            if n == 0 {
                flow.eof = true
                continue
            }
            let e = errno
            if Sys.wouldBlock(e) {
                source.readable = false
                uncork(&flow, destination)
                return .waiting
            }
            if e == EINTR { continue }
            return .failed(source.role, e)
        }
    }

    /// Pushes bytes held back by MSG_MORE when no FIN follows them after all.
    @inline(__always)
    private func uncork(_ flow: inout Flow, _ destination: Side) {
        guard flow.corked else { return }
        flow.corked = false
        if transports?.transport(destination.role) == nil { Sys.push(destination.fd) }
    }

    // MARK: - The transport seam

    /// recv(2) on a plain socket, the transport's read otherwise.
    @inline(__always)
    private func receive(_ side: Side, _ buffer: UnsafeMutableRawPointer, _ count: Int) -> Int {
        if let transports, let transport = transports.transport(side.role) {
            return transport.read(into: buffer, count: count)
        }
        return Sys.recv(side.fd, buffer, count)
    }

    /// send(2) on a plain socket, the transport's write otherwise.
    @inline(__always)
    private func send(_ side: Side, _ buffer: UnsafeRawPointer, _ count: Int, more: Bool = false) -> Int {
        if let transports, let transport = transports.transport(side.role) {
            return transport.write(from: buffer, count: count, more: more)
        }
        return Sys.send(side.fd, buffer, count, more: more)
    }

    /// Counts bytes written to the destination; `held` when they came from a buffer or pipe.
    @inline(__always)
    private func delivered(_ count: Int, _ flow: inout Flow, held: Bool) {
        if connecting { established() }  // only bytes to the server move while connecting
        flow.bytes &+= UInt64(count)
        lastActivity = loop.nowNanoseconds
        if held { shared.bufferedBytes -= count }
    }

    /// Copies what the writer did not take into a pooled buffer (empty scratch is reused).
    private func keep(_ bytes: UnsafeMutableRawPointer, _ count: Int, _ flow: inout Flow) {
        let buffer = shared.buffers.take(Int(bufferSize))
        buffer.copyMemory(from: bytes, byteCount: count)
        flow.buffer = buffer
        flow.start = 0
        flow.end = Int32(count)
        shared.bufferedBytes += count
    }

    private func releaseBuffer(_ flow: inout Flow) {
        guard let buffer = flow.buffer else { return }
        shared.bufferedBytes -= Int(flow.end - flow.start)
        shared.buffers.give(buffer, size: Int(bufferSize))
        flow.buffer = nil
        flow.start = 0
        flow.end = 0
    }

    private func takePipe(_ flow: inout Flow) -> Bool {
        if flow.pipe != nil { return true }
        flow.pipe = shared.pipes.take(capacity: pipeSize)
        return flow.pipe != nil
    }

    private func releasePipe(_ flow: inout Flow) {
        guard let pipe = flow.pipe else { return }
        shared.bufferedBytes -= Int(flow.inPipe)
        shared.pipes.give(pipe, empty: flow.inPipe == 0)
        flow.pipe = nil
        flow.inPipe = 0
    }

    // MARK: - End

    private func finish(_ end: RelayEnd) {
        guard state != .finished else { return }
        var end = end
        if connecting, case .failed(.server, let error) = end {
            // A write to a socket whose connect failed reports the connect's error.
            let e = Sys.socketError(server.fd)
            end = .connectFailed(e != 0 ? SystemError(errno: e) : error)
        }
        let wasRunning = state == .running
        state = .finished
        transports?.client?.close()
        transports?.server?.close()
        Glibc.close(client.fd)
        Glibc.close(server.fd)
        releaseBuffer(&upstream)
        releaseBuffer(&downstream)
        releasePipe(&upstream)
        releasePipe(&downstream)
        let ended = EventLoop.clock()
        if wasRunning {
            loop.unregister(registration)
            shared.relays -= 1
        } else {
            startedAt = ended
        }
        let summary = RelaySummary(
            bytesClientToServer: upstream.bytes,
            bytesServerToClient: downstream.bytes,
            started: Deadline(nanoseconds: startedAt),
            ended: Deadline(nanoseconds: ended),
            end: end
        )
        delegate?.relayDidEnd(self, summary: summary)
    }
}

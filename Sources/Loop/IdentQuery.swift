#if canImport(Glibc)
import Glibc
#endif
import GatewayKit

/// An RFC 1413 query driven by an `EventLoop`: the counterpart, for a daemon that must not
/// block, of GatewayKit's blocking `IdentClient.remoteInfoBytes` (ucspi-tcp's remoteinfo).
/// A socket bound to the local address of the client's connection connects to the client's
/// address on the ident port, sends `REMOTEPORT , LOCALPORT\r\n` and reads the reply byte by
/// byte through the pure `IdentReplyReader`, which decides what is kept.
///
/// - Outcome: what remoteinfo keeps of the reply (possibly empty, as for `ERROR : NO-USER`,
///   and at most 257 bytes); `.connectionClosed` when the server closes before the newline;
///   `.timedOut` when `timeout` passes first; `.system` for a refused connection and every
///   other failing call; `.replyTooLong` after 1000 bytes without a newline (RFC 1413 lets
///   a client give up there; remoteinfo would read on until its deadline, but the reader
///   skips the reply's first fields and its blanks without counting them, so only this bound
///   keeps a server from holding the query with an endless line).
/// - Resources: one socket, one registration (readiness and the loop's timer), no buffer
///   beyond the reader's; all released when the query ends or is cancelled.
/// - Timing: the completion is called once, on the loop's thread, never before `start`
///   returns (an error found at once waits for the loop's next deferred calls), and never
///   after `cancel`.
public final class IdentQuery: EventHandler {
    /// Called with the kept bytes of the reply, or why there is none.
    public typealias Completion = (Result<[UInt8], IdentError>) -> Void

    /// Bytes read before the newline after which the reply is given up (RFC 1413, section 6).
    public static let maximumReplyLength = 1000

    private unowned let loop: EventLoop
    private var completion: Completion?
    private var registration = EventLoop.Registration.none
    private var fd: Int32 = -1
    /// The end of the whole query, in the loop's monotonic nanoseconds.
    private let deadline: UInt64
    private let request: [UInt8]
    private var sent = 0
    private var connecting = true
    private var reader = IdentReplyReader()
    private var replyLength = 0
    /// What opening the socket or connect(2) reported at once, for the deferred call.
    private var immediateError: IdentError?

    /// Asks the ident server on `client`'s host (at `port`, 113 but for tests) who owns the
    /// connection between `client` and `local` (the connection's own address, as getsockname
    /// gives it: the query is sent from that address, any port). The whole query ends after
    /// `timeout` at the latest. Call on the loop's thread.
    @discardableResult
    public static func start(
        loop: EventLoop, client: Endpoint, local: Endpoint, timeout: Duration,
        port: UInt16 = IdentClient.defaultPort, completion: @escaping Completion
    ) -> IdentQuery {
        let query = IdentQuery(
            loop: loop, deadline: loop.nowNanoseconds &+ timeout.nanosecondsClamped,
            request: IdentReplyReader.request(remotePort: client.port, localPort: local.port),
            completion: completion)
        query.open(to: Endpoint(address: client.address, port: port, scopeID: client.scopeID), from: local)
        return query
    }

    private init(loop: EventLoop, deadline: UInt64, request: [UInt8], completion: @escaping Completion) {
        self.loop = loop
        self.deadline = deadline
        self.request = request
        self.completion = completion
        registration = loop.register(self)
    }

    /// Opens the socket and starts connecting; an error now is reported after `start` returns.
    private func open(to server: Endpoint, from local: Endpoint) {
        do {
            let (socket, error) = try Connector.openSocket(
                to: server, from: local.address, sourceScopeID: local.scopeID)
            fd = socket
            if error != 0 {
                immediateError = IdentQuery.failure(error)
            } else {
                try loop.add(fd, interest: [.readable, .writable, .readHangup, .edgeTriggered], for: registration)
            }
        } catch {
            immediateError = .system(error)
        }
        if immediateError != nil {
            loop.deferCall(registration)
        } else {
            loop.setTimer(registration, at: Deadline(nanoseconds: deadline))
        }
    }

    /// Gives up: closes the socket; the completion is not called.
    public func cancel() {
        guard completion != nil else { return }
        completion = nil
        closeSocket()
        loop.unregister(registration)
    }

    // MARK: - Events

    /// Reports the error found by `start`.
    public func handleDeferred() {
        if let immediateError { finish(.failure(immediateError)) }
    }

    /// The connect finished, the request can go out, or the reply arrived.
    public func handle(events: IOEvents, tag: UInt8) {
        guard completion != nil else { return }
        if connecting {
            guard let e = Connector.outcome(of: events, fd: fd) else { return }
            if e != 0 { return finish(.failure(IdentQuery.failure(e))) }
            connecting = false
        }
        if sent < request.count, let error = sendRequest() { return finish(.failure(error)) }
        guard !events.isDisjoint(with: [.readable, .readHangup, .hangup, .error]) else { return }
        if let outcome = readReply() { finish(outcome) }
    }

    /// The time is up (or, for a deadline beyond the timer wheel's reach, the wheel came round).
    public func handleTimer() {
        guard completion != nil else { return }
        if loop.nowNanoseconds >= deadline {
            finish(.failure(.timedOut))
        } else {
            loop.setTimer(registration, at: Deadline(nanoseconds: deadline))
        }
    }

    /// The loop closes: give up quietly.
    public func handleLoopClose() { cancel() }

    // MARK: - The exchange

    /// Sends what is left of the request: nil when it is out or the socket is full for now.
    private func sendRequest() -> IdentError? {
        while sent < request.count {
            let n = request.withUnsafeBytes { p in Sys.send(fd, p.baseAddress! + sent, p.count - sent) }
            if n > 0 {
                sent += n
                continue
            }
            let e = n == 0 ? EIO : errno
            if e == EINTR { continue }
            return Sys.wouldBlock(e) ? nil : IdentQuery.failure(e)
        }
        return nil
    }

    /// Reads until the socket is empty: the outcome once the reply is complete, or ends.
    private func readReply() -> Result<[UInt8], IdentError>? {
        withUnsafeTemporaryAllocation(byteCount: 256, alignment: 1) { chunk in
            while true {
                let n = Sys.recv(fd, chunk.baseAddress!, chunk.count)
                if n > 0 {
                    for byte in UnsafeRawBufferPointer(rebasing: chunk[0..<n]) {
                        if reader.consume(byte) == .finished { return .success(reader.collected) }
                        replyLength += 1
                        if replyLength >= IdentQuery.maximumReplyLength { return .failure(.replyTooLong) }
                    }
                    continue
                }
                if n == 0 { return .failure(.connectionClosed) }
                let e = errno
                if e == EINTR { continue }
                if Sys.wouldBlock(e) { return nil }
                return .failure(IdentQuery.failure(e))
            }
        }
    }

    /// A failed call's errno as the blocking client reports it (ETIMEDOUT is a time-out).
    private static func failure(_ e: Int32) -> IdentError {
        e == ETIMEDOUT ? .timedOut : .system(SystemError(errno: e))
    }

    private func closeSocket() {
        guard fd >= 0 else { return }
        Glibc.close(fd)  // also takes it out of epoll (nobody else holds it)
        fd = -1
    }

    private func finish(_ result: Result<[UInt8], IdentError>) {
        guard let completion else { return }
        self.completion = nil
        closeSocket()
        loop.unregister(registration)
        completion(result)
    }
}

#if canImport(Glibc)
import Glibc
#endif
import GatewayKit

/// A DNS query over UDP driven by an `EventLoop`, for a daemon that must not block: djb's
/// dns_transmit schedule (as the blocking `DNSResolver` follows it for forked children) with
/// readiness and the loop's timers in place of poll. Each attempt is a fresh socket with a
/// random port and id, connected to one server (`DNSSocket.sendQuery`); the rounds of
/// `timeouts` ask every server in turn; a reply counts only with the query's id and
/// question (`DNSReply`); a server failure or a socket error (ECONNREFUSED when nothing
/// listens) moves on to the next attempt at once.
///
/// Two differences from the blocking resolver: `limit` bounds the whole query, whatever the
/// number of servers, and there is no TCP: a truncated reply is taken as it is (the records
/// that fitted, often none).
///
/// The completion is called once, on the loop's thread, never before `start` returns, and
/// never after `cancel`.
public final class DNSQuery: EventHandler {
    /// Called with the first usable response, or the last error when there is none.
    public typealias Completion = (Result<DNSResponse, DNSError>) -> Void

    private unowned let loop: EventLoop
    private let question: DNSQuestion
    private let servers: [DNSServer]
    private var attempts: DNSAttempts
    /// The end of the whole query, in the loop's monotonic nanoseconds.
    private let deadline: UInt64
    private var completion: Completion?
    private var registration = EventLoop.Registration(slot: 0, generation: 0)
    private var fd: Int32 = -1
    private var id: UInt16 = 0
    private var lastError = DNSError.timedOut

    /// Starts asking `servers` about `question`: each round of `timeouts` asks every server,
    /// and the whole query ends after `limit` at the latest (then with `DNSError.timedOut`).
    @discardableResult
    public static func start(
        loop: EventLoop, question: DNSQuestion, servers: [DNSServer], timeouts: [Duration], limit: Duration,
        completion: @escaping Completion
    ) -> DNSQuery {
        let query = DNSQuery(
            loop: loop, question: question, servers: servers, timeouts: timeouts,
            deadline: loop.nowNanoseconds &+ limit.nanosecondsClamped, completion: completion)
        // The first query goes out after the current batch of events, so that even a failure
        // at once reaches the completion only after `start` has returned.
        loop.deferCall(query.registration)
        return query
    }

    private init(
        loop: EventLoop, question: DNSQuestion, servers: [DNSServer], timeouts: [Duration], deadline: UInt64,
        completion: @escaping Completion
    ) {
        self.loop = loop
        self.question = question
        self.servers = servers
        self.attempts = DNSAttempts(servers: servers.count, timeouts: timeouts)
        self.deadline = deadline
        self.completion = completion
        registration = loop.register(self)
    }

    /// Gives up: closes the socket; the completion is not called.
    public func cancel() {
        guard completion != nil else { return }
        completion = nil
        closeSocket()
        loop.unregister(registration)
    }

    // MARK: - Events

    /// Sends the first query.
    public func handleDeferred() {
        if completion != nil && fd < 0 { nextAttempt() }
    }

    /// Reads the datagrams that arrived.
    public func handle(events: IOEvents, tag: UInt8) {
        guard fd >= 0 else { return }
        var buffer = [UInt8](repeating: 0, count: DNSReply.bufferSize)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK { return }
                lastError = .system(SystemError.current)
                return nextAttempt()
            }
            switch DNSReply(datagram: buffer[0..<n], question: question, id: id) {
            case .ignored: continue
            case .answer(let response), .truncated(let response): return finish(.success(response))
            case .serverFailure(let rcode):
                lastError = .serverFailure(rcode: rcode)
                return nextAttempt()
            }
        }
    }

    /// The attempt's time is up: the next one, or the end when the limit is reached.
    public func handleTimer() {
        guard fd >= 0 else { return }
        lastError = .timedOut
        nextAttempt()
    }

    /// The loop closes: give up quietly.
    public func handleLoopClose() { cancel() }

    // MARK: - Attempts

    /// Sends the query to the next server of the schedule and waits for its answer until the
    /// attempt's timeout or the limit, whichever is first; finishes with the last error when
    /// no attempt is left or the limit has passed.
    private func nextAttempt() {
        closeSocket()
        while let attempt = attempts.next(), loop.nowNanoseconds < deadline {
            id = UInt16.random(in: 0...UInt16.max)
            do {
                fd = try DNSSocket.sendQuery(id: id, question: question, to: servers[attempt.server])
                try loop.add(fd, interest: .readable, for: registration)
            } catch {
                closeSocket()
                lastError = .system(error)
                continue
            }
            let end = min(loop.nowNanoseconds &+ attempt.timeout.nanosecondsClamped, deadline)
            loop.setTimer(registration, at: Deadline(nanoseconds: end))
            return
        }
        finish(.failure(lastError))
    }

    private func closeSocket() {
        guard fd >= 0 else { return }
        close(fd)  // also takes it out of epoll (nobody else holds it)
        fd = -1
    }

    private func finish(_ result: Result<DNSResponse, DNSError>) {
        guard let completion else { return }
        self.completion = nil
        closeSocket()
        loop.unregister(registration)
        completion(result)
    }
}

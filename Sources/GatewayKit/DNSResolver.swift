#if canImport(Glibc)
import Glibc
#endif

/// A blocking DNS stub resolver that behaves like djb's dns library as ucspi-tcp uses it
/// (dns_name4, dns_name6, dns_ip4, dns_ip6): recursive queries to the configured caches over
/// UDP with djb's retry schedule, TCP when an answer is truncated.
///
/// Made for a forked child that looks up one thing at a time: no threads, no event loop, every
/// wait a poll() bounded by the schedule.
public struct DNSResolver: Sendable {
    /// Which addresses `addresses(of:family:)` asks for.
    public enum Family: Hashable, Sendable {
        /// A records, as dns_ip4.
        case ipv4
        /// AAAA records only.
        case ipv6
        /// AAAA records, then A records, as the IPv6 ucspi-tcp's dns_ip6. The IPv4 addresses
        /// are returned as IPv4 (`.v4`); compare with `IPAddress.unmapped` when checking a
        /// peer address from an IPv6 socket.
        case any
    }

    /// The servers asked, in order.
    public var servers: [DNSServer]
    /// The timeouts of the UDP rounds and of a TCP exchange.
    public var schedule: DNSRetrySchedule

    /// A resolver asking `servers` with `schedule`.
    public init(servers: [DNSServer], schedule: DNSRetrySchedule = .djb) {
        self.servers = servers
        self.schedule = schedule
    }

    /// A resolver configured from environment variables as djb's dns_resolvconfip:
    /// `DNSCACHEIP`, else the `nameserver` lines of `RESOLVCONF` or /etc/resolv.conf, else
    /// 127.0.0.1. `BASTION_DNSPORT` (for tests) replaces port 53. See `DNSConfiguration`.
    public init(environment: [String: String], schedule: DNSRetrySchedule = .djb) throws(DNSError) {
        servers = try DNSConfiguration.servers(environment: { environment[$0] })
        self.schedule = schedule
    }

    /// A resolver configured from the process environment (see `init(environment:schedule:)`).
    public init(schedule: DNSRetrySchedule = .djb) throws(DNSError) {
        servers = try DNSConfiguration.servers(environment: Environment.get)
        self.schedule = schedule
    }

    // MARK: - Lookups

    /// The name of `address` from its PTR record (dns_name4, or dns_name6 with the
    /// `ip6.arpa` nibble name; an IPv4-mapped address is looked up as IPv4). The name is
    /// printed as dns_domain_todot does: lowercase, odd bytes as `\ooo`, no trailing dot.
    /// Nil when the address has no PTR record.
    public func name(for address: IPAddress) throws(DNSError) -> String? {
        let question = DNSQuestion(name: DNSWire.reverseName(for: address.unmapped), type: .ptr)
        let response = try resolve(question)
        return try response.firstPointerName().map(DNSWire.formatName)
    }

    /// The addresses of `name` in answer order (djb shuffles them; callers that care about
    /// order should not rely on either). An address literal (optionally in brackets) comes
    /// back without a query: for `.ipv4` an IPv4 literal (or the IPv4 inside a mapped one),
    /// for `.ipv6` an IPv6 literal or an IPv4 literal as IPv4-mapped, for `.any` the literal
    /// itself. A name of only digits and dots that is no address gives an empty list, as in
    /// djb's dns_ip4. Empty when the name has no such records.
    ///
    /// With `.any`, a failure of one of the two queries is ignored when the other worked.
    public func addresses(of name: String, family: Family) throws(DNSError) -> [IPAddress] {
        if let literal = DNSResolver.literal(name) {
            switch family {
            case .any: return [literal]
            case .ipv4: return literal.unmapped.family == .v4 ? [literal.unmapped] : []
            case .ipv6: return [literal.v4Mapped]
            }
        }
        if DNSResolver.looksNumeric(name) {
            let v4 = DNSResolver.numericIPv4(name)
            switch family {
            case .ipv4, .any: return v4
            case .ipv6: return v4.map(\.v4Mapped)
            }
        }
        let wire = try DNSWire.encodeName(name)
        switch family {
        case .ipv4:
            return try resolve(DNSQuestion(name: wire, type: .a)).addresses(of: .a)
        case .ipv6:
            return try resolve(DNSQuestion(name: wire, type: .aaaa)).addresses(of: .aaaa)
        case .any:
            let v6 = Result { () throws(DNSError) in
                try resolve(DNSQuestion(name: wire, type: .aaaa)).addresses(of: .aaaa)
            }
            let v4 = Result { () throws(DNSError) in
                try resolve(DNSQuestion(name: wire, type: .a)).addresses(of: .a)
            }
            switch (v6, v4) {
            case (.failure(let error), .failure):
                throw error
            default:
                return ((try? v6.get()) ?? []) + ((try? v4.get()) ?? [])
            }
        }
    }

    /// Sends `question` and returns the first relevant reply that is not a server failure
    /// (dns_resolve): NXDOMAIN and empty answers come back as replies, not errors.
    public func resolve(_ question: DNSQuestion) throws(DNSError) -> DNSResponse {
        var transaction = DNSTransaction(question: question, servers: servers, schedule: schedule)
        return try transaction.run()
    }

    static func literal(_ name: String) -> IPAddress? {
        var text = Substring(name)
        if text.hasPrefix("[") && text.hasSuffix("]") && text.count >= 2 { text = text.dropFirst().dropLast() }
        return IPAddress(String(text))
    }

    /// djb's dns_ip4 on a name of digits, dots and brackets: each dot-separated number is one
    /// byte (modulo 256, brackets ignored), and every complete group of four bytes is an
    /// address, so `1.2.3.4.5` gives 1.2.3.4 and `1.2.3` nothing.
    static func numericIPv4(_ name: String) -> [IPAddress] {
        var bytes: [UInt8] = []
        var code: UInt8 = 0
        for c in name.utf8 + [UInt8(ascii: ".")] {
            switch c {
            case UInt8(ascii: "["), UInt8(ascii: "]"): continue
            case UInt8(ascii: "."):
                bytes.append(code)
                code = 0
            default: code = code &* 10 &+ (c &- UInt8(ascii: "0"))
            }
        }
        return stride(from: 0, to: bytes.count - bytes.count % 4, by: 4).map {
            IPAddress(v4: bytes[$0], bytes[$0 + 1], bytes[$0 + 2], bytes[$0 + 3])
        }
    }

    /// djb's dns_ip4 treats a name of digits, dots and brackets as an address literal and
    /// never asks the servers about it.
    static func looksNumeric(_ name: String) -> Bool {
        name.utf8.allSatisfy { c in
            (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9")) || c == UInt8(ascii: ".")
                || c == UInt8(ascii: "[") || c == UInt8(ascii: "]")
        }
    }
}

// MARK: - Transmission

/// One query carried through djb's dns_transmit schedule. UDP: for each timeout of the
/// schedule, each server in turn gets the query from a fresh socket (random id, random source
/// port, connected so that only that server's datagrams arrive) and that long to answer.
/// A reply counts only with the same id and the same question; a truncated one moves the
/// query to TCP, starting with the server that sent it; a server failure or a socket error
/// moves on to the next server.
struct DNSTransaction {
    let question: DNSQuestion
    let servers: [DNSServer]
    let schedule: DNSRetrySchedule
    private var lastError = DNSError.timedOut

    init(question: DNSQuestion, servers: [DNSServer], schedule: DNSRetrySchedule) {
        self.question = question
        self.servers = servers
        self.schedule = schedule
    }

    /// What one attempt came to.
    private enum Outcome {
        case answer(DNSResponse)
        case truncated
        case failed(DNSError)
    }

    mutating func run() throws(DNSError) -> DNSResponse {
        var attempts = DNSAttempts(servers: servers.count, timeouts: schedule.udpTimeouts)
        while let attempt = attempts.next() {
            let index = attempt.server
            switch udpAttempt(servers[index], timeout: attempt.timeout) {
            case .answer(let response):
                return response
            case .failed(let error):
                lastError = error
            case .truncated:
                let order = servers[index...] + servers[..<index]
                for tcpServer in order {
                    switch tcpAttempt(tcpServer) {
                    case .answer(let response): return response
                    case .failed(let error): lastError = error
                    case .truncated: lastError = .malformedResponse
                    }
                }
                throw lastError
            }
        }
        throw lastError
    }

    // MARK: UDP

    private func udpAttempt(_ server: DNSServer, timeout: Duration) -> Outcome {
        let id = UInt16.random(in: 0...UInt16.max)
        let deadline = Deadline.after(timeout)
        let fd: Int32
        do {
            fd = try DNSSocket.sendQuery(id: id, question: question, to: server)
        } catch {
            return .failed(.system(error))
        }
        defer { FD.close(fd) }
        do {
            var buffer = [UInt8](repeating: 0, count: DNSReply.bufferSize)
            while true {
                guard try deadline.wait(for: fd, events: Int16(POLLIN)) else { return .failed(.timedOut) }
                let n = buffer.withUnsafeMutableBytes { b in recv(fd, b.baseAddress, b.count, 0) }
                if n < 0 {
                    if errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK { continue }
                    return .failed(.system(SystemError.current))
                }
                switch DNSReply(datagram: buffer[0..<n], question: question, id: id) {
                case .ignored: continue
                case .truncated: return .truncated
                case .serverFailure(let rcode): return .failed(.serverFailure(rcode: rcode))
                case .answer(let response): return .answer(response)
                }
            }
        } catch {
            return .failed(DNSTransaction.failure(error))
        }
    }

    /// A system error as a DNS error; ETIMEDOUT is a timeout.
    private static func failure(_ error: SystemError) -> DNSError {
        error.errno == ETIMEDOUT ? .timedOut : .system(error)
    }

    // MARK: TCP

    private func tcpAttempt(_ server: DNSServer) -> Outcome {
        let id = UInt16.random(in: 0...UInt16.max)
        let query = DNSWire.query(id: id, question: question)
        let deadline = Deadline.after(schedule.tcpTimeout)
        let fd: Int32
        do {
            fd = try DNSSocket.open(for: server, type: SOCK_STREAM)
        } catch {
            return .failed(.system(error))
        }
        defer { FD.close(fd) }
        let packet: [UInt8]
        do {
            try BoundedSocket.connect(fd, to: server.address, port: server.port, before: deadline)
            let framed = [UInt8(query.count >> 8), UInt8(query.count & 0xff)] + query
            try BoundedSocket.writeAll(fd, framed, before: deadline)
            let prefix = try BoundedSocket.readExactly(fd, 2, before: deadline)
            let length = Int(prefix[0]) << 8 | Int(prefix[1])
            packet = try BoundedSocket.readExactly(fd, length, before: deadline)
        } catch {
            return .failed(DNSTransaction.failure(error))
        }
        guard let response = try? DNSResponse(parsing: packet), response.answers(question, id: id) else {
            return .failed(.malformedResponse)
        }
        if response.isTruncated { return .truncated }
        if response.isServerFailure { return .failed(.serverFailure(rcode: response.rcode)) }
        return .answer(response)
    }
}

// MARK: - Pieces shared with the event loop's DNSQuery

/// The order in which djb's dns_transmit tries the servers over UDP: for each timeout of the
/// schedule, each server in turn, that long each.
public struct DNSAttempts: IteratorProtocol, Sendable {
    /// One query sent: to `servers[server]`, waiting `timeout` for its answer.
    public struct Attempt: Equatable, Sendable {
        public let server: Int
        public let timeout: Duration
    }

    private let servers: Int
    private let timeouts: [Duration]
    private var round = 0
    private var server = 0

    /// The attempts for `servers` servers and the rounds of `timeouts`.
    public init(servers: Int, timeouts: [Duration]) {
        self.servers = servers
        self.timeouts = timeouts
    }

    /// The next attempt; nil when every round has asked every server.
    public mutating func next() -> Attempt? {
        guard servers > 0, round < timeouts.count else { return nil }
        let attempt = Attempt(server: server, timeout: timeouts[round])
        server += 1
        if server == servers {
            server = 0
            round += 1
        }
        return attempt
    }
}

/// What a datagram received for a UDP query means, judged as dns_transmit does.
public enum DNSReply {
    /// Not an answer to this query (wrong id or question, unreadable, too big): wait on.
    case ignored
    /// The answer (NXDOMAIN and empty answers included).
    case answer(DNSResponse)
    /// The answer did not fit: dns_transmit asks again over TCP.
    case truncated(DNSResponse)
    /// The server could not answer (SERVFAIL, REFUSED, ...): ask the next one.
    case serverFailure(rcode: UInt8)

    /// Receive buffers are one byte larger than a DNS datagram may be, so that an oversized
    /// one shows (djb's library ignores them).
    public static let bufferSize = 513

    /// Judges `datagram`, received on the socket of the query with `id` for `question`.
    public init(datagram: some Collection<UInt8>, question: DNSQuestion, id: UInt16) {
        guard datagram.count < DNSReply.bufferSize, let response = try? DNSResponse(parsing: Array(datagram)),
            response.answers(question, id: id)
        else {
            self = .ignored
            return
        }
        if response.isTruncated {
            self = .truncated(response)
        } else if response.isServerFailure {
            self = .serverFailure(rcode: response.rcode)
        } else {
            self = .answer(response)
        }
    }
}

/// The sockets of DNS queries, made as dns_transmit makes them.
public enum DNSSocket {
    /// A non-blocking, close-on-exec socket of the server's family bound to a random port
    /// from 1025 to 65534 (ten tries, then any port), as dns_transmit's randombind.
    public static func open(for server: DNSServer, type: __socket_type) throws(SystemError) -> Int32 {
        let family = server.address.family
        let fd = try BoundedSocket.open(family: family, type: type)
        let any = family == .v4 ? IPAddress.anyV4 : IPAddress.anyV6
        for _ in 0..<10 {
            if (try? BoundedSocket.bind(fd, to: any, port: UInt16.random(in: 1025...65534))) != nil { return fd }
        }
        do {
            try BoundedSocket.bind(fd, to: any, port: 0)
        } catch {
            FD.close(fd)
            throw error
        }
        return fd
    }

    /// A fresh UDP socket (`open`) connected to `server`, so that only its datagrams arrive,
    /// with the query for `question` sent from it. Returns at once: the answer is read from
    /// the socket (non-blocking; a server that is not there shows as ECONNREFUSED).
    public static func sendQuery(id: UInt16, question: DNSQuestion, to server: DNSServer) throws(SystemError) -> Int32 {
        let fd = try open(for: server, type: SOCK_DGRAM)
        let query = DNSWire.query(id: id, question: question)
        var sent = -1
        if server.address.withSocketAddress(port: server.port, { sa, len in connect(fd, sa, len) }) == 0 {
            sent = query.withUnsafeBytes { b in send(fd, b.baseAddress, b.count, Int32(MSG_NOSIGNAL)) }
        }
        if sent != query.count {
            let error = sent < 0 ? SystemError.current : SystemError(errno: EMSGSIZE)
            FD.close(fd)
            throw error
        }
        return fd
    }
}

#if canImport(Glibc)
import Glibc
#endif
@testable import GatewayKit

// Loopback peers for the DNS and ident client tests. Each runs on its own pthread, listens on
// 127.0.0.1 only, stops by itself after a few seconds at most, and is stopped early by the
// test through a pipe. No Foundation.

// MARK: - Threads

/// A pthread running `body` once; `join()` waits for it.
struct TestThread {
    private final class Box {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }

    private let thread: pthread_t

    init(_ body: @escaping @Sendable () -> Void) {
        let context = Unmanaged.passRetained(Box(body)).toOpaque()
        var t = pthread_t()
        let r = pthread_create(
            &t, nil,
            { raw in
                let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
                box.body()
                return nil
            }, context)
        precondition(r == 0, "pthread_create failed")
        thread = t
    }

    func join() { pthread_join(thread, nil) }
}

/// State written by a peer's thread and read by the test after `join()` (which orders the
/// accesses), hence unchecked.
final class PeerLog: @unchecked Sendable {
    var requests: [[UInt8]] = []
    var transports: [String] = []
}

// MARK: - Sockets

enum TestSocket {
    /// A socket bound to `address`:`port` (port 0: any); returns the descriptor and the port.
    static func bound(
        type: __socket_type, port: UInt16 = 0, address: IPAddress = .loopbackV4
    ) -> (fd: Int32, port: UInt16)? {
        let fd = socket(address.family == .v4 ? AF_INET : AF_INET6, Int32(type.rawValue | SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        let r = address.withSocketAddress(port: port) { sa, len in bind(fd, sa, len) }
        if r != 0 {
            close(fd)
            return nil
        }
        if type == SOCK_STREAM { listen(fd, 8) }
        return (fd, localPort(fd))
    }

    static func localPort(_ fd: Int32) -> UInt16 {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        withUnsafeMutablePointer(to: &storage) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in _ = getsockname(fd, sa, &length) }
        }
        return withUnsafePointer(to: &storage) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { IPAddress.fromSocketAddress($0)!.port }
        }
    }

    /// True when this host has an IPv6 loopback (::1) to test on.
    static let hasIPv6Loopback: Bool = {
        guard let s = bound(type: SOCK_DGRAM, address: .loopbackV6) else { return false }
        close(s.fd)
        return true
    }()

    /// A UDP socket and a TCP listener on the same loopback port.
    static func udpAndTCP(address: IPAddress) -> (udp: Int32, tcp: Int32, port: UInt16) {
        for _ in 0..<20 {
            guard let udp = bound(type: SOCK_DGRAM, address: address) else { continue }
            if let tcp = bound(type: SOCK_STREAM, port: udp.port, address: address) {
                return (udp.fd, tcp.fd, udp.port)
            }
            close(udp.fd)
        }
        fatalError("no free loopback port for UDP and TCP")
    }

    /// A loopback port with nothing listening (bound, then closed).
    static func unusedPort(type: __socket_type) -> UInt16 {
        let s = bound(type: type)!
        close(s.fd)
        return s.port
    }

    /// Waits for `fd` to become readable for at most `milliseconds`.
    static func readable(_ fd: Int32, milliseconds: Int32) -> Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&p, 1, milliseconds) > 0
    }

    static func readExactly(_ fd: Int32, _ count: Int) -> [UInt8]? {
        var out: [UInt8] = []
        while out.count < count {
            guard readable(fd, milliseconds: 2000) else { return nil }
            var buffer = [UInt8](repeating: 0, count: count - out.count)
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { return nil }
            out += buffer[0..<n]
        }
        return out
    }

    static func write(_ fd: Int32, _ bytes: [UInt8]) {
        _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }
}

/// A pipe whose write end tells a peer thread to stop.
struct StopSignal: Sendable {
    let readEnd: Int32
    let writeEnd: Int32

    init() {
        var fds: [Int32] = [0, 0]
        precondition(pipe(&fds) == 0)
        readEnd = fds[0]
        writeEnd = fds[1]
    }

    func fire() { _ = Glibc.write(writeEnd, "x", 1) }

    func close() {
        Glibc.close(readEnd)
        Glibc.close(writeEnd)
    }
}

// MARK: - DNS peer

/// A tiny DNS server on 127.0.0.1 or ::1 (UDP and TCP on one port). For each query `answer` returns
/// the datagrams to send back (none: stay silent). Runs until stopped, or 4 seconds at most.
final class TestDNSServer: @unchecked Sendable {
    enum Transport: String, Sendable { case udp, tcp }

    let port: UInt16
    let address: IPAddress
    let log = PeerLog()
    private let udp: Int32
    private let tcp: Int32
    private let stopSignal = StopSignal()
    private var thread: TestThread?

    var server: DNSServer { DNSServer(address: address, port: port) }

    init(address: IPAddress = .loopbackV4, answer: @escaping @Sendable ([UInt8], Transport) -> [[UInt8]]) {
        self.address = address
        (udp, tcp, port) = TestSocket.udpAndTCP(address: address)
        let (udp, tcp, stop, log) = (udp, tcp, stopSignal, log)
        thread = TestThread {
            TestDNSServer.serve(udp: udp, tcp: tcp, stop: stop.readEnd, log: log, answer: answer)
        }
    }

    /// Stops the thread and closes the sockets; returns the queries received.
    @discardableResult
    func stop() -> [[UInt8]] {
        stopSignal.fire()
        thread?.join()
        thread = nil
        close(udp)
        close(tcp)
        stopSignal.close()
        return log.requests
    }

    private static func serve(
        udp: Int32, tcp: Int32, stop: Int32, log: PeerLog,
        answer: @Sendable ([UInt8], Transport) -> [[UInt8]]
    ) {
        let end = Deadline.after(.seconds(4))
        while !end.hasPassed {
            var fds = [
                pollfd(fd: udp, events: Int16(POLLIN), revents: 0),
                pollfd(fd: tcp, events: Int16(POLLIN), revents: 0),
                pollfd(fd: stop, events: Int16(POLLIN), revents: 0),
            ]
            guard poll(&fds, 3, 100) >= 0 else { return }
            if fds[2].revents != 0 { return }
            if fds[0].revents != 0 {
                var buffer = [UInt8](repeating: 0, count: 2048)
                var peer = sockaddr_storage()
                var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
                let n = buffer.withUnsafeMutableBytes { b in
                    withUnsafeMutablePointer(to: &peer) { p in
                        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                            recvfrom(udp, b.baseAddress, b.count, 0, sa, &length)
                        }
                    }
                }
                if n > 0 {
                    let query = Array(buffer[0..<n])
                    log.requests.append(query)
                    log.transports.append("udp")
                    for reply in answer(query, .udp) {
                        _ = reply.withUnsafeBytes { b in
                            withUnsafePointer(to: &peer) { p in
                                p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                                    sendto(udp, b.baseAddress, b.count, 0, sa, length)
                                }
                            }
                        }
                    }
                }
            }
            if fds[1].revents != 0 {
                let connection = accept(tcp, nil, nil)
                guard connection >= 0 else { continue }
                defer { close(connection) }
                guard let prefix = TestSocket.readExactly(connection, 2),
                    let query = TestSocket.readExactly(connection, Int(prefix[0]) << 8 | Int(prefix[1]))
                else { continue }
                log.requests.append(query)
                log.transports.append("tcp")
                for reply in answer(query, .tcp) {
                    TestSocket.write(connection, [UInt8(reply.count >> 8), UInt8(reply.count & 0xff)] + reply)
                }
            }
        }
    }
}

// MARK: - DNS packets for tests

enum TestDNS {
    /// Builds a reply to `query`: its id (plus `idOffset`) and question, QR RD RA, `rcode`,
    /// TC when `truncated`, and `answers` as records whose owner is a pointer to the question.
    static func reply(
        to query: [UInt8], rcode: UInt8 = 0, truncated: Bool = false, idOffset: UInt16 = 0,
        answers: [(DNSType, [UInt8])] = []
    ) -> [UInt8] {
        let id = (UInt16(query[0]) << 8 | UInt16(query[1])) &+ idOffset
        let flags: UInt16 = 0x8180 | (truncated ? 0x0200 : 0) | UInt16(rcode)
        var out: [UInt8] = [
            UInt8(id >> 8), UInt8(id & 0xff), UInt8(flags >> 8), UInt8(flags & 0xff),
            0, 1, 0, UInt8(answers.count), 0, 0, 0, 0,
        ]
        out += query[12...]
        for (type, data) in answers {
            out += [
                0xc0, 0x0c, UInt8(type.rawValue >> 8), UInt8(type.rawValue & 0xff), 0, 1, 0, 0, 0x0e, 0x10,
                UInt8(data.count >> 8), UInt8(data.count & 0xff),
            ]
            out += data
        }
        return out
    }

    /// The question of a query packet.
    static func question(of query: [UInt8]) -> DNSQuestion? {
        (try? DNSResponse(parsing: query))?.question
    }

    /// The question name of a query, dotted.
    static func questionName(of query: [UInt8]) -> String {
        question(of: query).map { DNSWire.formatName($0.name) } ?? "?"
    }
}

/// A short schedule for tests: two UDP rounds of 150 and 250 ms, 1 s for TCP.
let testSchedule = DNSRetrySchedule(udpTimeouts: [.milliseconds(150), .milliseconds(250)], tcpTimeout: .seconds(1))

/// Milliseconds since `start`.
func elapsedMilliseconds(since start: Deadline) -> Int {
    Int((Deadline.now.nanoseconds - start.nanoseconds) / 1_000_000)
}

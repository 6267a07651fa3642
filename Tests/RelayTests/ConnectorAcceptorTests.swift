#if canImport(Glibc)
import Glibc
#endif
import GatewayKit
@testable import Loop
import Relay
import Testing

/// Collects connector outcomes.
final class ConnectOutcome: ConnectorDelegate, Sendable {
    enum Result: Equatable {
        case connected(Int32)
        case failed(SystemError)
    }

    private let results = Locked<[(Result, Double)]>([])
    private let started = Deadline.now

    func connector(_ connector: Connector, connected fd: Int32) {
        results.withLock { $0.append((.connected(fd), elapsed(since: started))) }
    }

    func connector(_ connector: Connector, failed error: SystemError) {
        results.withLock { $0.append((.failed(error), elapsed(since: started))) }
    }

    func wait(seconds: Double = 4) -> (Result, Double)? {
        let deadline = Deadline.after(.milliseconds(Int(seconds * 1000)))
        while !deadline.hasPassed {
            if let first = results.withLock({ $0.first }) { return first }
            usleep(1000)
        }
        return nil
    }

    var count: Int { results.withLock { $0.count } }
}

@Suite("Connector")
struct ConnectorTests {
    @Test("connects to a loopback listener, from a given source address", arguments: [IPAddress.Family.v4, .v6])
    func connects(family: IPAddress.Family) throws {
        let (listener, port) = try Loopback.listener(family)
        defer { close(listener) }
        let thread = try EventLoopThread.start()
        defer { thread.stopAndJoin() }
        let outcome = ConnectOutcome()
        let address = Loopback.address(family)
        let started = thread.sync { loop -> SystemError? in
            do throws(SystemError) {
                try Connector.start(
                    loop: loop, to: Endpoint(address: address, port: port), from: address, delegate: outcome
                )
                return nil
            } catch {
                return error
            }
        }
        #expect(started == nil)
        let (result, _) = try #require(outcome.wait())
        guard case .connected(let fd) = result else {
            Issue.record("\(result)")
            return
        }
        defer { close(fd) }
        let (accepted, peer) = try Socket.accept(listener)
        defer { close(accepted) }
        #expect(peer.address == address)
        #expect(try Socket.remoteEndpoint(fd).port == port)
        #expect(fcntl(fd, F_GETFL) & O_NONBLOCK != 0)
        // The descriptor is no longer in the loop's epoll set: the delegate may register it.
        #expect(thread.sync { $0.statistics.handlers } == 0)
    }

    @Test("a refused connect reports ECONNREFUSED promptly", arguments: [IPAddress.Family.v4, .v6])
    func refused(family: IPAddress.Family) throws {
        // A bound socket that does not listen holds the port and refuses connections.
        let holder = try Socket.tcp(family)
        defer { close(holder) }
        try Socket.bind(holder, to: Loopback.address(family), port: 0)
        let port = try Socket.localEndpoint(holder).port
        let thread = try EventLoopThread.start()
        defer { thread.stopAndJoin() }
        let outcome = ConnectOutcome()
        let address = Loopback.address(family)
        thread.sync { loop in
            _ = try? Connector.start(loop: loop, to: Endpoint(address: address, port: port), delegate: outcome)
        }
        let (result, seconds) = try #require(outcome.wait())
        #expect(result == .failed(SystemError(errno: ECONNREFUSED)))
        #expect(seconds < 0.5)
        #expect(thread.sync { $0.statistics.handlers } == 0)
    }

    @Test("a connect that gets no answer times out with ETIMEDOUT")
    func timeout() throws {
        // A listener with backlog 0 that never accepts: once its queue holds one connection,
        // further SYNs are dropped and connects hang.
        let (listener, port) = try Loopback.listener(.v4, backlog: 0)
        defer { close(listener) }
        var fillers: [Int32] = []
        defer { fillers.forEach { close($0) } }
        for _ in 0..<3 {
            let fd = try Socket.tcp(.v4)
            Socket.setNonBlocking(fd, true)
            _ = IPAddress.loopbackV4.withSocketAddress(port: port) { sa, length in connect(fd, sa, length) }
            fillers.append(fd)
        }
        usleep(50_000)
        let thread = try EventLoopThread.start(configuration: fineTimers())
        defer { thread.stopAndJoin() }
        let outcome = ConnectOutcome()
        thread.sync { loop in
            _ = try? Connector.start(
                loop: loop, to: Endpoint(address: .loopbackV4, port: port), timeout: .milliseconds(250),
                delegate: outcome
            )
        }
        let (result, seconds) = try #require(outcome.wait())
        #expect(result == .failed(SystemError(errno: ETIMEDOUT)))
        #expect(seconds >= 0.24 && seconds < 1.0)
    }

    @Test("cancel closes the socket and reports nothing")
    func cancel() throws {
        let (listener, port) = try Loopback.listener(.v4)
        defer { close(listener) }
        let thread = try EventLoopThread.start()
        defer { thread.stopAndJoin() }
        let outcome = ConnectOutcome()
        thread.sync { loop in
            let connector = try? Connector.start(
                loop: loop, to: Endpoint(address: .loopbackV4, port: port), delegate: outcome
            )
            connector?.cancel()
        }
        usleep(50_000)
        #expect(outcome.count == 0)
        #expect(thread.sync { $0.statistics.handlers } == 0)
    }

    @Test("a source address of the other family is refused at once")
    func familyMismatch() throws {
        let thread = try EventLoopThread.start()
        defer { thread.stopAndJoin() }
        let outcome = ConnectOutcome()
        let error = thread.sync { loop -> SystemError? in
            do throws(SystemError) {
                try Connector.start(
                    loop: loop, to: Endpoint(address: .loopbackV4, port: 9), from: .loopbackV6, delegate: outcome
                )
                return nil
            } catch {
                return error
            }
        }
        #expect(error == SystemError(errno: EAFNOSUPPORT))
    }
}

/// Counts accepted connections (closing them) and pauses.
final class AcceptLog: AcceptorDelegate, Sendable {
    private let state = Locked<(accepted: Int, paused: [SystemError], peers: [IPAddress])>((0, [], []))

    func acceptor(_ acceptor: Acceptor, accepted fd: Int32, peer: SocketAddress) {
        close(fd)
        let address = peer.endpoint?.address
        state.withLock { s in
            s.accepted += 1
            if let address { s.peers.append(address) }
        }
    }

    func acceptor(_ acceptor: Acceptor, pausedBy error: SystemError) {
        state.withLock { $0.paused.append(error) }
    }

    var accepted: Int { state.withLock { $0.accepted } }
    var paused: [SystemError] { state.withLock { $0.paused } }
    var peers: [IPAddress] { state.withLock { $0.peers } }

    func wait(accepted count: Int, seconds: Double = 4) -> Bool {
        let deadline = Deadline.after(.milliseconds(Int(seconds * 1000)))
        while !deadline.hasPassed {
            if accepted >= count { return true }
            usleep(1000)
        }
        return false
    }
}

@Suite("Acceptor")
struct AcceptorTests {
    @Test("accepts every waiting connection, more than one turn's budget")
    func acceptsAll() throws {
        let (listener, port) = try Loopback.listener(.v6, backlog: 512)
        defer { close(listener) }
        var clients: [Int32] = []
        defer { clients.forEach { close($0) } }
        // Queue connections before the acceptor starts, then more while it runs.
        for _ in 0..<150 { clients.append(try Loopback.connect(.v6, port: port)) }
        let thread = try EventLoopThread.start()
        defer { thread.stopAndJoin() }
        let log = AcceptLog()
        thread.sync { loop in
            let acceptor = Acceptor(loop: loop, listener: listener, delegate: log)
            try? acceptor.start()
        }
        for _ in 0..<50 { clients.append(try Loopback.connect(.v6, port: port)) }
        #expect(log.wait(accepted: 200))
        #expect(log.accepted == 200)
        #expect(log.peers.allSatisfy { $0 == .loopbackV6 })
    }

    @Test("hold stops accepting across pauses until release; release accepts what waited")
    func holdAndRelease() throws {
        let (listener, port) = try Loopback.listener(.v4)
        defer { close(listener) }
        var clients: [Int32] = []
        defer { clients.forEach { close($0) } }
        let thread = try EventLoopThread.start(configuration: fineTimers())
        defer { thread.stopAndJoin() }
        let log = AcceptLog()
        final class Box: @unchecked Sendable { var acceptor: Acceptor? }
        let box = Box()
        thread.sync { loop in
            let acceptor = Acceptor(loop: loop, listener: listener, pause: .milliseconds(20), delegate: log)
            box.acceptor = acceptor
            try? acceptor.start()
            acceptor.hold()
            acceptor.pauseAccepting()  // a pause that ends while held changes nothing
        }
        for _ in 0..<5 { clients.append(try Loopback.connect(.v4, port: port)) }
        // Well past the pause: still nothing accepted (the loop ran its timer meanwhile).
        #expect(!log.wait(accepted: 1, seconds: 0.2))
        thread.sync { _ in box.acceptor?.release() }
        #expect(log.wait(accepted: 5))
        clients.append(try Loopback.connect(.v4, port: port))
        #expect(log.wait(accepted: 6))
    }

    @Test("running out of descriptors pauses accepting, then it resumes without spinning")
    func pausesOnEMFILE() throws {
        let (listener, port) = try Loopback.listener(.v4)
        defer { close(listener) }
        let thread = try EventLoopThread.start(configuration: fineTimers())
        defer { thread.stopAndJoin() }
        let log = AcceptLog()
        let calls = CallCounter()
        thread.sync { loop in
            let acceptor = Acceptor(loop: loop, listener: listener, pause: .milliseconds(200), delegate: log)
            var failures = 2
            let real = acceptor.acceptCall
            acceptor.acceptCall = { fd, address, length in
                calls.increment()
                if failures > 0 {
                    failures -= 1
                    errno = EMFILE
                    return -1
                }
                return real(fd, address, length)
            }
            try? acceptor.start()
        }
        let start = Deadline.now
        let client = try Loopback.connect(.v4, port: port)
        defer { close(client) }
        #expect(log.wait(accepted: 1))
        let seconds = elapsed(since: start)
        #expect(log.paused == [SystemError(errno: EMFILE), SystemError(errno: EMFILE)])
        // Two pauses of 200 ms, and only a handful of accept calls in that time.
        #expect(seconds >= 0.35 && seconds < 2)
        #expect(calls.value < 10)
    }
}

final class CallCounter: Sendable {
    private let count = Locked(0)
    func increment() { count.withLock { $0 += 1 } }
    var value: Int { count.withLock { $0 } }
}

// MARK: - The pieces together

/// A miniature tcpproxy on one loop: accept, connect to the backend, relay.
final class MiniProxy: AcceptorDelegate {
    /// One accepted client waiting for its backend connection.
    final class Pending: ConnectorDelegate {
        let client: Int32
        let proxy: MiniProxy

        init(client: Int32, proxy: MiniProxy) {
            self.client = client
            self.proxy = proxy
        }

        func connector(_ connector: Connector, connected fd: Int32) {
            RelayConnection(
                loop: proxy.loop, client: client, server: fd, configuration: proxy.configuration,
                delegate: proxy.events
            ).start()
        }

        func connector(_ connector: Connector, failed error: SystemError) { close(client) }
    }

    unowned let loop: EventLoop
    let backend: Endpoint
    let configuration: RelayConfiguration
    let events: RelayEvents

    init(loop: EventLoop, backend: Endpoint, configuration: RelayConfiguration, events: RelayEvents) {
        self.loop = loop
        self.backend = backend
        self.configuration = configuration
        self.events = events
    }

    func acceptor(_ acceptor: Acceptor, accepted fd: Int32, peer: SocketAddress) {
        do {
            try Connector.start(loop: loop, to: backend, delegate: Pending(client: fd, proxy: self))
        } catch {
            close(fd)
        }
    }
}

@Suite("Proxy")
struct ProxyTests {
    @Test("accept, connect and relay: an IPv6 client reaches an IPv4 backend through the loop")
    func miniProxy() throws {
        let (front, frontPort) = try Loopback.listener(.v6)
        let (back, backPort) = try Loopback.listener(.v4)
        defer {
            close(front)
            close(back)
        }
        let events = RelayEvents()
        let backend = Endpoint(address: .loopbackV4, port: backPort)
        let thread = try EventLoopThread.start { loop in
            let proxy = MiniProxy(
                loop: loop, backend: backend, configuration: RelayConfiguration(transfer: .automatic),
                events: events
            )
            try? Acceptor(loop: loop, listener: front, delegate: proxy).start()
        }
        defer { thread.stopAndJoin() }
        let clients = 5
        var ends: [(Int32, Int32)] = []
        defer {
            for (a, b) in ends {
                close(a)
                close(b)
            }
        }
        for _ in 0..<clients {
            let client = try Loopback.connect(.v6, port: frontPort)
            let (server, _) = try Socket.accept(back)
            ends.append((client, server))
        }
        for (i, (client, server)) in ends.enumerated() {
            let request = randomBytes(1000 + i * 50_000, seed: UInt64(100 + i))
            let answer = randomBytes(300_000 + i, seed: UInt64(200 + i))
            var peers = [
                Peer(fd: client, sending: request),
                Peer(fd: server, sending: answer, sendAfterEOF: true),
            ]
            #expect(drive(&peers))
            expectSame(peers[1].received, request)
            expectSame(peers[0].received, answer)
        }
        let summaries = events.wait(count: clients)
        #expect(summaries.count == clients)
        #expect(summaries.allSatisfy { $0.end == .completed })
    }
}

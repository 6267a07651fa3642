#if canImport(Glibc)
import Glibc
#endif
import CBastion
import GatewayKit

/// Told how a `Connector` ended, on the loop's thread. Exactly one of the two is called,
/// unless the connector is cancelled first.
public protocol ConnectorDelegate: AnyObject {
    /// The connection is established. `fd` is now the delegate's: connected, non-blocking,
    /// close-on-exec, and no longer watched by the loop (ready for a `RelayConnection`).
    func connector(_ connector: Connector, connected fd: Int32)
    /// The connection failed (ECONNREFUSED, ENETUNREACH, ETIMEDOUT for the connect
    /// timeout...); the socket is closed.
    func connector(_ connector: Connector, failed error: SystemError)
}

/// A non-blocking TCP connect on an `EventLoop`, optionally from a given source address,
/// bounded by a timeout.
public final class Connector: EventHandler {
    /// Where the connection goes.
    public let destination: Endpoint
    private unowned let loop: EventLoop
    private let delegate: any ConnectorDelegate
    private var fd: Int32
    private var registration: EventLoop.Registration
    private let deadline: UInt64
    private var finished = false
    private var immediateError: Int32 = 0
    /// Leave the connected socket in epoll for the next owner (a relay that then modifies the
    /// registration instead of adding it again: one system call less per connection).
    public var keepsDescriptorRegistered = false

    /// Starts connecting to `destination`, from `source` when given (port chosen by the
    /// kernel at connect time, IP_BIND_ADDRESS_NO_PORT, so many connections from one source
    /// address do not run out of ports). A non-zero `timeout` bounds the whole attempt.
    ///
    /// Errors found at once (no descriptors left, source address not available...) are
    /// thrown; everything after is reported to `delegate`, never before `start` returns.
    @discardableResult
    public static func start(
        loop: EventLoop,
        to destination: Endpoint,
        from source: IPAddress? = nil,
        timeout: Duration = .seconds(10),
        delegate: any ConnectorDelegate
    ) throws(SystemError) -> Connector {
        let (fd, immediateError) = try openSocket(to: destination, from: source)
        let nanoseconds = timeout.nanosecondsClamped
        let connector = Connector(
            loop: loop, destination: destination, fd: fd, delegate: delegate,
            deadline: nanoseconds > 0 ? loop.nowNanoseconds &+ nanoseconds : 0
        )
        if immediateError != 0 {
            connector.immediateError = immediateError
            loop.deferCall(connector.registration)
            return connector
        }
        do {
            try loop.add(fd, interest: [.writable, .edgeTriggered], for: connector.registration)
        } catch {
            connector.finished = true
            loop.unregister(connector.registration)
            Glibc.close(fd)
            throw error
        }
        if nanoseconds > 0 { loop.setTimer(connector.registration, at: Deadline(nanoseconds: connector.deadline)) }
        return connector
    }

    /// Creates a non-blocking socket and starts connecting it to `destination`, from `source`
    /// when given (port chosen by the kernel at connect time, IP_BIND_ADDRESS_NO_PORT). Returns
    /// the socket and the error connect(2) reported at once for the connection itself
    /// (refused, unreachable: 0 when it is in progress); errors of this host (no descriptors
    /// left, source address not available, family mismatch) are thrown, the socket closed.
    /// With `noDelay` the socket gets TCP_NODELAY before connecting. `sourceScopeID` is the
    /// interface of a link-local IPv6 source (which bind(2) refuses without one).
    public static func openSocket(
        to destination: Endpoint, from source: IPAddress?, sourceScopeID: UInt32 = 0, noDelay: Bool = false
    ) throws(SystemError) -> (fd: Int32, error: Int32) {
        let address = destination.address.unmapped
        let family: IPAddress.Family = address.family
        var sourceAddress: IPAddress?
        if let source {
            let unmapped = source.unmapped
            if family == .v4 && unmapped.family != .v4 { throw SystemError(errno: EAFNOSUPPORT) }
            sourceAddress = family == .v4 ? unmapped : source.v4Mapped
        }
        let type = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        let fd = socket(family == .v4 ? AF_INET : AF_INET6, type, 0)
        if fd < 0 { throw SystemError.current }
        if noDelay { _ = Sys.setIntOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1) }
        if let sourceAddress {
            _ = Sys.setIntOption(fd, Int32(IPPROTO_IP), Sys.ipBindAddressNoPort, 1)
            let r = sourceAddress.withSocketAddress(port: 0, scopeID: sourceScopeID) { sa, length in
                bind(fd, sa, length)
            }
            if r != 0 {
                let error = SystemError.current
                Glibc.close(fd)
                throw error
            }
        }
        let r = address.withSocketAddress(port: destination.port, scopeID: destination.scopeID) { sa, length in
            connect(fd, sa, length)
        }
        guard r != 0 && errno != EINPROGRESS && errno != EINTR else { return (fd, 0) }
        let e = errno
        if SystemError.isShortage(e) || e == EADDRNOTAVAIL || e == EAFNOSUPPORT {
            Glibc.close(fd)
            throw SystemError(errno: e)
        }
        return (fd, e)
    }

    private init(
        loop: EventLoop, destination: Endpoint, fd: Int32, delegate: any ConnectorDelegate, deadline: UInt64
    ) {
        self.loop = loop
        self.destination = destination
        self.fd = fd
        self.delegate = delegate
        self.deadline = deadline
        registration = EventLoop.Registration(slot: 0, generation: 0)
        registration = loop.register(self)
    }

    /// Gives up: closes the socket; the delegate hears nothing more.
    public func cancel() {
        guard !finished else { return }
        finished = true
        loop.unregister(registration)
        Glibc.close(fd)
    }

    /// The connect finished: report the outcome.
    public func handle(events: IOEvents, tag: UInt8) {
        guard !finished, let e = Connector.outcome(of: events, fd: fd) else { return }
        if e != 0 { return fail(e) }
        finished = true
        if !keepsDescriptorRegistered { loop.remove(fd) }
        loop.unregister(registration)
        delegate.connector(self, connected: fd)
    }

    /// What `events` on a connecting socket say: 0 when it is connected, an errno when the
    /// connect failed, nil when nothing is settled yet (a spurious wake-up).
    public static func outcome(of events: IOEvents, fd: Int32) -> Int32? {
        // Writable without error or hang-up means connected; only otherwise ask for the error.
        if !events.isDisjoint(with: [.error, .hangup]) || !events.contains(.writable) {
            let e = Sys.socketError(fd)
            if e != 0 { return e }
        }
        if events.contains(.writable) { return 0 }
        // A hang-up without an error or writability: not connected after all. getpeername
        // settles it (ENOTCONN: the connect failed without saying why).
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let connected = withUnsafeMutablePointer(to: &storage) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &length) == 0 }
        }
        if connected { return 0 }
        let e = errno
        if !events.isDisjoint(with: [.error, .hangup]) { return e == ENOTCONN ? ECONNREFUSED : e }
        return nil
    }

    /// Reports an error that connect(2) returned at once.
    public func handleDeferred() {
        guard !finished, immediateError != 0 else { return }
        fail(immediateError)
    }

    /// The connect timeout: fail with ETIMEDOUT.
    public func handleTimer() {
        guard !finished, deadline > 0 else { return }
        if loop.nowNanoseconds >= deadline {
            fail(ETIMEDOUT)
        } else {
            loop.setTimer(registration, at: Deadline(nanoseconds: deadline))
        }
    }

    /// The loop closes: give up quietly.
    public func handleLoopClose() { cancel() }

    private func fail(_ e: Int32) {
        finished = true
        loop.unregister(registration)
        Glibc.close(fd)
        delegate.connector(self, failed: SystemError(errno: e))
    }
}

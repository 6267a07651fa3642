#if canImport(Glibc)
import Glibc
#endif
import CBastion
import GatewayKit

/// A socket address as accept(2) filled it in, kept raw so that accepting allocates
/// nothing; `endpoint` decodes it when wanted.
public struct SocketAddress: @unchecked Sendable {
    /// The raw address.
    public var storage = sockaddr_storage()
    /// Its length.
    public var length = socklen_t(MemoryLayout<sockaddr_storage>.size)

    /// An empty address of maximal length, for accept(2) to fill in.
    public init() {}

    /// The address and port (nil for families other than IPv4 and IPv6).
    public var endpoint: Endpoint? {
        withUnsafePointer(to: storage) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                IPAddress.fromSocketAddress(sa).map {
                    Endpoint(address: $0.address, port: $0.port, scopeID: $0.scopeID)
                }
            }
        }
    }
}

/// Told about the connections an `Acceptor` takes, on the loop's thread.
public protocol AcceptorDelegate: AnyObject {
    /// A new connection: `fd` is the delegate's (non-blocking, close-on-exec).
    func acceptor(_ acceptor: Acceptor, accepted fd: Int32, peer: SocketAddress)
    /// Accepting failed for lack of descriptors or memory (EMFILE, ENFILE, ENOBUFS,
    /// ENOMEM); the acceptor waits `pause` and tries again. Called once per pause.
    func acceptor(_ acceptor: Acceptor, pausedBy error: SystemError)
    /// Accepting failed for good (EBADF, EINVAL...): the acceptor has stopped.
    func acceptor(_ acceptor: Acceptor, failed error: SystemError)
}

extension AcceptorDelegate {
    /// By default a pause goes unremarked.
    public func acceptor(_ acceptor: Acceptor, pausedBy error: SystemError) {}
    /// By default a failure goes unremarked (the acceptor has stopped).
    public func acceptor(_ acceptor: Acceptor, failed error: SystemError) {}
}

/// Accepts connections on a listening socket: in a loop until EAGAIN when it becomes
/// readable, a bounded number per turn so other connections are served in between, and on
/// EMFILE/ENFILE it pauses for a moment instead of spinning or giving up. The listening
/// socket stays the caller's (it is made non-blocking).
public final class Acceptor: EventHandler {
    /// The listening socket.
    public let listener: Int32
    /// How long to wait after running out of descriptors.
    public let pause: Duration
    private unowned let loop: EventLoop
    private let delegate: any AcceptorDelegate
    private var registration: EventLoop.Registration?
    private var paused = false
    private var held = false

    /// Connections accepted per turn before yielding to the loop.
    static let budget = 64

    /// For tests: stands in for accept4(2) (same arguments and result, errno set on -1).
    var acceptCall: (Int32, UnsafeMutablePointer<sockaddr>, UnsafeMutablePointer<socklen_t>) -> Int32 = {
        bastion_accept4($0, $1, $2, Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue))
    }

    /// An acceptor for `listener` (bound and listening) on `loop`; `start` begins.
    public init(
        loop: EventLoop, listener: Int32, pause: Duration = .milliseconds(100), delegate: any AcceptorDelegate
    ) {
        self.loop = loop
        self.listener = listener
        self.pause = pause
        self.delegate = delegate
    }

    /// Starts watching the listener (edge-triggered, exclusive wake-ups: of several loops sharing
    /// the listener one is woken per event) and accepts what is already waiting.
    public func start() throws(SystemError) {
        guard registration == nil else { return }
        Socket.setNonBlocking(listener, true)
        let registration = loop.register(self)
        do {
            try loop.add(listener, interest: [.readable, .edgeTriggered, .exclusive], for: registration)
        } catch {
            loop.unregister(registration)
            throw error
        }
        self.registration = registration
        acceptAll()
    }

    /// Stops accepting; the listener stays open.
    public func stop() {
        guard let registration else { return }
        self.registration = nil
        loop.remove(listener)
        loop.unregister(registration)
    }

    /// True while started and not stopped.
    public var isAccepting: Bool { registration != nil }

    /// Stops accepting for `pause`, as after EMFILE: for an owner that ran out of descriptors
    /// elsewhere (its outgoing connections), so that waiting clients stay in the listen queue
    /// instead of being accepted only to be closed.
    public func pauseAccepting() {
        guard let registration, !paused else { return }
        paused = true
        loop.setTimer(registration, after: pause)
    }

    /// Stops accepting until `release`, whatever pauses come and go meanwhile: for an owner
    /// whose accepted connections wait for descriptors, so that new clients do not take the
    /// descriptors that free up before them.
    public func hold() { held = true }

    /// Ends a `hold` and accepts what waits.
    public func release() {
        guard held else { return }
        held = false
        acceptAll()
    }

    /// The listener is readable: accept what waits.
    public func handle(events: IOEvents, tag: UInt8) { acceptAll() }

    /// The next turn after a full budget: accept more.
    public func handleDeferred() { acceptAll() }

    /// The pause is over: accept again.
    public func handleTimer() {
        guard paused else { return }
        paused = false
        acceptAll()
    }

    /// The loop closes: stop accepting.
    public func handleLoopClose() { stop() }

    private func acceptAll() {
        guard let registration, !paused, !held else { return }
        var peer = SocketAddress()
        for _ in 0..<Acceptor.budget {
            peer.length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let fd = withUnsafeMutablePointer(to: &peer.storage) { p in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) { acceptCall(listener, $0, &peer.length) }
            }
            if fd >= 0 {
                delegate.acceptor(self, accepted: fd, peer: peer)
                if self.registration == nil || paused || held { return }
                continue
            }
            let e = errno
            switch e {
            case EAGAIN, EWOULDBLOCK:
                return
            case EINTR, ECONNABORTED, EPROTO, EPERM, ENETDOWN, ENOPROTOOPT, EHOSTDOWN, ENONET, EHOSTUNREACH,
                EOPNOTSUPP, ENETUNREACH:
                // The connection failed before we took it (Linux passes its errors on).
                continue
            case _ where SystemError.isShortage(e):
                paused = true
                loop.setTimer(registration, after: pause)
                delegate.acceptor(self, pausedBy: SystemError(errno: e))
                return
            default:
                stop()
                delegate.acceptor(self, failed: SystemError(errno: e))
                return
            }
        }
        // Budget spent with connections possibly still waiting: continue after this batch.
        loop.deferCall(registration)
    }
}

import GatewayKit

/// One of the two sockets a relay joins.
public enum RelaySide: Sendable, Hashable, CustomStringConvertible {
    /// The connection accepted from a client.
    case client
    /// The connection made to the server.
    case server

    /// "client" or "server".
    public var description: String { self == .client ? "client" : "server" }
}

/// Which way bytes move through a relay.
public enum RelayDirection: Sendable, Hashable, CustomStringConvertible {
    /// From the client to the server.
    case clientToServer
    /// From the server to the client.
    case serverToClient

    /// The side the bytes come from.
    public var source: RelaySide { self == .clientToServer ? .client : .server }
    /// The side the bytes go to.
    public var destination: RelaySide { self == .clientToServer ? .server : .client }

    /// "client to server" or "server to client".
    public var description: String { self == .clientToServer ? "client to server" : "server to client" }
}

/// How a relay moves bytes.
public enum RelayTransfer: Sendable, Hashable {
    /// read(2) into a user-space buffer, write(2) out: every byte passes through the process.
    case copy
    /// splice(2) socket -> pipe -> socket: bytes stay in the kernel. Falls back to copying
    /// while no pipe can be had.
    case splice
    /// Copy small exchanges (cheaper for request/response traffic: two system calls per chunk
    /// instead of two splices plus a pipe), and switch a direction to splice once one read
    /// fills the whole buffer (bulk data); back to copying when a splice moves less than a
    /// buffer's worth.
    case automatic
}

/// Settings of a relay.
public struct RelayConfiguration: Sendable, Hashable {
    /// How bytes are moved. A relay with a recorder always copies.
    public var transfer: RelayTransfer
    /// The most bytes one direction reads at once and holds in user space when the writer
    /// is slow; reading from that side stops until the buffer is drained.
    public var bufferSize: Int
    /// The capacity asked for each splice pipe (F_SETPIPE_SZ; 0 keeps the system's default,
    /// 64 KiB on Linux). It bounds the bytes in flight inside the kernel per direction.
    public var pipeSize: Int
    /// End the relay after this long without a byte moving either way; zero for never.
    public var idleTimeout: Duration
    /// Set TCP_NODELAY on both sockets, so that small writes are not held back. A daemon that
    /// sets it on its listener (accepted sockets inherit it) and on outgoing sockets can turn
    /// this off and save two system calls per connection.
    public var noDelay: Bool

    /// The caller guarantees both sockets are already non-blocking (accept4 with SOCK_NONBLOCK,
    /// Connector's sockets), which saves checking each with fcntl.
    public var assumeNonBlocking = false

    /// A configuration; the defaults suit tcpproxy.
    public init(
        transfer: RelayTransfer = .automatic,
        bufferSize: Int = 10 * 1024,
        pipeSize: Int = 64 * 1024,
        idleTimeout: Duration = .zero,
        noDelay: Bool = true
    ) {
        self.transfer = transfer
        self.bufferSize = bufferSize
        self.pipeSize = pipeSize
        self.idleTimeout = idleTimeout
        self.noDelay = noDelay
    }
}

/// Why a relay ended.
public enum RelayEnd: Sendable, Equatable, CustomStringConvertible {
    /// Both sides finished sending and everything was delivered.
    case completed
    /// Nothing moved for the idle timeout.
    case idleTimeout
    /// A read, write or pending socket error on one side (connection reset, broken pipe...).
    case failed(RelaySide, SystemError)
    /// Ended by its owner (`cancel`) or because the loop closed.
    case cancelled
    /// The server connection of a relay made by `RelayConnection.connecting` could not be
    /// established (refused, unreachable, ETIMEDOUT for the connect timeout). Nothing was
    /// delivered to the server.
    case connectFailed(SystemError)

    /// The reason in a few words, for logs ("done", "idle timeout", "client connection reset").
    public var description: String {
        switch self {
        case .completed: return "done"
        case .idleTimeout: return "idle timeout"
        case .failed(let side, let error): return "\(side) \(error)"
        case .cancelled: return "cancelled"
        case .connectFailed(let error): return "connect failed: \(error)"
        }
    }
}

/// What a relay did, reported once when it ends.
public struct RelaySummary: Sendable, Equatable {
    /// Bytes delivered from the client to the server.
    public var bytesClientToServer: UInt64
    /// Bytes delivered from the server to the client.
    public var bytesServerToClient: UInt64
    /// When the relay started.
    public var started: Deadline
    /// When it ended.
    public var ended: Deadline
    /// Why it ended.
    public var end: RelayEnd

    public init(
        bytesClientToServer: UInt64, bytesServerToClient: UInt64, started: Deadline, ended: Deadline, end: RelayEnd
    ) {
        self.bytesClientToServer = bytesClientToServer
        self.bytesServerToClient = bytesServerToClient
        self.started = started
        self.ended = ended
        self.end = end
    }

    /// How long the relay ran.
    public var duration: Duration { .nanoseconds(Int64(clamping: ended.nanoseconds &- started.nanoseconds)) }
}

/// Told what a relay does, on the loop's thread.
public protocol RelayDelegate: AnyObject {
    /// The relay has ended; both sockets are closed by then.
    func relayDidEnd(_ relay: RelayConnection, summary: RelaySummary)

    /// The server connection of a relay made by `RelayConnection.connecting` is established
    /// (before the first byte from the server is read). The default does nothing.
    func relayDidConnect(_ relay: RelayConnection)

    /// One direction is over: its source sent end of file, all `bytes` it sent were delivered, and the end of file
    /// was passed on (the destination shut down for writing, or closed when the other direction was over too).
    /// At most once per direction, after ``relayDidConnect(_:)`` and before ``relayDidEnd(_:summary:)``; the relay's
    /// byte counters may lag behind during the call. Optional: the default does nothing, and a relay costs nothing
    /// more for it.
    func relay(_ relay: RelayConnection, finished direction: RelayDirection, bytes: UInt64)
}

extension RelayDelegate {
    public func relayDidConnect(_ relay: RelayConnection) {}
    public func relay(_ relay: RelayConnection, finished direction: RelayDirection, bytes: UInt64) {}
}

/// Sees every chunk a relay reads, in order, before it is written on (for logging or
/// recording a session). Called on the loop's thread; the bytes are valid only during the
/// call, and the relay's byte counters may lag behind during it.
public protocol RelayRecorder: AnyObject {
    func relay(_ relay: RelayConnection, read bytes: UnsafeRawBufferPointer, direction: RelayDirection)
}

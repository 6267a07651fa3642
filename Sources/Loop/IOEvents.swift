#if canImport(Glibc)
import Glibc
#endif
import CBastion

/// Readiness conditions of a descriptor, as epoll reports them (and the registration flags
/// that go with them). The raw values are epoll's, so converting costs nothing.
public struct IOEvents: OptionSet, Sendable, Hashable {
    /// The epoll bits.
    public let rawValue: UInt32

    /// Events from epoll bits.
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// Data (or end of file) can be read (EPOLLIN).
    public static let readable = IOEvents(rawValue: EPOLLIN.rawValue)
    /// Data can be written (EPOLLOUT); for a connecting socket: the connect has finished.
    public static let writable = IOEvents(rawValue: EPOLLOUT.rawValue)
    /// The peer shut down its sending side (EPOLLRDHUP): a read will return end of file
    /// once the data before it has been read.
    public static let readHangup = IOEvents(rawValue: EPOLLRDHUP.rawValue)
    /// Urgent data (EPOLLPRI).
    public static let priority = IOEvents(rawValue: EPOLLPRI.rawValue)
    /// An error is pending (EPOLLERR); SO_ERROR tells which. Always reported.
    public static let error = IOEvents(rawValue: EPOLLERR.rawValue)
    /// Both directions are closed (EPOLLHUP). Always reported.
    public static let hangup = IOEvents(rawValue: EPOLLHUP.rawValue)
    /// Registration flag: report changes only (EPOLLET). Without it, readiness is reported
    /// for as long as it lasts.
    public static let edgeTriggered = IOEvents(rawValue: EPOLLET.rawValue)
    /// Registration flag: report once, then disable until modified (EPOLLONESHOT).
    public static let oneShot = IOEvents(rawValue: EPOLLONESHOT.rawValue)
    /// Wake only one of the epoll instances watching the same descriptor (EPOLLEXCLUSIVE):
    /// several loops accepting on one listener then do not all wake for each connection.
    public static let exclusive = IOEvents(rawValue: 1 << 28)
}

// MARK: - System calls on the hot path (Loop, and Relay through `package` access)

/// Thin, allocation-free wrappers over the calls on the hot path. Each returns the raw
/// result and leaves errno as the call set it; callers look at errno only after -1.
package enum Sys {
    package static let spliceFlags = BASTION_SPLICE_F_MOVE | BASTION_SPLICE_F_NONBLOCK

    /// `IP_BIND_ADDRESS_NO_PORT` (linux/in.h): bind picks the port only at connect time, so
    /// that many connections from one source address can share ports between destinations.
    package static let ipBindAddressNoPort: Int32 = 24

    @inline(__always)
    package static func splice(_ from: Int32, _ to: Int32, _ count: Int) -> Int {
        bastion_splice(from, to, count, spliceFlags)
    }

    @inline(__always)
    package static func recv(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int) -> Int {
        Glibc.recv(fd, buffer, count, Int32(MSG_DONTWAIT))
    }

    @inline(__always)
    package static func send(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int, more: Bool = false) -> Int {
        Glibc.send(fd, buffer, count, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT) | (more ? Int32(MSG_MORE) : 0))
    }

    /// Sends what MSG_MORE held back (setting TCP_NODELAY pushes pending segments).
    package static func push(_ fd: Int32) {
        _ = setIntOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
    }

    /// The pending error of a socket (SO_ERROR), clearing it; 0 when there is none.
    package static func socketError(_ fd: Int32) -> Int32 {
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        if getsockopt(fd, SOL_SOCKET, SO_ERROR, &value, &length) != 0 { return errno }
        return value
    }

    package static func setIntOption(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32) -> Bool {
        var v = value
        return setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<Int32>.size)) == 0
    }

    /// True for the errno values that mean "try again later" on a non-blocking descriptor.
    @inline(__always)
    package static func wouldBlock(_ e: Int32) -> Bool { e == EAGAIN || e == EWOULDBLOCK }
}

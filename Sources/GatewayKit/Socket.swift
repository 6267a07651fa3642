#if canImport(Glibc)
import Glibc
#endif
import CBastion

/// One end of a TCP connection: address, port and (IPv6) scope id.
public struct Endpoint: Hashable, Sendable, CustomStringConvertible {
    public var address: IPAddress
    public var port: UInt16
    public var scopeID: UInt32

    public init(address: IPAddress, port: UInt16, scopeID: UInt32 = 0) {
        self.address = address
        self.port = port
        self.scopeID = scopeID
    }

    /// `192.0.2.1:80`, `[2001:db8::1]:80`: the form of every log line, the address unmapped
    /// (a v4-mapped IPv6 client is shown as the IPv4 address it is).
    public var description: String { Endpoint.text(address, port) }

    /// `address:port`, with an IPv6 address in brackets (unmapped first).
    public static func text(_ address: IPAddress, _ port: UInt16) -> String {
        let a = address.unmapped
        return a.family == .v6 ? "[\(a)]:\(port)" : "\(a):\(port)"
    }
}

/// Thin wrappers over the BSD socket calls that the daemons share, throwing `SystemError`.
public enum Socket {
    /// A new TCP socket of `family`, close-on-exec. An IPv6 socket accepts IPv4 clients too
    /// (IPV6_V6ONLY off), so one wildcard socket serves both families.
    public static func tcp(_ family: IPAddress.Family) throws(SystemError) -> Int32 {
        let fd = socket(
            family == .v4 ? AF_INET : AF_INET6, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        if fd < 0 { throw SystemError.current }
        if family == .v6 {
            var zero: Int32 = 0
            setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &zero, socklen_t(MemoryLayout<Int32>.size))
        }
        return fd
    }

    /// A new UDP socket of `family`, non-blocking and close-on-exec.
    public static func udp(_ family: IPAddress.Family) throws(SystemError) -> Int32 {
        let type = Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue)
        let fd = socket(family == .v4 ? AF_INET : AF_INET6, type, 0)
        if fd < 0 { throw SystemError.current }
        return fd
    }

    /// One datagram into `buffer` (recvfrom): its length and where it came from; nil when none
    /// is waiting (EAGAIN). A datagram longer than the buffer is cut to it.
    public static func receiveDatagram(
        _ fd: Int32, into buffer: UnsafeMutableRawBufferPointer
    ) throws(SystemError) -> (count: Int, from: Endpoint)? {
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        while true {
            let n = withUnsafeMutablePointer(to: &storage) { p in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    recvfrom(fd, buffer.baseAddress, buffer.count, 0, $0, &len)
                }
            }
            if n >= 0 {
                guard let from = endpoint(&storage) else { return (0, Endpoint(address: .anyV4, port: 0)) }
                return (n, from)
            }
            switch errno {
            case EINTR: continue
            case EAGAIN: return nil
            default: throw SystemError.current
            }
        }
    }

    /// Sends `prefix` and `payload` as one datagram to `destination` (sendmsg with two pieces,
    /// so a header is never copied in front of the data). False when the socket's buffer is
    /// full (EAGAIN): the datagram is dropped, as a router drops it.
    @discardableResult
    public static func sendDatagram(
        _ fd: Int32, to destination: Endpoint, prefix: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer
    ) throws(SystemError) -> Bool {
        let r: Int = destination.address.withSocketAddress(port: destination.port, scopeID: destination.scopeID) {
            sa, len in
            withUnsafeTemporaryAllocation(of: iovec.self, capacity: 2) { iov in
                iov[0] = iovec(iov_base: UnsafeMutableRawPointer(mutating: prefix.baseAddress), iov_len: prefix.count)
                iov[1] = iovec(
                    iov_base: UnsafeMutableRawPointer(mutating: payload.baseAddress), iov_len: payload.count)
                var message = msghdr()
                message.msg_name = UnsafeMutableRawPointer(mutating: sa)
                message.msg_namelen = len
                message.msg_iov = iov.baseAddress
                message.msg_iovlen = 2
                while true {
                    let n = sendmsg(fd, &message, 0)
                    if n >= 0 || errno != EINTR { return n }
                }
            }
        }
        if r >= 0 { return true }
        if errno == EAGAIN { return false }
        throw SystemError.current
    }

    /// Binds `fd` to `address:port`, with SO_REUSEADDR when `reuseAddress`.
    public static func bind(
        _ fd: Int32, to address: IPAddress, port: UInt16, scopeID: UInt32 = 0, reuseAddress: Bool = true
    ) throws(SystemError) {
        var one: Int32 = 1
        if reuseAddress { setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size)) }
        let r = address.withSocketAddress(port: port, scopeID: scopeID) { sa, len in Glibc.bind(fd, sa, len) }
        if r != 0 { throw SystemError.current }
    }

    /// listen(2).
    public static func listen(_ fd: Int32, backlog: Int32) throws(SystemError) {
        if Glibc.listen(fd, backlog) != 0 { throw SystemError.current }
    }

    /// Accepts one connection; the new descriptor is close-on-exec unless `inheritable`.
    public static func accept(_ fd: Int32, nonBlocking: Bool = false) throws(SystemError) -> (Int32, Endpoint) {
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let flags = Int32(SOCK_CLOEXEC.rawValue) | (nonBlocking ? Int32(SOCK_NONBLOCK.rawValue) : 0)
        let t = withUnsafeMutablePointer(to: &storage) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bastion_accept4(fd, $0, &len, flags) }
        }
        if t < 0 { throw SystemError.current }
        guard let peer = endpoint(&storage) else {
            close(t)
            throw SystemError(errno: EAFNOSUPPORT)
        }
        return (t, peer)
    }

    /// The local end of a socket (getsockname).
    public static func localEndpoint(_ fd: Int32) throws(SystemError) -> Endpoint {
        try name(fd, getsockname)
    }

    /// The remote end of a connected socket (getpeername).
    public static func remoteEndpoint(_ fd: Int32) throws(SystemError) -> Endpoint {
        try name(fd, getpeername)
    }

    private static func name(
        _ fd: Int32, _ call: (Int32, UnsafeMutablePointer<sockaddr>, UnsafeMutablePointer<socklen_t>) -> Int32
    ) throws(SystemError) -> Endpoint {
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let r = withUnsafeMutablePointer(to: &storage) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { call(fd, $0, &len) }
        }
        if r != 0 { throw SystemError.current }
        guard let e = endpoint(&storage) else { throw SystemError(errno: EAFNOSUPPORT) }
        return e
    }

    private static func endpoint(_ storage: inout sockaddr_storage) -> Endpoint? {
        withUnsafePointer(to: &storage) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                IPAddress.fromSocketAddress(sa).map {
                    Endpoint(address: $0.address, port: $0.port, scopeID: $0.scopeID)
                }
            }
        }
    }

    /// TCP_NODELAY on (tcpserver -D).
    public static func setNoDelay(_ fd: Int32) {
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    /// Removes IP options a client may have set, such as source routes (tcpserver -O).
    public static func killIPOptions(_ fd: Int32) {
        setsockopt(fd, Int32(IPPROTO_IP), IP_OPTIONS, nil, 0)
    }

    /// Switches O_NONBLOCK on or off.
    public static func setNonBlocking(_ fd: Int32, _ on: Bool) {
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK)
    }

    /// A Unix socket of `type` (SOCK_STREAM, SOCK_DGRAM) connected to `path`, close-on-exec,
    /// non-blocking when asked (a stream socket whose listener's queue is full then fails
    /// with EAGAIN instead of waiting). A path too long for sockaddr_un is ENAMETOOLONG.
    public static func connectUnix(_ path: String, type: Int32, nonBlocking: Bool = false) throws(SystemError) -> Int32
    {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw SystemError(errno: ENAMETOOLONG)
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        var flags = type | Int32(SOCK_CLOEXEC.rawValue)
        if nonBlocking { flags |= Int32(SOCK_NONBLOCK.rawValue) }
        let fd = socket(AF_UNIX, flags, 0)
        guard fd >= 0 else { throw SystemError.current }
        let ok = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        if ok != 0 {
            let error = SystemError.current
            close(fd)
            throw error
        }
        return fd
    }

    /// The index of a network interface by name (if_nametoindex), 0 when unknown.
    public static func interfaceIndex(_ name: String) -> UInt32 { if_nametoindex(name) }

    /// The name of a network interface by index, nil when unknown.
    public static func interfaceName(_ index: UInt32) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(IF_NAMESIZE) + 1)
        guard if_indextoname(index, &buffer) != nil else { return nil }
        let bytes = buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
        return String(decoding: bytes, as: UTF8.self)
    }
}

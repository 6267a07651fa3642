#if canImport(Glibc)
import Glibc
#endif
import GatewayKit

/// What identifies a listening socket across reloads: same key, same socket.
public struct ListenerKey: Hashable, Sendable, CustomStringConvertible {
    public let address: IPAddress
    public let port: UInt16
    /// IPv6 wildcard that does not take IPv4 (an IPv6-only service).
    public let v6Only: Bool

    public init(address: IPAddress, port: UInt16, v6Only: Bool) {
        self.address = address
        self.port = port
        self.v6Only = v6Only
    }

    public var description: String { Endpoint.text(address, port) }
}

/// A listening socket and its key.
public struct Listener: Hashable, Sendable {
    public let key: ListenerKey
    public let fd: Int32

    public init(key: ListenerKey, fd: Int32) {
        self.key = key
        self.fd = fd
    }
}

/// Opening listeners, keeping them across reloads by key, and closing the ones a reload
/// dropped: the same for every daemon.
public enum Listeners {
    /// Opens a non-blocking listening socket for `key`, with TCP_NODELAY (accepted sockets
    /// inherit it: set once here rather than per connection). `sharedPort` sets SO_REUSEPORT,
    /// which Linux needs to let a wildcard socket and address-specific ones of the same port
    /// coexist (only then: a second daemon started by mistake should still fail with
    /// "address already used").
    /// A socket systemd passed (socket activation) for the key's address and port is served
    /// instead, as it is.
    public static func open(_ key: ListenerKey, sharedPort: Bool, backlog: Int32 = 1024) throws(StartError) -> Int32 {
        var one: Int32 = 1
        if let passed = Systemd.takeListener(key.address, key.port) {
            setsockopt(passed, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            return passed
        }
        let fd: Int32
        do { fd = try Socket.tcp(key.address.family) } catch {
            throw StartError("unable to create a socket for \(key): \(error)")
        }
        if key.v6Only {
            setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &one, socklen_t(MemoryLayout<Int32>.size))
        }
        if sharedPort {
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, socklen_t(MemoryLayout<Int32>.size))
        }
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        do {
            try Socket.bind(fd, to: key.address, port: key.port)
            try Socket.listen(fd, backlog: backlog)
        } catch {
            close(fd)
            throw StartError("unable to listen on \(key): \(error)")
        }
        Socket.setNonBlocking(fd, true)
        return fd
    }

    /// Sockets for `keys`, in order: `current`'s socket where the key is unchanged, a new one
    /// otherwise (SO_REUSEPORT where several keys share a port). On an error the sockets opened
    /// here are closed again and `current`'s are left alone.
    public static func open(_ keys: [ListenerKey], reusing current: [Listener]) throws(StartError) -> [Listener] {
        var existing: [ListenerKey: Int32] = [:]
        for listener in current { existing[listener.key] = listener.fd }
        var ports: [UInt16: Int] = [:]
        for key in keys { ports[key.port, default: 0] += 1 }
        var listeners: [Listener] = []
        var opened: [Int32] = []
        do {
            for key in keys {
                if let old = existing[key] {
                    listeners.append(Listener(key: key, fd: old))
                } else {
                    let fd = try open(key, sharedPort: ports[key.port]! > 1)
                    opened.append(fd)
                    listeners.append(Listener(key: key, fd: fd))
                }
            }
        } catch {
            for fd in opened { close(fd) }
            throw error
        }
        return listeners
    }

    /// After a reload: closes the sockets `old` had and `new` lacks, and logs both the
    /// stopped and the new ones. shutdown() on a listening socket stops it for every process
    /// holding it (a draining worker's copy included), so a removed port refuses connections
    /// at once.
    public static func closeRemoved(old: [Listener], new: [Listener], log: DaemonLog) {
        let kept = Set(new.map(\.fd))
        for listener in old where !kept.contains(listener.fd) {
            shutdown(listener.fd, Int32(SHUT_RDWR))
            close(listener.fd)
            log.notice("stopped listening on \(listener.key)")
        }
        let before = Set(old.map(\.fd))
        for listener in new where !before.contains(listener.fd) {
            log.notice("listening on \(listener.key)")
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif

/// Why an ident (RFC 1413) query gave no answer. tcpserver then leaves TCPREMOTEINFO unset.
public enum IdentError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The deadline passed before the reply's newline.
    case timedOut
    /// The server closed the connection before the reply's newline.
    case connectionClosed
    /// A system call failed (socket, bind, connect, write, read).
    case system(SystemError)
    /// The server sent more than RFC 1413's 1000 bytes without a newline (only the loop's
    /// `IdentQuery` bounds the reply this way; remoteinfo reads on until its deadline).
    case replyTooLong

    public var description: String {
        switch self {
        case .timedOut: return "timed out"
        case .connectionClosed: return "connection closed before the end of the reply"
        case .system(let error): return error.description
        case .replyTooLong: return "reply too long"
        }
    }
}

/// An RFC 1413 client that behaves exactly like ucspi-tcp's remoteinfo (and the IPv6
/// variant's remoteinfo6): one blocking query, bounded by one deadline.
public enum IdentClient {
    /// The ident service's port.
    public static let defaultPort: UInt16 = 113

    /// Asks the ident server at `remote` who owns the connection `remote:remotePort` ->
    /// `local:localPort`: a TCP socket bound to `local` (any port) connects to
    /// `remote:identPort`, sends `REMOTEPORT , LOCALPORT\r\n` and reads the reply up to its
    /// newline, all within `timeout`. Returns what `IdentReplyReader` keeps of the reply
    /// (possibly empty, as for `ERROR : NO-USER`).
    ///
    /// IPv4-mapped addresses are used as IPv4 when both ends are IPv4; otherwise the socket is
    /// IPv6 and IPv4 addresses are mapped. `scopeID` is the interface of link-local IPv6
    /// addresses. `identPort` exists for tests.
    public static func remoteInfoBytes(
        remote: IPAddress, remotePort: UInt16,
        local: IPAddress, localPort: UInt16,
        timeout: Duration, identPort: UInt16 = defaultPort, scopeID: UInt32 = 0
    ) throws(IdentError) -> [UInt8] {
        let deadline = Deadline.after(timeout)
        let bothV4 = remote.unmapped.family == .v4 && local.unmapped.family == .v4
        let remoteAddress = bothV4 ? remote.unmapped : remote.v4Mapped
        let localAddress = bothV4 ? local.unmapped : local.v4Mapped
        let reply: [UInt8]?
        do {
            reply = try exchange(
                remote: remoteAddress, local: localAddress, identPort: identPort, scopeID: scopeID,
                request: IdentReplyReader.request(remotePort: remotePort, localPort: localPort),
                deadline: deadline
            )
        } catch {
            throw error.errno == ETIMEDOUT ? IdentError.timedOut : IdentError.system(error)
        }
        guard let reply else { throw IdentError.connectionClosed }
        return reply
    }

    /// Connects, sends `request` and reads until the reader finishes; nil at end of file first.
    private static func exchange(
        remote: IPAddress, local: IPAddress, identPort: UInt16, scopeID: UInt32,
        request: [UInt8], deadline: Deadline
    ) throws(SystemError) -> [UInt8]? {
        let fd = try BoundedSocket.open(family: remote.family, type: SOCK_STREAM)
        defer { FD.close(fd) }
        try BoundedSocket.bind(fd, to: local, port: 0, scopeID: scopeID)
        try BoundedSocket.connect(fd, to: remote, port: identPort, scopeID: scopeID, before: deadline)
        try BoundedSocket.writeAll(fd, request, before: deadline)
        var reader = IdentReplyReader()
        while true {
            let chunk = try BoundedSocket.read(fd, upTo: 128, before: deadline)
            if chunk.isEmpty { return nil }
            for byte in chunk where reader.consume(byte) == .finished {
                return reader.collected
            }
        }
    }

    /// `remoteInfoBytes` as text (bytes that are not UTF-8 become U+FFFD).
    public static func remoteInfo(
        remote: IPAddress, remotePort: UInt16,
        local: IPAddress, localPort: UInt16,
        timeout: Duration, identPort: UInt16 = defaultPort, scopeID: UInt32 = 0
    ) throws(IdentError) -> String {
        let bytes = try remoteInfoBytes(
            remote: remote, remotePort: remotePort, local: local, localPort: localPort,
            timeout: timeout, identPort: identPort, scopeID: scopeID
        )
        return String(decoding: bytes, as: UTF8.self)
    }
}

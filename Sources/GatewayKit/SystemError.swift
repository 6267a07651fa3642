#if canImport(Glibc)
import Glibc
#endif

/// An errno with the wording djb's programs print for it (error_str), so that our
/// diagnostics read exactly like ucspi-tcp's: `unable to read x: file does not exist`.
public struct SystemError: Error, Equatable, CustomStringConvertible, Sendable {
    public let errno: Int32

    public init(errno: Int32) { self.errno = errno }

    /// The current errno.
    public static var current: SystemError { SystemError(errno: Glibc.errno) }

    public var description: String { SystemError.message(errno) }

    /// The errno values that mean "out of descriptors or kernel memory for now": the one set
    /// behind every pause (accepting, connecting, tcpserver's parent), so that a shortage is
    /// waited out rather than reported as the connection's failure.
    public static func isShortage(_ e: Int32) -> Bool { e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM }

    /// This error is a shortage of descriptors or memory (``isShortage(_:)``).
    public var isDescriptorShortage: Bool { SystemError.isShortage(errno) }

    /// djb's text for an errno; "unknown error" for the rest.
    public static func message(_ e: Int32) -> String {
        switch e {
        case 0: return "no error"
        case EINTR: return "interrupted system call"
        case ENOMEM: return "out of memory"
        case ENOENT: return "file does not exist"
        case ETXTBSY: return "text busy"
        case EIO: return "input/output error"
        case EEXIST: return "file already exists"
        case ETIMEDOUT: return "timed out"
        case EINPROGRESS: return "operation in progress"
        case EAGAIN: return "temporary failure"
        case EPIPE: return "broken pipe"
        case EPERM: return "permission denied"
        case EACCES: return "access denied"
        case ENXIO: return "device not configured"
        case EPROTO: return "protocol error"
        case EISDIR: return "is a directory"
        case ECONNREFUSED: return "connection refused"
        case ENOTDIR: return "not a directory"
        case ESRCH: return "no such process"
        case E2BIG: return "argument list too long"
        case ENOEXEC: return "exec format error"
        case EBADF: return "file descriptor not open"
        case ECHILD: return "no child processes"
        case EDEADLK: return "operation would cause deadlock"
        case EFAULT: return "bad address"
        case ENOTBLK: return "not a block device"
        case EBUSY: return "device busy"
        case EXDEV: return "cross-device link"
        case ENODEV: return "device does not support operation"
        case EINVAL: return "invalid argument"
        case ENFILE: return "system cannot open more files"
        case EMFILE: return "process cannot open more files"
        case ENOTTY: return "not a tty"
        case EFBIG: return "file too big"
        case ENOSPC: return "out of disk space"
        case ESPIPE: return "unseekable descriptor"
        case EROFS: return "read-only file system"
        case EMLINK: return "too many links"
        case EDOM: return "input out of range"
        case ERANGE: return "output out of range"
        case EALREADY: return "operation already in progress"
        case ENOTSOCK: return "not a socket"
        case EDESTADDRREQ: return "destination address required"
        case EMSGSIZE: return "message too long"
        case EPROTOTYPE: return "incorrect protocol type"
        case ENOPROTOOPT: return "protocol not available"
        case EPROTONOSUPPORT: return "protocol not supported"
        case ESOCKTNOSUPPORT: return "socket type not supported"
        case EOPNOTSUPP: return "operation not supported"
        case EPFNOSUPPORT: return "protocol family not supported"
        case EAFNOSUPPORT: return "address family not supported"
        case EADDRINUSE: return "address already used"
        case EADDRNOTAVAIL: return "address not available"
        case ENETDOWN: return "network down"
        case ENETUNREACH: return "network unreachable"
        case ENETRESET: return "network reset"
        case ECONNABORTED: return "connection aborted"
        case ECONNRESET: return "connection reset"
        case ENOBUFS: return "out of buffer space"
        case EISCONN: return "already connected"
        case ENOTCONN: return "not connected"
        case ESHUTDOWN: return "socket shut down"
        case ETOOMANYREFS: return "too many references"
        case ELOOP: return "symbolic link loop"
        case ENAMETOOLONG: return "file name too long"
        case EHOSTDOWN: return "host down"
        case EHOSTUNREACH: return "host unreachable"
        case ENOTEMPTY: return "directory not empty"
        case EUSERS: return "too many users"
        case EDQUOT: return "disk quota exceeded"
        case ESTALE: return "stale NFS file handle"
        case EREMOTE: return "too many levels of remote in path"
        case ENOLCK: return "no locks available"
        case ENOSYS: return "system call not available"
        case ENOSTR: return "not a stream device"
        case ETIME: return "timer expired"
        case ENOSR: return "out of stream resources"
        case ENOMSG: return "no message of desired type"
        case EBADMSG: return "bad message type"
        case EIDRM: return "identifier removed"
        case ENONET: return "machine not on network"
        case ENOLINK: return "link severed"
        case EADV: return "advertise error"
        case ESRMNT: return "srmount error"
        case ECOMM: return "communication error"
        case EMULTIHOP: return "multihop attempted"
        case EREMCHG: return "remote address changed"
        default: return "unknown error"
        }
    }
}

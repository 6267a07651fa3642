/// Why a DNS lookup failed. A lookup that worked but found nothing (NXDOMAIN, no records) is
/// not an error: it returns nil or an empty list, as djb's dns_name4 and dns_ip4 return 0
/// with an empty result.
public enum DNSError: Error, Equatable, Sendable, CustomStringConvertible {
    /// No server gave a usable answer within the retry schedule.
    case timedOut
    /// The servers answered with a failure code (2 SERVFAIL, 4 NOTIMP, 5 REFUSED, ...).
    case serverFailure(rcode: UInt8)
    /// A reply that claimed to answer the question could not be read.
    case malformedResponse
    /// The text cannot be a DNS name: a label longer than 63 bytes or a name over 255.
    case invalidName(String)
    /// A system call failed (socket, bind, connect, send, recv).
    case system(SystemError)
    /// The resolver configuration file exists but could not be read.
    case unreadableConfiguration(path: String, SystemError)

    public var description: String {
        switch self {
        case .timedOut:
            return "timed out"
        case .serverFailure(let rcode):
            return "temporary failure (DNS server answered with rcode \(rcode))"
        case .malformedResponse:
            return "protocol error"
        case .invalidName(let name):
            return "invalid domain name: \(name)"
        case .system(let error):
            return error.description
        case .unreadableConfiguration(let path, let error):
            return "unable to read \(path): \(error)"
        }
    }
}

/// The answers sockd gives, in both protocols' numbering: SOCKS4's CD byte (90 to 93) and
/// SOCKS5's REP byte (RFC 1928, section 6). The session decides in terms of ``Outcome``; the
/// codecs turn it into the byte of the client's version.
public enum Outcome: Hashable, Sendable, CaseIterable {
    /// The request is granted (SOCKS4 90, SOCKS5 0).
    case granted
    /// Anything that went wrong without a better code (SOCKS4 91, SOCKS5 1).
    case generalFailure
    /// Denied by sockd.conf, or a SOCKS4 request where `--passwd` wants a password
    /// (SOCKS4 91, SOCKS5 2).
    case notAllowed
    /// The destination's network cannot be reached (SOCKS4 91, SOCKS5 3).
    case networkUnreachable
    /// The destination host cannot be reached, or its name does not resolve (SOCKS4 91, SOCKS5 4).
    case hostUnreachable
    /// The destination refused the connection (SOCKS4 91, SOCKS5 5).
    case connectionRefused
    /// The connection or the BIND wait timed out (SOCKS4 91, SOCKS5 6).
    case timedOut
    /// A command other than CONNECT, BIND or UDP ASSOCIATE (SOCKS4 91, SOCKS5 7).
    case commandNotSupported
    /// An address type other than IPv4, a domain name or IPv6 (SOCKS4 91, SOCKS5 8).
    case addressTypeNotSupported
    /// identd on the client's host could not be reached (SOCKS4 92; SOCKS5 has no such code: 2).
    case noIdentd
    /// identd named another user than the one the client claims (SOCKS4 93; SOCKS5: 2).
    case identMismatch

    /// SOCKS4's CD byte.
    public var socks4Code: UInt8 {
        switch self {
        case .granted: 90
        case .noIdentd: 92
        case .identMismatch: 93
        default: 91
        }
    }

    /// SOCKS5's REP byte.
    public var socks5Code: UInt8 {
        switch self {
        case .granted: 0
        case .generalFailure: 1
        case .notAllowed, .noIdentd, .identMismatch: 2
        case .networkUnreachable: 3
        case .hostUnreachable: 4
        case .connectionRefused: 5
        case .timedOut: 6
        case .commandNotSupported: 7
        case .addressTypeNotSupported: 8
        }
    }
}

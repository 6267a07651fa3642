import GatewayKit

/// Why a negotiation ends without a request, or why a datagram is not one: each with a
/// description for the log line (bytes from the wire shown through ``printable(_:)``).
public enum SocksFailure: Error, Hashable, Sendable, CustomStringConvertible {
    /// The message at which the bytes stopped or went wrong.
    public enum Stage: Hashable, Sendable, CustomStringConvertible {
        /// Before the first byte, which says which protocol the client speaks.
        case start
        case socks4Request
        case socks5Greeting
        case passwordRequest
        case socks5Request
        case socks5Reply
        case udpHeader

        public var description: String {
            switch self {
            case .start: "request"
            case .socks4Request: "SOCKS4 request"
            case .socks5Greeting: "SOCKS5 greeting"
            case .passwordRequest: "username/password request"
            case .socks5Request: "SOCKS5 request"
            case .socks5Reply: "SOCKS5 reply"
            case .udpHeader: "UDP header"
            }
        }
    }

    /// How a log line would call it.
    public enum Kind: Hashable, Sendable {
        /// Bytes that are not the protocol: a malformed request.
        case malformed
        /// A well-formed request sockd will not serve: refused.
        case refused
        /// The client closed between two messages, before its request: gone, nothing wrong
        /// with what it sent.
        case closed
    }

    /// A version byte that is not the stage's: 4 or 5 first, 5 in a SOCKS5 request, 1 in a
    /// username/password request.
    case badVersion(UInt8, Stage)
    /// The client closed after `received` bytes of the stage's message (0: before it).
    case truncated(Stage, received: Int)
    /// A SOCKS4 CD other than 1 and 2, a SOCKS5 CMD other than 1, 2 and 3.
    case unknownCommand(SocksVersion, UInt8)
    /// An ATYP other than 1, 3 and 4.
    case unsupportedAddressType(UInt8)
    case emptyHostName
    /// A SOCKS4a host name without a NUL within 256 bytes.
    case hostNameTooLong
    /// A SOCKS5 host name with a NUL byte inside.
    case hostNameHasNUL
    /// A SOCKS4 user id without a NUL within 256 bytes.
    case userIDTooLong
    /// A SOCKS5 greeting with NMETHODS 0.
    case noMethods
    /// None of the methods offered (as sent) is one sockd accepts.
    case noAcceptableMethod(offered: [UInt8])
    /// A username/password request with ULEN 0.
    case emptyUsername
    /// A reply's RSV byte is not 0.
    case reservedNotZero(UInt8)
    /// The password check said no for this user.
    case passwordRefused(username: [UInt8])
    /// A SOCKS4 or SOCKS4a request (well formed, here whole) where a password is required.
    case passwordRequired(Socks4Request)

    public var kind: Kind {
        switch self {
        case .truncated(_, let received) where received == 0: .closed
        case .noAcceptableMethod, .passwordRefused, .passwordRequired: .refused
        default: .malformed
        }
    }

    public var description: String {
        switch self {
        case .badVersion(let version, .start): "bad version byte \(version)"
        case .badVersion(let version, let stage): "bad version byte \(version) in the \(stage)"
        case .truncated(.start, 0): "closed before a request"
        case .truncated(let stage, 0): "closed before the \(stage)"
        case .truncated(let stage, let received): "truncated \(stage) (\(received) \(received == 1 ? "byte" : "bytes"))"
        case .unknownCommand(let version, let command): "unknown \(version) command \(command)"
        case .unsupportedAddressType(let type): "address type \(type) not supported"
        case .emptyHostName: "empty host name"
        case .hostNameTooLong: "host name longer than \(Socks4Request.maximumField) bytes"
        case .hostNameHasNUL: "host name holds a NUL byte"
        case .userIDTooLong: "user id longer than \(Socks4Request.maximumField) bytes"
        case .noMethods: "no authentication method offered"
        case .noAcceptableMethod(let offered):
            "no acceptable authentication method (offered: \(offered.map { String($0) }.joined(separator: " ")))"
        case .emptyUsername: "empty user name"
        case .reservedNotZero(let byte): "reserved byte \(byte), not 0"
        case .passwordRefused(let username): "password refused for \(printable(username))"
        case .passwordRequired: "SOCKS4 carries no password"
        }
    }
}

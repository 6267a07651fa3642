import GatewayKit

// SOCKS5 (RFC 1928) and its username/password subnegotiation (RFC 1929).

// MARK: - Methods

/// The authentication methods sockd can carry out (RFC 1928 section 3). GSSAPI (1) and the
/// private methods are never selected.
public enum Socks5Method: UInt8, Hashable, Sendable, CaseIterable, CustomStringConvertible {
    case noAuthentication = 0
    case usernamePassword = 2

    /// METHOD X'FF': the reply that none of the client's methods is acceptable.
    public static let noAcceptableMethods: UInt8 = 0xFF

    public var description: String {
        switch self {
        case .noAuthentication: "no authentication"
        case .usernamePassword: "username/password"
        }
    }
}

/// The client's greeting: `VER=5 NMETHODS METHODS`. Methods are kept as sent (any byte).
public struct Socks5Greeting: Hashable, Sendable {
    public var methods: [UInt8]

    public static let maximumLength = 2 + 255

    public init(methods: [UInt8]) {
        self.methods = methods
    }

    /// Reads a greeting from the start of `bytes`: VER 5 and at least one method.
    public static func parse(_ bytes: UnsafeRawBufferPointer) -> WireParse<Socks5Greeting> {
        var reader = WireReader(bytes)
        guard let version = reader.byte() else { return .incomplete }
        guard version == 5 else { return .malformed(.badVersion(version, .socks5Greeting)) }
        guard let count = reader.byte() else { return .incomplete }
        guard count > 0 else { return .malformed(.noMethods) }
        guard let methods = reader.take(Int(count)) else { return .incomplete }
        return .message(Socks5Greeting(methods: Array(methods)), length: reader.offset)
    }

    public static func parse(_ bytes: some Collection<UInt8>) -> WireParse<Socks5Greeting> {
        WireParse.of(bytes, parse)
    }

    /// The greeting as a client sends it (1 to 255 methods).
    public var bytes: [UInt8] {
        precondition(!methods.isEmpty && methods.count <= 255, "a greeting offers 1 to 255 methods")
        return [5, UInt8(methods.count)] + methods
    }
}

/// The server's choice: `VER=5 METHOD`.
public enum Socks5MethodSelection {
    /// The method chosen.
    public static func bytes(_ method: Socks5Method) -> [UInt8] { [5, method.rawValue] }
    /// None of the client's methods is acceptable (X'FF'); the client must close.
    public static let noAcceptableMethods: [UInt8] = [5, Socks5Method.noAcceptableMethods]
}

// MARK: - Username/password (RFC 1929)

/// `VER=1 ULEN UNAME PLEN PASSWD`.
public struct UsernamePasswordRequest: Hashable, Sendable {
    /// 1 to 255 bytes.
    public var username: [UInt8]
    /// 0 to 255 bytes. RFC 1929 says 1 to 255; an empty password is read and left to the
    /// check to refuse, so the log names the user it came with.
    public var password: [UInt8]

    public static let maximumLength = 3 + 2 * 255

    public init(username: [UInt8], password: [UInt8]) {
        self.username = username
        self.password = password
    }

    /// Reads the subnegotiation request from the start of `bytes`: VER 1, a user name that is
    /// not empty.
    public static func parse(_ bytes: UnsafeRawBufferPointer) -> WireParse<UsernamePasswordRequest> {
        var reader = WireReader(bytes)
        guard let version = reader.byte() else { return .incomplete }
        guard version == 1 else { return .malformed(.badVersion(version, .passwordRequest)) }
        guard let userLength = reader.byte() else { return .incomplete }
        guard userLength > 0 else { return .malformed(.emptyUsername) }
        guard let username = reader.take(Int(userLength)), let passwordLength = reader.byte(),
            let password = reader.take(Int(passwordLength))
        else { return .incomplete }
        return .message(
            UsernamePasswordRequest(username: Array(username), password: Array(password)), length: reader.offset)
    }

    public static func parse(_ bytes: some Collection<UInt8>) -> WireParse<UsernamePasswordRequest> {
        WireParse.of(bytes, parse)
    }

    /// The request as a client sends it.
    public var bytes: [UInt8] {
        precondition(!username.isEmpty && username.count <= 255 && password.count <= 255, "fields of 255 bytes")
        return [1, UInt8(username.count)] + username + [UInt8(password.count)] + password
    }
}

/// The server's answer: `VER=1 STATUS`, STATUS 0 for success; anything else is a failure,
/// after which the server closes.
public enum UsernamePasswordStatus {
    public static func bytes(accepted: Bool) -> [UInt8] { [1, accepted ? 0 : 1] }
}

// MARK: - Requests and replies

/// `VER=5 CMD RSV ATYP DST.ADDR DST.PORT`.
public struct Socks5Request: Hashable, Sendable {
    public var command: SocksCommand
    public var destination: SocksAddress

    /// The longest request: a host name of 255 bytes.
    public static let maximumLength = 4 + 1 + 255 + 2

    public init(command: SocksCommand, destination: SocksAddress) {
        self.command = command
        self.destination = destination
    }

    /// Reads a request from the start of `bytes`. In order: VER must be 5; CMD 1, 2 or 3; RSV
    /// is ignored (RFC 1928 reserves it; clients send 0); ATYP 1, 3 or 4; a host name is not
    /// empty and holds no NUL (no resolver could look it up).
    public static func parse(_ bytes: UnsafeRawBufferPointer) -> WireParse<Socks5Request> {
        var reader = WireReader(bytes)
        guard let version = reader.byte() else { return .incomplete }
        guard version == 5 else { return .malformed(.badVersion(version, .socks5Request)) }
        guard let code = reader.byte() else { return .incomplete }
        guard let command = SocksCommand(rawValue: code) else { return .malformed(.unknownCommand(.socks5, code)) }
        guard reader.byte() != nil else { return .incomplete }
        switch SocksAddress.readSocks5(&reader) {
        case .done(let destination):
            return .message(Socks5Request(command: command, destination: destination), length: reader.offset)
        case .incomplete: return .incomplete
        case .failed(let failure): return .malformed(failure)
        }
    }

    public static func parse(_ bytes: some Collection<UInt8>) -> WireParse<Socks5Request> {
        WireParse.of(bytes, parse)
    }

    /// The request as a client sends it (RSV 0).
    public var bytes: [UInt8] {
        var out: [UInt8] = [5, command.rawValue, 0]
        destination.appendSocks5(to: &out)
        return out
    }
}

/// `VER=5 REP RSV=0 ATYP BND.ADDR BND.PORT`.
public struct Socks5Reply: Hashable, Sendable {
    /// REP (``Outcome/socks5Code``).
    public var code: UInt8
    /// BND.ADDR and BND.PORT: the address sockd's connection is bound to, where its BIND
    /// listener waits (first reply) and who connected (second), where its UDP relay listens.
    public var bound: SocksAddress

    public init(code: UInt8, bound: SocksAddress) {
        self.code = code
        self.bound = bound
    }

    /// The reply for `outcome`.
    public init(_ outcome: Outcome, bound: SocksAddress = .unspecified) {
        self.init(code: outcome.socks5Code, bound: bound)
    }

    /// The reply's bytes. An IPv4-mapped address is sent as IPv4 (ATYP 1).
    public var bytes: [UInt8] {
        var out: [UInt8] = [5, code, 0]
        bound.appendSocks5(to: &out)
        return out
    }

    /// Reads a reply from the start of `bytes`, as a client would: VER 5, RSV 0, a known ATYP.
    public static func parse(_ bytes: UnsafeRawBufferPointer) -> WireParse<Socks5Reply> {
        var reader = WireReader(bytes)
        guard let version = reader.byte() else { return .incomplete }
        guard version == 5 else { return .malformed(.badVersion(version, .socks5Reply)) }
        guard let code = reader.byte(), let reserved = reader.byte() else { return .incomplete }
        guard reserved == 0 else { return .malformed(.reservedNotZero(reserved)) }
        switch SocksAddress.readSocks5(&reader) {
        case .done(let bound): return .message(Socks5Reply(code: code, bound: bound), length: reader.offset)
        case .incomplete: return .incomplete
        case .failed(let failure): return .malformed(failure)
        }
    }

    public static func parse(_ bytes: some Collection<UInt8>) -> WireParse<Socks5Reply> {
        WireParse.of(bytes, parse)
    }
}

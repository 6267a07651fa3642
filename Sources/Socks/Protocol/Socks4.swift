import GatewayKit

// SOCKS4 (Ying-Da Lee's "SOCKS: A protocol for TCP proxy across firewalls") and its SOCKS4a
// extension ("SOCKS 4A: A Simple Extension to SOCKS 4 Protocol").

/// A SOCKS4 or SOCKS4a request: `VN=4 CD DSTPORT DSTIP USERID NUL`, and for SOCKS4a (DSTIP
/// `0.0.0.x`, x not 0) a host name and NUL after the user id.
public struct Socks4Request: Hashable, Sendable {
    /// CONNECT (CD 1) or BIND (CD 2).
    public var command: SocksCommand
    /// DSTPORT.
    public var port: UInt16
    /// DSTIP as sent (for SOCKS4a, the `0.0.0.x` that announces the host name).
    public var address: IPAddress
    /// USERID, without its NUL: at most ``maximumField`` bytes, any byte but NUL.
    public var userID: [UInt8]
    /// SOCKS4a's host name, without its NUL: 1 to ``maximumField`` bytes. Nil for SOCKS4.
    public var hostName: [UInt8]?

    /// The longest user id and host name sockd reads (the protocol sets no bound; 255 is what
    /// SOCKS5 allows a user name and a host name).
    public static let maximumField = 255
    /// The longest request: the 8 fixed bytes, a user id and a host name with their NULs.
    public static let maximumLength = 8 + 2 * (maximumField + 1)

    public init(command: SocksCommand, port: UInt16, address: IPAddress, userID: [UInt8], hostName: [UInt8]? = nil) {
        self.command = command
        self.port = port
        self.address = address
        self.userID = userID
        self.hostName = hostName
    }

    /// A SOCKS4a request for `hostName`, with DSTIP 0.0.0.1.
    public init(command: SocksCommand, port: UInt16, hostName: [UInt8], userID: [UInt8]) {
        self.init(command: command, port: port, address: IPAddress(v4: 0, 0, 0, 1), userID: userID, hostName: hostName)
    }

    /// SOCKS4 or SOCKS4a.
    public var version: SocksVersion { hostName == nil ? .socks4 : .socks4a }

    /// Where the client wants to go: DSTIP, or SOCKS4a's host name.
    public var destination: SocksAddress {
        SocksAddress(host: hostName.map { .name($0) } ?? .ip(address), port: port)
    }

    /// Whether DSTIP announces a SOCKS4a host name: `0.0.0.x` with x not 0.
    static func announcesHostName(_ ip: UnsafeRawBufferPointer) -> Bool {
        ip[0] == 0 && ip[1] == 0 && ip[2] == 0 && ip[3] != 0
    }

    /// Reads a request from the start of `bytes`. In order: VN must be 4, CD 1 or 2; the user
    /// id ends with a NUL within 256 bytes, and so does a SOCKS4a host name, which may not be
    /// empty.
    public static func parse(_ bytes: UnsafeRawBufferPointer) -> WireParse<Socks4Request> {
        var reader = WireReader(bytes)
        guard let version = reader.byte() else { return .incomplete }
        guard version == 4 else { return .malformed(.badVersion(version, .socks4Request)) }
        guard let code = reader.byte() else { return .incomplete }
        guard let command = SocksCommand(rawValue: code), command != .udpAssociate else {
            return .malformed(.unknownCommand(.socks4, code))
        }
        guard let port = reader.port(), let ip = reader.take(4) else { return .incomplete }
        let userID: [UInt8]
        switch reader.nulTerminated(limit: maximumField, tooLong: .userIDTooLong) {
        case .done(let value): userID = value
        case .incomplete: return .incomplete
        case .failed(let failure): return .malformed(failure)
        }
        var request = Socks4Request(command: command, port: port, address: IPAddress(bytes: ip)!, userID: userID)
        if announcesHostName(ip) {
            switch reader.nulTerminated(limit: maximumField, tooLong: .hostNameTooLong) {
            case .done(let name) where name.isEmpty: return .malformed(.emptyHostName)
            case .done(let name): request.hostName = name
            case .incomplete: return .incomplete
            case .failed(let failure): return .malformed(failure)
            }
        }
        return .message(request, length: reader.offset)
    }

    /// ``parse(_:)`` on any bytes.
    public static func parse(_ bytes: some Collection<UInt8>) -> WireParse<Socks4Request> {
        WireParse.of(bytes, parse)
    }

    /// The request as a client sends it. DSTIP must be an IPv4 address (SOCKS4 has no other).
    public var bytes: [UInt8] {
        precondition(address.family == .v4, "SOCKS4 carries IPv4 addresses only")
        var out: [UInt8] = [4, command.rawValue, UInt8(port >> 8), UInt8(port & 0xFF)]
        out += address.bytes
        out += userID
        out.append(0)
        if let hostName {
            out += hostName
            out.append(0)
        }
        return out
    }
}

/// A SOCKS4 reply: `VN=0 CD DSTPORT DSTIP`, 8 bytes. CD is 90 (granted), 91 (rejected or
/// failed), 92 (no identd) or 93 (identd names another user); for BIND, DSTPORT and DSTIP say
/// where sockd listens for the peer (first reply) and who connected (second).
public struct Socks4Reply: Hashable, Sendable {
    public var code: UInt8
    public var port: UInt16
    /// An IPv4 address (SOCKS4 carries no other).
    public var address: IPAddress

    public static let length = 8

    public init(code: UInt8, port: UInt16, address: IPAddress) {
        self.code = code
        self.port = port
        self.address = address
    }

    /// The reply for `outcome` naming `bound`. SOCKS4 can name only an IPv4 address: an
    /// IPv4-mapped one is unmapped, and an IPv6 address or a name is sent as 0.0.0.0 (with the
    /// port).
    public init(_ outcome: Outcome, bound: SocksAddress = .unspecified) {
        var address = IPAddress.anyV4
        if case .ip(let ip) = bound.host.unmapped, ip.family == .v4 { address = ip }
        self.init(code: outcome.socks4Code, port: bound.port, address: address)
    }

    /// The 8 bytes.
    public var bytes: [UInt8] {
        precondition(address.family == .v4, "SOCKS4 carries IPv4 addresses only")
        return [0, code, UInt8(port >> 8), UInt8(port & 0xFF)] + address.bytes
    }

    /// Reads a reply (as a client would): VN 0 and 8 bytes; nil for anything else.
    public static func parse(_ bytes: some Collection<UInt8>) -> Socks4Reply? {
        let b = Array(bytes)
        guard b.count == length, b[0] == 0 else { return nil }
        return Socks4Reply(code: b[1], port: UInt16(b[2]) << 8 | UInt16(b[3]), address: IPAddress(bytes: b[4...])!)
    }
}

/// A client's request, whole: what the session then decides on.
public struct SocksRequest: Hashable, Sendable {
    public var version: SocksVersion
    /// CONNECT, BIND, or (SOCKS5 only) UDP ASSOCIATE.
    public var command: SocksCommand
    /// DST.ADDR and DST.PORT: an address, or a name to resolve (SOCKS4a, SOCKS5 ATYP 3).
    public var destination: SocksAddress
    /// The SOCKS4 user id, or the SOCKS5 user name (empty without username/password).
    public var user: [UInt8]
    /// The SOCKS5 method used; nil for SOCKS4.
    public var method: Socks5Method?

    public init(
        version: SocksVersion, command: SocksCommand, destination: SocksAddress, user: [UInt8],
        method: Socks5Method?
    ) {
        self.version = version
        self.command = command
        self.destination = destination
        self.user = user
        self.method = method
    }

    /// The reply to this request in its protocol's form: for `outcome`, naming `bound` (where
    /// sockd's connection or listener is bound, or who connected to a BIND listener).
    public func reply(_ outcome: Outcome, bound: SocksAddress = .unspecified) -> [UInt8] {
        version == .socks5 ? Socks5Reply(outcome, bound: bound).bytes : Socks4Reply(outcome, bound: bound).bytes
    }
}

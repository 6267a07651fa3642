import GatewayKit

// MARK: - What a request names

/// Which protocol a client speaks: SOCKS4, SOCKS4a (SOCKS4 with a host name for sockd to
/// resolve) or SOCKS5 (RFC 1928).
public enum SocksVersion: Hashable, Sendable, CustomStringConvertible {
    case socks4
    case socks4a
    case socks5

    /// `SOCKS4`, `SOCKS4a`, `SOCKS5`: the log's words.
    public var description: String {
        switch self {
        case .socks4: "SOCKS4"
        case .socks4a: "SOCKS4a"
        case .socks5: "SOCKS5"
        }
    }
}

/// A request's command, with its number on the wire (SOCKS4's CD, SOCKS5's CMD: the same
/// numbers; UDP ASSOCIATE exists only in SOCKS5).
public enum SocksCommand: UInt8, Hashable, Sendable, CaseIterable, CustomStringConvertible {
    case connect = 1
    case bind = 2
    case udpAssociate = 3

    /// `CONNECT`, `BIND`, `UDP ASSOCIATE`: the RFC's words.
    public var description: String {
        switch self {
        case .connect: "CONNECT"
        case .bind: "BIND"
        case .udpAssociate: "UDP ASSOCIATE"
        }
    }
}

/// A host on the wire: an IPv4 or IPv6 address, or a name for sockd to resolve (SOCKS4a, SOCKS5
/// ATYP 3). A name is 1 to 255 bytes without NUL, as every parser here yields it and every
/// encoder expects it; it may hold any other byte, so logs show it through ``printable(_:)``.
public enum SocksHost: Hashable, Sendable, CustomStringConvertible {
    case ip(IPAddress)
    case name([UInt8])

    /// The address unmapped (`::ffff:192.0.2.1` as `192.0.2.1`); a name unchanged.
    public var unmapped: SocksHost {
        if case .ip(let address) = self { return .ip(address.unmapped) }
        return self
    }

    /// An address in ucspi-tcp's text form, a name in printable form.
    public var description: String {
        switch self {
        case .ip(let address): address.unmapped.description
        case .name(let name): printable(name)
        }
    }
}

/// A host and a port: a request's destination, or the address a reply names (where sockd's
/// outgoing connection or BIND listener is bound, where its UDP relay listens).
public struct SocksAddress: Hashable, Sendable, CustomStringConvertible {
    public var host: SocksHost
    public var port: UInt16

    public init(host: SocksHost, port: UInt16) {
        self.host = host
        self.port = port
    }

    /// `address:port`, with an IPv6 address in brackets (as ``Endpoint``), or `name:port`.
    public init(_ address: IPAddress, port: UInt16) {
        self.init(host: .ip(address), port: port)
    }

    /// 0.0.0.0 port 0: what a reply names when there is nothing to name (a refusal).
    public static let unspecified = SocksAddress(IPAddress.anyV4, port: 0)

    /// `192.0.2.1:80`, `[2001:db8::1]:80`, `www.example.org:80`: the form of the log lines.
    public var description: String {
        switch host {
        case .ip(let address): Endpoint.text(address, port)
        case .name(let name): "\(printable(name)):\(port)"
        }
    }
}

// MARK: - SOCKS5 addresses (RFC 1928 section 5)

/// SOCKS5's ATYP values.
enum AddressType {
    static let ipv4: UInt8 = 1
    static let domainName: UInt8 = 3
    static let ipv6: UInt8 = 4
}

extension SocksAddress {
    /// ATYP, the address and the port as SOCKS5 writes them (requests, replies, UDP headers).
    /// An IPv4-mapped IPv6 address is written as the IPv4 address it is (a dual-stack socket's
    /// view of an IPv4 peer), so a client sees addresses in its own family.
    func appendSocks5(to out: inout [UInt8]) {
        switch host.unmapped {
        case .ip(let address):
            out.append(address.family == .v4 ? AddressType.ipv4 : AddressType.ipv6)
            out += address.bytes
        case .name(let name):
            precondition(!name.isEmpty && name.count <= 255, "a SOCKS5 host name has 1 to 255 bytes")
            out.append(AddressType.domainName)
            out.append(UInt8(name.count))
            out += name
        }
        out.append(UInt8(port >> 8))
        out.append(UInt8(port & 0xFF))
    }

    /// ATYP, the address and the port, read from `reader` (RFC 1928: the request's DST.ADDR and
    /// DST.PORT, the UDP header's, a reply's BND.ADDR and BND.PORT).
    static func readSocks5(_ reader: inout WireReader) -> WireStep<SocksAddress> {
        guard let type = reader.byte() else { return .incomplete }
        let host: SocksHost
        switch type {
        case AddressType.ipv4:
            guard let bytes = reader.take(4) else { return .incomplete }
            host = .ip(IPAddress(bytes: bytes)!)
        case AddressType.ipv6:
            guard let bytes = reader.take(16) else { return .incomplete }
            host = .ip(IPAddress(bytes: bytes)!)
        case AddressType.domainName:
            guard let length = reader.byte() else { return .incomplete }
            guard length > 0 else { return .failed(.emptyHostName) }
            guard let name = reader.take(Int(length)) else { return .incomplete }
            guard !name.contains(0) else { return .failed(.hostNameHasNUL) }
            host = .name(Array(name))
        default:
            return .failed(.unsupportedAddressType(type))
        }
        guard let port = reader.port() else { return .incomplete }
        return .done(SocksAddress(host: host, port: port))
    }
}

// MARK: - Reading bytes

/// The result of reading one message from the start of some bytes: more bytes are needed,
/// the message and how many bytes it took, or what is wrong with it. Every parser here decides
/// as soon as the bytes read so far decide (so a message split anywhere reads the same), and
/// never answers `incomplete` for as many bytes as its message's longest form.
public enum WireParse<Message: Equatable & Sendable>: Equatable, Sendable {
    case incomplete
    case message(Message, length: Int)
    case malformed(SocksFailure)
}

/// One field's reading: done, incomplete, or a failure.
enum WireStep<Value> {
    case done(Value)
    case incomplete
    case failed(SocksFailure)
}

/// A cursor over borrowed bytes, reading network-order fields; nil when the bytes end.
struct WireReader {
    let bytes: UnsafeRawBufferPointer
    var offset = 0

    init(_ bytes: UnsafeRawBufferPointer) {
        self.bytes = bytes
    }

    var remaining: Int { bytes.count - offset }

    mutating func byte() -> UInt8? {
        guard offset < bytes.count else { return nil }
        defer { offset += 1 }
        return bytes[offset]
    }

    mutating func port() -> UInt16? {
        guard remaining >= 2 else { return nil }
        defer { offset += 2 }
        return UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1])
    }

    mutating func take(_ count: Int) -> UnsafeRawBufferPointer? {
        guard remaining >= count else { return nil }
        defer { offset += count }
        return UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + count])
    }

    /// The bytes up to a NUL (which is consumed, not returned) among the next `limit + 1`
    /// bytes: `.incomplete` while fewer have come without one, `.failed(tooLong)` when they
    /// have all come without one.
    mutating func nulTerminated(limit: Int, tooLong: SocksFailure) -> WireStep<[UInt8]> {
        let window = UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + min(remaining, limit + 1)])
        guard let nul = window.firstIndex(of: 0) else {
            return window.count > limit ? .failed(tooLong) : .incomplete
        }
        let value = Array(window[..<nul])
        offset += nul + 1
        return .done(value)
    }
}

extension WireParse {
    /// Parses `bytes` with `parse` (which works on a borrowed buffer).
    static func of(
        _ bytes: some Collection<UInt8>, _ parse: (UnsafeRawBufferPointer) -> WireParse<Message>
    ) -> WireParse<Message> {
        if let result = bytes.withContiguousStorageIfAvailable({ parse(UnsafeRawBufferPointer($0)) }) {
            return result
        }
        return Array(bytes).withUnsafeBytes(parse)
    }
}

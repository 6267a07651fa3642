/// The header of every datagram of a SOCKS5 UDP relay (RFC 1928 section 7):
/// `RSV=X'0000' FRAG ATYP DST.ADDR DST.PORT DATA`. From the client, DST is where the data goes;
/// to the client, the same header names where the data came from.
///
/// sockd does not reassemble: a datagram with FRAG other than 0 is dropped, as RFC 1928 allows
/// an implementation that does not support fragmentation to do.
public enum SocksDatagram {
    /// What a datagram from the client holds.
    public enum Parsed: Equatable, Sendable {
        /// A whole datagram for `destination`; the data starts at `payloadOffset`.
        case datagram(destination: SocksAddress, payloadOffset: Int)
        /// A fragment (FRAG not 0): dropped.
        case fragment(UInt8)
        /// Not a SOCKS5 UDP header (too short, an unknown ATYP, an empty name...).
        case malformed(SocksFailure)
    }

    /// The longest header: a host name of 255 bytes.
    public static let maximumHeaderLength = 4 + 1 + 255 + 2

    /// Reads the header of `datagram`. RSV is ignored (clients send 0), FRAG is looked at
    /// before the address.
    public static func parse(_ datagram: UnsafeRawBufferPointer) -> Parsed {
        var reader = WireReader(datagram)
        guard reader.byte() != nil, reader.byte() != nil, let fragment = reader.byte() else {
            return .malformed(.truncated(.udpHeader, received: datagram.count))
        }
        guard fragment == 0 else { return .fragment(fragment) }
        switch SocksAddress.readSocks5(&reader) {
        case .done(let destination): return .datagram(destination: destination, payloadOffset: reader.offset)
        case .incomplete: return .malformed(.truncated(.udpHeader, received: datagram.count))
        case .failed(let failure): return .malformed(failure)
        }
    }

    /// ``parse(_:)`` on any bytes.
    public static func parse(_ datagram: some Collection<UInt8>) -> Parsed {
        if let parsed = datagram.withContiguousStorageIfAvailable({ parse(UnsafeRawBufferPointer($0)) }) {
            return parsed
        }
        return Array(datagram).withUnsafeBytes { parse($0) }
    }

    /// The header for a datagram from (or to) `address`, FRAG 0. An IPv4-mapped address is
    /// written as IPv4 (ATYP 1), so a client sees its peers in their own family.
    public static func header(_ address: SocksAddress) -> [UInt8] {
        var out: [UInt8] = [0, 0, 0]
        address.appendSocks5(to: &out)
        return out
    }

    /// The header and `payload`: the datagram as sent.
    public static func datagram(_ address: SocksAddress, payload: some Collection<UInt8>) -> [UInt8] {
        var out = header(address)
        out += payload
        return out
    }
}

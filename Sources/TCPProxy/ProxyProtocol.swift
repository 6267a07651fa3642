import GatewayKit
import TLS

/// HAProxy's PROXY protocol header (haproxy's doc/proxy-protocol.txt), which tcpproxy writes
/// to the server before relaying so that the server learns who the client really is.
///
/// `client` is the client's address as tcpproxy sees it (the header's source); `server` is
/// the address the client connected to, tcpproxy's local address (the header's destination).
///
/// Both ends are written in one family. When both are IPv4 (plain or IPv4-mapped, as a
/// dual-stack listener reports IPv4 clients) the header says TCP4 with plain IPv4 addresses.
/// Otherwise it says TCP6, and an IPv4 end is written IPv4-mapped (`::ffff:a.b.c.d`). IPv6
/// scope ids are not carried: the protocol has no field for them.
public enum ProxyProtocolHeader {
    /// The 12 bytes that open every version 2 header.
    public static let v2Signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]

    /// The version 1 (text) header: `PROXY TCP4 src dst sport dport\r\n` or
    /// `PROXY TCP6 src dst sport dport\r\n`, at most 104 bytes.
    public static func v1(client: Endpoint, server: Endpoint) -> [UInt8] {
        let (v4, source, destination) = addresses(client: client, server: server)
        let line = "PROXY \(v4 ? "TCP4" : "TCP6") \(source) \(destination) \(client.port) \(server.port)\r\n"
        return Array(line.utf8)
    }

    /// The version 2 (binary) header: the signature, 0x21 (version 2, command PROXY), 0x11 (TCP
    /// over IPv4) or 0x21 (TCP over IPv6), the length of the address block (12 or 36) in
    /// network order, then source address, destination address, source port and destination
    /// port in network order. 28 bytes for IPv4, 52 for IPv6.
    ///
    /// A client that came over TLS adds TLVs after the addresses, as HAProxy writes them:
    /// PP2_TYPE_AUTHORITY (0x02) with the SNI name, and PP2_TYPE_SSL (0x20) with the client
    /// flags (SSL, and a certificate shown on this connection), the verify result (0: verified)
    /// and the sub-TLVs VERSION (0x21), CN (0x22, the client certificate's common name) and
    /// CIPHER (0x23).
    public static func v2(client: Endpoint, server: Endpoint, tls: TLSFacts? = nil) -> [UInt8] {
        let (v4, source, destination) = addresses(client: client, server: server)
        let tlvs = tls.map(tlsTLVs) ?? []
        let length = 2 * source.bytes.count + 4 + tlvs.count
        var header = v2Signature
        header.reserveCapacity(16 + length)
        header.append(0x21)
        header.append(v4 ? 0x11 : 0x21)
        header.append(UInt8(length >> 8))
        header.append(UInt8(length & 0xff))
        header += source.bytes
        header += destination.bytes
        header.append(UInt8(client.port >> 8))
        header.append(UInt8(client.port & 0xff))
        header.append(UInt8(server.port >> 8))
        header.append(UInt8(server.port & 0xff))
        header += tlvs
        return header
    }

    static func tlsTLVs(_ facts: TLSFacts) -> [UInt8] {
        func tlv(_ type: UInt8, _ value: [UInt8]) -> [UInt8] {
            let value = value.prefix(0xFFFF)
            return [type, UInt8(value.count >> 8), UInt8(value.count & 0xFF)] + value
        }
        var out: [UInt8] = []
        if let name = facts.serverName, !name.isEmpty { out += tlv(0x02, Array(name.utf8)) }
        let certificate = facts.peerSubject != nil
        var ssl: [UInt8] = [certificate ? 0x03 : 0x01, 0, 0, 0, 0]
        ssl += tlv(0x21, Array(facts.version.utf8))
        if let common = facts.peerSubject.flatMap(commonName) { ssl += tlv(0x22, Array(common.utf8)) }
        ssl += tlv(0x23, Array(facts.cipher.utf8))
        return out + tlv(0x20, ssl)
    }

    /// The CN of an RFC 2253 subject (`CN=client1,O=Bastion`), escapes kept as written.
    static func commonName(_ subject: String) -> String? {
        var part = ""
        var escaped = false
        var parts: [String] = []
        for c in subject {
            if escaped {
                part.append(c)
                escaped = false
            } else if c == "\\" {
                part.append(c)
                escaped = true
            } else if c == "," || c == "+" {
                parts.append(part)
                part = ""
            } else {
                part.append(c)
            }
        }
        parts.append(part)
        return parts.first { $0.hasPrefix("CN=") }.map { String($0.dropFirst(3)) }
    }

    /// Both addresses in the one family the header uses: plain IPv4 when both ends are IPv4
    /// or IPv4-mapped, else IPv6 with any IPv4 end mapped.
    static func addresses(client: Endpoint, server: Endpoint) -> (v4: Bool, source: IPAddress, destination: IPAddress) {
        let source = client.address.unmapped
        let destination = server.address.unmapped
        if source.family == .v4 && destination.family == .v4 {
            return (true, source, destination)
        }
        return (false, source.v4Mapped, destination.v4Mapped)
    }
}

extension ProxyProtocolVersion {
    /// The header of this version for a connection from `client` to `server` (tcpproxy's
    /// local address); see ``ProxyProtocolHeader``. Version 2 carries the client's TLS.
    public func header(client: Endpoint, server: Endpoint, tls: TLSFacts? = nil) -> [UInt8] {
        switch self {
        case .v1: return ProxyProtocolHeader.v1(client: client, server: server)
        case .v2: return ProxyProtocolHeader.v2(client: client, server: server, tls: tls)
        }
    }
}

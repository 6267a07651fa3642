import GatewayKit
import TCPProxy

/// The PROXY protocol headers tcpproxy writes to a server, for any pair of addresses a
/// client and a listener can have (IPv4, IPv6, IPv4-mapped, scoped), read back by a decoder
/// written here from haproxy's proxy-protocol.txt, not from the writer: the header must say
/// exactly who connected where, in one family, within the specification's sizes (v1 at most
/// 107 bytes with its CRLF, v2 28 or 52).
enum ProxyHeaderHarness {
    static func endpoint(_ input: inout FuzzReader) -> Endpoint {
        let kind = input.below(3)
        var raw: [UInt8] = []
        for _ in 0..<(kind == 0 ? 4 : 16) { raw.append(input.byte()) }
        if kind == 2 {
            // IPv4-mapped, as a dual-stack listener reports an IPv4 client.
            raw.replaceSubrange(0..<12, with: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff])
        }
        let port = UInt16(input.byte()) << 8 | UInt16(input.byte())
        return Endpoint(address: IPAddress(bytes: raw)!, port: port)
    }

    static func run(_ data: UnsafeRawBufferPointer) {
        var input = FuzzReader(data)
        let client = endpoint(&input)
        let server = endpoint(&input)
        let source = client.address.unmapped
        let destination = server.address.unmapped
        let v4 = source.family == .v4 && destination.family == .v4

        let v1 = ProxyProtocolHeader.v1(client: client, server: server)
        precondition(v1.count <= 107 && v1.suffix(2) == [13, 10], "v1 is one CRLF line of at most 107 bytes")
        let words = String(decoding: v1.dropLast(2), as: UTF8.self).split(
            separator: " ", omittingEmptySubsequences: false)
        precondition(words.count == 6 && words[0] == "PROXY" && words[1] == (v4 ? "TCP4" : "TCP6"), "v1's words")
        let family: IPAddress.Family = v4 ? .v4 : .v6
        let readSource = IPAddress(parsing: String(words[2]), family: family)
        let readDestination = IPAddress(parsing: String(words[3]), family: family)
        precondition(readSource?.unmapped == source && readDestination?.unmapped == destination, "v1's addresses")
        precondition(words[4] == "\(client.port)" && words[5] == "\(server.port)", "v1's ports, in decimal")

        let v2 = ProxyProtocolHeader.v2(client: client, server: server)
        precondition(Array(v2.prefix(12)) == ProxyProtocolHeader.v2Signature, "v2's signature")
        precondition(v2[12] == 0x21 && v2[13] == (v4 ? 0x11 : 0x21), "v2: version 2 PROXY, TCP over the family")
        let length = Int(v2[14]) << 8 | Int(v2[15])
        precondition(length == (v4 ? 12 : 36) && v2.count == 16 + length, "v2's length")
        let size = v4 ? 4 : 16
        let addresses = Array(v2[16...])
        precondition(IPAddress(bytes: addresses[0..<size])?.unmapped == source, "v2's source")
        precondition(IPAddress(bytes: addresses[size..<(2 * size)])?.unmapped == destination, "v2's destination")
        let ports = addresses[(2 * size)...].map(UInt16.init)
        precondition(ports[ports.startIndex] << 8 | ports[ports.startIndex + 1] == client.port, "v2's source port")
        precondition(ports[ports.startIndex + 2] << 8 | ports[ports.startIndex + 3] == server.port, "v2's port")
    }
}

import GatewayKit
import TCPProxy
import Testing

private func endpoint(_ address: String, _ port: UInt16, scope: UInt32 = 0) -> Endpoint {
    Endpoint(address: IPAddress(address)!, port: port, scopeID: scope)
}

private let signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]

// MARK: - A decoder for the tests only

/// What a PROXY header says, decoded independently of the encoder.
private struct DecodedHeader: Equatable, CustomStringConvertible {
    var tcp4: Bool
    var source: IPAddress
    var destination: IPAddress
    var sourcePort: UInt16
    var destinationPort: UInt16

    var description: String {
        "\(tcp4 ? "TCP4" : "TCP6") \(source) \(destination) \(sourcePort) \(destinationPort)"
    }

    /// Decodes a version 1 header, which must be exactly one line ending in CRLF.
    static func v1(_ bytes: [UInt8]) -> DecodedHeader? {
        guard bytes.count <= 107, bytes.suffix(2) == [0x0D, 0x0A] else { return nil }
        let words = bytes.dropLast(2).split(separator: 0x20, omittingEmptySubsequences: false)
            .map { String(decoding: $0, as: UTF8.self) }
        guard words.count == 6, words[0] == "PROXY", words[1] == "TCP4" || words[1] == "TCP6" else { return nil }
        let family: IPAddress.Family = words[1] == "TCP4" ? .v4 : .v6
        guard let source = IPAddress(parsing: words[2], family: family),
            let destination = IPAddress(parsing: words[3], family: family),
            let sourcePort = port(words[4]), let destinationPort = port(words[5])
        else { return nil }
        return DecodedHeader(
            tcp4: family == .v4, source: source, destination: destination,
            sourcePort: sourcePort, destinationPort: destinationPort)
    }

    /// Decodes a version 2 header with command PROXY and a TCP address block.
    static func v2(_ bytes: [UInt8]) -> DecodedHeader? {
        guard bytes.count >= 16, Array(bytes[0..<12]) == signature, bytes[12] == 0x21 else { return nil }
        let length = Int(bytes[14]) << 8 | Int(bytes[15])
        guard bytes.count == 16 + length else { return nil }
        let size: Int
        switch bytes[13] {
        case 0x11: size = 4
        case 0x21: size = 16
        default: return nil
        }
        guard length >= 2 * size + 4 else { return nil }
        let block = Array(bytes[16...])
        func port(at offset: Int) -> UInt16 { UInt16(block[offset]) << 8 | UInt16(block[offset + 1]) }
        return DecodedHeader(
            tcp4: size == 4,
            source: IPAddress(bytes: block[0..<size])!,
            destination: IPAddress(bytes: block[size..<2 * size])!,
            sourcePort: port(at: 2 * size),
            destinationPort: port(at: 2 * size + 2))
    }

    /// A decimal port as the spec allows it: digits, no leading zero (except `0` itself).
    private static func port(_ text: String) -> UInt16? {
        guard !text.isEmpty, text == "0" || !text.hasPrefix("0"), text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 })
        else { return nil }
        return UInt16(text)
    }
}

// MARK: - Tests

@Suite("PROXY protocol header")
struct ProxyProtocolTests {
    // MARK: Version 1

    @Test(arguments: [
        // IPv4 both ends, plain or mapped in any combination: TCP4 with plain IPv4.
        (endpoint("192.0.2.7", 40000), endpoint("10.0.0.5", 8080), "PROXY TCP4 192.0.2.7 10.0.0.5 40000 8080\r\n"),
        (
            endpoint("::ffff:192.0.2.7", 40000), endpoint("::ffff:10.0.0.5", 8080),
            "PROXY TCP4 192.0.2.7 10.0.0.5 40000 8080\r\n"
        ),
        (endpoint("::ffff:192.0.2.7", 1), endpoint("10.0.0.5", 2), "PROXY TCP4 192.0.2.7 10.0.0.5 1 2\r\n"),
        (endpoint("192.0.2.7", 1), endpoint("::ffff:10.0.0.5", 2), "PROXY TCP4 192.0.2.7 10.0.0.5 1 2\r\n"),
        // The spec's longest TCP4 line.
        (
            endpoint("255.255.255.255", 65535), endpoint("255.255.255.255", 65535),
            "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n"
        ),
        (endpoint("0.0.0.0", 0), endpoint("127.0.0.1", 0), "PROXY TCP4 0.0.0.0 127.0.0.1 0 0\r\n"),
        // IPv6 both ends.
        (
            endpoint("2001:db8::1", 40000), endpoint("2001:db8:0:1::2", 443),
            "PROXY TCP6 2001:db8::1 2001:db8:0:1::2 40000 443\r\n"
        ),
        (endpoint("::1", 5000), endpoint("::1", 25), "PROXY TCP6 ::1 ::1 5000 25\r\n"),
        // A scope id has no place in the header.
        (
            endpoint("fe80::1", 5000, scope: 3), endpoint("fe80::2", 22, scope: 3),
            "PROXY TCP6 fe80::1 fe80::2 5000 22\r\n"
        ),
        // Mixed families: the IPv4 end is mapped into IPv6.
        (
            endpoint("192.0.2.7", 40000), endpoint("2001:db8::2", 443),
            "PROXY TCP6 ::ffff:192.0.2.7 2001:db8::2 40000 443\r\n"
        ),
        (
            endpoint("::ffff:192.0.2.7", 40000), endpoint("2001:db8::2", 443),
            "PROXY TCP6 ::ffff:192.0.2.7 2001:db8::2 40000 443\r\n"
        ),
        (
            endpoint("2001:db8::1", 40000), endpoint("10.0.0.5", 80),
            "PROXY TCP6 2001:db8::1 ::ffff:10.0.0.5 40000 80\r\n"
        ),
    ])
    func v1(client: Endpoint, server: Endpoint, expected: String) {
        let header = ProxyProtocolHeader.v1(client: client, server: server)
        #expect(String(decoding: header, as: UTF8.self) == expected)
        #expect(header == Array(expected.utf8))
        #expect(ProxyProtocolVersion.v1.header(client: client, server: server) == header)
    }

    @Test func v1LongestLineFitsTheSpecLimit() {
        let wide = endpoint("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", 65535)
        let header = ProxyProtocolHeader.v1(client: wide, server: wide)
        #expect(header.count == 104)
        #expect(header.count <= 107)
    }

    // MARK: Version 2

    @Test func v2IPv4() {
        let expected: [UInt8] =
            signature + [
                0x21, 0x11, 0x00, 0x0C,
                192, 0, 2, 7,
                10, 0, 0, 5,
                0x9C, 0x40,  // 40000
                0x1F, 0x90,  // 8080
            ]
        let client = endpoint("192.0.2.7", 40000)
        let server = endpoint("10.0.0.5", 8080)
        #expect(ProxyProtocolHeader.v2(client: client, server: server) == expected)
        #expect(ProxyProtocolVersion.v2.header(client: client, server: server) == expected)
        #expect(expected.count == 28)
        // Mapped ends are written as plain IPv4 too.
        let mappedClient = endpoint("::ffff:192.0.2.7", 40000)
        #expect(ProxyProtocolHeader.v2(client: mappedClient, server: endpoint("::ffff:10.0.0.5", 8080)) == expected)
        #expect(ProxyProtocolHeader.v2(client: client, server: endpoint("::ffff:10.0.0.5", 8080)) == expected)
    }

    @Test func v2IPv6() {
        let expected: [UInt8] =
            signature + [
                0x21, 0x21, 0x00, 0x24,
                0x20, 0x01, 0x0D, 0xB8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01,
                0x20, 0x01, 0x0D, 0xB8, 0, 0, 0, 0x01, 0, 0, 0, 0, 0, 0, 0, 0x02,
                0x9C, 0x40,  // 40000
                0x01, 0xBB,  // 443
            ]
        let client = endpoint("2001:db8::1", 40000, scope: 7)
        let server = endpoint("2001:db8:0:1::2", 443)
        #expect(ProxyProtocolHeader.v2(client: client, server: server) == expected)
        #expect(ProxyProtocolVersion.v2.header(client: client, server: server) == expected)
        #expect(expected.count == 52)
    }

    @Test func v2Mixed() {
        let expected: [UInt8] =
            signature + [
                0x21, 0x21, 0x00, 0x24,
                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 192, 0, 2, 7,
                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01,
                0x00, 0x50,  // 80
                0xFF, 0xFF,  // 65535
            ]
        #expect(ProxyProtocolHeader.v2(client: endpoint("192.0.2.7", 80), server: endpoint("::1", 65535)) == expected)
        #expect(
            ProxyProtocolHeader.v2(client: endpoint("::ffff:192.0.2.7", 80), server: endpoint("::1", 65535))
                == expected)
    }

    @Test func v2Signature() {
        #expect(ProxyProtocolHeader.v2Signature == signature)
        #expect(String(decoding: signature[7..<11], as: UTF8.self) == "QUIT")
    }

    // MARK: Round trips through the test decoder

    static let pairs: [(Endpoint, Endpoint)] = [
        (endpoint("192.0.2.7", 40000), endpoint("10.0.0.5", 8080)),
        (endpoint("::ffff:1.2.3.4", 1), endpoint("::ffff:5.6.7.8", 65535)),
        (endpoint("1.2.3.4", 0), endpoint("::ffff:5.6.7.8", 9)),
        (endpoint("2001:db8::1", 40000), endpoint("2001:db8::2", 443)),
        (endpoint("::", 1), endpoint("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 2)),
        (endpoint("fe80::1:2:3:4", 1234, scope: 2), endpoint("::1", 22)),
        (endpoint("192.0.2.7", 40000), endpoint("2001:db8::2", 443)),
        (endpoint("2001:db8::1", 40000), endpoint("::ffff:10.0.0.5", 80)),
    ]

    /// What the header must carry: plain IPv4 when both ends are IPv4, else both as IPv6.
    private static func expectation(_ client: Endpoint, _ server: Endpoint) -> DecodedHeader {
        let source = client.address.unmapped
        let destination = server.address.unmapped
        let tcp4 = source.family == .v4 && destination.family == .v4
        return DecodedHeader(
            tcp4: tcp4,
            source: tcp4 ? source : source.v4Mapped,
            destination: tcp4 ? destination : destination.v4Mapped,
            sourcePort: client.port, destinationPort: server.port)
    }

    @Test(arguments: pairs.indices)
    func roundTrip(index: Int) throws {
        let (client, server) = Self.pairs[index]
        let expected = Self.expectation(client, server)
        let one = try #require(DecodedHeader.v1(ProxyProtocolHeader.v1(client: client, server: server)))
        let two = try #require(DecodedHeader.v2(ProxyProtocolHeader.v2(client: client, server: server)))
        #expect(one == expected)
        #expect(two == expected)
    }

    @Test func randomRoundTrips() throws {
        var generator = SystemRandomNumberGenerator()
        func randomBytes(_ count: Int) -> [UInt8] {
            (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
        }
        func randomEndpoint() -> Endpoint {
            let address: IPAddress
            switch Int.random(in: 0..<3, using: &generator) {
            case 0: address = IPAddress(bytes: randomBytes(4))!
            case 1: address = IPAddress(bytes: randomBytes(4))!.v4Mapped
            default: address = IPAddress(bytes: randomBytes(16))!
            }
            return Endpoint(address: address, port: UInt16.random(in: 0...65535, using: &generator))
        }
        for _ in 0..<500 {
            let client = randomEndpoint()
            let server = randomEndpoint()
            let expected = Self.expectation(client, server)
            let v1 = ProxyProtocolHeader.v1(client: client, server: server)
            let v2 = ProxyProtocolHeader.v2(client: client, server: server)
            #expect(DecodedHeader.v1(v1) == expected, "\(String(decoding: v1, as: UTF8.self))")
            #expect(DecodedHeader.v2(v2) == expected, "\(v2)")
            #expect(v2.count == (expected.tcp4 ? 28 : 52))
        }
    }

    @Test func decoderRejectsDamage() {
        let v1 = ProxyProtocolHeader.v1(client: endpoint("1.2.3.4", 5), server: endpoint("6.7.8.9", 10))
        #expect(DecodedHeader.v1(v1) != nil)
        #expect(DecodedHeader.v1(Array(v1.dropLast())) == nil)
        #expect(DecodedHeader.v1(Array("PROXY TCP6 1.2.3.4 6.7.8.9 5 10\r\n".utf8)) == nil)
        #expect(DecodedHeader.v1(Array("PROXY TCP4 1.2.3.4 6.7.8.9 05 10\r\n".utf8)) == nil)
        let v2 = ProxyProtocolHeader.v2(client: endpoint("1.2.3.4", 5), server: endpoint("6.7.8.9", 10))
        #expect(DecodedHeader.v2(v2) != nil)
        #expect(DecodedHeader.v2(Array(v2.dropLast())) == nil)
        var badSignature = v2
        badSignature[11] = 0
        #expect(DecodedHeader.v2(badSignature) == nil)
    }
}

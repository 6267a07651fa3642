#if canImport(Glibc)
import Glibc
#endif
import Testing
import GatewayKit

@Suite("IPAddress")
struct DNSIPAddressTests {
    /// Text in, ucspi-tcp's text out (ip4_fmt, the IPv6 variant's ip6_fmt).
    @Test(arguments: [
        ("127.0.0.1", "127.0.0.1"),
        ("0.0.0.0", "0.0.0.0"),
        ("255.255.255.255", "255.255.255.255"),
        ("::", "::"),
        ("::1", "::1"),
        ("1::", "1::"),
        ("2001:DB8::A", "2001:db8::a"),
        ("2001:0db8:0000:0000:0000:ff00:0042:8329", "2001:db8::ff00:42:8329"),
        ("fe80::1", "fe80::1"),
        // A single zero group is compressed too (unlike RFC 5952).
        ("1:0:2:3:4:5:6:7", "1::2:3:4:5:6:7"),
        ("1:2:3:4:5:6:7:0", "1:2:3:4:5:6:7::"),
        // The longest run wins; on a tie the first.
        ("1:0:0:2:0:0:0:3", "1:0:0:2::3"),
        ("1:0:0:2:3:0:0:4", "1::2:3:0:0:4"),
        ("1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"),
        ("::ffff:1.2.3.4", "::ffff:1.2.3.4"),
        ("::ffff:0102:0304", "::ffff:1.2.3.4"),
        ("::1.2.3.4", "::102:304"),
        ("::ffff:0:1.2.3.4", "::ffff:0:102:304"),
    ])
    func formats(input: String, expected: String) throws {
        let address = try #require(IPAddress(input))
        #expect(address.description == expected)
        #expect(IPAddress(address.description) == address)
    }

    @Test(arguments: ["", "1.2.3", "256.1.1.1", "1.2.3.4 ", " 1.2.3.4", ":::", "1::2::3", "example.com", "1.2.3.4\0"])
    func rejects(input: String) {
        #expect(IPAddress(input) == nil)
    }

    @Test func families() throws {
        #expect(IPAddress("10.0.0.1")?.family == .v4)
        #expect(IPAddress("::1")?.family == .v6)
        #expect(IPAddress(parsing: "::1", family: .v4) == nil)
        #expect(IPAddress(parsing: "1.2.3.4", family: .v6) == nil)
        #expect(IPAddress(bytes: [1, 2, 3]) == nil)
        #expect(IPAddress(bytes: [1, 2, 3, 4]) == IPAddress(v4: 1, 2, 3, 4))
    }

    @Test func mapping() throws {
        let mapped = try #require(IPAddress("::ffff:10.1.2.3"))
        #expect(mapped.isV4Mapped)
        #expect(mapped.v4FromMapped == IPAddress(v4: 10, 1, 2, 3))
        #expect(mapped.unmapped == IPAddress(v4: 10, 1, 2, 3))
        #expect(IPAddress(v4: 10, 1, 2, 3).v4Mapped == mapped)
        #expect(!IPAddress.loopbackV6.isV4Mapped)
        #expect(IPAddress.loopbackV6.v4FromMapped == nil)
        #expect(IPAddress.loopbackV6.v4Mapped == .loopbackV6)
        #expect(IPAddress.loopbackV4.v4FromMapped == nil)
    }

    @Test func socketAddressRoundTrip() throws {
        let cases: [(String, UInt16, UInt32)] = [("192.0.2.7", 4567, 0), ("fe80::1", 53, 3), ("::ffff:1.2.3.4", 1, 0)]
        for (text, port, scope) in cases {
            let address = try #require(IPAddress(text))
            let back = address.withSocketAddress(port: port, scopeID: scope) { sa, length in
                (IPAddress.fromSocketAddress(sa), Int(length))
            }
            #expect(back.0?.address == address)
            #expect(back.0?.port == port)
            #expect(back.0?.scopeID == scope)
            let expectedLength =
                address.family == .v4
                ? MemoryLayout<sockaddr_in>.size : MemoryLayout<sockaddr_in6>.size
            #expect(back.1 == expectedLength)
        }
    }
}

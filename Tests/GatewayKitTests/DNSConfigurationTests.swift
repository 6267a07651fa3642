#if canImport(Glibc)
import Glibc
#endif
import Testing
import GatewayKit

@Suite("DNS configuration")
struct DNSConfigurationTests {
    func addresses(_ texts: String...) -> [IPAddress] { texts.map { IPAddress($0)! } }

    @Test func dnscacheip() {
        #expect(DNSConfiguration.parseServerList("10.0.0.1") == addresses("10.0.0.1"))
        // djb's own separator: addresses run together with dots.
        #expect(DNSConfiguration.parseServerList("10.0.0.1.10.0.0.2") == addresses("10.0.0.1", "10.0.0.2"))
        #expect(
            DNSConfiguration.parseServerList("10.0.0.1 10.0.0.2,10.0.0.3;::1")
                == addresses("10.0.0.1", "10.0.0.2", "10.0.0.3", "::1"))
        #expect(DNSConfiguration.parseServerList(" 2001:db8::53 ") == addresses("2001:db8::53"))
        // Reading stops at the first word that is no address.
        #expect(DNSConfiguration.parseServerList("10.0.0.1 10.0.0 10.0.0.3") == addresses("10.0.0.1"))
        #expect(DNSConfiguration.parseServerList("").isEmpty)
        #expect(DNSConfiguration.parseServerList("localhost").isEmpty)
        let many = (1...20).map { "10.0.0.\($0)" }.joined(separator: " ")
        #expect(DNSConfiguration.parseServerList(many).count == 16)
    }

    @Test func resolvConf() {
        let text = """
            # comment nameserver 9.9.9.9
            search example.com
            nameserver 192.0.2.1
            nameserver\t\t192.0.2.2 # trailing comment
            nameserver 0.0.0.0
            nameserver ::1
            nameserver fe80::1%eth0
             nameserver 192.0.2.9
            nameserverx 192.0.2.8
            nameserver bogus
            nameserver
            options ndots:2\r
            nameserver 192.0.2.3\r
            """
        #expect(
            DNSConfiguration.parseResolvConf(Array(text.utf8))
                == addresses(
                    "192.0.2.1", "192.0.2.2", "127.0.0.1", "::1", "fe80::1", "192.0.2.3"))
        #expect(DNSConfiguration.parseResolvConf([]).isEmpty)
        let many = (1...20).map { "nameserver 10.0.0.\($0)\n" }.joined()
        #expect(DNSConfiguration.parseResolvConf(Array(many.utf8)).count == 16)
    }

    @Test func precedence() {
        let file = Array("nameserver 192.0.2.1\n".utf8)
        #expect(
            DNSConfiguration.servers(dnscacheip: "10.1.1.1", resolvConf: file, port: nil)
                == [DNSServer(address: IPAddress(v4: 10, 1, 1, 1))])
        #expect(
            DNSConfiguration.servers(dnscacheip: "junk", resolvConf: file, port: "5353")
                == [DNSServer(address: IPAddress(v4: 192, 0, 2, 1), port: 5353)])
        #expect(
            DNSConfiguration.servers(dnscacheip: nil, resolvConf: nil, port: nil)
                == [DNSServer(address: .loopbackV4, port: 53)])
        #expect(
            DNSConfiguration.servers(dnscacheip: nil, resolvConf: [], port: "x")
                == [DNSServer(address: .loopbackV4, port: 53)])
        #expect(
            DNSConfiguration.servers(dnscacheip: nil, resolvConf: nil, port: "0")
                == [DNSServer(address: .loopbackV4, port: 53)])
    }

    @Test func environmentAndFile() throws {
        var template = Array("/tmp/bastion-dns-test-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        try #require(fd >= 0)
        let path = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        defer { unlink(path) }
        try FD.writeAll(fd, "domain example\nnameserver 127.0.0.9\n")
        FD.close(fd)

        let fromFile = try DNSResolver(environment: ["RESOLVCONF": path, "BASTION_DNSPORT": "1053"])
        #expect(fromFile.servers == [DNSServer(address: IPAddress(v4: 127, 0, 0, 9), port: 1053)])

        let fromVariable = try DNSResolver(environment: ["RESOLVCONF": path, "DNSCACHEIP": "127.0.0.7"])
        #expect(fromVariable.servers == [DNSServer(address: IPAddress(v4: 127, 0, 0, 7))])

        let missing = try DNSResolver(environment: ["RESOLVCONF": path + "-missing"])
        #expect(missing.servers == [DNSServer(address: .loopbackV4)])

        #expect(throws: DNSError.self) { try DNSResolver(environment: ["RESOLVCONF": "/"]) }
        #expect(DNSRetrySchedule.djb.udpTimeouts == [.seconds(1), .seconds(3), .seconds(11), .seconds(45)])
    }
}

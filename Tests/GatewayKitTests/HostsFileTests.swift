#if canImport(Glibc)
import Glibc
#endif
import GatewayKit
import Testing

private func address(_ text: String) -> IPAddress { IPAddress(text)! }

/// A hosts file written under /tmp for one test, removed at the end.
private final class ScratchHostsFile {
    let path: String

    init(_ text: String) throws {
        var template = Array("/tmp/bastion-hosts-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { throw SystemError.current }
        let made = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        defer { close(fd) }
        do {
            try FD.writeAll(fd, text)
        } catch {
            unlink(made)
            throw error
        }
        path = made
    }

    deinit { unlink(path) }
}

@Suite("Hosts file")
struct HostsFileTests {
    static let text = Array(
        """
        # /etc/hosts for the tests
        127.0.0.1\tlocalhost
        127.0.1.1\tbastion.example.org\tbastion

        # The following lines are desirable for IPv6 capable hosts
        ::1     localhost ip6-localhost ip6-loopback   # loopback
        ff02::1 ip6-allnodes
        192.0.2.10  www.example.org www   # web server
        192.0.2.11\twww.example.org
        2001:db8::10 www.example.org
        192.0.2.10  WWW.Example.ORG
        fe80::1%eth0 linklocal
        not-an-address  broken
        10.0.0.1
           \t
        10.0.0.2 # commented-name
        #10.0.0.4 hidden
        10.0.0.3 crlf\r
        10.0.0.5\tmixed.Case.Name  alias.example
        ::ffff:10.0.0.6 mapped
        10.0.0.7 1.2.3.4
        """.utf8)

    @Test(arguments: [
        ("localhost", ["127.0.0.1", "::1"]),
        ("LOCALHOST", ["127.0.0.1", "::1"]),
        ("localhost.", ["127.0.0.1", "::1"]),
        ("bastion", ["127.0.1.1"]),
        ("Bastion.Example.Org", ["127.0.1.1"]),
        ("ip6-loopback", ["::1"]),
        ("ip6-allnodes", ["ff02::1"]),
        // File order, each address once (the upper-case line repeats 192.0.2.10).
        ("www.example.org", ["192.0.2.10", "192.0.2.11", "2001:db8::10"]),
        ("www", ["192.0.2.10"]),
        ("crlf", ["10.0.0.3"]),
        ("mixed.case.name", ["10.0.0.5"]),
        ("ALIAS.example", ["10.0.0.5"]),
        ("mapped", ["::ffff:10.0.0.6"]),
        ("1.2.3.4", ["10.0.0.7"]),
    ])
    func finds(name: String, expected: [String]) {
        #expect(HostsFile.addresses(of: name, in: Self.text) == expected.map(address))
    }

    @Test(arguments: [
        "", ".", "localhost..", "local", "localhost.localdomain", "example.org", "linklocal", "broken",
        "not-an-address", "commented-name", "hidden", "loopback", "web", "#", "10.0.0.1", "127.0.0.1",
        "www.example", "ww", "www ",
    ])
    func missing(name: String) {
        #expect(HostsFile.addresses(of: name, in: Self.text).isEmpty)
    }

    @Test func emptyAndOddTexts() {
        #expect(HostsFile.addresses(of: "localhost", in: []).isEmpty)
        #expect(HostsFile.addresses(of: "localhost", in: Array("127.0.0.1 localhost".utf8)) == [address("127.0.0.1")])
        #expect(HostsFile.addresses(of: "a", in: Array("\n\n1.1.1.1 a\n\n".utf8)) == [address("1.1.1.1")])
        let comments = Array("1.1.1.1#a\n2.2.2.2 b#\n3.3.3.3 a#c".utf8)
        #expect(HostsFile.addresses(of: "a", in: comments) == [address("3.3.3.3")])
        #expect(HostsFile.addresses(of: "b", in: comments) == [address("2.2.2.2")])
        // Bytes that are no UTF-8 do not disturb the lines around them.
        let odd: [UInt8] = [0xFF, 0x20, 0x7A, 0x0A] + Array("9.9.9.9 z".utf8)
        #expect(HostsFile.addresses(of: "z", in: odd) == [address("9.9.9.9")])
    }

    @Test func readsAFile() throws {
        let file = try ScratchHostsFile("127.0.0.1 localhost\n::1 localhost\n192.0.2.1 gw\n")
        #expect(HostsFile.addresses(of: "localhost", path: file.path) == [address("127.0.0.1"), address("::1")])
        #expect(HostsFile.addresses(of: "gw", path: file.path) == [address("192.0.2.1")])
        #expect(HostsFile.addresses(of: "nosuch", path: file.path).isEmpty)
    }

    @Test func missingFile() {
        #expect(HostsFile.addresses(of: "localhost", path: "/nonexistent/hosts").isEmpty)
    }

    /// gethostbyaddr's `files` answer: the canonical name of the first line for the address.
    @Test func namesByAddress() {
        let names = HostsFile.names(in: Self.text)
        #expect(names[address("127.0.0.1")] == "localhost")
        #expect(names[address("127.0.1.1")] == "bastion.example.org")
        #expect(names[address("::1")] == "localhost")
        #expect(names[address("192.0.2.10")] == "www.example.org")  // not the later WWW.Example.ORG
        #expect(names[address("10.0.0.3")] == "crlf")
        #expect(names[address("10.0.0.5")] == "mixed.Case.Name")  // as written
        #expect(names[address("10.0.0.6")] == "mapped")  // IPv4-mapped counts as IPv4
        #expect(names[address("10.0.0.7")] == "1.2.3.4")
        for missing in ["10.0.0.1", "10.0.0.2", "10.0.0.4", "192.0.2.99", "fe80::1"] {
            #expect(names[address(missing)] == nil, "\(missing)")
        }
        #expect(HostsFile.names(in: []).isEmpty)
    }
}

/// Literals and hosts files only: these tests never ask a DNS server. Every name looked up
/// has addresses of the family asked for in the scratch hosts file, so the resolver never
/// goes on to DNS.
@Suite("Host resolver")
struct HostResolverTests {
    static let hosts = """
        127.0.0.1 localhost
        ::1 localhost
        192.0.2.1 gateway gw
        2001:db8::1 gateway
        192.0.2.2 gateway
        ::ffff:10.1.1.1 mappedhost
        10.1.1.2 mappedhost
        2001:db8::5 v6only
        2001:db8::6 v6only
        """

    @Test(arguments: [
        ("127.0.0.1", DNSResolver.Family.any, ["127.0.0.1"]),
        ("127.0.0.1", .ipv4, ["127.0.0.1"]),
        ("127.0.0.1", .ipv6, []),
        ("[127.0.0.1]", .ipv4, ["127.0.0.1"]),
        ("::1", .any, ["::1"]),
        ("::1", .ipv4, []),
        ("::1", .ipv6, ["::1"]),
        ("[::1]", .any, ["::1"]),
        ("[2001:db8::7]", .ipv6, ["2001:db8::7"]),
        ("::ffff:10.0.0.1", .any, ["::ffff:10.0.0.1"]),
        ("::ffff:10.0.0.1", .ipv4, ["10.0.0.1"]),
        ("[::ffff:10.0.0.1]", .ipv4, ["10.0.0.1"]),
        ("::ffff:10.0.0.1", .ipv6, []),
    ])
    func literals(host: String, family: DNSResolver.Family, expected: [String]) throws {
        // A hosts file that would give other answers: literals never reach it.
        let file = try ScratchHostsFile("192.0.2.99 127.0.0.1 ::1\n")
        #expect(try HostResolver.resolve(host, family: family, hostsPath: file.path) == expected.map(address))
    }

    @Test(arguments: [
        ("localhost", DNSResolver.Family.any, ["127.0.0.1", "::1"]),
        ("LocalHost", .ipv4, ["127.0.0.1"]),
        ("localhost", .ipv6, ["::1"]),
        ("gateway", .any, ["192.0.2.1", "2001:db8::1", "192.0.2.2"]),
        ("gateway", .ipv4, ["192.0.2.1", "192.0.2.2"]),
        ("gateway", .ipv6, ["2001:db8::1"]),
        ("gw", .any, ["192.0.2.1"]),
        ("gw.", .ipv4, ["192.0.2.1"]),
        ("mappedhost", .any, ["::ffff:10.1.1.1", "10.1.1.2"]),
        ("mappedhost", .ipv4, ["10.1.1.1", "10.1.1.2"]),
        ("v6only", .ipv6, ["2001:db8::5", "2001:db8::6"]),
        ("v6only", .any, ["2001:db8::5", "2001:db8::6"]),
    ])
    func hostsFile(host: String, family: DNSResolver.Family, expected: [String]) throws {
        let file = try ScratchHostsFile(Self.hosts)
        #expect(try HostResolver.resolve(host, family: family, hostsPath: file.path) == expected.map(address))
    }

    @Test(arguments: ["", "[]", "[gateway]", "[1.2.3]", "[::1]]"])
    func invalid(host: String) {
        #expect(throws: DNSError.invalidName(host)) {
            _ = try HostResolver.resolve(host, family: .any, hostsPath: "/nonexistent/hosts")
        }
    }

    @Test(arguments: [
        ("192.0.2.7", DNSResolver.Family.any, ["192.0.2.7"]),
        ("[2001:db8::7]", .ipv4, []),
        ("gateway", .ipv4, ["192.0.2.1", "192.0.2.2"]),
        ("GW.", .any, ["192.0.2.1"]),
        ("v6only", .ipv6, ["2001:db8::5", "2001:db8::6"]),
        // djb's numeric names: every whole group of four numbers is an address, never asked.
        ("1.2.3.4.5", .any, ["1.2.3.4"]),
        ("1.2.3", .any, []),
        ("1.2.3.4.5.6.7.8", .ipv6, []),
    ])
    func answeredLocally(host: String, family: DNSResolver.Family, expected: [String]) throws {
        let text = Array(Self.hosts.utf8)
        #expect(try HostResolver.answerLocally(host, family: family, hostsText: text) == expected.map(address))
    }

    @Test func namesTheHostsFileLacksGoToDNS() throws {
        let text = Array(Self.hosts.utf8)
        #expect(try HostResolver.answerLocally("www.example.test", family: .any, hostsText: text) == nil)
        // The hosts file has v6only, but none of its addresses are IPv4: DNS decides.
        #expect(try HostResolver.answerLocally("v6only", family: .ipv4, hostsText: text) == nil)
        #expect(try HostResolver.answerLocally("localhost", family: .any, hostsText: []) == nil)
        #expect(HostResolver.questionTypes(for: .any) == [.aaaa, .a])
        #expect(HostResolver.questionTypes(for: .ipv4) == [.a])
        #expect(HostResolver.questionTypes(for: .ipv6) == [.aaaa])
        #expect(throws: DNSError.invalidName("[gateway]")) {
            _ = try HostResolver.answerLocally("[gateway]", family: .any, hostsText: text)
        }
    }

    @Test func filter() {
        let all = ["1.2.3.4", "::ffff:5.6.7.8", "2001:db8::1", "::1"].map(address)
        #expect(HostResolver.filter(all, family: .any) == all)
        #expect(HostResolver.filter(all, family: .ipv4) == ["1.2.3.4", "5.6.7.8"].map(address))
        #expect(HostResolver.filter(all, family: .ipv6) == ["2001:db8::1", "::1"].map(address))
        #expect(HostResolver.filter([], family: .ipv4).isEmpty)
    }
}

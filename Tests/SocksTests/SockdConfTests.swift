import GatewayKit
import Socks
import Testing

/// Test fixtures: a services table, user list files, a parser over them, queries.
enum Fixture {
    static let services: [String: UInt16] = ["telnet": 23, "ftp": 21, "gopher": 70, "http": 80, "smtp": 25]
    static let files: [String: String] = [
        "/etc/socks/staff": "# staff\nbonnie clyde\tylee,\n\n  sam # the boss\n",
        "/etc/socks/empty": "# nobody\n",
    ]

    static let parser = SockdConfParser(
        path: "sockd.conf",
        readUserFile: { (path: [UInt8]) throws(SystemError) -> [UInt8] in
            guard let text = files[String(decoding: path, as: UTF8.self)] else { throw SystemError(errno: 2) }
            return Array(text.utf8)
        },
        servicePort: { services[String(decoding: $0, as: UTF8.self)] })

    static func parse(_ text: String) -> (configuration: SockdConfiguration, errors: [SockdConfigError]) {
        parser.parse(Array(text.utf8))
    }

    /// The text of a file whose every line must parse.
    static func configuration(_ text: String) throws -> SockdConfiguration {
        try parser.load(Array(text.utf8), mode: .strict).configuration
    }

    static func query(
        _ user: String, _ client: String, clientName: String? = nil, to destination: String,
        destinationName: String? = nil, port: UInt16
    ) -> RuleQuery {
        RuleQuery(
            user: Array(user.utf8), client: IPAddress(client)!, clientName: clientName.map { Array($0.utf8) },
            destination: IPAddress(destination)!, destinationName: destinationName.map { Array($0.utf8) }, port: port)
    }
}

@Suite("sockd.conf: the CSTC example")
struct CSTCExampleTests {
    static let text = """
        deny   *=bonnie,clyde 128.12.6.0 255.255.255.0 : /usr/ucb/mail -s 'Rejected SOCKS access by %u' $USER
        permit *=ylee 128.12.6.4 255.255.255.255 137.12.0.0 255.255.0.0
        deny   128.12.0.0 255.255.0.0 eq telnet
        permit 128.12.0.0 255.255.0.0
        #NO_IDENTD: /usr/ucb/mail -s 'please run identd on %A' $USER
        #BAD_ID: /usr/ucb/mail -s '%U pretends to be %u on %A' $USER

        """

    struct Case: Sendable, CustomTestStringConvertible {
        let user: String
        let client: String
        let destination: String
        let port: UInt16
        let line: Int?
        let action: RuleAction

        var testDescription: String { "\(user) from \(client) to \(destination):\(port)" }
    }

    /// The issue's six cases (ftp 21, telnet 23, port 70).
    static let cases: [Case] = [
        Case(user: "clyde", client: "128.12.6.34", destination: "112.3.24.1", port: 21, line: 1, action: .deny),
        Case(user: "ylee", client: "128.12.6.4", destination: "137.12.4.15", port: 23, line: 2, action: .permit),
        Case(user: "jane", client: "128.12.2.13", destination: "137.12.4.15", port: 23, line: 3, action: .deny),
        Case(user: "sam", client: "128.12.36.7", destination: "10.53.23.1", port: 70, line: 4, action: .permit),
        Case(user: "don", client: "23.2.6.127", destination: "10.53.23.1", port: 23, line: nil, action: .deny),
        Case(user: "clyde", client: "128.12.1.62", destination: "112.3.24.1", port: 21, line: 4, action: .permit),
    ]

    @Test(arguments: cases)
    func decides(_ c: Case) throws {
        let configuration = try Fixture.configuration(Self.text)
        let rule = configuration.match(Fixture.query(c.user, c.client, to: c.destination, port: c.port))
        #expect(rule?.line == c.line)
        #expect((rule?.action ?? .deny) == c.action)
    }

    @Test func parsesEveryField() throws {
        let configuration = try Fixture.configuration(Self.text)
        #expect(configuration.rules.map(\.line) == [1, 2, 3, 4])
        let first = configuration.rules[0]
        #expect(first.action == .deny)
        #expect(first.users == UserList([.name(Array("bonnie".utf8)), .name(Array("clyde".utf8))]))
        #expect(
            first.source
                == .network(IPNetwork(address: IPAddress("128.12.6.0")!, mask: [255, 255, 255, 0])!))
        #expect(first.destination == nil)
        #expect(first.command == Array("/usr/ucb/mail -s 'Rejected SOCKS access by %u' $USER".utf8))
        #expect(configuration.rules[2].port == PortCondition(op: .eq, port: 23, service: Array("telnet".utf8)))
        #expect(
            configuration.noIdentd
                == SpecialCommand(line: 5, command: Array("/usr/ucb/mail -s 'please run identd on %A' $USER".utf8)))
        #expect(configuration.badIdent?.line == 6)
        #expect(configuration.badIdent?.command == Array("/usr/ucb/mail -s '%U pretends to be %u on %A' $USER".utf8))
    }
}

@Suite("sockd.conf: the matcher, feature by feature")
struct RuleMatcherTests {
    struct Case: Sendable, CustomTestStringConvertible {
        let rule: String
        let query: RuleQuery
        let matches: Bool
        var testDescription: String { "\(rule) / \(matches)" }

        init(_ rule: String, _ query: RuleQuery, _ matches: Bool) {
            self.rule = rule
            self.query = query
            self.matches = matches
        }
    }

    static func q(
        _ user: String, _ client: String, clientName: String? = nil, to destination: String,
        destinationName: String? = nil, port: UInt16
    ) -> RuleQuery {
        Fixture.query(
            user, client, clientName: clientName, to: destination, destinationName: destinationName, port: port)
    }

    static let cases: [Case] = [
        // Each operator, on both sides of its bound.
        Case("permit ALL 0.0.0.0 eq 80", q("u", "10.0.0.1", to: "10.0.0.2", port: 80), true),
        Case("permit ALL 0.0.0.0 eq 80", q("u", "10.0.0.1", to: "10.0.0.2", port: 81), false),
        Case("permit ALL 0.0.0.0 neq 80", q("u", "10.0.0.1", to: "10.0.0.2", port: 80), false),
        Case("permit ALL 0.0.0.0 neq 80", q("u", "10.0.0.1", to: "10.0.0.2", port: 8080), true),
        Case("permit ALL 0.0.0.0 lt 1024", q("u", "10.0.0.1", to: "10.0.0.2", port: 1023), true),
        Case("permit ALL 0.0.0.0 lt 1024", q("u", "10.0.0.1", to: "10.0.0.2", port: 1024), false),
        Case("permit ALL 0.0.0.0 gt 1023", q("u", "10.0.0.1", to: "10.0.0.2", port: 1024), true),
        Case("permit ALL 0.0.0.0 gt 1023", q("u", "10.0.0.1", to: "10.0.0.2", port: 1023), false),
        Case("permit ALL 0.0.0.0 le 1023", q("u", "10.0.0.1", to: "10.0.0.2", port: 1023), true),
        Case("permit ALL 0.0.0.0 le 1023", q("u", "10.0.0.1", to: "10.0.0.2", port: 1024), false),
        Case("permit ALL 0.0.0.0 ge 1024", q("u", "10.0.0.1", to: "10.0.0.2", port: 1024), true),
        Case("permit ALL 0.0.0.0 ge 1024", q("u", "10.0.0.1", to: "10.0.0.2", port: 1023), false),
        Case("permit ALL 0.0.0.0 ge 0", q("u", "10.0.0.1", to: "10.0.0.2", port: 0), true),
        Case("permit ALL 0.0.0.0 le 65535", q("u", "10.0.0.1", to: "10.0.0.2", port: 65535), true),
        Case("permit ALL 0.0.0.0 eq smtp", q("u", "10.0.0.1", to: "10.0.0.2", port: 25), true),
        Case("permit ALL 0.0.0.0 eq 025", q("u", "10.0.0.1", to: "10.0.0.2", port: 25), true),
        // Masks: exact, network, zero, and a mask with holes (CSTC compared bit by bit).
        Case("permit 10.1.2.3 255.255.255.255", q("u", "10.1.2.3", to: "1.1.1.1", port: 1), true),
        Case("permit 10.1.2.3 255.255.255.255", q("u", "10.1.2.4", to: "1.1.1.1", port: 1), false),
        Case("permit 10.1.0.0 255.255.0.0", q("u", "10.1.200.9", to: "1.1.1.1", port: 1), true),
        Case("permit 10.1.0.0 255.255.0.0", q("u", "10.2.0.1", to: "1.1.1.1", port: 1), false),
        Case("permit 1.2.3.4 0.0.0.0", q("u", "200.1.1.1", to: "1.1.1.1", port: 1), true),
        Case("permit 10.0.0.5 255.0.0.255", q("u", "10.77.3.5", to: "1.1.1.1", port: 1), true),
        Case("permit 10.0.0.5 255.0.0.255", q("u", "10.77.3.6", to: "1.1.1.1", port: 1), false),
        // Bits outside the mask in the written address do not matter.
        Case("permit 10.1.2.3 255.255.0.0", q("u", "10.1.9.9", to: "1.1.1.1", port: 1), true),
        // Prefixes, both families.
        Case("permit 192.168.0.0/16", q("u", "192.168.44.1", to: "1.1.1.1", port: 1), true),
        Case("permit 192.168.0.0/16", q("u", "192.169.0.1", to: "1.1.1.1", port: 1), false),
        Case("permit 0.0.0.0/0", q("u", "8.8.8.8", to: "1.1.1.1", port: 1), true),
        Case("permit 10.0.0.0/9", q("u", "10.127.255.255", to: "1.1.1.1", port: 1), true),
        Case("permit 10.0.0.0/9", q("u", "10.128.0.0", to: "1.1.1.1", port: 1), false),
        Case("permit 2001:db8::/32", q("u", "2001:db8:1::7", to: "1.1.1.1", port: 1), true),
        Case("permit 2001:db8::/32", q("u", "2001:db9::7", to: "1.1.1.1", port: 1), false),
        Case("permit ::1/128", q("u", "::1", to: "1.1.1.1", port: 1), true),
        Case("permit ::/0", q("u", "fe80::1", to: "1.1.1.1", port: 1), true),
        // IPv6 with an IPv6 mask.
        Case("permit 2001:db8:: ffff:ffff::", q("u", "2001:db8:ff::1", to: "::1", port: 1), true),
        Case("permit 2001:db8:: ffff:ffff::", q("u", "2001:db7::1", to: "::1", port: 1), false),
        Case("permit ::1 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", q("u", "::1", to: "::1", port: 1), true),
        Case("permit ALL 0.0.0.0 2001:db8::/48 eq 443", q("u", "1.2.3.4", to: "2001:db8:0:1::1", port: 443), true),
        Case("permit ALL 0.0.0.0 2001:db8::/48 eq 443", q("u", "1.2.3.4", to: "2001:db8:1::1", port: 443), false),
        // A family never matches the other, but IPv4-mapped addresses count as IPv4 both ways.
        Case("permit 10.0.0.0/8", q("u", "2001:db8::1", to: "1.1.1.1", port: 1), false),
        Case("permit 2001:db8::/32", q("u", "10.0.0.1", to: "1.1.1.1", port: 1), false),
        Case("permit 10.0.0.0/8", q("u", "::ffff:10.1.1.1", to: "1.1.1.1", port: 1), true),
        Case("permit ::ffff:10.0.0.0/104", q("u", "10.1.1.1", to: "1.1.1.1", port: 1), true),
        // Names: exact host, any case, a trailing dot; an unknown name never matches.
        Case(
            "permit gw.example.com 0.0.0.0", q("u", "10.0.0.1", clientName: "gw.example.com", to: "1.1.1.1", port: 1),
            true),
        Case(
            "permit GW.Example.COM 0.0.0.0", q("u", "10.0.0.1", clientName: "gw.example.com.", to: "1.1.1.1", port: 1),
            true),
        Case(
            "permit gw.example.com 0.0.0.0", q("u", "10.0.0.1", clientName: "x.gw.example.com", to: "1.1.1.1", port: 1),
            false),
        Case("permit gw.example.com 0.0.0.0", q("u", "10.0.0.1", to: "1.1.1.1", port: 1), false),
        // .domain: the domain and everything in it, nothing that merely ends the same.
        Case("permit .example.com x", q("u", "10.0.0.1", clientName: "example.com", to: "1.1.1.1", port: 1), true),
        Case("permit .example.com x", q("u", "10.0.0.1", clientName: "a.b.EXAMPLE.com", to: "1.1.1.1", port: 1), true),
        Case("permit .example.com x", q("u", "10.0.0.1", clientName: "badexample.com", to: "1.1.1.1", port: 1), false),
        Case("permit .example.com x", q("u", "10.0.0.1", to: "1.1.1.1", port: 1), false),
        Case(
            "deny ALL x .evil.org x", q("u", "10.0.0.1", to: "6.6.6.6", destinationName: "www.evil.org", port: 80), true
        ),
        Case("deny ALL x .evil.org x", q("u", "10.0.0.1", to: "6.6.6.6", port: 80), false),
        // A destination host named like an operator is written with its dot (found by fuzzing).
        Case("deny ALL x gt. x eq 80", q("u", "1.1.1.1", to: "6.6.6.6", destinationName: "gt", port: 80), true),
        Case(
            "deny ALL x www.evil.org x eq 80",
            q("u", "1.1.1.1", to: "6.6.6.6", destinationName: "www.evil.org", port: 80), true),
        // ALL, on either side.
        Case("permit ALL 255.255.255.255 ALL 255.255.255.255", q("u", "::1", to: "1.1.1.1", port: 9), true),
        Case("permit all x", q("u", "5.5.5.5", to: "1.1.1.1", port: 9), true),
        // ALL. is ALL (names lose a trailing dot), never a host named "all" (found by fuzzing:
        // it listed as ALL and read back as something else).
        Case("permit ALL. x", q("u", "5.5.5.5", to: "1.1.1.1", port: 9), true),
        // Users: names, files, `*=` alone, no list.
        Case("permit *=ann,bob ALL x", q("bob", "1.1.1.1", to: "1.1.1.1", port: 1), true),
        Case("permit *=ann,bob ALL x", q("bobby", "1.1.1.1", to: "1.1.1.1", port: 1), false),
        Case("permit *=ann,bob ALL x", q("", "1.1.1.1", to: "1.1.1.1", port: 1), false),
        Case("permit *=/etc/socks/staff ALL x", q("sam", "1.1.1.1", to: "1.1.1.1", port: 1), true),
        Case("permit *=/etc/socks/staff ALL x", q("ylee", "1.1.1.1", to: "1.1.1.1", port: 1), true),
        Case("permit *=/etc/socks/staff ALL x", q("boss", "1.1.1.1", to: "1.1.1.1", port: 1), false),
        Case("permit *=/etc/socks/staff ALL x", q("#", "1.1.1.1", to: "1.1.1.1", port: 1), false),
        Case("permit *=ann,/etc/socks/empty ALL x", q("ann", "1.1.1.1", to: "1.1.1.1", port: 1), true),
        Case("permit *=/etc/socks/empty ALL x", q("nobody", "1.1.1.1", to: "1.1.1.1", port: 1), false),
        Case("permit *= ALL x", q("anyone", "1.1.1.1", to: "1.1.1.1", port: 1), true),
        Case("permit ALL x", q("anyone", "1.1.1.1", to: "1.1.1.1", port: 1), true),
        // The destination and the port are both required when given.
        Case("permit ALL x 10.0.0.0 255.0.0.0 eq 22", q("u", "1.1.1.1", to: "10.9.9.9", port: 22), true),
        Case("permit ALL x 10.0.0.0 255.0.0.0 eq 22", q("u", "1.1.1.1", to: "11.9.9.9", port: 22), false),
        Case("permit ALL x 10.0.0.0 255.0.0.0 eq 22", q("u", "1.1.1.1", to: "10.9.9.9", port: 23), false),
    ]

    @Test(arguments: cases)
    func decides(_ c: Case) throws {
        let configuration = try Fixture.configuration(c.rule)
        #expect(configuration.rules.count == 1)
        #expect((configuration.match(c.query) != nil) == c.matches)
    }

    @Test func firstMatchWinsAndNoMatchDenies() throws {
        let configuration = try Fixture.configuration(
            "deny 10.0.0.66 255.255.255.255\npermit 10.0.0.0/8\ndeny ALL x\n")
        #expect(configuration.match(Fixture.query("u", "10.0.0.66", to: "1.1.1.1", port: 1))?.line == 1)
        #expect(configuration.match(Fixture.query("u", "10.0.0.67", to: "1.1.1.1", port: 1))?.line == 2)
        #expect(configuration.match(Fixture.query("u", "11.0.0.67", to: "1.1.1.1", port: 1))?.action == .deny)
        #expect(SockdConfiguration().match(Fixture.query("u", "11.0.0.67", to: "1.1.1.1", port: 1)) == nil)
    }

    @Test func identOverrides() throws {
        let configuration = try Fixture.configuration(
            "permit ?=I 10.0.0.1/32\npermit ?=i *=ann 10.0.0.2/32\npermit *=bob ?=n 10.0.0.3/32\npermit ALL x\n")
        let lines = configuration.rules
        #expect(lines.map(\.ident) == [.strict, .lenient, .off, nil])
        #expect(lines[3].identCheck(default: .lenient) == .lenient)
        #expect(lines[0].identCheck(default: .off) == .strict)
        #expect(lines[2].identCheck(default: .strict) == .off)
        #expect(lines[2].users == UserList([.name(Array("bob".utf8))]))
        #expect(configuration.match(Fixture.query("ann", "10.0.0.2", to: "1.1.1.1", port: 1))?.ident == .lenient)
    }
}

@Suite("sockd.conf: the parser")
struct SockdConfParserTests {
    @Test func commentsBlankLinesAndCommands() throws {
        let configuration = try Fixture.configuration(
            """
            # a comment

            permit 10.0.0.0/8 # to the end of the line
            \t  \r
            deny ALL 0.0.0.0 :   /bin/logger -t sockd %u  \r
            permit ::1 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff :/bin/true
            permit 2001:db8::/32 ::/0
            permit 2001:db8::1 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff : echo a:b # not the command
            """)
        #expect(configuration.rules.map(\.line) == [3, 5, 6, 7, 8])
        #expect(configuration.rules[0].command == nil)
        #expect(configuration.rules[1].command == Array("/bin/logger -t sockd %u".utf8))
        #expect(configuration.rules[2].command == Array("/bin/true".utf8))
        // `::1` and `::/0` begin with a colon but are addresses, not a command.
        #expect(
            configuration.rules[2].source
                == .network(IPNetwork(address: .loopbackV6, mask: [UInt8](repeating: 0xff, count: 16))!))
        #expect(configuration.rules[3].destination == .network(IPNetwork(address: .anyV6, prefixLength: 0)!))
        #expect(configuration.rules[4].command == Array("echo a:b".utf8))
    }

    @Test func userListFilesAreReadThroughTheReader() throws {
        let configuration = try Fixture.configuration("permit *=ann,/etc/socks/staff,,zed ALL x\n")
        let names = ["bonnie", "clyde", "ylee", "sam"].map { Array($0.utf8) }
        #expect(
            configuration.rules[0].users
                == UserList([
                    .name(Array("ann".utf8)), .file(path: Array("/etc/socks/staff".utf8), names: names),
                    .name(Array("zed".utf8)),
                ]))
    }

    struct Bad: Sendable, CustomTestStringConvertible {
        let line: String
        let message: String
        var testDescription: String { line }
        init(_ line: String, _ message: String) {
            self.line = line
            self.message = message
        }
    }

    static let bad: [Bad] = [
        Bad("permitt 10.0.0.0/8", #"unknown action "permitt" (expected permit or deny)"#),
        Bad("permit", "missing source address and mask"),
        Bad("permit 10.0.0.0", #"missing mask after "10.0.0.0""#),
        Bad("permit ALL", #"missing mask after "ALL""#),
        Bad("permit .example.com", #"missing mask after ".example.com""#),
        Bad(
            "permit 10.0.0.0 255.255.0",
            #"invalid mask "255.255.0" (expected a dotted IPv4 mask such as 255.255.255.0)"#),
        Bad("permit 10.0.0.0 ffff::", #"invalid mask "ffff::" (expected a dotted IPv4 mask such as 255.255.255.0)"#),
        Bad(
            "permit 2001:db8:: 255.255.0.0", #"invalid mask "255.255.0.0" (expected an IPv6 mask such as ffff:ffff::)"#),
        Bad("permit 10.0.0.0/33", #"invalid prefix length in "10.0.0.0/33" (expected 0-32 for IPv4, 0-128 for IPv6)"#),
        Bad("permit ::/129", #"invalid prefix length in "::/129" (expected 0-32 for IPv4, 0-128 for IPv6)"#),
        Bad("permit 10.0.0.0/", #"invalid prefix length in "10.0.0.0/" (expected 0-32 for IPv4, 0-128 for IPv6)"#),
        Bad(
            "permit host/8",
            #"invalid address "host/8" (expected an IPv4 or IPv6 address, address/prefix, a host name, .domain or ALL)"#
        ),
        Bad(
            "permit 300.1.1.1 255.0.0.0",
            #"invalid address "300.1.1.1" (expected an IPv4 or IPv6 address, address/prefix, a host name, .domain or ALL)"#
        ),
        Bad(
            "permit 2001:db8::zz x",
            #"invalid address "2001:db8::zz" (expected an IPv4 or IPv6 address, address/prefix, a host name, .domain or ALL)"#
        ),
        Bad(
            "permit . x",
            #"invalid address "." (expected an IPv4 or IPv6 address, address/prefix, a host name, .domain or ALL)"#),
        Bad("permit ALL x eq", "missing port after eq"),
        Bad(
            "permit ALL x eq nosuch",
            #"unknown service "nosuch" (expected a port number 0-65535 or a tcp service in /etc/services)"#),
        Bad(
            "permit ALL x eq 65536",
            #"unknown service "65536" (expected a port number 0-65535 or a tcp service in /etc/services)"#),
        Bad("permit ALL x 10.0.0.0/8 between 80", #"unknown operator "between" (expected eq, neq, lt, gt, le or ge)"#),
        Bad("permit ALL x eq 80 81", #"unexpected "81" (expected : and a command, or the end)"#),
        Bad("permit ?=x ALL x", #"invalid identd option "?=x" (expected ?=I, ?=i or ?=n)"#),
        Bad("permit ?=I ?=i ALL x", #"option "?=" given twice"#),
        Bad("permit *=a *=b ALL x", #"option "*=" given twice"#),
        Bad("permit *=/etc/socks/missing ALL x", "unable to read user list /etc/socks/missing: file does not exist"),
        Bad(": /bin/true", "missing permit or deny before the command"),
        Bad(
            "permit \u{1}host x",
            #"invalid address "\001host" (expected an IPv4 or IPv6 address, address/prefix, a host name, .domain or ALL)"#
        ),
    ]

    @Test(arguments: bad)
    func badLinesSayWhy(_ bad: Bad) {
        let (configuration, errors) = Fixture.parse("# first\n" + bad.line + "\n")
        #expect(configuration.rules.isEmpty)
        #expect(errors.map(\.description) == ["sockd.conf:2: " + bad.message])
    }

    @Test func lenientSkipsBadLinesStrictRejectsTheFile() throws {
        let text = Array("permit 10.0.0.0/8\npermit 10.0.0.0\ndeny ALL x\nallow ALL x\n".utf8)
        let (configuration, warnings) = try Fixture.parser.load(text, mode: .lenient)
        #expect(configuration.rules.map(\.line) == [1, 3])
        #expect(warnings.map(\.line) == [2, 4])
        #expect(throws: SockdConfigRejection.self) { try Fixture.parser.load(text, mode: .strict) }
        do {
            _ = try Fixture.parser.load(text, mode: .strict)
        } catch {
            #expect(error.errors.map(\.line) == [2, 4])
            #expect(
                error.description == """
                    sockd.conf: 2 bad lines, not applied
                    sockd.conf:2: missing mask after "10.0.0.0"
                    sockd.conf:4: unknown action "allow" (expected permit or deny)
                    """)
        }
        #expect(try Fixture.parser.load(Array("permit ALL x\n".utf8), mode: .strict).warnings.isEmpty)
    }

    @Test func specialLines() {
        let (configuration, errors) = Fixture.parse(
            "#NO_IDENTD:   mail -s 'no identd # on %A' root\n#BAD_ID:\n#BAD_ID: one\n#NO_IDENTD: two\n#BAD_ID: three\n")
        #expect(
            configuration.noIdentd == SpecialCommand(line: 1, command: Array("mail -s 'no identd # on %A' root".utf8)))
        #expect(configuration.badIdent == SpecialCommand(line: 3, command: Array("one".utf8)))
        #expect(
            errors.map(\.description) == [
                "sockd.conf:4: #NO_IDENTD is already given at line 1",
                "sockd.conf:5: #BAD_ID is already given at line 3",
            ])
    }

    @Test func dumpParsesBackToTheSameConfiguration() throws {
        let text =
            CSTCExampleTests.text + """
                # gap

                permit ?=I *=ann,/etc/socks/staff 2001:db8::/32 .Example.COM. whatever neq smtp : echo %u
                deny host.example 1.2.3.4 10.0.0.0 255.0.0.255 ge 1024
                permit ::1 ::ffff:ffff:0:0 ALL x
                deny eq x gt. 0.0.0.0 le 7
                """
        let configuration = try Fixture.configuration(text)
        let dumped = configuration.text
        let again = try Fixture.parser.load(dumped, mode: .strict).configuration
        #expect(again == configuration)
        #expect(again.frozen == configuration.frozen)
        #expect(again.text == dumped)
        let lines = String(decoding: dumped, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines[8] == "permit ?=I *=ann,/etc/socks/staff 2001:db8::/32 .example.com 0.0.0.0 neq smtp : echo %u")
        #expect(lines[9] == "deny host.example 0.0.0.0 10.0.0.0 255.0.0.255 ge 1024")
        #expect(lines[10] == "permit ::1 ::ffff:ffff:0:0 ALL 0.0.0.0")
        #expect(lines[11] == "deny eq. 0.0.0.0 gt. 0.0.0.0 le 7")
        #expect(lines[6] == "")
    }
}

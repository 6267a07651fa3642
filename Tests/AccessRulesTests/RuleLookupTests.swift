import Testing
import AccessRules
import CDB

@Suite("tcpserver rule lookup")
struct RuleLookupTests {
    // MARK: - Key order

    /// The manual's order: info@ip, info@=host, ip, =host, ip prefixes ending in '.' (or ':'
    /// for IPv6) longest first, =.domain suffixes longest first, '=', then the empty key.
    @Test(arguments: [
        (RuleClient(ip: "10.119.75.38"), ["10.119.75.38", "10.119.75.", "10.119.", "10.", ""]),
        (
            RuleClient(ip: "127.0.0.1", info: "joe"),
            ["joe@127.0.0.1", "127.0.0.1", "127.0.0.", "127.0.", "127.", ""]
        ),
        (
            RuleClient(ip: "18.23.0.32", host: "movie.edu"),
            ["18.23.0.32", "=movie.edu", "18.23.0.", "18.23.", "18.", "=.edu", "=", ""]
        ),
        (
            RuleClient(ip: "1.2.3.4", host: "www.heaven.af.mil", info: "bill"),
            [
                "bill@1.2.3.4", "bill@=www.heaven.af.mil", "1.2.3.4", "=www.heaven.af.mil",
                "1.2.3.", "1.2.", "1.", "=.heaven.af.mil", "=.af.mil", "=.mil", "=", "",
            ]
        ),
        // IPv6 addresses are cut after each ':'.
        (RuleClient(ip: "::1"), ["::1", "::", ":", ""]),
        (RuleClient(ip: "2001:db8::7"), ["2001:db8::7", "2001:db8::", "2001:db8:", "2001:", ""]),
        (
            RuleClient(ip: "::ffff:1.2.3.4"),
            ["::ffff:1.2.3.4", "::ffff:1.2.3.", "::ffff:1.2.", "::ffff:1.", "::ffff:", "::", ":", ""]
        ),
        // A host without dots: only =host and '='.
        (
            RuleClient(ip: "1.2.3.4", host: "localhost"),
            ["1.2.3.4", "=localhost", "1.2.3.", "1.2.", "1.", "=", ""]
        ),
        // A host starting or ending with a dot: every dot starts a suffix.
        (
            RuleClient(ip: "1.2.3.4", host: ".a."),
            ["1.2.3.4", "=.a.", "1.2.3.", "1.2.", "1.", "=.a.", "=.", "=", ""]
        ),
        // Empty but known host and info are still used (C's non-null pointers to "").
        (
            RuleClient(ip: "1.2.3.4", host: "", info: ""),
            ["@1.2.3.4", "@=", "1.2.3.4", "=", "1.2.3.", "1.2.", "1.", "=", ""]
        ),
        // An ip ending in '.' is tried whole and again as its own longest prefix, as in C.
        (RuleClient(ip: "1.2."), ["1.2.", "1.2.", "1.", ""]),
        // An empty ip is tried, then the empty key again at the end, as in C.
        (RuleClient(ip: ""), ["", ""]),
    ])
    func order(client: RuleClient, expected: [String]) {
        #expect(RuleLookup.keys(for: client) == expected.map(bytes))
    }

    @Test func rawBytesAreKept() {
        let client = RuleClient(ip: bytes("1.2.3.4"), host: [0xff, 0x2e, 0x00], info: [0x80])
        #expect(client == RuleClient(ip: bytes("1.2.3.4"), host: [0xff, 0x2e, 0x00], info: [0x80]))
        #expect(
            RuleLookup.keys(for: client) == [
                [0x80, 0x40] + bytes("1.2.3.4"),
                [0x80, 0x40, 0x3d, 0xff, 0x2e, 0x00],
                bytes("1.2.3.4"),
                [0x3d, 0xff, 0x2e, 0x00],
                bytes("1.2.3."), bytes("1.2."), bytes("1."),
                [0x3d, 0x2e, 0x00],
                [0x3d],
                [],
            ])
        #expect(
            RuleClient(ip: "1.2.3.4", host: "h", info: "i")
                == RuleClient(ip: bytes("1.2.3.4"), host: bytes("h"), info: bytes("i")))
        #expect(RuleClient(ip: "1.2.3.4").host == nil)
        #expect(RuleClient(ip: "1.2.3.4").info == nil)
    }

    // MARK: - The manual's answers

    /// The manual's example rules, each telling which one matched through a variable.
    static let manualRules = """
        joe@127.0.0.1:allow,WHICH="first"
        18.23.0.32:allow,WHICH="second"
        :allow,WHICH="third"
        127.:allow,WHICH="fourth"
        ::1:allow,WHICH="fifth"

        """

    static func which(_ client: RuleClient, _ rules: String) throws -> String? {
        let r = reader(try compile(rules))
        guard let match = try RuleLookup.find(client, in: r) else { return nil }
        var encoded: [UInt8] = []
        for variable in match.decision.environment {
            encoded += [UInt8(ascii: "+")] + variable.name + [UInt8(ascii: "=")] + variable.value + [0]
        }
        #expect(match.instructions == encoded)
        guard let v = match.decision.environment.first(where: { $0.name == bytes("WHICH") }) else { return "" }
        return String(decoding: v.value, as: UTF8.self)
    }

    @Test(arguments: [
        (RuleClient(ip: "10.119.75.38"), "third"),
        (RuleClient(ip: "18.23.0.32"), "second"),
        (RuleClient(ip: "127.0.0.1", info: "bill"), "fourth"),
        (RuleClient(ip: "127.0.0.1", info: "joe"), "first"),
        (RuleClient(ip: "127.0.0.1"), "fourth"),
        (RuleClient(ip: "127.0.0.2", info: "joe"), "fourth"),
        (RuleClient(ip: "::1"), "fifth"),
        (RuleClient(ip: "::2"), "third"),
        (RuleClient(ip: "18.23.0.32", host: "x.mit.edu", info: "joe"), "second"),
        // "joe@127.0.0.1" is an info@ip key: a host does not change that.
        (RuleClient(ip: "127.0.0.1", host: "localhost", info: "joe"), "first"),
    ])
    func manualAnswers(client: RuleClient, expected: String) throws {
        #expect(try Self.which(client, Self.manualRules) == expected)
    }

    /// The answers do not depend on the order of the rules in the file.
    @Test func fileOrderDoesNotMatter() throws {
        let reversed = Self.manualRules.split(separator: "\n").reversed().joined(separator: "\n")
        #expect(try Self.which(RuleClient(ip: "127.0.0.1", info: "joe"), reversed) == "first")
        #expect(try Self.which(RuleClient(ip: "127.0.0.1", info: "bill"), reversed) == "fourth")
        #expect(try Self.which(RuleClient(ip: "10.119.75.38"), reversed) == "third")
    }

    static let hostRules = """
        bill@=www.example.com:allow,WHICH="info@=host"
        =www.example.com:allow,WHICH="=host"
        =.example.com:allow,WHICH="=.example.com"
        =.com:allow,WHICH="=.com"
        =:allow,WHICH="="
        9.9.9.9:allow,WHICH="ip"
        9.9.:allow,WHICH="9.9."
        8.8.:allow,WHICH="8.8."
        :allow,WHICH="default"
        """

    @Test(arguments: [
        (RuleClient(ip: "1.2.3.4", host: "www.example.com"), "=host"),
        (RuleClient(ip: "1.2.3.4", host: "mail.example.com"), "=.example.com"),
        (RuleClient(ip: "1.2.3.4", host: "a.b.example.com"), "=.example.com"),
        (RuleClient(ip: "1.2.3.4", host: "foo.com"), "=.com"),
        (RuleClient(ip: "1.2.3.4", host: "foo.org"), "="),
        (RuleClient(ip: "1.2.3.4", host: "example.com"), "=.com"),
        (RuleClient(ip: "1.2.3.4"), "default"),
        (RuleClient(ip: "1.2.3.4", host: "www.example.com", info: "bill"), "info@=host"),
        (RuleClient(ip: "1.2.3.4", host: "www.example.com", info: "joe"), "=host"),
        // info@=host needs the host.
        (RuleClient(ip: "1.2.3.4", info: "bill"), "default"),
        // The whole ip comes before =host.
        (RuleClient(ip: "9.9.9.9", host: "www.example.com"), "ip"),
        // =host comes before ip prefixes...
        (RuleClient(ip: "9.9.1.1", host: "www.example.com"), "=host"),
        // ... but ip prefixes before =.domain suffixes and '='.
        (RuleClient(ip: "9.9.1.1", host: "mail.example.com"), "9.9."),
        (RuleClient(ip: "8.8.4.4", host: "foo.org"), "8.8."),
        (RuleClient(ip: "8.8.4.4"), "8.8."),
    ])
    func hostAnswers(client: RuleClient, expected: String) throws {
        #expect(try Self.which(client, Self.hostRules) == expected)
    }

    @Test func matchedRuleReportsKeyAndDecision() throws {
        let r = reader(try compile("127.:deny,A=\"b\"\n127.0.0.1:deny\n127.0.0.1:allow\n"))
        let match = try #require(try RuleLookup.find(RuleClient(ip: "127.0.0.5"), in: r))
        #expect(match == MatchedRule(key: bytes("127."), instructions: bytes("D\0+A=b\0")))
        #expect(match.decision.deny)
        #expect(variables(match.decision) == ["A=b"])
        // Duplicate keys: the first rule in the file wins.
        let first = try #require(try RuleLookup.find(RuleClient(ip: "127.0.0.1"), in: r))
        #expect(first == MatchedRule(key: bytes("127.0.0.1"), instructions: bytes("D\0")))
    }

    @Test func noRuleAtAll() throws {
        let r = reader(try compile("1.2.3.4:deny\n=foo.org:deny\n"))
        #expect(try RuleLookup.find(RuleClient(ip: "5.6.7.8", host: "bar.org", info: "x"), in: r) == nil)
        #expect(try RuleLookup.find(RuleClient(ip: "5.6.7.8"), in: reader(try compile(""))) == nil)
    }

    @Test func damagedDatabases() throws {
        #expect(throws: CDBReadError.empty) { try RuleLookup.find(RuleClient(ip: "1.2.3.4"), in: reader([])) }
        let db = try compile("1.2.3.4:deny\n")
        #expect(throws: CDBReadError.format) {
            try RuleLookup.find(RuleClient(ip: "1.2.3.4"), in: reader(Array(db.prefix(2050))))
        }
        #expect(throws: CDBReadError.format) {
            try RuleLookup.find(RuleClient(ip: "1.2.3.4"), in: reader([1, 2, 3]))
        }
    }
}

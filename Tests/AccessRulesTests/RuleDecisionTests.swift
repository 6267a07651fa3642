import Testing
import AccessRules

@Suite("tcpserver rule instructions")
struct RuleDecisionTests {
    /// Variables are compared as "NAME=value" text (the memberwise initializer is internal).
    typealias V = String

    static func v(_ name: String, _ value: String) -> V { "\(name)=\(value)" }

    @Test(
        arguments: [
            ("", false, []),
            ("D\0", true, []),
            ("+RELAYCLIENT=\0", false, [v("RELAYCLIENT", "")]),
            ("+RELAYCLIENT=@fix.me\0", false, [v("RELAYCLIENT", "@fix.me")]),
            (
                "+RELAYCLIENT=\0+TCPLOCALHOST=movie.edu\0", false,
                [v("RELAYCLIENT", ""), v("TCPLOCALHOST", "movie.edu")]
            ),
            ("D\0+X=y\0", true, [v("X", "y")]),
            ("+X=y\0D\0", true, [v("X", "y")]),
            // Only the first '=' splits; the value keeps the rest.
            ("+A=b=c\0", false, [v("A", "b=c")]),
            ("+=x\0", false, [v("", "x")]),
            ("+A,B=x\0", false, [v("A,B", "x")]),
            // Without '=' the item sets nothing.
            ("+A\0", false, []),
            ("+\0", false, []),
            // Repeats are kept in order; the later one wins when applied.
            ("+A=1\0+A=2\0", false, [v("A", "1"), v("A", "2")]),
            // An unterminated tail is ignored.
            ("D", false, []),
            ("+A=b", false, []),
            ("D\0+A=b", true, []),
            ("+A=b\0D", false, [v("A", "b")]),
            // Unknown and empty items are ignored; only the first byte of an item decides.
            ("X\0D\0", true, []),
            ("\0D\0", true, []),
            ("\0\0\0", false, []),
            ("-A\0", false, []),
            ("Dxyz\0", true, []),
            ("d\0", false, []),
            (" +A=b\0", false, []),
        ] as [(String, Bool, [V])])
    func decision(data: String, deny: Bool, environment: [V]) {
        let d = RuleDecision(bytes(data))
        #expect(d.deny == deny)
        #expect(variables(d) == environment)
    }

    @Test(
        arguments: [
            ("", []),
            ("D\0", [.deny]),
            ("D\0+A=b\0+C\0", [.deny, .setenv(bytes("A=b")), .setenv(bytes("C"))]),
            ("+\0", [.setenv([])]),
            ("Q\0+A=b\0trailing", [.setenv(bytes("A=b"))]),
            ("Dx\0+A=b\0", [.deny, .setenv(bytes("A=b"))]),
        ] as [(String, [RuleInstruction])])
    func instructions(data: String, expected: [RuleInstruction]) {
        #expect(RuleDecision.instructions(bytes(data)) == expected)
    }

    @Test func rawBytesInValues() {
        let data: [UInt8] = [0x2b, 0x4e, 0x3d, 0xff, 0x80, 0x00]
        let environment = RuleDecision(data).environment
        #expect(environment.count == 1)
        #expect(environment.first?.name == bytes("N"))
        #expect(environment.first?.value == [0xff, 0x80])
    }

    /// Parser output read back: what tcprules writes is what tcpserver applies.
    @Test(
        arguments: [
            (
                "127.0.0.1:allow,RELAYCLIENT=\"\",TCPLOCALHOST=\"movie.edu\"", false,
                [v("RELAYCLIENT", ""), v("TCPLOCALHOST", "movie.edu")]
            ),
            ("10.0.:allow,RELAYCLIENT=/@fix.me/", false, [v("RELAYCLIENT", "@fix.me")]),
            ("18.23.0.32:deny", true, []),
            (":deny,A=\"1\",A=\"2\"", true, [v("A", "1"), v("A", "2")]),
        ] as [(String, Bool, [V])])
    func roundTripFromParser(line: String, deny: Bool, environment: [V]) throws {
        guard case .rule(_, let data) = try RuleParser.parse(bytes(line)) else {
            Issue.record("not a rule")
            return
        }
        let d = MatchedRule(key: [], instructions: data).decision
        #expect(d.deny == deny)
        #expect(variables(d) == environment)
    }
}

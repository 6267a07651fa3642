import Testing
import AccessRules

@Suite("tcprules grammar")
struct RuleParserTests {
    /// Lines from the tcprules manual page and their exact encoding: `D\0` for deny, then
    /// `+NAME=value\0` for each variable, in order.
    @Test(
        arguments: [
            // The manual's examples.
            ("18.23.0.32:deny", "18.23.0.32", "D\0"),
            (":deny", "", "D\0"),
            ("127.0.0.1:allow,RELAYCLIENT=\"\"", "127.0.0.1", "+RELAYCLIENT=\0"),
            ("10.0.:allow,RELAYCLIENT=\"@fix.me\"", "10.0.", "+RELAYCLIENT=@fix.me\0"),
            ("10.0.:allow,RELAYCLIENT=/@fix.me/", "10.0.", "+RELAYCLIENT=@fix.me\0"),
            (
                "127.0.0.1:allow,RELAYCLIENT=\"\",TCPLOCALHOST=\"movie.edu\"", "127.0.0.1",
                "+RELAYCLIENT=\0+TCPLOCALHOST=movie.edu\0"
            ),
            ("joe@127.0.0.1:allow", "joe@127.0.0.1", ""),
            ("joe@127.0.0.1:deny", "joe@127.0.0.1", "D\0"),
            ("127.:allow", "127.", ""),
            (":allow", "", ""),
            ("=.heaven.af.mil:allow", "=.heaven.af.mil", ""),
            ("=:deny", "=", "D\0"),
            ("joe@=movie.edu:allow", "joe@=movie.edu", ""),
            ("1.2.3.37-53:allow", "1.2.3.37-53", ""),  // ranges are expanded later, not here
            ("10.2-3.:deny", "10.2-3.", "D\0"),
            // deny with variables: both kept, deny first.
            ("1.2.3.4:deny,X=\"y\"", "1.2.3.4", "D\0+X=y\0"),
            // Any character quotes, and may be a letter, '=' or ',' itself.
            (":allow,A=xyzx", "", "+A=yz\0"),
            (":allow,A==b=", "", "+A=b\0"),
            (":allow,A=,x,", "", "+A=x\0"),
            (":allow,A='it\"s'", "", "+A=it\"s\0"),
            // Everything up to the first '=' is the name, commas included.
            (":allow,A,B=\"x\"", "", "+A,B=x\0"),
            (":allow,=\"x\"", "", "+=x\0"),
            (":allow,A=\"x,y=z\",B=\"\"", "", "+A=x,y=z\0+B=\0"),
            (":allow,A=\"a b\tc\"", "", "+A=a b\tc\0"),
            (":allow,A=\" \"  ", "", "+A= \0"),
            // Trailing blanks and the newline go; leading blanks stay.
            ("1.2.3.4:deny \t \n", "1.2.3.4", "D\0"),
            ("1.2.3.4:deny\n", "1.2.3.4", "D\0"),
            ("  1.2.3.4:deny", "  1.2.3.4", "D\0"),
            // Not a comment unless '#' comes first.
            (" #x:allow", " #x", ""),
            // Bytes are kept as they are, NUL too (only error quoting cuts at NUL).
            ("1.2.3.4:allow,A=\"x\0y\"", "1.2.3.4", "+A=x\0y\0"),
            ("a\0b:deny", "a\0b", "D\0"),
            // IPv6: the separating colon is the first one followed by allow or deny.
            ("::1:allow", "::1", ""),
            ("2001:db8:::deny", "2001:db8::", "D\0"),
            ("::ffff:1.2.3.4:allow,X=\"v6\"", "::ffff:1.2.3.4", "+X=v6\0"),
            ("a:b:allow", "a:b", ""),
            ("fe80::1%eth0:deny", "fe80::1%eth0", "D\0"),
            // A colon followed by "allow" inside a value is found only after the real one.
            ("x:allow,A=\":deny\"", "x", "+A=:deny\0"),
        ] as [(String, String, String)])
    func rule(line: String, address: String, instructions: String) throws {
        let parsed = try RuleParser.parse(bytes(line))
        #expect(
            parsed == .rule(address: bytes(address), instructions: bytes(instructions)),
            "\(show(bytes(line)))")
        // The buffer-pointer entry point agrees.
        let viaPointer = try bytes(line).withUnsafeBufferPointer { p in
            Result { () throws(RuleParseError) in try RuleParser.parse(p) }
        }.get()
        #expect(viaPointer == parsed)
    }

    /// Comments, blank lines and lines without a colon are skipped.
    @Test(arguments: [
        "", "\n", " ", "   ", "\t", " \t \n", "\t\t\n",
        "#", "#\n", "# comment", "#1.2.3.4:deny", "#:deny\n", "##", "#:bogus",
        "1.2.3.4", "allow", "deny\n", "1.2.3.4 deny\n", "=host.example", "joe@1.2.3.4",
        "no colon, not even with = signs", "\0", "\0\n",
    ])
    func skipped(line: String) throws {
        #expect(try RuleParser.parse(bytes(line)) == .skip, "\(show(bytes(line)))")
    }

    /// Every way a line with a colon can fail, and the line as tcprules quotes it:
    /// trailing blanks and newline removed, cut at the first NUL.
    @Test(
        arguments: [
            ("1.2.3.4:permit", "1.2.3.4:permit"),
            ("1.2.3.4:permit  \n", "1.2.3.4:permit"),
            ("1.2.3.4:permit \t\n", "1.2.3.4:permit"),
            ("  1.2.3.4:permit", "  1.2.3.4:permit"),
            (":Allow", ":Allow"),
            (":DENY", ":DENY"),
            ("1.2.3.4: allow", "1.2.3.4: allow"),
            (":", ":"),
            (":\n", ":"),
            ("1.2.3.4:", "1.2.3.4:"),
            (":::", ":::"),
            ("a:b:c", "a:b:c"),
            ("1.2.3.4:allo", "1.2.3.4:allo"),
            ("1.2.3.4:den", "1.2.3.4:den"),
            // Something other than ',' after allow/deny or after a value.
            (":allowed", ":allowed"),
            (":denyX", ":denyX"),
            ("1.2.3.4:allow:deny", "1.2.3.4:allow:deny"),
            (":allow ,A=\"x\"", ":allow ,A=\"x\""),
            (":allow;A=\"x\"", ":allow;A=\"x\""),
            (":allow,A=\"x\"y", ":allow,A=\"x\"y"),
            (":allow,A=\"x\" ,B=\"y\"", ":allow,A=\"x\" ,B=\"y\""),
            // CR is not a blank: a CRLF line does not parse.
            ("1.2.3.4:allow\r\n", "1.2.3.4:allow\r"),
            // A ',' with no '=' after it.
            (":allow,", ":allow,"),
            (":allow,A", ":allow,A"),
            (":allow,A=\"x\",", ":allow,A=\"x\","),
            (":allow,A=\"x\",,", ":allow,A=\"x\",,"),
            // '=' with nothing after it (trailing blanks are gone first).
            (":allow,A=", ":allow,A="),
            (":allow,A=  \n", ":allow,A="),
            // An opening quote with no closing one.
            (":allow,A=\"x", ":allow,A=\"x"),
            (":allow,A=\"", ":allow,A=\""),
            (":allow,A= x ", ":allow,A= x"),
            (":deny,A=/x,B=/y", ":deny,A=/x,B=/y"),
            // The quoted line stops at the first NUL.
            ("1.2\0.3:bogus\n", "1.2"),
            ("\0:bogus", ""),
            (":allow,A=\"x\0", ":allow,A=\"x"),
        ] as [(String, String)])
    func error(line: String, quoted: String) {
        #expect(throws: RuleParseError(line: bytes(quoted)), "\(show(bytes(line)))") {
            try RuleParser.parse(bytes(line))
        }
    }

    @Test func errorMessage() {
        let e = RuleParseError(line: bytes("1.2.3.4:permit"))
        #expect(e.message == bytes("unable to parse this line: 1.2.3.4:permit"))
        // Raw bytes stay raw.
        #expect(RuleParseError(line: [0xff, 0x3a]).message == bytes("unable to parse this line: ") + [0xff, 0x3a])
    }

    @Test(
        arguments: [
            ("abc", "abc"),
            ("abc\n", "abc"),
            ("abc \t \n", "abc"),
            ("abc\n\n", "abc\n"),  // only one newline is a line's end
            (" \t\n", ""),
            ("", ""),
            ("a\0b \n", "a"),
            ("\tabc", "\tabc"),
        ] as [(String, String)])
    func quoting(raw: String, quoted: String) {
        let e = bytes(raw).withUnsafeBufferPointer { RuleParseError(quoting: $0) }
        #expect(e.line == bytes(quoted))
        #expect(e == RuleParseError(line: bytes(quoted)))
    }
}

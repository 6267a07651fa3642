import Testing
import AccessRules
import CDB

@Suite("tcprules compilation")
struct RulesCompilerTests {
    /// The manual's examples and more, with comments, blank lines, ranges, a line without a
    /// colon, trailing blanks, and a last line without its newline.
    static let rules = """
        # tcp.smtp, as in the manual
        joe@127.0.0.1:allow,X="first"
        18.23.0.32:allow,X="second"

        :allow,X="third"
        127.:allow,X="fourth"
        ::1:allow,X="fifth"
           \t
        1.2.3.4-6:deny
        10.2-3.:allow,RELAYCLIENT=""
        1.2.3.9-5:deny
        127.0.0.1:allow,RELAYCLIENT="",TCPLOCALHOST="movie.edu"  \t
        =.heaven.af.mil:deny
        this line has no colon
        #1.1.1.1:deny
        joe@1.2.3.4-5:allow
        last:deny\t
        """

    static let expected: [(String, String)] = [
        ("joe@127.0.0.1", "+X=first\0"),
        ("18.23.0.32", "+X=second\0"),
        ("", "+X=third\0"),
        ("127.", "+X=fourth\0"),
        ("::1", "+X=fifth\0"),
        ("1.2.3.4", "D\0"),
        ("1.2.3.5", "D\0"),
        ("1.2.3.6", "D\0"),
        ("10.2.", "+RELAYCLIENT=\0"),
        ("10.3.", "+RELAYCLIENT=\0"),
        // 1.2.3.9-5 gives no record at all.
        ("127.0.0.1", "+RELAYCLIENT=\0+TCPLOCALHOST=movie.edu\0"),
        ("=.heaven.af.mil", "D\0"),
        ("joe@1.2.3.4-5", ""),  // '@': not a range
        ("last", "D\0"),
    ]

    @Test func wholeText() throws {
        let db = try compile(Self.rules)
        #expect(try recordList(db) == Self.expected.map { "\(show(bytes($0.0)))=>\(show(bytes($0.1)))" })
        #expect(db == (try database(Self.expected)))
    }

    /// Every chunk size from 1 byte to the whole text gives the same bytes.
    @Test func everyChunkSize() throws {
        let text = bytes(Self.rules)
        let whole = try compile(chunks: [text])
        for size in 1...text.count {
            #expect(try compile(chunks: chunked(text, size: size)) == whole, "chunk size \(size)")
        }
    }

    /// Random cuts, with empty chunks among them, and a trailing newline or not.
    @Test(arguments: [false, true])
    func randomChunks(trailingNewline: Bool) throws {
        let text = bytes(Self.rules) + (trailingNewline ? [10] : [])
        let whole = try compile(chunks: [text])
        #expect(whole == (try compile(Self.rules)))
        var rng = SplitMix64(seed: trailingNewline ? 1 : 2)
        for _ in 0..<300 {
            var chunks: [[UInt8]] = []
            var i = 0
            while i < text.count {
                if Int.random(in: 0..<5, using: &rng) == 0 { chunks.append([]) }
                let n = Int.random(in: 1...40, using: &rng)
                chunks.append(Array(text[i..<min(i + n, text.count)]))
                i += n
            }
            #expect(try compile(chunks: chunks) == whole)
        }
    }

    @Test(arguments: ["", "\n", "\n\n\n", "# only a comment", "# comment\n", "no colon", "1.2.3.9-1:deny\n"])
    func noRecords(text: String) throws {
        let db = try compile(text)
        #expect(db == (try database([])))
        #expect(db.count == 2048)
    }

    @Test func lastLineWithoutNewline() throws {
        #expect(try compile("a:deny") == (try database([("a", "D\0")])))
        #expect(try compile("a:deny\nb:allow") == (try database([("a", "D\0"), ("b", "")])))
        #expect(try compile("a:deny\nb:allow  ") == (try database([("a", "D\0"), ("b", "")])))
        #expect(try compile(chunks: [bytes("a:de"), bytes("ny")]) == (try database([("a", "D\0")])))
    }

    @Test func duplicateRulesKeepFileOrder() throws {
        let db = try compile("1.2.3.4:deny\n1.2.3.4:allow,X=\"second\"\n")
        #expect(db == (try database([("1.2.3.4", "D\0"), ("1.2.3.4", "+X=second\0")])))
        #expect(try reader(db).value("1.2.3.4") == bytes("D\0"))
    }

    /// A bad line stops compilation with the line quoted as tcprules quotes it, whatever the
    /// chunking.
    @Test(
        arguments: [
            ("1.2.3.4:allow\n1.2.3.5:permit  \n6.7.8.9:deny\n", "1.2.3.5:permit"),
            ("1.2.3.4:allow\nlast:bogus", "last:bogus"),
            ("x:allow,A=\"unterminated\n", "x:allow,A=\"unterminated"),
            ("x:allow\r\n", "x:allow\r"),
            ("ok:deny\n1.2.3.x-5:deny \n", "1.2.3.x-5:deny"),
            ("1.2.3.4-5a:deny", "1.2.3.4-5a:deny"),
            ("2001:db8::1-3:deny\n", "2001:db8::1-3:deny"),
            ("a\0b:bogus\n", "a"),
        ] as [(String, String)])
    func parseErrors(text: String, quoted: String) {
        let error = RulesCompileError.parse(RuleParseError(line: bytes(quoted)))
        let t = bytes(text)
        for size in [1, 2, 3, 7, t.count] {
            #expect(throws: error, "chunk size \(size)") { try compile(chunks: chunked(t, size: size)) }
        }
    }

    @Test func writeErrors() throws {
        // Fails when the records no longer fit the sink (here in finish, when the buffer
        // is flushed) and reports the errno.
        var compiler = RulesCompiler(writer: try CDBWriter(sink: FailingSink(limit: 2050)))
        try bytes("1.2.3.4:deny\n").withUnsafeBytes { try compiler.feed($0) }
        #expect(throws: RulesCompileError.write(.system(28))) { try compiler.finish() }

        // Fails in feed once a record passes the writer's 64 KiB buffer.
        var big = RulesCompiler(writer: try CDBWriter(sink: FailingSink(limit: 4096)))
        let line = bytes("1.2.3.4:allow,X=\"" + String(repeating: "v", count: 70_000) + "\"\n")
        #expect(throws: RulesCompileError.write(.system(28))) {
            try line.withUnsafeBytes { try big.feed($0) }
        }
    }

    @Test func emptyChunkWithoutBaseAddress() throws {
        let writer = try CDBWriter(sink: CDBMemorySink())
        var compiler = RulesCompiler(writer: writer)
        try compiler.feed(UnsafeRawBufferPointer(start: nil, count: 0))
        try bytes("a:deny").withUnsafeBytes { try compiler.feed($0) }
        try compiler.feed(UnsafeRawBufferPointer(start: nil, count: 0))
        try compiler.finish()
        #expect(compiler.writer.sink.bytes == (try database([("a", "D\0")])))
    }
}

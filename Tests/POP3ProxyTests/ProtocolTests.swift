import POP3Proxy
import Testing

func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

// The pure pieces of pop3.proxy's protocol gateway, table-driven from RFC 1939 and the
// manual page's sentences.

@Suite("POP3 commands (RFC 1939 section 3 and the manual's list)")
struct POP3CommandTests {
    @Test(arguments: [
        ("USER joe", POP3Command.user(bytes("joe"))),
        ("user joe@pop.example.org", .user(bytes("joe@pop.example.org"))),
        ("PASS secret", .pass(bytes("secret"))),
        ("PASS with two  spaces ", .pass(bytes("with two  spaces "))),
        ("LIST", .list(nil)), ("LIST 2", .list(2)), ("list 4294967295", .list(4_294_967_295)),
        ("UIDL", .uidl(nil)), ("UIDL 7", .uidl(7)),
        ("STAT", .stat), ("RETR 1", .retr(1)), ("DELE 12", .dele(12)),
        ("TOP 1 10", .top(1, lines: 10)), ("TOP 3 0", .top(3, lines: 0)),
        ("LAST", .last), ("NOOP", .noop), ("RSET", .rset), ("QUIT", .quit), ("CAPA", .capa), ("Quit", .quit),
        ("STLS", .stls), ("stls", .stls),
    ])
    func forwardedCommandsParse(line: String, command: POP3Command) {
        #expect(POP3Command.parse(bytes(line)) == command)
    }

    @Test(arguments: [
        ("APOP joe c4c9334bac560ecc979e58001b3e22fb", "APOP"), ("AUTH PLAIN", "AUTH"),
        ("XTND XMIT", "XTND"), ("", ""), ("HELO there", "HELO"), ("RETRX 1", "RETRX"),
    ])
    func othersAreUnsupported(line: String, keyword: String) {
        #expect(POP3Command.parse(bytes(line)) == .unsupported(keyword: keyword))
    }

    @Test(arguments: [
        ("RETR", "RETR", "a message number is needed"),
        ("RETR 0", "RETR", "message numbers start at 1"),
        ("RETR x", "RETR", "not a number: x"),
        ("RETR -1", "RETR", "not a number: -1"),
        ("RETR 1 2", "RETR", "a message number is needed"),
        ("RETR  1", "RETR", "arguments are separated by one space"),
        ("RETR 99999999999", "RETR", "not a number: 99999999999"),
        ("DELE", "DELE", "a message number is needed"),
        ("TOP 1", "TOP", "a message number and a line count are needed"),
        ("TOP 0 1", "TOP", "message numbers start at 1"),
        ("LIST 1 2", "LIST", "at most one message number is allowed"),
        ("STAT 1", "STAT", "no arguments are allowed"),
        ("QUIT ", "QUIT", "no arguments are allowed"),
        ("USER", "USER", "one user name is needed"),
        ("USER a b", "USER", "one user name is needed"),
        ("USER " + String(repeating: "x", count: 41), "USER", "an argument is longer than 40 characters"),
        ("USER a\u{1}b", "USER", "an argument holds a control character"),
        ("PASS", "PASS", "a password is needed"),
        ("PASS ", "PASS", "a password is needed"),
    ])
    func badArgumentsAreRefused(line: String, keyword: String, reason: String) {
        #expect(POP3Command.parse(bytes(line)) == .malformed(keyword: keyword, reason: reason))
    }

    @Test func theKeywordOfALogLineIsPrintable() {
        #expect(POP3Command.parse([0x58, 0x0A, 0xFF]).keyword == "X\\012\\377")
    }

    @Test func multilineAnswersAreThoseOfRFC1939() {
        let multi: [POP3Command] = [.list(nil), .uidl(nil), .retr(1), .top(1, lines: 0), .capa]
        let single: [POP3Command] = [.list(1), .uidl(1), .stat, .dele(1), .last, .noop, .rset, .quit, .user([1])]
        #expect(multi.allSatisfy { $0.expectsMultiline })
        #expect(!single.contains { $0.expectsMultiline })
    }

    @Test func forwardedLinesAreCanonical() {
        #expect(POP3Command.parse(bytes("top 1 5")).line == bytes("TOP 1 5\r\n"))
        #expect(POP3Command.parse(bytes("list")).line == bytes("LIST\r\n"))
        #expect(POP3Command.parse(bytes("uidl 3")).line == bytes("UIDL 3\r\n"))
        #expect(POP3Command.parse(bytes("noop")).line == bytes("NOOP\r\n"))
    }
}

@Suite("Server status lines: +OK or -ERR, anything else ends the session")
struct POP3StatusTests {
    @Test(arguments: [
        ("+OK", POP3Status.ok), ("+OK 2 messages", .ok), ("-ERR", .error), ("-ERR no such message", .error),
    ])
    func statuses(line: String, status: POP3Status) { #expect(POP3Status.of(bytes(line)) == status) }

    @Test(arguments: ["+ok", "OK", "+OKAY", "-ERROR", "", " +OK", "* OK IMAP", "220 smtp ready"])
    func notPOP3(line: String) { #expect(POP3Status.of(bytes(line)) == nil) }
}

@Suite("Lines with a bound")
struct LineReaderTests {
    @Test func linesEndAtLFWithOrWithoutCR() {
        var reader = LineReader(limit: 100)
        let input = bytes("USER joe\r\nPASS x\nNOOP")
        input.withUnsafeBytes { raw in
            #expect(reader.next(raw) == .line(bytes("USER joe"), used: 10))
            #expect(reader.next(UnsafeRawBufferPointer(rebasing: raw[10...])) == .line(bytes("PASS x"), used: 7))
            #expect(reader.next(UnsafeRawBufferPointer(rebasing: raw[17...])) == .incomplete)
        }
        bytes("\r\n").withUnsafeBytes { #expect(reader.next($0) == .line(bytes("NOOP"), used: 2)) }
    }

    @Test func aLineSplitAtEveryByteReadsTheSame() {
        let line = bytes("RETR 12345\r\n")
        var reader = LineReader(limit: 100)
        var result: LineReader.Line = .incomplete
        for byte in line { result = [byte].withUnsafeBytes { reader.next($0) } }
        #expect(result == .line(bytes("RETR 12345"), used: 1))
    }

    @Test func aLineLongerThanTheLimitIsRefusedWithoutKeepingIt() {
        var reader = LineReader(limit: 16)
        let chunk = [UInt8](repeating: 0x41, count: 10)
        #expect(chunk.withUnsafeBytes { reader.next($0) } == .incomplete)
        #expect(chunk.withUnsafeBytes { reader.next($0) } == .tooLong)
        #expect(reader.pendingCount == 10)
        var fresh = LineReader(limit: 16)
        #expect((chunk + chunk + [10]).withUnsafeBytes { fresh.next($0) } == .tooLong)
    }
}

@Suite("The end of a multi-line answer, found as the bytes stream by")
struct MultilineEndTests {
    /// The answer's length found when `stream` arrives in pieces of `piece` bytes.
    static func end(of stream: [UInt8], piece: Int) -> Int? {
        var scanner = MultilineEnd()
        var offset = 0
        while offset < stream.count {
            let upper = min(offset + piece, stream.count)
            let found = stream[offset..<upper].withUnsafeBytes { scanner.scan($0) }
            if let found { return offset + found }
            offset = upper
        }
        return nil
    }

    static let cases: [(String, Int?)] = [
        (".\r\n", 3),
        ("line\r\n.\r\n", 9),
        ("1 120\r\n2 200\r\n.\r\nthe next answer", 17),
        ("..stuffed\r\n.\r\n", 14),
        ("a\r\n..\r\n.\r\n", 10),
        ("bare\n.\r\nstill data\r\n.\r\n", 23),
        ("bare CR\r.\r\nstill\r\n.\r\n", 21),
        ("\r\r\n.\r\n", 6),
        (".x\r\n.\r\n", 7),
        ("x\r\n.\r\r\n.\r\n", 10),
        ("no end\r\n.", nil),
        ("8-bit \u{e9}\u{0}\r\n.\r\n", 14),
    ]

    @Test(arguments: cases)
    func endsFoundInEveryPieceSize(stream: String, expected: Int?) {
        let data = bytes(stream)
        for piece in 1...data.count + 1 {
            #expect(Self.end(of: data, piece: piece) == expected, "pieces of \(piece)")
        }
    }

    @Test func aLongMessageIsScannedWithoutKeepingIt() {
        var message: [UInt8] = []
        for i in 0..<2000 { message += bytes(i % 7 == 0 ? "..dot line \(i)\r\n" : "line \(i) of the body\r\n") }
        message += [UInt8](repeating: 0x78, count: 10_000) + bytes("\r\n.\r\n")
        #expect(Self.end(of: message, piece: 4096) == message.count)
        #expect(Self.end(of: message, piece: 1) == message.count)
    }
}

@Suite("USER and PASS: server selection and proxy authentication (the manual)")
struct ServerLoginTests {
    @Test func withoutSelectionTheWholeLoginGoesToTheServer() {
        let login = ServerLogin(user: bytes("joe@pop.example.org"), delimiters: nil)
        #expect(login == ServerLogin(user: bytes("joe@pop.example.org"), delimiters: nil))
        #expect(login.serverUser == bytes("joe@pop.example.org") && login.server == nil)
        #expect(login.proxyUser == login.serverUser && !login.proxyAuthentication)
    }

    @Test(arguments: [
        ("user@server", "@", "user", "server"),
        ("joe@example.org@pop.example.org", "@", "joe@example.org", "pop.example.org"),
        ("joe%pop", "@%", "joe", "pop"),
        ("joe@a%b", "@%", "joe@a", "b"),
        ("joe@[2001:db8::1]:110", "@", "joe", "[2001:db8::1]:110"),
        ("joe@", "@", "joe", ""),
    ])
    func theLastDelimiterSplitsUserAndServer(argument: String, delimiters: String, user: String, server: String) {
        let login = ServerLogin(user: bytes(argument), delimiters: bytes(delimiters))
        #expect(login.serverUser == bytes(user) && login.server == bytes(server))
    }

    @Test func aLoginWithoutTheDelimiterNamesNoServer() {
        #expect(ServerLogin(user: bytes("joe"), delimiters: bytes("@")).server == nil)
    }

    @Test func proxyAuthenticationSplitsAtTheFirstColon() {
        let login = ServerLogin(user: bytes("proxyjoe:joe@pop.example.org"), delimiters: bytes("@"))
        #expect(login.proxyUser == bytes("proxyjoe") && login.serverUser == bytes("joe"))
        #expect(login.server == bytes("pop.example.org") && login.proxyAuthentication)
        let (proxy, server) = login.passwords(bytes("proxypass:server:pass"))
        #expect(proxy == bytes("proxypass") && server == bytes("server:pass"))
    }

    @Test func withoutAColonInUserThePasswordIsNotSplit() {
        let login = ServerLogin(user: bytes("joe"), delimiters: nil)
        let (proxy, server) = login.passwords(bytes("pass:word"))
        #expect(proxy == bytes("pass:word") && server == bytes("pass:word"))
    }
}

@Suite("-s: the servers a client may select")
struct ServerListTests {
    @Test(arguments: [
        ("pop.example.org", "pop.example.org", true),
        ("pop.example.org", "POP.Example.ORG", true),
        ("*.example.org", "pop.example.org", true),
        ("*.example.org", "example.org", false),
        ("pop?.example.org", "pop1.example.org", true),
        ("pop?.example.org", "pop.example.org", false),
        ("a,b,*.c", "x.c", true),
        ("192.0.2.1", "192.0.2.1", true),
        ("pop.example.org", "192.0.2.1", false),
        ("pop.example.org", "pop.example.org:110", false),
        ("pop.example.org:*", "pop.example.org:995", true),
        ("*", "anything", true),
        ("*a*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false),
        ("", "pop", false),
    ])
    func matches(list: String, server: String, allowed: Bool) {
        #expect(ServerList(list).allows(bytes(server)) == allowed)
    }
}

#if canImport(Glibc)
import Glibc
#endif
import AccessRules
import Gateway
import GatewayKit
import POP3Proxy
import Testing

// The whole pop3.proxy session as a pure machine: events in one at a time, a manual clock, no
// socket. What reaches the client and the server is read off the actions.

final class Context: SessionContext {
    var now = Deadline(nanoseconds: 5_000_000_000)
    func localEndpoint() throws(SystemError) -> Endpoint { Endpoint(address: IPAddress("127.0.0.1")!, port: 110) }
}

/// One session and everything it has done so far.
final class Run {
    let machine: POP3Session
    let context = Context()
    var actions: [SessionAction] = []

    init(_ arguments: [String], clock: Int = 1_700_000_000, tls: POP3TLSContexts = POP3TLSContexts()) throws {
        let options = try POP3ProxyOptions.parse(arguments)
        let settings = POP3SessionSettings(
            options: options, environment: [Array("PATH=/bin".utf8)], clock: { clock },
            clamdVersion: "ClamAV 1.0.7/27500", hostName: "gw.example")
        machine = POP3Session(
            settings: settings, client: Endpoint(address: IPAddress("192.0.2.7")!, port: 40000), id: 3, tls: tls)
    }

    /// Feeds `event`; returns the actions it caused (also kept in `actions`).
    @discardableResult
    func feed(_ event: SessionEvent) -> [SessionAction] {
        var new: [SessionAction] = []
        machine.handle(event, context: context, into: &new)
        actions += new
        return new
    }

    @discardableResult
    func client(_ text: String) -> [SessionAction] { feed(.received(.client, Array(text.utf8)[...])) }

    @discardableResult
    func server(_ text: String) -> [SessionAction] { feed(.received(.server, Array(text.utf8)[...])) }

    /// Everything sent to `peer` in `actions`, as text.
    static func sent(to peer: Peer, in actions: [SessionAction]) -> String {
        var bytes: [UInt8] = []
        for case .send(let to, let chunk) in actions where to == peer { bytes += chunk }
        return String(decoding: bytes, as: UTF8.self)
    }

    func sent(to peer: Peer) -> String { Self.sent(to: peer, in: actions) }

    var logLines: [String] {
        actions.compactMap { if case .log(_, let line) = $0 { line } else { nil } }
    }

    var closed: Bool { actions.contains(.close) }

    /// Starts the session and logs in as bob to the default server (the connection, the
    /// server's greeting, USER and PASS accepted).
    func loggedIn(greeting: String = "+OK hello\r\n") {
        feed(.started)
        client("USER bob\r\nPASS secret\r\n")
        feed(.streamConnected(.server))
        server(greeting)
        server("+OK\r\n")
        server("+OK logged in\r\n")
        actions = []
    }
}

@Suite("pop3.proxy's session")
struct POP3SessionTests {
    @Test func greetsReadsAndArmsTheTimer() throws {
        let run = try Run(["mail.example:1110"])
        let actions = run.feed(.started)
        #expect(Run.sent(to: .client, in: actions) == "+OK pop3.proxy ready\r\n")
        #expect(actions.contains(.read(.client)))
        #expect(actions.contains(.setTimer(.seconds(600))))
        #expect(run.logLines == ["session 3 from 192.0.2.7: connect from 192.0.2.7:40000 on 127.0.0.1:110"])
    }

    @Test func logsInToTheServerOnlyAfterPass() throws {
        let run = try Run(["-q", "127.0.0.2", "mail.example:1110"])
        run.feed(.started)
        #expect(!run.client("USER bob\r\n").contains { if case .connect = $0 { true } else { false } })
        let afterPass = run.client("PASS secret\r\n")
        #expect(
            afterPass.filter { if case .setTimer = $0 { false } else { true } } == [
                .connect(
                    .server, to: .host("mail.example", port: 1110, from: IPAddress("127.0.0.2")), timeout: .seconds(600)
                )
            ])
        run.feed(.streamConnected(.server))
        #expect(Run.sent(to: .server, in: run.server("+OK POP3 ready <1.2@x>\r\n")) == "USER bob\r\n")
        #expect(Run.sent(to: .server, in: run.server("+OK\r\n")) == "PASS secret\r\n")
        let granted = run.server("+OK 2 messages\r\n")
        // The client's PASS is answered with the server's own +OK, only now.
        #expect(Run.sent(to: .client, in: granted) == "+OK 2 messages\r\n")
        #expect(run.logLines.last == "session 3 from 192.0.2.7: login: user bob, server mail.example:1110: granted")
    }

    @Test func aRefusedLoginCountsAndTheFifthEndsTheSession() throws {
        let run = try Run(["mail.example"])
        run.feed(.started)
        for attempt in 1...5 {
            run.actions = []
            run.client("USER bob\r\nPASS wrong\r\n")
            run.feed(.streamConnected(.server))
            run.server("+OK hi\r\n+OK\r\n")
            run.server("-ERR [AUTH] Authentication failed.\r\n")
            #expect(run.actions.contains(.closeStream(.server)))
            #expect(run.sent(to: .client).hasPrefix("+OK password required\r\n-ERR user bob, server mail.example:110"))
            #expect(run.closed == (attempt == 5), "attempt \(attempt)")
        }
        #expect(run.sent(to: .client).contains("too many failed logins"))
    }

    @Test func anUnreachableServerIsAFailedLogin() throws {
        let run = try Run(["mail.example"])
        run.feed(.started)
        run.client("USER bob\r\nPASS x\r\n")
        let failed = run.feed(.connectFailed(.server, SystemError(errno: ECONNREFUSED)))
        #expect(Run.sent(to: .client, in: failed).hasPrefix("-ERR user bob, server mail.example:110: cannot connect"))
        #expect(!run.closed)
        let unknown = try Run(["-e", "-"])
        unknown.feed(.started)
        unknown.client("USER bob@nowhere.invalid\r\nPASS x\r\n")
        #expect(
            unknown.actions.contains(
                .connect(.server, to: .host("nowhere.invalid", port: 110, from: nil), timeout: .seconds(600))))
        let said = unknown.feed(.hostUnknown(.server, reason: "no address"))
        #expect(Run.sent(to: .client, in: said).contains("cannot find server nowhere.invalid:110: no address"))
    }

    @Test func aServerThatIsNotPOP3EndsTheSessionAtOnce() throws {
        let greeting = try Run(["mail.example"])
        greeting.feed(.started)
        greeting.client("USER bob\r\nPASS x\r\n")
        greeting.feed(.streamConnected(.server))
        greeting.server("HTTP/1.1 400 Bad Request\r\n")
        #expect(greeting.closed)
        #expect(greeting.logLines.contains { $0.contains("not POP3: HTTP/1.1 400 Bad Request") })

        let later = try Run(["mail.example"])
        later.loggedIn()
        later.client("STAT\r\n")
        later.server("OK 2 320\r\n")
        #expect(later.sent(to: .client) == "-ERR server error\r\n")
        #expect(later.closed)
    }

    @Test func onlyTheCommandsOfTheManualReachTheServer() throws {
        // (client line, forwarded?) from the manual's list and RFC 1939's arguments.
        let cases: [(String, Bool)] = [
            ("STAT", true), ("LIST", true), ("LIST 2", true), ("RETR 1", true), ("DELE 1", true), ("TOP 1 0", true),
            ("UIDL", true), ("UIDL 3", true), ("LAST", true), ("NOOP", true), ("RSET", true), ("retr 1", true),
            ("APOP bob 0123", false), ("AUTH PLAIN", false), ("STLS", false), ("XTND XMIT", false),
            ("RETR", false), ("RETR abc", false), ("RETR 0", false), ("TOP 1", false), ("STAT 1", false),
            ("NOOP now", false),
        ]
        for (line, forwarded) in cases + [("PASS a\rDELE 1", false), ("USER x\u{0}y", false)] {
            let run = try Run(["mail.example"])
            run.loggedIn()
            run.client(line + "\r\n")
            if forwarded {
                // The canonical form: the keyword in capitals.
                #expect(run.sent(to: .server) == line.uppercased() + "\r\n", "\(line)")
                #expect(run.sent(to: .client) == "", "\(line)")
            } else {
                #expect(run.sent(to: .server) == "", "\(line)")
                #expect(run.sent(to: .client) == "-ERR unsupported command\r\n", "\(line)")
                #expect(run.logLines.contains { $0.contains("refused") }, "\(line)")
            }
        }
    }

    @Test func theFifthUnsupportedCommandEndsTheSessionCountingBothPhases() throws {
        let run = try Run(["mail.example"])
        run.feed(.started)
        run.client("APOP a b\r\nXTND\r\n")
        run.client("USER bob\r\nPASS secret\r\n")
        run.feed(.streamConnected(.server))
        run.server("+OK\r\n+OK\r\n+OK in\r\n")
        run.client("AUTH\r\nSTLS\r\n")
        #expect(!run.closed)
        run.actions = []
        run.client("XTND\r\n")
        #expect(run.closed)
        #expect(run.sent(to: .client) == "-ERR too many unsupported commands\r\n")
    }

    @Test func capaIsTheProxysOwnInEveryPhase() throws {
        let run = try Run(["mail.example"])
        run.loggedIn()
        run.client("CAPA\r\n")
        #expect(run.sent(to: .server) == "")
        #expect(run.sent(to: .client) == "+OK capability list follows\r\nUSER\r\nTOP\r\nUIDL\r\nPIPELINING\r\n.\r\n")
    }

    /// A multi-line answer with everything RFC 1939 lets through unchanged.
    static let answer =
        "+OK 120 octets\r\nFrom: a@b\r\n\r\n..stuffed line\r\nbare\rcr and bare\nlf\r\n.x\r\n\n.\n"
        + "\u{e9}t\u{e9}\r\n.\r\n"

    @Test(arguments: [1, 2, 3, 7, 1000])
    func multilineAnswersPassByteForByteInAnyPieces(piece: Int) throws {
        let run = try Run(["mail.example"])
        run.loggedIn()
        run.client("RETR 1\r\nSTAT\r\n")
        // STAT waits until RETR's answer has ended.
        #expect(run.sent(to: .server) == "RETR 1\r\n")
        let bytes = Array(Self.answer.utf8)
        var offset = 0
        while offset < bytes.count {
            let end = min(offset + piece, bytes.count)
            run.feed(.received(.server, bytes[offset..<end]))
            offset = end
        }
        #expect(run.sent(to: .client) == Self.answer)
        #expect(run.sent(to: .server) == "RETR 1\r\nSTAT\r\n")
        run.server("+OK 1 120\r\n")
        #expect(run.sent(to: .client) == Self.answer + "+OK 1 120\r\n")
    }

    @Test func anErrorToAMultilineCommandIsOneLine() throws {
        let run = try Run(["mail.example"])
        run.loggedIn()
        run.client("RETR 9\r\nNOOP\r\n")
        run.server("-ERR no such message\r\n")
        #expect(run.sent(to: .server) == "RETR 9\r\nNOOP\r\n")
    }

    @Test func pipelinedCommandsGoOneAtATimeInOrder() throws {
        let run = try Run(["mail.example"])
        run.loggedIn()
        run.client("NOOP\r\nDELE 1\r\nXTND\r\nLIST 1\r\n")
        #expect(run.sent(to: .server) == "NOOP\r\n")
        run.server("+OK\r\n")
        #expect(run.sent(to: .server) == "NOOP\r\nDELE 1\r\n")
        run.server("+OK deleted\r\n")
        // XTND is refused in its turn; LIST 1 goes on.
        #expect(run.sent(to: .server) == "NOOP\r\nDELE 1\r\nLIST 1\r\n")
        #expect(run.sent(to: .client) == "+OK\r\n+OK deleted\r\n-ERR unsupported command\r\n")
    }

    /// `printf 'USER..PASS..STAT..QUIT' | nc -N`: a client that half-closes after its commands
    /// gets every answer, in order; then the session ends.
    @Test func commandsBeforeAHalfCloseAreAllAnswered() throws {
        let run = try Run(["mail.example"])
        run.feed(.started)
        run.client("USER bob\r\nPASS secret\r\nSTAT\r\nNOOP\r\n")
        run.feed(.endOfFile(.client))
        #expect(!run.closed)
        run.feed(.streamConnected(.server))
        run.server("+OK hello\r\n")
        run.server("+OK\r\n")
        run.server("+OK logged in\r\n")
        #expect(run.sent(to: .server) == "USER bob\r\nPASS secret\r\nSTAT\r\n")
        run.server("+OK 2 320\r\n")
        #expect(!run.closed)
        run.server("+OK\r\n")
        #expect(run.sent(to: .client).hasSuffix("+OK logged in\r\n+OK 2 320\r\n+OK\r\n"))
        #expect(run.closed)
        #expect(run.logLines.last?.contains("end (client closed the connection)") == true)
        // A line without its end, then the half-close: nothing to answer, the end at once.
        let partial = try Run(["mail.example"])
        partial.loggedIn()
        partial.client("STA")
        partial.feed(.endOfFile(.client))
        #expect(partial.closed)
        #expect(partial.sent(to: .server) == "")
    }

    @Test func quitIsForwardedAndEndsTheSessionWithItsAnswer() throws {
        let run = try Run(["mail.example"])
        run.loggedIn()
        run.client("RETR 1\r\n")
        run.server("+OK\r\nbody\r\n.\r\n")
        // A message the server refuses is not one retrieved.
        run.client("RETR 9\r\n")
        run.server("-ERR no such message\r\n")
        run.client("QUIT\r\n")
        #expect(!run.closed)
        run.server("+OK bye\r\n")
        #expect(run.closed)
        #expect(run.sent(to: .client) == "+OK\r\nbody\r\n.\r\n-ERR no such message\r\n+OK bye\r\n")
        #expect(
            run.logLines.last?.hasSuffix(
                "end (quit): user bob, 45 bytes from client, 105 bytes to client, 1 messages retrieved, 0.000 s")
                == true,
            "\(run.logLines)")
    }

    @Test func quietLogsNoCommandsButKeepsTheRest() throws {
        let loud = try Run(["mail.example"])
        loud.loggedIn()
        loud.client("STAT\r\n")
        #expect(loud.logLines == ["session 3 from 192.0.2.7: command STAT"])
        let quiet = try Run(["-m", "mail.example"])
        quiet.loggedIn()
        quiet.client("STAT\r\nXTND\r\n")
        quiet.server("+OK 0 0\r\n")
        #expect(quiet.logLines == ["session 3 from 192.0.2.7: command XTND refused"])
    }

    @Test func anOverLongLineEndsTheSession() throws {
        let run = try Run(["mail.example"])
        run.feed(.started)
        run.client(String(repeating: "A", count: 600))
        #expect(!run.closed)
        run.client(String(repeating: "A", count: 600))
        #expect(run.closed)
        #expect(run.sent(to: .client).hasSuffix("-ERR line too long\r\n"))
    }

    @Test func heldPipelinedBytesPauseTheClient() throws {
        let run = try Run(["mail.example"])
        run.loggedIn()
        run.client("RETR 1\r\n")
        let flood = String(repeating: "NOOP\r\n", count: POP3Session.heldLimit / 6 + 1)
        #expect(run.client(flood).contains(.pause(.client)))
        run.server("+OK\r\n.\r\n")
        // One NOOP goes out; the rest wait for answers, still above the limit? No: one line
        // less is below it, so reading resumes.
        #expect(run.actions.contains(.read(.client)))
    }

    @Test func noTimeoutWithTZero() throws {
        let run = try Run(["-t", "0", "mail.example"])
        run.loggedIn()
        run.client("STAT\r\n")
        run.server("+OK 0 0\r\n")
        #expect(!run.actions.contains { if case .setTimer = $0 { true } else { false } })
    }

    @Test func inactivityEndsTheSessionAndKillsAHangingProgram() throws {
        let run = try Run(["-t", "5", "-a", "/bin/acp", "mail.example"])
        run.feed(.started)
        #expect(run.actions.contains(.setTimer(.seconds(5))))
        run.client("USER bob\r\nPASS x\r\n")
        run.feed(.programStarted(pid: 42))
        let fired = run.feed(.timerFired)
        #expect(fired.contains(.killProgram))
        #expect(fired.last == .close)
        #expect(run.logLines.last?.contains("end (timeout after 5 s of inactivity)") == true)
    }

    @Test func theAccessControlProgramSeesTheManualsVariablesAndDecides() throws {
        let run = try Run(["-a", "/etc/acp", "-v", "GW_", "-e", "-"])
        run.feed(.started)
        run.client("USER joe:bob@mail.example:1110\r\nPASS joepw:bobpw\r\n")
        guard case .runCapturing(let program)? = run.actions.last else {
            Issue.record("no program: \(run.actions)")
            return
        }
        #expect(program.argv == ["/etc/acp"])
        let environment = Set(program.environment.map { String(decoding: $0, as: UTF8.self) })
        for expected in [
            "PATH=/bin", "GW_INTERFACE=127.0.0.1", "GW_PORT=110", "GW_CLIENT=192.0.2.7", "GW_SERVER=mail.example",
            "GW_SERVERPORT=1110", "GW_SERVERLOGIN=bob", "GW_USERNAME=joe", "GW_PASSWD=joepw",
        ] {
            #expect(environment.contains(expected), "\(expected)")
        }
        // Its output goes to the client; the decision waits for both its exit and its end.
        run.actions = []
        run.feed(.received(.program, Array("-ERR not you\r\n".utf8)[...]))
        run.feed(.programExited(pid: 9, status: 1 << 8))
        #expect(!run.closed)
        run.feed(.endOfFile(.program))
        #expect(run.closed)
        #expect(run.sent(to: .client) == "-ERR not you\r\n")
        #expect(run.logLines.contains { $0.contains("login denied: user bob, server mail.example:1110") })
    }

    @Test func aGrantingProgramLetsTheLoginGoOn() throws {
        let run = try Run(["-a", "/etc/acp", "mail.example"])
        run.feed(.started)
        run.client("USER bob\r\nPASS pw\r\n")
        run.feed(.endOfFile(.program))
        run.actions = []
        run.feed(.programExited(pid: 9, status: 0))
        #expect(
            run.actions == [.connect(.server, to: .host("mail.example", port: 110, from: nil), timeout: .seconds(600))])
        // Silent denial: the proxy answers for it.
        let silent = try Run(["-a", "/etc/acp", "mail.example"])
        silent.feed(.started)
        silent.client("USER bob\r\nPASS pw\r\n")
        silent.feed(.programExited(pid: 9, status: 2 << 8))
        silent.feed(.endOfFile(.program))
        #expect(silent.sent(to: .client).hasSuffix("-ERR access denied\r\n"))
    }

    @Test func theClientLogIsWrittenAfterEachLogin() throws {
        let run = try Run(["-l", "/var/spool/pop3", "mail.example"], clock: 1_234_567_890)
        run.feed(.started)
        run.client("USER bob\r\nPASS secret\r\n")
        run.feed(.streamConnected(.server))
        run.server("+OK\r\n+OK\r\n+OK\r\n")
        #expect(
            run.actions.contains(
                .replaceFile(
                    path: "/var/spool/pop3/192.0.2.7", contents: Array("1234567890 192.0.2.7 bob mail.example\n".utf8)))
        )
        // A file that cannot be written is logged; the session goes on.
        run.feed(.fileReplaced(path: "/var/spool/pop3/192.0.2.7", error: SystemError(errno: EACCES)))
        #expect(!run.closed)
        #expect(
            run.logLines.last == "session 3 from 192.0.2.7: unable to write /var/spool/pop3/192.0.2.7: access denied")
    }

    @Test func rulesAreAppliedBeforeTheGreeting() throws {
        let run = try Run(["--rules", "/etc/pop3.cdb", "mail.example"])
        let first = run.feed(.started)
        #expect(first.contains(.checkRules(path: "/etc/pop3.cdb", client: RuleClient(ip: Array("192.0.2.7".utf8)))))
        #expect(Run.sent(to: .client, in: first) == "")
        run.feed(.rulesChecked(.denied(rule: Array("192.0.2.:deny".utf8))))
        #expect(run.closed)
        #expect(run.sent(to: .client) == "")

        let allowed = try Run(["--rules", "/etc/pop3.cdb", "-a", "/etc/acp", "mail.example"])
        allowed.feed(.started)
        allowed.feed(
            .rulesChecked(
                .allowed(
                    rule: Array("192.0.2.:allow,QUOTA=\"5\"".utf8),
                    variables: [RuleDecision.Variable(name: Array("QUOTA".utf8), value: Array("5".utf8))])))
        #expect(allowed.sent(to: .client) == "+OK pop3.proxy ready\r\n")
        allowed.client("USER bob\r\nPASS pw\r\n")
        guard case .runCapturing(let program)? = allowed.actions.last else {
            Issue.record("no program")
            return
        }
        #expect(program.environment.contains(Array("QUOTA=5".utf8)))
    }

    @Test func aServerThatGoesAwayEndsTheSessionWithAnError() throws {
        let run = try Run(["mail.example"])
        run.loggedIn()
        run.client("STAT\r\n")
        run.feed(.endOfFile(.server))
        #expect(run.sent(to: .client) == "-ERR server closed the connection\r\n")
        #expect(run.closed)
        let gone = try Run(["mail.example"])
        gone.loggedIn()
        gone.feed(.endOfFile(.client))
        #expect(gone.closed)
        #expect(gone.logLines.last?.contains("end (client closed the connection): user bob") == true)
    }

    // MARK: - Scanning (-z)

    static let message = "From: a@b\r\nSubject: hi\r\n\r\n..dot\r\nbody\r\n.\r\n"

    /// A session scanning RETR 1: clamd being connected as the command goes to the server,
    /// the status line in, then the message (before clamd's connection is made, unless
    /// `connected`).
    static func scanning(_ extra: [String] = [], connected: Bool = false) throws -> Run {
        let run = try Run(["-z", "--clamd", "/run/clamd.ctl"] + extra + ["mail.example"])
        run.loggedIn()
        run.client("RETR 1\r\nNOOP\r\n")
        #expect(run.sent(to: .server) == "RETR 1\r\n")
        #expect(run.actions.last == .connect(.scanner, to: .unix("/run/clamd.ctl"), timeout: .seconds(30)))
        run.server("+OK 40 octets\r\n")
        #expect(run.actions.contains(.spoolBegin))
        #expect(run.sent(to: .client) == "", "nothing before the verdict")
        if connected { run.feed(.streamConnected(.scanner)) }
        run.server(Self.message)
        return run
    }

    /// What went to clamd, decoded: whether it began with zINSTREAM, the chunks' bytes joined,
    /// and whether the chunk of length 0 ended them (nothing may follow it).
    static func toClamd(_ run: Run) -> (instream: Bool, data: String, ended: Bool) {
        var bytes: [UInt8] = []
        for case .send(.scanner, let chunk) in run.actions { bytes += chunk }
        let command = Array("zINSTREAM\0".utf8)
        guard bytes.starts(with: command) else { return (false, "", false) }
        var rest = bytes[command.count...]
        var data: [UInt8] = []
        while rest.count >= 4 {
            let n = rest.prefix(4).reduce(0) { $0 << 8 | Int($1) }
            rest = rest.dropFirst(4)
            if n == 0 { return (true, String(decoding: data, as: UTF8.self), rest.isEmpty) }
            #expect(rest.count >= n, "a chunk as long as its length says")
            data += rest.prefix(n)
            rest = rest.dropFirst(n)
        }
        #expect(rest.isEmpty, "no partial chunk length")
        return (true, String(decoding: data, as: UTF8.self), false)
    }

    @Test(arguments: [false, true])
    func aCleanMessageIsDeliveredFromTheSpoolWithTheScanHeader(connectedFirst: Bool) throws {
        let run = try Self.scanning(connected: connectedFirst)
        let spooled = run.actions.compactMap { if case .spoolWrite(let b) = $0 { Array(b) } else { nil } }
        #expect(Array(spooled.joined()) == Array(Self.message.utf8))
        if !connectedFirst {
            #expect(Self.toClamd(run).instream == false, "nothing for clamd before its connection")
            run.feed(.streamConnected(.scanner))
        }
        // The body without the answer's final `.` line, then the end.
        #expect(Self.toClamd(run) == (true, String(decoding: Self.message.utf8.dropLast(3), as: UTF8.self), true))
        run.actions = []
        run.feed(.received(.scanner, Array("stream: OK\0".utf8)[...]))
        #expect(
            run.sent(to: .client)
                == "+OK 40 octets\r\nX-Proxy-Scanned: pop3.proxy (Bastion) with ClamAV 1.0.7/27500\r\n")
        #expect(run.actions.contains(.closeStream(.scanner)))
        #expect(run.actions.contains(.sendSpool(to: .client, from: 0, count: Self.message.utf8.count)))
        // NOOP waits until the message is out.
        #expect(run.sent(to: .server) == "")
        run.feed(.spoolSent(.client))
        #expect(run.actions.contains(.spoolEnd))
        #expect(run.sent(to: .server) == "NOOP\r\n")
    }

    @Test func clamdConnectedBeforeTheStatusHearsNothingUntilTheMessageBegins() throws {
        let run = try Run(["-z", "--clamd", "/run/clamd.ctl", "mail.example"])
        run.loggedIn()
        run.client("RETR 1\r\nRETR 2\r\n")
        run.feed(.streamConnected(.scanner))
        #expect(Self.toClamd(run).instream == false)
        // -ERR: nothing to scan, clamd's connection closed unused, the answer relayed.
        run.server("-ERR no such message\r\n")
        #expect(run.actions.contains(.closeStream(.scanner)))
        #expect(run.sent(to: .client) == "-ERR no such message\r\n")
        #expect(!run.actions.contains(.spoolBegin))
        // The next RETR connects again; its +OK starts the stream.
        #expect(run.sent(to: .server) == "RETR 1\r\nRETR 2\r\n")
        #expect(run.actions.last == .connect(.scanner, to: .unix("/run/clamd.ctl"), timeout: .seconds(30)))
        run.actions = []
        run.feed(.streamConnected(.scanner))
        run.server("+OK\r\n")
        #expect(Self.toClamd(run) == (true, "", false))
        run.server(Self.message)
        #expect(Self.toClamd(run) == (true, String(decoding: Self.message.utf8.dropLast(3), as: UTF8.self), true))
    }

    @Test func clamdGoneBeforeTheStatusMeansNoDelivery() throws {
        let run = try Run(["-z", "--clamd", "/run/clamd.ctl", "mail.example"])
        run.loggedIn()
        run.client("RETR 1\r\nNOOP\r\n")
        run.feed(.streamConnected(.scanner))
        run.feed(.endOfFile(.scanner))
        #expect(run.actions.contains(.closeStream(.scanner)))
        run.server("+OK\r\n")
        run.server(Self.message)
        #expect(Self.toClamd(run).instream == false, "nothing sent to a connection clamd closed")
        #expect(
            run.sent(to: .client)
                == "-ERR message not delivered: virus scanner: clamd closed the connection without an answer\r\n")
        #expect(run.sent(to: .server).hasSuffix("NOOP\r\n"))
    }

    /// The message goes to clamd as it comes, in every split, the final `.` line held back
    /// until the end shows it is the end.
    @Test(arguments: [1, 2, 3, 4, 5, 7, 13])
    func theMessageStreamsToClamdInAnySplit(piece: Int) throws {
        let run = try Run(["-z", "--clamd", "/run/clamd.ctl", "mail.example"])
        run.loggedIn()
        run.client("RETR 1\r\n")
        run.server("+OK\r\n")
        run.feed(.streamConnected(.scanner))
        let bytes = Array(Self.message.utf8)
        var offset = 0
        while offset < bytes.count {
            let end = min(offset + piece, bytes.count)
            run.feed(.received(.server, bytes[offset..<end]))
            offset = end
            let (instream, data, ended) = Self.toClamd(run)
            #expect(instream)
            #expect(data == String(decoding: bytes[..<max(0, end - 3)], as: UTF8.self), "all but the last 3 bytes")
            #expect(ended == (end == bytes.count))
        }
    }

    @Test func bytesWaitingForClamdsConnectionPauseTheServerBeyondTheLimit() throws {
        let run = try Run(["-z", "--clamd", "/run/clamd.ctl", "mail.example"])
        run.loggedIn()
        run.client("RETR 1\r\n")
        run.server("+OK\r\n")
        let line = Array(String(repeating: "x", count: 998).utf8) + [13, 10]
        for _ in 0..<(POP3Session.scanPendingLimit / line.count) { run.feed(.received(.server, line[...])) }
        #expect(!run.actions.contains(.pause(.server)))
        run.feed(.received(.server, line[...]))
        #expect(run.actions.contains(.pause(.server)))
        run.actions = []
        run.feed(.streamConnected(.scanner))
        #expect(run.actions.contains(.read(.server)))
        #expect(Self.toClamd(run).data.utf8.count == (POP3Session.scanPendingLimit / line.count + 1) * line.count - 3)
    }

    @Test func noScanHeaderLeavesTheMessageAsItIs() throws {
        let run = try Self.scanning(["--no-scan-header"], connected: true)
        run.actions = []
        run.feed(.received(.scanner, Array("stream: OK\0".utf8)[...]))
        #expect(run.sent(to: .client) == "+OK 40 octets\r\n")
    }

    @Test func anInfectedMessageIsReplacedByANotification() throws {
        let run = try Self.scanning(connected: true)
        run.actions = []
        run.feed(.received(.scanner, Array("stream: Eicar-Test-Signature FOUND\0".utf8)[...]))
        let sent = run.sent(to: .client)
        #expect(
            sent.hasPrefix("+OK virus found, a notification follows\r\nFrom: pop3.proxy <MAILER-DAEMON@gw.example>\r\n")
        )
        #expect(sent.contains("Subject: Virus found: Eicar-Test-Signature\r\n"))
        #expect(sent.contains("  Subject:     hi\r\n"))
        #expect(sent.hasSuffix("\r\n.\r\n"))
        #expect(run.actions.contains(.spoolEnd))
        #expect(run.logLines.contains { $0.contains("virus Eicar-Test-Signature found") })
        #expect(run.sent(to: .server) == "NOOP\r\n")
    }

    @Test(arguments: [
        SessionEvent.connectFailed(.scanner, SystemError(errno: ECONNREFUSED)),
        .hostUnknown(.scanner, reason: "no address"),
    ])
    func noScannerMeansNoDelivery(failure: SessionEvent) throws {
        let run = try Self.scanning()
        run.actions = []
        run.feed(failure)
        #expect(run.sent(to: .client).hasPrefix("-ERR message not delivered: virus scanner: "))
        #expect(!run.closed)
        #expect(run.sent(to: .server) == "NOOP\r\n")
        // Before the message is whole: its rest is read (not delivered), then the -ERR.
        let early = try Run(["-z", "--clamd", "/run/clamd.ctl", "mail.example"])
        early.loggedIn()
        early.client("RETR 1\r\nNOOP\r\n")
        early.server("+OK\r\nFrom: a@b\r\n")
        early.actions = []
        early.feed(failure)
        #expect(early.sent(to: .client) == "")
        early.server("\r\nbody\r\n.\r\n")
        #expect(early.sent(to: .client).hasPrefix("-ERR message not delivered: virus scanner: "))
        #expect(early.sent(to: .server) == "NOOP\r\n")
    }

    @Test(arguments: ["INSTREAM size limit exceeded. ERROR\0", "UNKNOWN COMMAND\0", "stream: OK\0"])
    func anUnexpectedAnswerIsNeverClean(answer: String) throws {
        if answer != "stream: OK\0" {
            let run = try Self.scanning(connected: true)
            run.actions = []
            run.feed(.received(.scanner, Array(answer.utf8)[...]))
            #expect(run.sent(to: .client).hasPrefix("-ERR message not delivered: virus scanner: clamd: "))
        }
        let silent = try Self.scanning(connected: true)
        silent.actions = []
        silent.feed(.endOfFile(.scanner))
        #expect(
            silent.sent(to: .client)
                == "-ERR message not delivered: virus scanner: clamd closed the connection without an answer\r\n")
        // clamd's answer before the end of the message (its StreamMaxLength; and a clean one
        // there cannot be true): the message is read to its end and refused, never delivered.
        let early = try Run(["-z", "--clamd", "/run/clamd.ctl", "mail.example"])
        early.loggedIn()
        early.client("RETR 1\r\n")
        early.server("+OK\r\n")
        early.feed(.streamConnected(.scanner))
        early.server("From: a@b\r\n\r\n")
        early.feed(.received(.scanner, Array(answer.utf8)[...]))
        #expect(early.actions.contains(.closeStream(.scanner)))
        #expect(early.sent(to: .client) == "")
        early.server("body\r\n.\r\n")
        #expect(early.sent(to: .client).hasPrefix("-ERR message not delivered: virus scanner: clamd: "))
        #expect(!early.actions.contains { if case .sendSpool = $0 { true } else { false } })
    }

    @Test func theScanLimitRefusesOrPasses() throws {
        let refused = try Self.scanning(["--scan-limit", "10"])
        #expect(
            refused.sent(to: .client) == "-ERR message too large to scan (\(Self.message.utf8.count - 3) bytes)\r\n")
        #expect(refused.actions.contains(.closeStream(.scanner)))
        #expect(Self.toClamd(refused).instream == false, "nothing of it reaches clamd")
        let passed = try Self.scanning(["--scan-limit", "10", "--scan-limit-pass"])
        #expect(passed.sent(to: .client) == "+OK 40 octets\r\n")
        #expect(
            passed.actions.contains(.sendSpool(to: .client, from: 0, count: Self.message.utf8.count)))
        #expect(passed.logLines.contains { $0.contains("passed unscanned") })
    }

    /// The size is known only at the end: a message that outgrows the limit after its
    /// beginning went to clamd is still passed (the stream to clamd abandoned) or refused.
    @Test(arguments: [true, false])
    func aMessageOutgrowingTheScanLimitWhileStreaming(pass: Bool) throws {
        let run = try Run(["-z", "--scan-limit", "20"] + (pass ? ["--scan-limit-pass"] : []) + ["mail.example"])
        run.loggedIn()
        run.client("RETR 1\r\n")
        run.server("+OK\r\n")
        run.feed(.streamConnected(.scanner))
        run.server("Subject: x\r\n\r\n")
        #expect(Self.toClamd(run).data == "Subject: x\r", "all but the last 3 bytes went to clamd")
        run.server("a body longer than twenty bytes\r\n.\r\n")
        #expect(run.actions.contains(.closeStream(.scanner)))
        let size = "Subject: x\r\n\r\na body longer than twenty bytes\r\n".utf8.count
        if pass {
            #expect(run.sent(to: .client) == "+OK\r\n")
            #expect(run.actions.contains(.sendSpool(to: .client, from: 0, count: size + 3)))
            #expect(run.logLines.contains { $0.contains("message of \(size) bytes passed unscanned") })
        } else {
            #expect(run.sent(to: .client) == "-ERR message too large to scan (\(size) bytes)\r\n")
            #expect(!run.actions.contains { if case .sendSpool = $0 { true } else { false } })
        }
    }

    @Test func aSpoolThatFailsRefusesTheMessage() throws {
        let run = try Run(["-z", "mail.example"])
        run.loggedIn()
        run.client("TOP 1 0\r\n")
        run.server("+OK\r\n")
        run.feed(.spoolFailed(SystemError(errno: ENOSPC)))
        run.server("Subject: x\r\n\r\n.\r\n")
        #expect(run.sent(to: .client).hasPrefix("-ERR message not delivered: virus scanner: cannot spool the message"))
        #expect(!run.closed)
    }
}

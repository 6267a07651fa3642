import AccessRules
import Gateway
import GatewayKit
import TLS

/// What every session of one pop3.proxy shares: the options, the environment an access
/// control program starts from, and the wall clock for the `-l` files.
public struct POP3SessionSettings: Sendable {
    public var options: POP3ProxyOptions
    /// The proxy's own environment, the base of the access control program's.
    public var environment: [[UInt8]]
    /// Seconds since the epoch (the `-l` line's first word, a notification's date).
    public var clock: @Sendable () -> Int
    /// clamd's version line (`ClamAV 1.0.7/...`) for the scan header, asked at start-up.
    public var clamdVersion: String?
    /// This host's name, for a virus notification's addresses.
    public var hostName: String

    public init(
        options: POP3ProxyOptions, environment: [[UInt8]], clock: @escaping @Sendable () -> Int,
        clamdVersion: String? = nil, hostName: String = "localhost"
    ) {
        self.options = options
        self.environment = environment
        self.clock = clock
        self.clamdVersion = clamdVersion
        self.hostName = hostName
    }
}

/// One client of pop3.proxy, from the greeting to the end, as a pure machine on the gateway's
/// session contract: the proxy greets and takes USER and PASS itself (``POP3Authorization``),
/// runs the access control program, connects and logs in to the server, then forwards the
/// commands it allows one at a time and relays each answer byte for byte, finding the end of
/// a multi-line answer as it streams by (``MultilineEnd``).
///
/// Streams: the client's bytes wait in the machine while a command is with the server
/// (pipelining), the client's reading paused beyond ``heldLimit``; a server answer is never
/// held beyond its status line. Inactivity (`-t`) on either side ends the session.
///
/// TLS: toward the client by STLS in the authorization phase or from the first byte
/// (`--pop3s`, after `--rules`, before the greeting); toward the server from the first byte
/// (`--server-tls pop3s`) or by STLS after its greeting (`stls`), verified, a refusal or a
/// failed handshake being a failed login. Bytes that follow an STLS line or its `+OK` before
/// the handshake are refused (they would be read as if they had come through TLS).
public final class POP3Session: SessionMachine {
    /// The longest command line with its CRLF (RFC 2449 allows 255 octets; some room more).
    public static let commandLimit = 1024
    /// The longest status line of the server the proxy waits for.
    public static let statusLimit = 8192
    /// Client bytes held while a command is with the server before its reading pauses.
    public static let heldLimit = 16 * 1024

    private enum Phase {
        /// `--rules` is being applied, before the greeting.
        case checkingRules
        case authorization
        /// The client's TLS handshake (STLS, or `--pop3s` before the greeting).
        case clientHandshake
        /// The access control program runs.
        case accessControl
        case connecting
        case serverGreeting
        /// STLS sent to the server (`--server-tls stls`), its answer awaited.
        case serverSTLS
        /// The server's TLS handshake (`pop3s` at once, `stls` after its `+OK`).
        case serverHandshake
        case serverUser
        case serverPass
        case transaction
        case ended
    }

    /// The login being tried.
    private struct Attempt {
        var request: LoginRequest
        var serverOperand: String
        /// The access control program: its exit, whether its output has ended, what it said.
        var programStatus: Int32?
        var programOutputEnded = false
        var programWrote = false
    }

    /// The command with the server.
    private struct InFlight {
        var command: POP3Command
        var multiline: Bool
        /// The server's status line said +OK.
        var accepted = false
        /// The status line has come; the rest is a multi-line body being relayed.
        var streaming = false
        var end = MultilineEnd()
    }

    /// A message being scanned (`-z`): held in the spool until clamd has judged it. The bytes
    /// go to clamd as they come from the server (clamd is connected when the `+OK` arrives), so
    /// the scan's transfer overlaps the retrieval and the spool is read only once, to deliver.
    private struct Scan {
        enum Stage {
            /// The command is with the server (clamd being connected meanwhile).
            case awaitingStatus
            /// The server is still sending the message (into the spool and on to clamd).
            case receiving
            /// The whole message is with clamd: waiting for its answer.
            case scanning
            /// The clean message is on its way to the client from the spool.
            case delivering
        }
        /// The connection to clamd.
        enum Scanner {
            /// Not yet connected: the bytes for it so far (the server pauses beyond
            /// ``POP3Session/scanPendingLimit``).
            case connecting(pending: [UInt8])
            /// Connected, the server's status line not yet in: nothing sent.
            case idle
            /// `zINSTREAM` sent: each piece goes as a chunk.
            case streaming
            /// Closed, or never needed (the message is over the scan limit, or failed).
            case closed
        }
        /// The server's `+OK` line, held until the verdict.
        var status: [UInt8] = []
        var stage = Stage.awaitingStatus
        var scanner = Scanner.connecting(pending: [])
        /// Bytes spooled: the answer's body with its final `.` line.
        var length = 0
        /// The last bytes received, not yet sent to clamd: the final `.` line is not scanned,
        /// and until the end is found any 3 bytes may be it.
        var unsent: [UInt8] = []
        /// clamd's answer so far.
        var reply: [UInt8] = []
        /// What clamd said before the message was whole (it refuses a stream beyond its
        /// StreamMaxLength at once).
        var early: ClamdProtocol.Verdict?
        /// The first bytes of the message, for the notification's quotes.
        var head: [UInt8] = []
        /// Larger than `--scan-limit`.
        var overLimit = false
        /// Why it cannot be scanned (the spool failed, clamd cannot be reached).
        var failure: String?
        /// The server's reading is paused until clamd's connection takes the pending bytes.
        var serverPaused = false
    }

    /// What of a message is kept in memory for the notification: its header.
    static let scanHeadLimit = 64 * 1024
    /// Bytes of a message kept for clamd while its connection is being made.
    public static let scanPendingLimit = 256 * 1024

    private let settings: POP3SessionSettings
    private let tls: POP3TLSContexts
    /// The client's TLS, once its handshake is done.
    private var clientTLS: TLSFacts?
    /// The status line just taken from the server had more bytes behind it in the same read.
    private var moreFromServer = false
    private var scan: Scan?
    private let id: UInt64
    private let client: Endpoint
    private var local: Endpoint?
    private var phase = Phase.authorization
    private var authorization: POP3Authorization
    private var attempt: Attempt?
    private var inFlight: InFlight?
    private var quitting = false
    private var clientHeld: [UInt8] = []
    private var clientPaused = false
    /// The client has half-closed: what it sent is answered, then the session ends.
    private var clientClosed = false
    private var serverHeld: [UInt8] = []
    private var unsupported = 0
    private var user: [UInt8] = []
    private var serverName = ""
    /// What `--rules` set for the client (the access control program's environment).
    private var ruleVariables: [RuleDecision.Variable] = []

    private var started = Deadline(nanoseconds: 0)
    private var now = Deadline(nanoseconds: 0)
    private var bytesFromClient: UInt64 = 0
    private var bytesToClient: UInt64 = 0
    private var retrieved = 0

    public init(settings: POP3SessionSettings, client: Endpoint, id: UInt64, tls: POP3TLSContexts = POP3TLSContexts()) {
        self.settings = settings
        self.tls = tls
        self.client = client
        self.id = id
        authorization = POP3Authorization(options: settings.options)
    }

    private var options: POP3ProxyOptions { settings.options }
    /// `-t`'s inactivity timeout; none for `-t 0`.
    private var timeout: Duration? { options.timeout > 0 ? .seconds(options.timeout) : nil }

    /// How long a TLS handshake may take: `-t`'s timeout, or 60 s without one.
    private var handshakeTimeout: Duration { timeout ?? .seconds(60) }

    private func armTimer(_ actions: inout [SessionAction]) {
        if let timeout { actions.append(.setTimer(timeout)) }
    }

    public func statusLine(bytesFromClient: UInt64, bytesToClient: UInt64, now: Deadline) -> String? {
        guard phase != .ended else { return nil }
        let who = user.isEmpty ? "" : " user \(printable(user))"
        return
            "session \(id) from \(client)\(who): \(self.bytesFromClient) bytes from client, \(self.bytesToClient) bytes to client, \(SessionDriver.seconds(since: started, now: now))"
    }

    // MARK: - Events

    public func handle(_ event: SessionEvent, context: any SessionContext, into actions: inout [SessionAction]) {
        guard phase != .ended else { return }
        now = context.now
        switch event {
        case .started:
            started = context.now
            local = try? context.localEndpoint()
            let on = local.map { " on \($0)" } ?? ""
            say("connect from \(client)\(on)", &actions)
            if let rules = options.rules {
                phase = .checkingRules
                actions.append(.checkRules(path: rules, client: RuleClient(ip: client.address.unmapped.description)))
            } else {
                begin(&actions)
            }

        case .rulesChecked(let outcome):
            guard phase == .checkingRules else { break }
            let path = options.rules ?? ""
            switch outcome {
            case .missing, .noRule:
                break
            case .allowed(_, let variables):
                ruleVariables = variables
            case .denied(let rule):
                say("denied by rule \"\(printable(rule))\" of \(path)", &actions)
                return end("denied by \(path)", &actions)
            case .unreadable(let errno):
                say("unable to read \(path): \(SystemError.message(errno))", &actions)
                return end("rules unreadable", &actions)
            }
            phase = .authorization
            begin(&actions)

        case .tlsEstablished(.client, let facts):
            guard phase == .clientHandshake else { break }
            clientTLS = facts
            say("TLS with the client: \(facts.summary)", &actions)
            authorization.secured()
            phase = .authorization
            if options.pop3s && bytesToClient == 0 {
                greet(&actions)
            } else {
                actions.append(.read(.client))
                armTimer(&actions)
            }
        case .tlsFailed(.client, let error):
            say("TLS handshake with the client failed: \(error)", &actions)
            end("TLS handshake failed", &actions)
        case .tlsEstablished(.server, let facts):
            guard phase == .serverHandshake else { break }
            say("TLS with the server \(serverName): \(facts.summary)", &actions)
            armTimer(&actions)
            actions.append(.read(.server))
            if options.serverTLS == .pop3s {
                phase = .serverGreeting
            } else {
                sendServerUser(&actions)
            }
        case .tlsFailed(.server, let error):
            guard phase == .serverHandshake || phase == .serverSTLS else { break }
            loginFailed("TLS with the server failed: \(error)", &actions)

        case .received(.client, let bytes):
            bytesFromClient += UInt64(bytes.count)
            clientHeld += bytes
            armTimer(&actions)
            takeClientLines(&actions)

        case .endOfFile(.client):
            // Commands sent before a half-close are still answered (`printf ... | nc -N`),
            // in order; the session ends once none is left.
            clientClosed = true
            takeClientLines(&actions)
        case .streamFailed(.client, let error):
            end("client: \(error)", &actions)

        case .received(.server, let bytes):
            armTimer(&actions)
            fromServer(bytes, &actions)
        case .endOfFile(.server):
            serverGone("server closed the connection", &actions)
        case .streamFailed(.server, let error):
            serverGone("server: \(error)", &actions)
        case .streamConnected(.server):
            serverHeld = []
            if options.serverTLS == .pop3s {
                startServerTLS(&actions)
            } else {
                phase = .serverGreeting
            }
        case .connectFailed(.server, let error):
            loginFailed("cannot connect to \(serverName): \(error)", &actions)
        case .hostUnknown(.server, let reason):
            loginFailed("cannot find server \(serverName): \(reason)", &actions)

        case .received(.program, let bytes):
            attempt?.programWrote = true
            toClient(bytes, &actions)
        case .endOfFile(.program), .streamFailed(.program, _):
            attempt?.programOutputEnded = true
            accessControlDecided(&actions)
        case .programSaid(let line):
            say("access control program: \(line)", &actions)
        case .programExited(_, let status):
            attempt?.programStatus = status
            accessControlDecided(&actions)
        case .programFailed(let error):
            say("login denied: access control program \(options.accessControlProgram ?? ""): \(error)", &actions)
            toClient(Array("-ERR access denied\r\n".utf8)[...], &actions)
            end("access denied", &actions)

        case .streamConnected(.scanner):
            scannerConnected(&actions)
        case .connectFailed(.scanner, let error):
            scannerLost("cannot connect to clamd at \(clamdName): \(error)", &actions)
        case .hostUnknown(.scanner, let reason):
            scannerLost("cannot find clamd's host \(clamdName): \(reason)", &actions)
        case .received(.scanner, let bytes):
            guard var current = scan, case .streaming = current.scanner else { break }
            current.reply += bytes
            if let nul = current.reply.firstIndex(of: 0) {
                scan = current
                clamdAnswered(ClamdProtocol.verdict(current.reply[..<nul]), &actions)
            } else if current.reply.count > 4096 {
                scan = current
                scannerLost("clamd's answer is not one line", &actions)
            } else {
                scan = current
            }
        case .endOfFile(.scanner), .streamFailed(.scanner, _):
            guard let current = scan else { break }
            switch current.scanner {
            case .streaming, .idle: break
            case .connecting, .closed: return
            }
            if current.reply.isEmpty {
                scannerLost("clamd closed the connection without an answer", &actions)
            } else {
                clamdAnswered(ClamdProtocol.verdict(current.reply), &actions)
            }
        case .spoolFailed(let error):
            guard scan != nil else { break }
            if case .delivering = scan?.stage {
                end("spool: \(error)", &actions)
            } else if case .receiving = scan?.stage {
                scan?.failure = "cannot spool the message: \(error)"
                closeScanner(&actions)
            } else {
                scanFailed("cannot spool the message: \(error)", &actions)
            }
        case .spoolSent(.client):
            guard case .delivering = scan?.stage else { break }
            scan = nil
            actions.append(.spoolEnd)
            answered(&actions)
        case .spoolSent(.scanner):
            break

        case .fileReplaced(let path, let error):
            if let error { say("unable to write \(path): \(error)", &actions) }

        case .timerFired:
            if phase == .accessControl {
                say("access control program timed out: killed", &actions)
                actions.append(.killProgram)
            }
            end("timeout after \(options.timeout) s of inactivity", &actions)

        default:
            break
        }
    }

    /// After `--rules`: the greeting, or first the handshake of `--pop3s`.
    private func begin(_ actions: inout [SessionAction]) {
        guard options.pop3s else { return greet(&actions) }
        guard let context = tls.clients else { return end("no TLS certificate for --pop3s", &actions) }
        phase = .clientHandshake
        actions.append(.startTLS(.client, .accept(context), timeout: handshakeTimeout))
    }

    /// The client asked for STLS and had its `+OK`: nothing may follow before the handshake.
    private func startClientTLS(_ actions: inout [SessionAction]) {
        guard clientHeld.isEmpty else {
            say("client sent more after STLS, before the TLS handshake: refused", &actions)
            return end("bytes in the clear after STLS", &actions)
        }
        guard let context = tls.clients else { return end("no TLS certificate for STLS", &actions) }
        phase = .clientHandshake
        clientPaused = false
        actions.append(.startTLS(.client, .accept(context), timeout: handshakeTimeout))
    }

    private func startServerTLS(_ actions: inout [SessionAction]) {
        guard let context = tls.servers, let attempt else {
            return loginFailed("no TLS context for --server-tls", &actions)
        }
        phase = .serverHandshake
        actions.append(.startTLS(.server, .connect(context, host: attempt.request.server), timeout: handshakeTimeout))
    }

    private func greet(_ actions: inout [SessionAction]) {
        toClient(POP3Authorization.greeting[...], &actions)
        actions.append(.read(.client))
        armTimer(&actions)
    }

    // MARK: - The client

    /// Takes the held client lines while the session can handle one.
    private func takeClientLines(_ actions: inout [SessionAction]) {
        while phase != .ended && canTakeLine {
            guard let lineFeed = clientHeld.firstIndex(of: 10) else {
                if clientHeld.count > Self.commandLimit {
                    say("command line longer than \(Self.commandLimit) bytes", &actions)
                    toClient(Array("-ERR line too long\r\n".utf8)[...], &actions)
                    end("client sent an over-long line", &actions)
                }
                break
            }
            guard lineFeed < Self.commandLimit else {
                say("command line longer than \(Self.commandLimit) bytes", &actions)
                toClient(Array("-ERR line too long\r\n".utf8)[...], &actions)
                return end("client sent an over-long line", &actions)
            }
            var line = Array(clientHeld[..<lineFeed])
            if line.last == 13 { line.removeLast() }
            clientHeld.removeSubrange(...lineFeed)
            clientLine(line, &actions)
        }
        guard phase != .ended && phase != .clientHandshake else { return }
        if clientClosed {
            if canTakeLine && !clientHeld.contains(10) { end("client closed the connection", &actions) }
            return
        }
        if !clientPaused && clientHeld.count >= Self.heldLimit {
            clientPaused = true
            actions.append(.pause(.client))
        } else if clientPaused && clientHeld.count < Self.heldLimit {
            clientPaused = false
            actions.append(.read(.client))
        }
    }

    private var canTakeLine: Bool {
        switch phase {
        case .authorization: return !authorization.loggingIn
        case .transaction: return inFlight == nil && !quitting
        default: return false
        }
    }

    private func clientLine(_ line: [UInt8], _ actions: inout [SessionAction]) {
        if phase == .authorization {
            for step in authorization.handle(line: line) {
                switch step {
                case .reply(let bytes): toClient(bytes[...], &actions)
                case .log(let text): say(text, &actions)
                case .logIn(let server, let login, let serverPassword, let proxyPassword):
                    logIn(server, login, serverPassword, proxyPassword, &actions)
                case .close:
                    end(
                        authorization.failedLogins >= POP3Authorization.limit ? "too many failed logins" : "quit",
                        &actions)
                case .startTLS:
                    startClientTLS(&actions)
                }
            }
            unsupported = authorization.unsupported
            return
        }
        let command = POP3Command.parse(line)
        switch command {
        case .capa:
            toClient(POP3Authorization.capabilities[...], &actions)
        case .unsupported, .malformed, .stls:
            unsupported += 1
            var why = ""
            if case .malformed(_, let reason) = command { why = ": \(reason)" }
            say("command \(command.keyword) refused\(why)", &actions)
            if unsupported >= POP3Authorization.limit {
                toClient(Array("-ERR too many unsupported commands\r\n".utf8)[...], &actions)
                end("too many unsupported commands", &actions)
            } else {
                toClient(Array("-ERR unsupported command\r\n".utf8)[...], &actions)
            }
        default:
            if !options.quiet {
                if case .pass = command {
                    say("command PASS", &actions)
                } else {
                    say("command \(printable(line))", &actions)
                }
            }
            if case .quit = command { quitting = true }
            inFlight = InFlight(command: command, multiline: command.expectsMultiline)
            // The canonical line, never the client's bytes: nothing but the command reaches
            // the server.
            actions.append(.send(.server, command.line[...]))
            if options.scan && command.isScanned {
                // clamd's connection is made while the server finds the message.
                scan = Scan()
                connectScanner(&actions)
            }
        }
    }

    private func toClient(_ bytes: ArraySlice<UInt8>, _ actions: inout [SessionAction]) {
        guard !bytes.isEmpty else { return }
        bytesToClient += UInt64(bytes.count)
        actions.append(.send(.client, bytes))
    }

    // MARK: - Logging in

    private func logIn(
        _ server: POP3ProxyOptions.Server, _ login: ServerLogin, _ serverPassword: [UInt8], _ proxyPassword: [UInt8],
        _ actions: inout [SessionAction]
    ) {
        let request = LoginRequest(
            client: client, local: local ?? Endpoint(address: .anyV4, port: 0), server: server.host,
            serverPort: server.port, serverUser: login.serverUser, serverPassword: serverPassword,
            proxyUser: login.proxyUser, proxyPassword: proxyPassword)
        user = login.serverUser
        serverName = Endpoint.textOrName(server.host, server.port)
        attempt = Attempt(request: request, serverOperand: serverName)
        if let program = options.accessControlProgram {
            phase = .accessControl
            var base = ChildEnvironment(base: settings.environment)
            for variable in ruleVariables { base.set(variable.name, variable.value) }
            base.setTLS(clientTLS, prefix: options.variablePrefix)
            let environment = request.accessControlEnvironment(prefix: options.variablePrefix, base: base.bytes)
            actions.append(.runCapturing(SessionProgram(argv: [program], environment: environment)))
        } else {
            connect(&actions)
        }
    }

    /// The access control program has exited and its output has ended: grant or deny.
    private func accessControlDecided(_ actions: inout [SessionAction]) {
        guard phase == .accessControl, let attempt, attempt.programOutputEnded, let status = attempt.programStatus
        else { return }
        guard WaitStatus.exited(status) == 0 else {
            say(
                "login denied: user \(printable(user)), server \(serverName): access control program \(WaitStatus.describe(status))",
                &actions)
            if !attempt.programWrote { toClient(Array("-ERR access denied\r\n".utf8)[...], &actions) }
            return end("access denied", &actions)
        }
        connect(&actions)
    }

    private func connect(_ actions: inout [SessionAction]) {
        guard let attempt else { return }
        phase = .connecting
        actions.append(
            .connect(
                .server,
                to: .host(attempt.request.server, port: attempt.request.serverPort, from: options.sourceAddress),
                timeout: timeout ?? .seconds(120)))
    }

    /// The login could not be completed: the client may try again (up to the limit).
    private func loginFailed(_ reason: String, _ actions: inout [SessionAction]) {
        actions.append(.closeStream(.server))
        serverHeld = []
        phase = .authorization
        attempt = nil
        for step in authorization.loginFailed("user \(printable(user)), server \(serverName): \(reason)") {
            switch step {
            case .reply(let bytes): toClient(bytes[...], &actions)
            case .log(let text): say(text, &actions)
            case .close: end("too many failed logins", &actions)
            case .logIn, .startTLS: break
            }
        }
        user = []
        if phase != .ended { takeClientLines(&actions) }
    }

    /// A status line of the server during the login.
    private func loginStep(_ line: [UInt8], _ actions: inout [SessionAction]) {
        guard let attempt else { return }
        let text = Self.withoutLineEnd(line)
        guard let status = POP3Status.of(text) else {
            return notPOP3(text, &actions)
        }
        switch (phase, status) {
        case (.serverGreeting, .ok) where options.serverTLS == .stls:
            phase = .serverSTLS
            actions.append(.send(.server, Array("STLS\r\n".utf8)[...]))
        case (.serverGreeting, .ok):
            sendServerUser(&actions)
        case (.serverSTLS, .ok):
            guard !moreFromServer else {
                return loginFailed("the server sent more after its +OK to STLS, before the TLS handshake", &actions)
            }
            startServerTLS(&actions)
        case (.serverSTLS, .error):
            loginFailed("the server refused STLS: \(printable(text))", &actions)
        case (.serverUser, .ok):
            phase = .serverPass
            actions.append(.send(.server, (Array("PASS ".utf8) + attempt.request.serverPassword + [13, 10])[...]))
        case (.serverPass, .ok):
            authorization.loginSucceeded()
            phase = .transaction
            say("login: user \(printable(user)), server \(serverName): granted", &actions)
            toClient(line[...], &actions)
            if let directory = options.clientLogDirectory {
                let (name, contents) = attempt.request.clientLog(at: settings.clock())
                actions.append(.replaceFile(path: directory + "/" + name, contents: contents))
            }
            self.attempt = nil
            takeClientLines(&actions)
        case (.serverGreeting, .error):
            loginFailed("server greeting: \(printable(text))", &actions)
        case (_, .error):
            loginFailed("refused by the server: \(printable(text))", &actions)
        default:
            break
        }
    }

    private func sendServerUser(_ actions: inout [SessionAction]) {
        guard let attempt else { return }
        phase = .serverUser
        actions.append(.send(.server, (Array("USER ".utf8) + attempt.request.serverUser + [13, 10])[...]))
    }

    // MARK: - The server

    private func fromServer(_ bytes: ArraySlice<UInt8>, _ actions: inout [SessionAction]) {
        var rest = bytes
        while !rest.isEmpty && phase != .ended {
            if phase == .transaction, var command = inFlight, command.streaming {
                // The body of a multi-line answer: relayed as it comes (or spooled for the
                // scan), its end found on the way.
                let used = rest.withUnsafeBytes { command.end.scan($0) }
                let count = used ?? rest.count
                inFlight = command
                if scan != nil {
                    spool(rest.prefix(count), &actions)
                } else {
                    toClient(rest.prefix(count), &actions)
                }
                rest = rest.dropFirst(count)
                if used != nil {
                    if scan != nil {
                        command.streaming = false
                        inFlight = command
                        received(&actions)
                    } else {
                        answered(&actions)
                    }
                }
                continue
            }
            if let current = scan, current.stage != .awaitingStatus {
                // Nothing is asked while a message is being scanned.
                serverHeld += rest
                if serverHeld.count > Self.statusLimit { notPOP3(serverHeld.prefix(80), &actions) }
                return
            }
            // A status line, gathered until its LF.
            guard let lineFeed = rest.firstIndex(of: 10) else {
                serverHeld += rest
                if serverHeld.count > Self.statusLimit { notPOP3(serverHeld.prefix(80), &actions) }
                return
            }
            var line = serverHeld
            line += rest[...lineFeed]
            serverHeld = []
            rest = rest[(lineFeed + 1)...]
            moreFromServer = !rest.isEmpty
            if line.count > Self.statusLimit { return notPOP3(line.prefix(80), &actions) }
            statusLine(line, &actions)
        }
    }

    private func statusLine(_ line: [UInt8], _ actions: inout [SessionAction]) {
        switch phase {
        case .serverGreeting, .serverSTLS, .serverUser, .serverPass:
            loginStep(line, &actions)
        case .transaction:
            guard let command = inFlight else {
                say("server sent a line nobody asked for: \(printable(Self.withoutLineEnd(line).prefix(80)))", &actions)
                return
            }
            guard let status = POP3Status.of(Self.withoutLineEnd(line)) else {
                return notPOP3(Self.withoutLineEnd(line), &actions)
            }
            inFlight?.accepted = status == .ok
            if status == .ok, var current = scan, current.stage == .awaitingStatus {
                // The status line waits with the message for clamd's verdict.
                current.status = line
                current.stage = .receiving
                scan = current
                inFlight?.streaming = true
                actions.append(.spoolBegin)
                if case .idle = current.scanner { startStream([], &actions) }
                return
            }
            if scan != nil {
                // -ERR: no message to scan.
                closeScanner(&actions)
                scan = nil
            }
            toClient(line[...], &actions)
            if status == .ok && command.multiline {
                inFlight?.streaming = true
            } else {
                answered(&actions)
            }
        default:
            break
        }
    }

    /// The answer to the command in flight is complete.
    private func answered(_ actions: inout [SessionAction]) {
        guard let command = inFlight else { return }
        inFlight = nil
        if case .retr = command.command, command.accepted { retrieved += 1 }
        if quitting { return end("quit", &actions) }
        takeClientLines(&actions)
    }

    private func notPOP3(_ text: some Collection<UInt8>, _ actions: inout [SessionAction]) {
        say("server answered with something that is not POP3: \(printable(Array(text.prefix(80))))", &actions)
        if phase == .transaction, inFlight?.streaming != true {
            toClient(Array("-ERR server error\r\n".utf8)[...], &actions)
        }
        end("server protocol error", &actions)
    }

    private func serverGone(_ reason: String, _ actions: inout [SessionAction]) {
        switch phase {
        case .serverGreeting, .serverSTLS, .serverHandshake, .serverUser, .serverPass, .connecting:
            loginFailed(reason, &actions)
        case .transaction:
            if quitting && inFlight != nil && inFlight?.streaming != true {
                return end("quit", &actions)
            }
            if inFlight?.streaming != true {
                toClient(Array("-ERR server closed the connection\r\n".utf8)[...], &actions)
            }
            end(reason, &actions)
        default:
            break
        }
    }

    // MARK: - Scanning (-z)

    private var clamdName: String {
        switch options.clamd {
        case .tcp(let server): return Endpoint.textOrName(server.host, server.port)
        case .unix(let path): return path
        }
    }

    private func spool(_ bytes: ArraySlice<UInt8>, _ actions: inout [SessionAction]) {
        guard var current = scan, !bytes.isEmpty else { return }
        current.length += bytes.count
        if current.head.count < Self.scanHeadLimit {
            current.head += bytes.prefix(Self.scanHeadLimit - current.head.count)
        }
        if let limit = options.scanLimit, current.length > limit + 3, !current.overLimit { current.overLimit = true }
        // What is refused for its size is not kept; what passes unscanned is, to the end.
        if current.failure == nil && (!current.overLimit || options.scanLimitPass) {
            actions.append(.spoolWrite(bytes))
        }
        scan = current
        if current.overLimit || current.failure != nil {
            closeScanner(&actions)
        } else {
            toScanner(bytes, &actions)
        }
    }

    private func connectScanner(_ actions: inout [SessionAction]) {
        let destination: StreamDestination
        switch options.clamd {
        case .tcp(let server): destination = .host(server.host, port: server.port, from: nil)
        case .unix(let path): destination = .unix(path)
        }
        actions.append(.connect(.scanner, to: destination, timeout: .seconds(30)))
    }

    /// The message's bytes on to clamd, but for the last 3 received (the final `.` line, until
    /// more come).
    private func toScanner(_ bytes: ArraySlice<UInt8>, _ actions: inout [SessionAction]) {
        guard var current = scan else { return }
        let total = current.unsent.count + bytes.count
        let count = max(0, total - 3)
        let fromUnsent = min(count, current.unsent.count)
        let fromBytes = count - fromUnsent
        var piece: [UInt8] = []
        switch current.scanner {
        case .closed, .idle:  // idle: not once the message has begun
            return
        case .connecting(var pending):
            pending += current.unsent[..<fromUnsent]
            pending += bytes.prefix(fromBytes)
            if pending.count > Self.scanPendingLimit && !current.serverPaused {
                current.serverPaused = true
                actions.append(.pause(.server))
            }
            current.scanner = .connecting(pending: pending)
        case .streaming:
            if count > 0 {
                piece.reserveCapacity(count + 4)
                piece += ClamdProtocol.chunkHeader(count)
                piece += current.unsent[..<fromUnsent]
                piece += bytes.prefix(fromBytes)
            }
        }
        current.unsent = Array(current.unsent[fromUnsent...]) + bytes.dropFirst(fromBytes)
        scan = current
        if !piece.isEmpty { actions.append(.send(.scanner, piece[...])) }
    }

    private func scannerConnected(_ actions: inout [SessionAction]) {
        guard var current = scan, case .connecting(let pending) = current.scanner else { return }
        if current.stage == .awaitingStatus {
            current.scanner = .idle
            scan = current
            return
        }
        startStream(pending, &actions)
    }

    /// The message has begun and clamd is connected: INSTREAM, with what waited for it.
    private func startStream(_ pending: [UInt8], _ actions: inout [SessionAction]) {
        guard var current = scan else { return }
        current.scanner = .streaming
        actions.append(.send(.scanner, ClamdProtocol.instream[...]))
        if !pending.isEmpty {
            actions.append(.send(.scanner, (ClamdProtocol.chunkHeader(pending.count) + pending)[...]))
        }
        if current.serverPaused {
            current.serverPaused = false
            actions.append(.read(.server))
        }
        scan = current
        if current.stage == .scanning { actions.append(.send(.scanner, ClamdProtocol.endOfStream[...])) }
    }

    /// clamd cannot be reached or gave up: the message is refused once it is whole.
    private func scannerLost(_ reason: String, _ actions: inout [SessionAction]) {
        guard let current = scan else { return }
        if case .closed = current.scanner { return }
        if case .scanning = current.stage { return scanFailed(reason, &actions) }
        if current.failure == nil && current.early == nil { scan?.failure = reason }
        closeScanner(&actions)
    }

    private func closeScanner(_ actions: inout [SessionAction]) {
        guard var current = scan else { return }
        if case .closed = current.scanner { return }
        current.scanner = .closed
        if current.serverPaused {
            current.serverPaused = false
            actions.append(.read(.server))
        }
        scan = current
        actions.append(.closeStream(.scanner))
    }

    /// The whole message is in the spool: clamd has it too, or the scan limit says otherwise.
    private func received(_ actions: inout [SessionAction]) {
        guard let current = scan else { return }
        if let failure = current.failure { return scanFailed(failure, &actions) }
        if current.overLimit {
            let size = current.length - 3
            if options.scanLimitPass {
                say("message of \(size) bytes passed unscanned (--scan-limit \(options.scanLimit ?? 0))", &actions)
                return deliver(header: false, &actions)
            }
            say("message of \(size) bytes refused: larger than --scan-limit \(options.scanLimit ?? 0)", &actions)
            return refuse("message too large to scan (\(size) bytes)", &actions)
        }
        if let early = current.early { return verdict(early, &actions) }
        scan?.stage = .scanning
        if case .streaming = current.scanner { actions.append(.send(.scanner, ClamdProtocol.endOfStream[...])) }
    }

    /// clamd's answer: judged now if the message is whole, else when it is.
    private func clamdAnswered(_ answer: ClamdProtocol.Verdict, _ actions: inout [SessionAction]) {
        guard let current = scan else { return }
        if case .scanning = current.stage { return verdict(answer, &actions) }
        if current.failure == nil && current.early == nil {
            // Clean before it has seen the whole message is not clean.
            scan?.early = answer == .clean ? .failed("answered before the end of the message") : answer
        }
        closeScanner(&actions)
    }

    private func verdict(_ verdict: ClamdProtocol.Verdict, _ actions: inout [SessionAction]) {
        closeScanner(&actions)
        switch verdict {
        case .clean:
            if !options.quiet { say("message clean", &actions) }
            deliver(header: options.scanHeader, &actions)
        case .infected(let virus):
            say("virus \(virus) found: the message is replaced by a notification", &actions)
            let notice = ScanNotice.infected(
                virus: virus, message: scan?.head ?? [], clamdVersion: version, seconds: settings.clock(),
                host: settings.hostName)
            toClient(Array("+OK virus found, a notification follows\r\n".utf8)[...], &actions)
            toClient(notice[...], &actions)
            scan = nil
            actions.append(.spoolEnd)
            answered(&actions)
        case .failed(let reason):
            scanFailed("clamd: \(reason)", &actions)
        }
    }

    private var version: String { settings.clamdVersion ?? "ClamAV (version unknown)" }

    /// The clean message goes out from the spool: the status line, the scan header, the bytes.
    private func deliver(header: Bool, _ actions: inout [SessionAction]) {
        guard let current = scan else { return }
        scan?.stage = .delivering
        toClient(current.status[...], &actions)
        if header { toClient(ScanNotice.header(clamdVersion: version)[...], &actions) }
        bytesToClient += UInt64(current.length)
        actions.append(.sendSpool(to: .client, from: 0, count: current.length))
    }

    private func scanFailed(_ reason: String, _ actions: inout [SessionAction]) {
        say("message not delivered: \(reason)", &actions)
        refuse("message not delivered: virus scanner: \(reason)", &actions)
    }

    /// The command's answer is `-ERR` after all; the session goes on.
    private func refuse(_ reason: String, _ actions: inout [SessionAction]) {
        closeScanner(&actions)
        actions.append(.spoolEnd)
        scan = nil
        toClient(Array("-ERR \(reason)\r\n".utf8)[...], &actions)
        // Not a retrieval: the message stayed with the server.
        if case .retr? = inFlight?.command { inFlight = InFlight(command: .noop, multiline: false) }
        answered(&actions)
    }

    // MARK: - Words

    private func say(_ text: String, _ actions: inout [SessionAction]) {
        actions.append(.log(.notice, "session \(id) from \(client.address.unmapped): \(text)"))
    }

    private func end(_ reason: String, _ actions: inout [SessionAction]) {
        guard phase != .ended else { return }
        phase = .ended
        let who = user.isEmpty ? "" : "user \(printable(user)), "
        say(
            "end (\(reason)): \(who)\(bytesFromClient) bytes from client, \(bytesToClient) bytes to client, \(retrieved) messages retrieved, \(SessionDriver.seconds(since: started, now: now))",
            &actions)
        actions.append(.close)
    }

    static func withoutLineEnd(_ line: [UInt8]) -> ArraySlice<UInt8> {
        var text = line[...]
        if text.last == 10 { text = text.dropLast() }
        if text.last == 13 { text = text.dropLast() }
        return text
    }
}

extension POP3Command {
    /// RETR and TOP return a message: `-z` scans it.
    var isScanned: Bool {
        switch self {
        case .retr, .top: return true
        default: return false
        }
    }
}

extension Endpoint {
    /// `host:port`, an IPv6 address in brackets, a name as it is.
    static func textOrName(_ host: String, _ port: UInt16) -> String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }
}

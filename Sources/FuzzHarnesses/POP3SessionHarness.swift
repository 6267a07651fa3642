#if canImport(Glibc)
import Glibc
#endif
import AccessRules
import Gateway
import GatewayKit
import POP3Proxy
import TLS

/// pop3.proxy's whole session (``POP3Session``) driven as the driver would drive it, both
/// sides' bytes and every answer chosen by the input: client and server bytes in pieces of
/// any size, connects that fail or find no host, access control programs that talk, fail and
/// exit in any order, rules outcomes, files that cannot be written, timers.
///
/// Invariants: nothing after `close`; every line sent to the server is one line (CRLF only at
/// its end: no client byte can smuggle a second command in) and, once logged in, a command
/// the proxy forwards; the bytes the session holds stay bounded; log lines stay one line;
/// the session ends within a bounded number of events. With `-z`: what goes to clamd is one
/// well-formed INSTREAM (chunks, then the chunk of length 0, nothing after) holding exactly
/// the spooled bytes but the final `.` line, and a message is delivered from the spool only
/// after clamd called it clean (or, with `--scan-limit-pass`, when it is larger than the limit).
/// With TLS (the last variants): handshakes that succeed or fail as the input says; nothing is
/// sent to or read from a peer between its `startTLS` and the handshake's end; with
/// `--require-tls` no login goes out before the client's TLS; with `--server-tls` no USER or
/// PASS reaches the server before its TLS.
enum POP3SessionHarness {
    final class Context: SessionContext {
        var now = Deadline(nanoseconds: 1_000_000_000)
        func localEndpoint() throws(SystemError) -> Endpoint { Endpoint(address: .loopbackV4, port: 110) }
    }

    static let variants: [[String]] = [
        ["mail.example"],
        ["-e", "-s", "*.example,127.0.0.1", "-c", "@%", "-"],
        ["-a", "/bin/acp", "-l", "/var/log/pop3", "-q", "127.0.0.2", "-t", "5", "mail.example:1110"],
        ["-m", "--rules", "/etc/pop3.cdb", "-a", "acp", "-e", "mail.example"],
        ["-z", "--clamd", "/run/clamd.ctl", "mail.example"],
        ["-z", "--scan-limit", "64", "--scan-limit-pass", "--no-scan-header", "mail.example"],
        ["--tls-cert", "c.pem", "--tls-key", "c.key", "--require-tls", "-a", "acp", "mail.example"],
        ["--tls-cert", "c.pem", "--tls-key", "c.key", "--pop3s", "--server-tls", "stls", "-e", "-"],
        ["--tls-cert", "c.pem", "--tls-key", "c.key", "--server-tls", "pop3s", "--rules", "r.cdb", "mail.example"],
    ]

    /// The contexts of the TLS variants: the tls-server harness's listener, a client context.
    static let tls = POP3TLSContexts(
        clients: TLSServerHarness.context, servers: try! TLSClientContext(TLSClientSettings(verify: false)))

    static let facts = TLSFacts(
        version: "TLSv1.3", cipher: "TLS_AES_128_GCM_SHA256", serverName: "pop.example", peerSubject: nil,
        resumed: false)

    static let clamdReplies: [[UInt8]] = [
        "stream: OK\0", "stream: Eicar-Test-Signature FOUND\0", "INSTREAM size limit exceeded. ERROR\0",
        "stream: OK", "UNKNOWN COMMAND\0",
    ].map { Array($0.utf8) }

    /// What one scan sent and spooled, checked when the spool goes to the client.
    struct Scan {
        var spooled: [UInt8] = []
        var toClamd: [UInt8] = []
        /// What clamd answered.
        var reply: [UInt8] = []

        var clean: Bool {
            ClamdProtocol.verdict(reply.split(separator: 0, omittingEmptySubsequences: false)[0]) == .clean
        }

        /// The chunks' data, when `toClamd` is one whole INSTREAM.
        var instreamData: [UInt8]? {
            let command = Array("zINSTREAM\0".utf8)
            guard toClamd.starts(with: command) else { return nil }
            var rest = toClamd[command.count...]
            var data: [UInt8] = []
            while rest.count >= 4 {
                let n = rest.prefix(4).reduce(0) { $0 << 8 | Int($1) }
                rest = rest.dropFirst(4)
                if n == 0 { return rest.isEmpty ? data : nil }
                guard rest.count >= n else { return nil }
                data += rest.prefix(n)
                rest = rest.dropFirst(n)
            }
            return nil
        }
    }

    static func run(_ data: UnsafeRawBufferPointer) {
        var input = FuzzReader(data)
        let options = try! POP3ProxyOptions.parse(variants[input.below(variants.count)])
        var scan = Scan()
        var scannerConnecting = false
        var scannerOpen = false
        var spoolOwed = false
        let settings = POP3SessionSettings(options: options, environment: [], clock: { 1_700_000_000 })
        let usesTLS = options.clientTLSSettings != nil || options.serverTLS != .none
        let machine = POP3Session(
            settings: settings, client: Endpoint(address: .loopbackV4, port: 4000), id: 1,
            tls: usesTLS ? tls : POP3TLSContexts())
        /// Handshakes asked for and not yet told, by peer; the peers whose TLS is up.
        var handshaking: Set<Peer> = []
        var secured: Set<Peer> = []
        /// The client's stream is being read (TLS variants only: the bytes a driver would not
        /// have read, before the greeting or across a handshake, never come).
        var clientReading = !usesTLS
        let context = Context()
        var closed = false
        var events = 0
        var actions: [SessionAction] = []
        var toServer: [UInt8] = []
        var loggedIn = false
        var connecting = false
        var programRunning = false
        var rulesOwed = false

        func feed(_ event: SessionEvent) {
            events += 1
            precondition(events < 5000, "a session ends within a bounded number of events")
            actions.removeAll(keepingCapacity: true)
            machine.handle(event, context: context, into: &actions)
            for action in actions {
                precondition(!closed, "no action after close: \(action)")
                switch action {
                case .send(let peer, _) where handshaking.contains(peer):
                    preconditionFailure("bytes for the \(peer) during its handshake")
                case .read(let peer) where handshaking.contains(peer):
                    preconditionFailure("reading the \(peer) during its handshake")
                case .startTLS(let peer, _, _):
                    precondition(!handshaking.contains(peer) && !secured.contains(peer), "one handshake per peer")
                    handshaking.insert(peer)
                    if peer == .client && usesTLS { clientReading = false }
                case .read(.client) where usesTLS:
                    clientReading = true
                case .pause(.client) where usesTLS:
                    clientReading = false
                case .connect(.server, _, _) where options.requireTLS || options.pop3s:
                    precondition(secured.contains(.client), "a login before the client's TLS")
                    connecting = true
                case .log(let level, let line):
                    var stamp: String? = ""
                    let written = SessionHarness.logTarget.line(level, line, stamp: &stamp)
                    precondition(written.last == 10 && !written.dropLast().contains(10), "a log line breaks")
                    if line.contains(": granted") { loggedIn = true }
                case .send(.server, let bytes):
                    toServer += bytes
                    while let lineFeed = toServer.firstIndex(of: 10) {
                        let line = Array(toServer[..<lineFeed])
                        toServer.removeSubrange(...lineFeed)
                        precondition(line.last == 13, "a line to the server ends with CRLF")
                        let text = line.dropLast()
                        precondition(!text.contains(13) && !text.contains(0), "one line, nothing smuggled")
                        let login = text.starts(with: Array("USER ".utf8)) || text.starts(with: Array("PASS ".utf8))
                        if options.serverTLS != .none && login {
                            precondition(secured.contains(.server), "a login in the clear to a TLS server")
                        }
                        if loggedIn {
                            switch POP3Command.parse(text) {
                            case .unsupported, .malformed, .capa, .stls:
                                preconditionFailure("a refused command reached the server")
                            default: break
                            }
                        }
                    }
                case .connect(.scanner, _, _):
                    precondition(!scannerConnecting && !scannerOpen, "one clamd connection at a time")
                    scannerConnecting = true
                case .send(.scanner, let bytes):
                    precondition(scannerOpen, "nothing sent to clamd before it is connected")
                    scan.toClamd += bytes
                case .closeStream(.server):
                    // A new login makes a new connection, with a handshake of its own.
                    handshaking.remove(.server)
                    secured.remove(.server)
                case .closeStream(.scanner):
                    scannerConnecting = false
                    scannerOpen = false
                case .spoolBegin:
                    scan = Scan()
                case .spoolWrite(let bytes):
                    scan.spooled += bytes
                case .sendSpool(.client, let from, let count):
                    precondition(from == 0 && count == scan.spooled.count, "the whole spool goes out")
                    if scan.clean {
                        precondition(
                            scan.instreamData == Array(scan.spooled.dropLast(3)),
                            "clamd judged exactly the message")
                    } else {
                        // Streaming starts before the size is known: a message found too large
                        // midway may have had its beginning sent to clamd already.
                        precondition(
                            options.scanLimitPass && scan.spooled.count - 3 > options.scanLimit ?? .max,
                            "delivered only when clean or larger than --scan-limit")
                    }
                    spoolOwed = true
                case .spoolEnd:
                    spoolOwed = false
                case .connect: connecting = true
                case .runCapturing: programRunning = true
                case .checkRules: rulesOwed = true
                case .close: closed = true
                default: break
                }
            }
            _ = machine.statusLine(bytesFromClient: 0, bytesToClient: 0, now: context.now)
        }

        feed(.started)
        while !closed && !input.isAtEnd {
            if let peer = handshaking.first, input.below(3) == 0 {
                handshaking.remove(peer)
                if input.bool() {
                    secured.insert(peer)
                    feed(.tlsEstablished(peer, facts))
                } else {
                    feed(.tlsFailed(peer, TLSError("handshake failed")))
                }
                continue
            }
            context.now = Deadline(nanoseconds: context.now.nanoseconds + UInt64(input.byte()) * 1_000_000)
            if rulesOwed {
                rulesOwed = false
                switch input.below(4) {
                case 0: feed(.rulesChecked(.noRule))
                case 1: feed(.rulesChecked(.denied(rule: Array("127.:deny".utf8))))
                case 2: feed(.rulesChecked(.unreadable(errno: EACCES)))
                default:
                    feed(
                        .rulesChecked(
                            .allowed(
                                rule: [],
                                variables: [
                                    RuleDecision.Variable(name: input.bytes(upTo: 8), value: input.bytes(upTo: 8))
                                ])))
                }
                continue
            }
            switch input.below(12) {
            // A peer shaking hands is off the loop: nothing comes from it meanwhile.
            case 0, 1, 2, 3:
                if handshaking.contains(.client) || !clientReading { continue }
                feed(.received(.client, input.bytes(upTo: 200)[...]))
            case 4, 5, 6:
                if handshaking.contains(.server) { continue }
                feed(.received(.server, input.bytes(upTo: 200)[...]))
            case 7 where scannerConnecting:
                scannerConnecting = false
                switch input.below(3) {
                case 0:
                    scannerOpen = true
                    feed(.streamConnected(.scanner))
                case 1: feed(.connectFailed(.scanner, SystemError(errno: ECONNREFUSED)))
                default: feed(.hostUnknown(.scanner, reason: "no address"))
                }
            case 10 where scannerOpen:
                switch input.below(4) {
                case 0, 1:
                    let reply = clamdReplies[input.below(clamdReplies.count)]
                    scan.reply += reply
                    feed(.received(.scanner, reply[...]))
                case 2:
                    let reply = input.bytes(upTo: 20)
                    scan.reply += reply
                    feed(.received(.scanner, reply[...]))
                default:
                    scannerOpen = false
                    feed(input.bool() ? .endOfFile(.scanner) : .streamFailed(.scanner, SystemError(errno: ECONNRESET)))
                }
            case 11 where spoolOwed:
                spoolOwed = false
                feed(input.bool() ? .spoolSent(.client) : .spoolFailed(SystemError(errno: EIO)))
            case 7:
                guard connecting else { continue }
                connecting = false
                switch input.below(3) {
                case 0: feed(.streamConnected(.server))
                case 1: feed(.connectFailed(.server, SystemError(errno: ECONNREFUSED)))
                default: feed(.hostUnknown(.server, reason: "no address"))
                }
            case 8:
                guard programRunning else { continue }
                switch input.below(5) {
                case 0: feed(.programStarted(pid: 7))
                case 1: feed(.received(.program, input.bytes(upTo: 50)[...]))
                case 2: feed(.programSaid(String(decoding: input.bytes(upTo: 30), as: UTF8.self)))
                case 3: feed(.endOfFile(.program))
                default:
                    programRunning = false
                    feed(.programExited(pid: 7, status: Int32(input.below(3)) << 8))
                }
            case 9:
                switch input.below(4) {
                case 0:
                    if handshaking.contains(.client) { continue }
                    feed(.endOfFile(.client))
                case 1:
                    if handshaking.contains(.server) { continue }
                    feed(.endOfFile(.server))
                case 2:
                    if handshaking.contains(.server) { continue }
                    feed(.streamFailed(.server, SystemError(errno: ECONNRESET)))
                default: feed(.fileReplaced(path: "/var/log/pop3/127.0.0.1", error: SystemError(errno: EACCES)))
                }
            case 10:
                feed(.timerFired)
            default:
                if programRunning && input.bool() { feed(.programFailed(SystemError(errno: ENOENT))) }
            }
        }
    }
}

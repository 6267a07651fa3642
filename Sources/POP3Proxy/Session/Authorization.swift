import GatewayKit

/// The session's first phase, before any server is involved: the proxy greets the client,
/// takes USER and PASS itself, answers CAPA, and decides which server the login goes to (the
/// manual's server selection and proxy authentication). Pure: lines in, actions out; the
/// session machine connects, runs the access control program and logs in to the server when
/// it says `.logIn`, and reports back with ``loginFailed(_:)``.
///
/// TLS (RFC 2595): with a certificate the proxy offers STLS in CAPA and answers it with
/// ``Action/startTLS``; the session reports the handshake with ``secured()``, which forgets a
/// USER given before. With `--require-tls` USER and PASS are refused until then.
///
/// Limits, as the manual says: at the fifth unsupported command, or the fifth failed login
/// (two separate counts), the session ends.
public struct POP3Authorization: Sendable {
    /// What the phase wants done.
    public enum Action: Equatable, Sendable {
        /// A line (or a multi-line answer) to the client.
        case reply([UInt8])
        /// A line for the log.
        case log(String)
        /// Log in to `server` as the login says; the client's PASS is answered after.
        case logIn(server: POP3ProxyOptions.Server, login: ServerLogin, serverPassword: [UInt8], proxyPassword: [UInt8])
        /// End the session (after the replies before it).
        case close
        /// Begin the TLS handshake with the client (after the `+OK` before it).
        case startTLS
    }

    /// Unsupported commands, or failed logins, at which the session ends.
    public static let limit = 5
    /// The greeting.
    public static let greeting = Array("+OK pop3.proxy ready\r\n".utf8)
    /// CAPA's answer once logged in: what the proxy forwards (RFC 2449).
    public static let capabilities = capabilities(stls: false, user: true)

    /// CAPA's answer: USER unless it must wait for TLS, STLS while the client may ask for it.
    public static func capabilities(stls: Bool, user: Bool) -> [UInt8] {
        Array(
            ("+OK capability list follows\r\n" + (user ? "USER\r\n" : "") + "TOP\r\nUIDL\r\nPIPELINING\r\n"
                + (stls ? "STLS\r\n" : "") + ".\r\n").utf8)
    }

    let serverSelection: Bool
    let delimiters: [UInt8]
    let serverList: ServerList?
    let defaultServer: POP3ProxyOptions.Server?
    let defaultPort: UInt16
    /// STLS is offered (a certificate, and not `--pop3s`).
    let offersTLS: Bool
    let requiresTLS: Bool
    /// The client's connection is TLS.
    private(set) public var secure = false
    private var user: ServerLogin?
    private(set) public var unsupported = 0
    private(set) public var failedLogins = 0
    /// A login is being tried: lines that come meanwhile wait (the caller holds them).
    private(set) public var loggingIn = false

    public init(options: POP3ProxyOptions) {
        serverSelection = options.serverSelection
        delimiters = options.delimiters
        serverList = options.serverList
        defaultServer = options.server
        defaultPort = options.defaultServerPort
        offersTLS = options.clientTLSSettings != nil && !options.pop3s
        requiresTLS = options.requireTLS
    }

    /// The client's TLS handshake is done: what it said before is forgotten (RFC 2595 section 4).
    public mutating func secured() {
        secure = true
        user = nil
    }

    /// Takes one client line (without its line end).
    public mutating func handle(line: [UInt8]) -> [Action] {
        precondition(!loggingIn, "no line is handled while a login is tried")
        let command = POP3Command.parse(line)
        switch command {
        case .user where requiresTLS && !secure, .pass where requiresTLS && !secure:
            return refuse(
                command, "-ERR [AUTH] plaintext login refused without TLS: send STLS first",
                why: ": TLS required (--require-tls)")
        case .stls where secure:
            return refuse(command, "-ERR TLS is already active")
        case .stls where offersTLS:
            user = nil
            return [.reply(Array("+OK begin TLS negotiation\r\n".utf8)), .startTLS]
        case .user(let name):
            user = ServerLogin(user: name, delimiters: serverSelection ? delimiters : nil)
            return [.reply(Array("+OK password required\r\n".utf8))]
        case .pass(let password):
            guard let user else { return refuse(command, "-ERR USER first") }
            self.user = nil
            return logIn(user, password)
        case .capa:
            return [.reply(Self.capabilities(stls: offersTLS && !secure, user: secure || !requiresTLS))]
        case .quit:
            return [.reply(Array("+OK bye\r\n".utf8)), .close]
        case .unsupported, .malformed, .stls:
            return refuse(command, "-ERR unsupported command")
        default:
            return refuse(command, "-ERR not logged in")
        }
    }

    /// The login of ``Action/logIn(server:login:serverPassword:proxyPassword:)`` failed
    /// (`reason` for the client and the log): it counts towards the limit.
    public mutating func loginFailed(_ reason: String) -> [Action] {
        loggingIn = false
        return failLogin(reason)
    }

    /// The login succeeded: this phase is over.
    public mutating func loginSucceeded() { loggingIn = false }

    // MARK: - Steps

    private mutating func logIn(_ login: ServerLogin, _ password: [UInt8]) -> [Action] {
        let server: POP3ProxyOptions.Server
        if let named = login.server {
            let text = String(decoding: named, as: UTF8.self)
            if let list = serverList, !list.allows(named) {
                return failLogin("server \(printable(named)) is not allowed")
            }
            guard let parsed = try? POP3ProxyOptions.serverOperand(text, option: "server", defaultPort: defaultPort)
            else {
                return failLogin("\(printable(named)) is not a server (host or host:port)")
            }
            server = parsed
        } else if let defaultServer {
            server = defaultServer
        } else {
            return failLogin("no server given: log in as user\(printable(delimiters.prefix(1)))server")
        }
        let (proxyPassword, serverPassword) = login.passwords(password)
        loggingIn = true
        return [.logIn(server: server, login: login, serverPassword: serverPassword, proxyPassword: proxyPassword)]
    }

    private mutating func failLogin(_ reason: String) -> [Action] {
        failedLogins += 1
        var actions: [Action] = [.log("login failed: \(reason)")]
        if failedLogins >= Self.limit {
            actions += [.reply(Array("-ERR \(reason); too many failed logins\r\n".utf8)), .close]
        } else {
            actions.append(.reply(Array("-ERR \(reason)\r\n".utf8)))
        }
        return actions
    }

    private mutating func refuse(_ command: POP3Command, _ answer: String, why: String = "") -> [Action] {
        unsupported += 1
        var why = why
        if case .malformed(_, let reason) = command { why = ": \(reason)" }
        var actions: [Action] = [.log("command \(command.keyword) refused\(why)")]
        if unsupported >= Self.limit {
            actions += [.reply(Array("-ERR too many unsupported commands\r\n".utf8)), .close]
        } else {
            actions.append(.reply(Array((answer + "\r\n").utf8)))
        }
        return actions
    }
}

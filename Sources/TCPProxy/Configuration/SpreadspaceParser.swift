import GatewayKit
import TLS

/// spreadspace's dialect: listen stanzas.
///
/// ```
/// listen (*|address|hostname) (port|service)
/// {
///   resolv: ipv4|ipv6;                  # family of the listen address when it is a host name
///   remote: (address|hostname) (port|service);   # required
///   remote-resolv: ipv4|ipv6;           # family of the remote (and source) address
///   source: (address|hostname);         # local address for connections to the remote
///   rules: FILE.cdb;                    # ours: a tcprules database applied to each client
///   proxy-protocol: v1|v2;              # ours: send a PROXY protocol header to the remote
///   tls-cert: FILE; tls-key: FILE;      # ours: TLS toward the client (pairs, repeatable: SNI)
///   tls-ocsp: FILE;                     # ours: stapled for the tls-cert before it
///   tls-client-ca: FILE;                # ours: clients must show a certificate of this CA
///   remote-tls: yes|insecure;           # ours: TLS toward the remote, verified or not
///   remote-tls-ca: FILE;                # ours: the CA the remote's certificate is checked against
///   remote-tls-name: NAME;              # ours: the name checked and sent as SNI
///   remote-tls-cert: FILE; remote-tls-key: FILE;   # ours: shown to a remote that asks
///   tls-protocols: LIST; tls-ciphers: LIST;   # ours: versions and ciphers, both directions
/// };
/// ```
///
/// Whitespace and line breaks are free-form and `#` starts a comment anywhere. Every setting and the stanza end
/// with `;`, as in the manual page; a `;` may be left out where a line ends (the page's own example omits one
/// after `resolv`). A setting may appear once per stanza; `remote:` may also be written `remote :`.
struct SpreadspaceParser {
    static let settings =
        ["remote", "resolv", "remote-resolv", "source", "rules", "proxy-protocol"]
        + TLSDirectives.names
    static let usage: [String: String] = TLSDirectives.arguments.reduce(into: [

        "remote": "remote: HOST PORT;",
        "resolv": "resolv: ipv4|ipv6;",
        "remote-resolv": "remote-resolv: ipv4|ipv6;",
        "source": "source: HOST;",
        "rules": "rules: FILE.cdb;",
        "proxy-protocol": "proxy-protocol: v1|v2;",
    ]) { usage, each in usage[each.key] = "\(each.key): \(each.value);" }

    let path: String
    let serviceNames: ServiceNameSource
    var tokens: [Token] = []
    var position = 0

    init(path: String, serviceNames: ServiceNameSource) {
        self.path = path
        self.serviceNames = serviceNames
    }

    /// One stanza's settings while it is read.
    struct Stanza {
        var name: String
        var line: Int
        var column: Int
        var seen: [String: Int] = [:]
        var resolv: AddressFamilyPreference = .any
        var remote: (host: String, port: UInt16, word: Token)?
        var remoteResolv: AddressFamilyPreference = .any
        var remoteResolvWord: Token?
        var source: (host: String, word: Token)?
        var rules: String?
        var proxyProtocol: ProxyProtocolVersion?
        var tls = TLSDirectives()
    }

    // MARK: - Parsing

    mutating func parse(_ text: [UInt8]) throws(ConfigurationError) -> ProxyConfiguration {
        tokens = stanzaTokens(text)
        position = 0
        var services: [ProxyService] = []
        var defined: [String: Int] = [:]
        while position < tokens.count {
            let (service, name) = try stanza()
            // The same listener however it is written (443 and 0443, http and 80, ::1 and 0::1).
            var key = "\(service.listen) \(service.port)"
            if case .hostname = service.listen { key = key.lowercased() }
            if let line = defined[key] {
                throw ConfigurationError(
                    path: path, line: service.line, column: nil,
                    problem: .duplicateListen(name, line: line))
            }
            defined[key] = service.line
            services.append(service)
        }
        guard !services.isEmpty else {
            throw ConfigurationError(path: path, line: nil, problem: .noServices(.spreadspace))
        }
        return ProxyConfiguration(path: path, dialect: .spreadspace, services: services)
    }

    private func fail(_ problem: ConfigurationProblem, at token: Token) -> ConfigurationError {
        ConfigurationError(path: path, line: token.line, column: token.column, problem: problem)
    }

    private func failAtEnd(_ problem: ConfigurationProblem) -> ConfigurationError {
        ConfigurationError(path: path, line: tokens.last?.line ?? 1, column: nil, problem: problem)
    }

    private var next: Token? { position < tokens.count ? tokens[position] : nil }

    private func shown(_ token: Token?) -> String { token.map { quoted($0.text) } ?? "end of file" }

    /// The next token if it is a word, else an error saying `what` was expected.
    private mutating func word(_ what: String) throws(ConfigurationError) -> Token {
        guard let token = next, token.kind == .word else {
            let problem = ConfigurationProblem.expected(what, found: shown(next))
            throw next.map { fail(problem, at: $0) } ?? failAtEnd(problem)
        }
        position += 1
        return token
    }

    /// Consumes a `;` after `after`; a missing one is accepted where the line of `after` ends.
    private mutating func semicolon(after last: Token, what: String) throws(ConfigurationError) {
        guard let token = next else { return }
        if token.kind == .semicolon {
            position += 1
            return
        }
        guard token.line > last.line else {
            throw fail(.expected("\";\" after \(what)", found: shown(token)), at: token)
        }
    }

    /// One `listen HOST PORT { ... };` stanza and its name (`listen HOST PORT` as written).
    private mutating func stanza() throws(ConfigurationError) -> (ProxyService, String) {
        let head = try word("\"listen\"")
        guard head.text == "listen" else {
            if ZekollParser.directives.contains(head.text) {
                let text =
                    "expected \"listen\", found \(quoted(head.text)) "
                    + "(this file is in spreadspace's dialect because it starts with a listen stanza; "
                    + "Zekoll's directives cannot follow)"
                throw fail(.mixedDialect(text), at: head)
            }
            throw fail(.expected("\"listen\"", found: quoted(head.text)), at: head)
        }
        let hostWord = try word("a listen address (*, an address or a host name) after \"listen\"")
        let portWord = try word("a port or service name after \"listen \(hostWord.text)\"")
        let name = "listen \(hostWord.text) \(portWord.text)"
        let listen = try listenAddress(hostWord)
        let port: UInt16
        do { port = try parsePort(portWord.text, directive: "listen port", serviceNames: serviceNames) } catch {
            throw fail(error, at: portWord)
        }
        guard let open = next, open.kind == .open else {
            let problem = ConfigurationProblem.expected("\"{\" after \(name)", found: shown(next))
            throw next.map { fail(problem, at: $0) } ?? failAtEnd(problem)
        }
        position += 1
        var stanza = Stanza(name: name, line: head.line, column: head.column)
        while true {
            guard let token = next else {
                throw failAtEnd(.unterminatedStanza(stanza: name, line: head.line))
            }
            if token.kind == .close {
                position += 1
                guard let remote = stanza.remote else {
                    throw fail(.missingRemote(stanza: name, line: head.line), at: token)
                }
                try semicolon(after: token, what: "\"}\"")
                let service = try service(stanza, remote: remote, listen: (listen, hostWord), port: port)
                return (service, name)
            }
            guard token.kind == .word else {
                throw fail(.expected("a setting or \"}\" in \(name)", found: shown(token)), at: token)
            }
            try setting(in: &stanza)
        }
    }

    /// Reads `key: value...;` into `stanza`.
    private mutating func setting(in stanza: inout Stanza) throws(ConfigurationError) {
        let keyToken = tokens[position]
        position += 1
        var key = keyToken.text
        var values: [Token] = []
        if let colon = key.firstIndex(of: ":") {
            let rest = String(key[key.index(after: colon)...])
            key = String(key[..<colon])
            if rest.hasPrefix(":") {
                throw fail(.expected("a space after \"\(key):\"", found: quoted(keyToken.text)), at: keyToken)
            }
            if !rest.isEmpty {
                values.append(
                    Token(
                        kind: .word, text: rest, line: keyToken.line,
                        column: keyToken.column + key.utf8.count + 1))
            }
        }
        guard Self.settings.contains(key) else {
            throw fail(.unknownSetting(key, stanza: stanza.name, expected: Self.settings), at: keyToken)
        }
        if !keyToken.text.contains(":") {
            guard let colon = next, colon.kind == .word, colon.text.hasPrefix(":"),
                !colon.text.dropFirst().hasPrefix(":")
            else {
                throw fail(
                    .expected("\":\" after \(quoted(key))", found: shown(next)),
                    at: next ?? keyToken)
            }
            position += 1
            if colon.text.count > 1 {
                values.append(
                    Token(
                        kind: .word, text: String(colon.text.dropFirst()), line: colon.line,
                        column: colon.column + 1))
            }
        }
        let usage = Self.usage[key] ?? key
        let count = key == "remote" ? 2 : 1
        while values.count < count {
            guard let value = next, value.kind == .word,
                !(value.text.hasSuffix(":") && Self.settings.contains(String(value.text.dropLast())))
            else {
                throw fail(.missingArgument(directive: key, usage: usage), at: keyToken)
            }
            position += 1
            values.append(value)
        }
        if let previous = stanza.seen[key], !TLSDirectives.repeatable.contains(key) {
            throw fail(.duplicate(directive: key, line: previous, section: "in \(stanza.name)"), at: keyToken)
        }
        stanza.seen[key] = keyToken.line
        try apply(key, values, to: &stanza)
        try semicolon(after: values[values.count - 1], what: "\(key): " + values.map(\.text).joined(separator: " "))
    }

    private func apply(_ key: String, _ values: [Token], to stanza: inout Stanza) throws(ConfigurationError) {
        let value = values[0]
        switch key {
        case "remote":
            let host = unbracketedHost(value.text)
            guard isValidHost(Substring(host)) else {
                throw fail(
                    .invalidValue(
                        directive: "remote", value: value.text,
                        expected: "an address or a host name"), at: value)
            }
            do {
                let port = try parsePort(values[1].text, directive: "remote port", serviceNames: serviceNames)
                stanza.remote = (host, port, value)
            } catch {
                throw fail(error, at: values[1])
            }
        case "resolv", "remote-resolv":
            guard let preference = AddressFamilyPreference(value.text), preference != .any else {
                throw fail(.invalidValue(directive: key, value: value.text, expected: "ipv4 or ipv6"), at: value)
            }
            if key == "resolv" {
                stanza.resolv = preference
            } else {
                stanza.remoteResolv = preference
                stanza.remoteResolvWord = value
            }
        case "source":
            let host = unbracketedHost(value.text)
            guard isValidHost(Substring(host)) else {
                throw fail(
                    .invalidValue(
                        directive: "source", value: value.text,
                        expected: "an address or a host name"), at: value)
            }
            stanza.source = (host, value)
        case "rules":
            stanza.rules = value.text
        case _ where TLSDirectives.names.contains(key):
            do { try stanza.tls.set(key, value.text) } catch { throw fail(error, at: value) }
        default:  // proxy-protocol
            switch value.text {
            case "v1": stanza.proxyProtocol = .v1
            case "v2": stanza.proxyProtocol = .v2
            default:
                throw fail(
                    .invalidValue(directive: "proxy-protocol", value: value.text, expected: "v1 or v2"),
                    at: value)
            }
        }
    }

    // MARK: - Building the service

    private func listenAddress(_ word: Token) throws(ConfigurationError) -> ListenAddress {
        if word.text == "*" { return .any }
        if let address = parseAddressLiteral(word.text) { return .address(address) }
        if isValidHost(Substring(word.text)) && !word.text.contains(":") { return .hostname(word.text) }
        throw fail(
            .invalidValue(
                directive: "listen address", value: word.text,
                expected: "*, an address or a host name"), at: word)
    }

    private func service(
        _ stanza: Stanza,
        remote: (host: String, port: UInt16, word: Token),
        listen: (address: ListenAddress, word: Token),
        port: UInt16
    ) throws(ConfigurationError) -> ProxyService {
        if case .address(let address) = listen.address, let family = stanza.resolv.family, family != address.family {
            throw fail(
                .familyConflict(
                    "resolv \(stanza.resolv) contradicts the listen address \(listen.word.text), "
                        + "which is \(familyName(address.family))"), at: listen.word)
        }
        let remoteFamily = literalFamily(remote.host)
        let sourceFamily = stanza.source.flatMap { literalFamily($0.host) }
        if let wanted = stanza.remoteResolv.family, let word = stanza.remoteResolvWord {
            for (what, family) in [("remote", remoteFamily), ("source", sourceFamily)] {
                guard let family, family != wanted else { continue }
                let host = what == "remote" ? remote.host : stanza.source!.host
                throw fail(
                    .familyConflict(
                        "remote-resolv \(stanza.remoteResolv) contradicts \(what) \(host), "
                            + "which is \(familyName(family))"), at: word)
            }
        }
        if let remoteFamily, let sourceFamily, let source = stanza.source, remoteFamily != sourceFamily {
            throw fail(
                .familyConflict(
                    "source \(source.host) is \(familyName(sourceFamily)) but remote "
                        + "\(remote.host) is \(familyName(remoteFamily)) "
                        + "(both must be of the same family)"), at: source.word)
        }
        let tls: (server: TLSServerSettings?, client: TLSClientSettings?)
        do { tls = try stanza.tls.settings() } catch {
            throw ConfigurationError(path: path, line: stanza.line, column: stanza.column, problem: error)
        }
        let handler = ProxyHandler(
            target: .forward(
                host: remote.host, port: remote.port, resolv: stanza.remoteResolv,
                source: stanza.source?.host),
            timeout: 0,
            rules: stanza.rules,
            proxyProtocol: stanza.proxyProtocol,
            tls: tls.server,
            remoteTLS: tls.client,
            line: stanza.line)
        return ProxyService(
            listen: listen.address, port: port, resolv: stanza.resolv, handlers: [handler],
            line: stanza.line)
    }
}

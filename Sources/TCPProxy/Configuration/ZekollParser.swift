import GatewayKit
import TLS

/// Wolfgang Zekoll's dialect: one directive and its arguments per line.
///
/// ```
/// timeout 120                  # before the first port: a default for every handler
/// port 25                      # a service on port 25 (a number or a name from /etc/services)
/// acp /usr/local/bin/smtp-acp  # for every handler of port 25
/// interface 192.168.1.1        # a handler for connections arriving on 192.168.1.1
/// server mailrelay.provider.com
/// interface 192.44.100.7
/// server mail.domain.com:25
/// ```
///
/// Settings (acp, timeout, setenv, uid, gid, user, logname, writefile, debug, rules, proxy-protocol) may appear
/// before the first `port` (defaults), after `port` before any `interface` (for all handlers of the port), or in an
/// `interface` section; the innermost wins. `server`, `exec` and `rotate` make a handler: after `port` they make the
/// handler for every local address, after `interface` the one for that address. `standalone` (`yes` or `no` in any
/// case, yes when bare) may appear anywhere and counts for the whole file.
///
/// The TLS directives (ours: `tls-cert FILE` and `tls-key FILE` in pairs, `tls-ocsp FILE`, `tls-client-ca FILE`,
/// `remote-tls yes|insecure`, `remote-tls-ca FILE`, `remote-tls-name NAME`, `remote-tls-cert
/// FILE` and `remote-tls-key FILE`, `tls-protocols LIST`, `tls-ciphers LIST`; see
/// ``TLSDirectives``) belong to one handler, as `server` does:
/// after `port` they are the handler's for every local address, after `interface` that
/// handler's, and they are not inherited.
///
/// A setting repeated within its section (or `standalone` within the file) replaces the earlier line, as it did in
/// Zekoll's tcpproxy, with a ``ConfigurationWarning``; `server` and `exec` replace each other in the same way, as
/// do `writefile` and `debug`. A port defined twice, or an interface twice for one port, stays an error: those are
/// separate sections, and which one was meant cannot be told.
struct ZekollParser {
    /// Every directive, in the order messages list them.
    static let directives =
        [
            "port", "interface", "server", "exec", "rotate", "acp", "timeout", "setenv", "uid", "gid", "user",
            "logname", "writefile", "debug", "rules", "proxy-protocol", "standalone",
        ] + TLSDirectives.names
    /// The directives that may set defaults before the first `port`.
    static let defaults = [
        "acp", "timeout", "setenv", "uid", "gid", "user", "logname", "writefile", "debug", "rules",
        "proxy-protocol",
    ]

    static let usage: [String: String] = TLSDirectives.arguments.reduce(into: [
        "standalone": "standalone [yes|no]",
        "port": "port PORT|SERVICE",
        "interface": "interface ADDRESS",
        "rotate": "rotate FIRST-ADDRESS LAST-ADDRESS",
        "server": "server HOST[:PORT]",
        "exec": "exec COMMAND [ARGUMENT...]",
        "acp": "acp PROGRAM [ARGUMENT...]",
        "uid": "uid NUMBER",
        "gid": "gid NUMBER",
        "user": "user NAME",
        "logname": "logname NAME",
        "setenv": "setenv PREFIX",
        "timeout": "timeout SECONDS",
        "writefile": "writefile BASENAME",
        "debug": "debug BASENAME",
        "rules": "rules FILE.cdb",
        "proxy-protocol": "proxy-protocol v1|v2",
    ]) { usage, each in usage[each.key] = "\(each.key) \(each.value)" }

    let path: String
    let serviceNames: ServiceNameSource

    // MARK: - State

    /// Settings that handlers inherit.
    struct Settings {
        var accessControlProgram: [String]?
        var uid: UInt32?
        var gid: UInt32?
        var user: String?
        var logname: String?
        var variablePrefix: String?
        var timeout: Int?
        var writefile: (basename: String, debug: Bool)?
        var rules: String?
        var proxyProtocol: ProxyProtocolVersion?

        /// These settings where set, `outer`'s elsewhere.
        func over(_ outer: Settings) -> Settings {
            Settings(
                accessControlProgram: accessControlProgram ?? outer.accessControlProgram,
                uid: uid ?? outer.uid,
                gid: gid ?? outer.gid,
                user: user ?? outer.user,
                logname: logname ?? outer.logname,
                variablePrefix: variablePrefix ?? outer.variablePrefix,
                timeout: timeout ?? outer.timeout,
                writefile: writefile ?? outer.writefile,
                rules: rules ?? outer.rules,
                proxyProtocol: proxyProtocol ?? outer.proxyProtocol)
        }
    }

    /// The defaults, a port's section for every address, or an interface section.
    struct Section {
        var line: Int
        var column: Int
        var interface: IPAddress?
        var settings = Settings()
        /// Directive (writefile and debug share one entry, as do server and exec) -> the name used and its line.
        var seen: [String: (name: String, line: Int)] = [:]
        var server: (host: String, port: UInt16?)?
        var exec: [String]?
        var tls = TLSDirectives()
        var rotate: (range: AddressRange, line: Int, column: Int)?
    }

    /// A `port` directive and the sections after it.
    struct PortBlock {
        var port: UInt16
        var line: Int
        var column: Int
        var wide: Section
        var interfaces: [Section] = []
    }

    var defaults = Section(line: 0, column: 0)
    var standaloneSetting: (value: Bool, line: Int)?
    var block: PortBlock?
    /// The open section: the defaults while `block` is nil, else the block's latest.
    var inInterface = false
    var portLines: [UInt16: Int] = [:]
    var services: [ProxyService] = []
    var warnings: [ConfigurationWarning] = []

    init(path: String, serviceNames: ServiceNameSource) {
        self.path = path
        self.serviceNames = serviceNames
    }

    // MARK: - Parsing

    mutating func parse(_ text: [UInt8]) throws(ConfigurationError) -> ProxyConfiguration {
        for words in directiveLines(text) {
            try directive(words[0], Array(words.dropFirst()))
        }
        try finishBlock()
        guard !services.isEmpty else {
            throw ConfigurationError(path: path, line: nil, problem: .noServices(.zekoll))
        }
        return ProxyConfiguration(
            path: path, dialect: .zekoll, standalone: standaloneSetting?.value,
            logname: defaults.settings.logname, services: services, warnings: warnings)
    }

    private func fail(_ problem: ConfigurationProblem, at word: Word) -> ConfigurationError {
        ConfigurationError(path: path, line: word.line, column: word.column, problem: problem)
    }

    private func usage(_ name: Word) -> String { Self.usage[name.text] ?? name.text }

    /// The single argument of `name`.
    private func one(_ name: Word, _ args: [Word]) throws(ConfigurationError) -> Word {
        guard let first = args.first else {
            throw fail(.missingArgument(directive: name.text, usage: usage(name)), at: name)
        }
        try noMore(name, args, after: 1)
        return first
    }

    private func noMore(_ name: Word, _ args: [Word], after count: Int) throws(ConfigurationError) {
        guard args.count > count else { return }
        let extra = args[count...].map(\.text).joined(separator: " ")
        throw fail(.tooManyArguments(directive: name.text, extra: extra, usage: usage(name)), at: args[count])
    }

    private mutating func directive(_ name: Word, _ args: [Word]) throws(ConfigurationError) {
        switch name.text {
        case "standalone":
            try noMore(name, args, after: 1)
            var value = true
            if let word = args.first {
                switch word.text.lowercased() {
                case "yes": value = true
                case "no": value = false
                default:
                    let problem = ConfigurationProblem.invalidValue(
                        directive: "standalone", value: word.text, expected: "yes or no")
                    throw fail(problem, at: word)
                }
            }
            if let previous = standaloneSetting {
                warn(.repeated(directive: "standalone", line: previous.line, scope: .file), at: name)
            }
            standaloneSetting = (value, name.line)
        case "port":
            let word = try one(name, args)
            let port: UInt16
            do { port = try parsePort(word.text, directive: "port", serviceNames: serviceNames) } catch {
                throw fail(error, at: word)
            }
            try finishBlock()
            if let line = portLines[port] { throw fail(.duplicatePort(String(port), line: line), at: word) }
            portLines[port] = name.line
            block = PortBlock(
                port: port, line: name.line, column: name.column,
                wide: Section(line: name.line, column: name.column))
            inInterface = false
        case "interface":
            let word = try one(name, args)
            guard var current = block else {
                throw fail(.needsPort(directive: "interface", defaults: Self.defaults), at: name)
            }
            guard let address = parseAddressLiteral(word.text) else {
                throw fail(
                    .invalidValue(
                        directive: "interface", value: word.text,
                        expected: "an IPv4 or IPv6 address"), at: word)
            }
            if address == .anyV4 || address == .anyV6 { throw fail(.wildcardInterface(word.text), at: word) }
            if let previous = current.interfaces.first(where: { $0.interface == address }) {
                throw fail(
                    .duplicateInterface(address.description, port: String(current.port), line: previous.line),
                    at: word)
            }
            var section = Section(line: name.line, column: name.column)
            section.interface = address
            current.interfaces.append(section)
            block = current
            inInterface = true
        case "server", "exec", "rotate":
            guard block != nil else {
                throw fail(.needsPort(directive: name.text, defaults: Self.defaults), at: name)
            }
            var section = currentSection
            try target(name, args, into: &section)
            currentSection = section
        case _ where Self.defaults.contains(name.text):
            var section = currentSection
            try setting(name, args, into: &section)
            currentSection = section
        case _ where TLSDirectives.names.contains(name.text):
            guard block != nil else {
                throw fail(.needsPort(directive: name.text, defaults: Self.defaults), at: name)
            }
            let word = try one(name, args)
            var section = currentSection
            if !TLSDirectives.repeatable.contains(name.text) { mark(name.text, name, in: &section) }
            do { try section.tls.set(name.text, word.text) } catch { throw fail(error, at: word) }
            currentSection = section
        case "listen":
            throw fail(
                .mixedDialect(
                    "\"listen\" starts a stanza of spreadspace's dialect, which needs braces "
                        + "(listen HOST PORT { remote: HOST PORT; };) and must come first in its file; "
                        + "this file is read in Zekoll's dialect"), at: name)
        default:
            throw fail(.unknownDirective(name.text, expected: Self.directives), at: name)
        }
    }

    /// The section directives go to now.
    private var currentSection: Section {
        get {
            guard let block else { return defaults }
            return inInterface ? block.interfaces[block.interfaces.count - 1] : block.wide
        }
        set {
            if block == nil {
                defaults = newValue
            } else if inInterface {
                block!.interfaces[block!.interfaces.count - 1] = newValue
            } else {
                block!.wide = newValue
            }
        }
    }

    private mutating func warn(_ kind: ConfigurationWarning.Kind, at word: Word) {
        warnings.append(ConfigurationWarning(path: path, line: word.line, column: word.column, kind: kind))
    }

    /// Records `key` as set in `section` by the directive `name`; when it already was, the new line wins (the
    /// caller overwrites the value) and a warning names the line it replaces.
    private mutating func mark(_ key: String, _ name: Word, in section: inout Section) {
        if let previous = section.seen[key] {
            if previous.name == name.text {
                warn(.repeated(directive: name.text, line: previous.line, scope: .section), at: name)
            } else {
                warn(.replaces(directive: name.text, previous: previous.name, line: previous.line), at: name)
            }
        }
        section.seen[key] = (name.text, name.line)
    }

    private mutating func target(
        _ name: Word, _ args: [Word], into section: inout Section
    ) throws(ConfigurationError) {
        switch name.text {
        case "server":
            let word = try one(name, args)
            let target: ProxyTarget
            do { target = try ProxyTarget.server(word.text, serviceNames: serviceNames) } catch {
                throw fail(error, at: word)
            }
            guard case .forward(let host, let port, _, _, _) = target else { return }
            mark("target", name, in: &section)
            section.server = (host, port)
            section.exec = nil
        case "exec":
            guard !args.isEmpty else {
                throw fail(.missingArgument(directive: "exec", usage: usage(name)), at: name)
            }
            mark("target", name, in: &section)
            section.exec = args.map(\.text)
            section.server = nil
        default:  // rotate
            guard args.count >= 2 else {
                throw fail(.missingArgument(directive: "rotate", usage: usage(name)), at: name)
            }
            try noMore(name, args, after: 2)
            var ends: [IPAddress] = []
            for word in args {
                guard let address = parseAddressLiteral(word.text) else {
                    throw fail(
                        .invalidValue(
                            directive: "rotate", value: word.text,
                            expected: "an IPv4 or IPv6 address"), at: word)
                }
                ends.append(address)
            }
            guard ends[0].family == ends[1].family else { throw fail(.rotateFamilies, at: args[0]) }
            guard let range = AddressRange(start: ends[0], end: ends[1]) else {
                throw fail(.rotateReversed(start: args[0].text, end: args[1].text), at: args[0])
            }
            mark("rotate", name, in: &section)
            section.rotate = (range, name.line, name.column)
        }
    }

    private mutating func setting(
        _ name: Word, _ args: [Word], into section: inout Section
    ) throws(ConfigurationError) {
        switch name.text {
        case "acp":
            guard !args.isEmpty else {
                throw fail(.missingArgument(directive: "acp", usage: usage(name)), at: name)
            }
            mark("acp", name, in: &section)
            section.settings.accessControlProgram = args.map(\.text)
        case "uid", "gid":
            let word = try one(name, args)
            guard word.text.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
                let id = UInt32(word.text)
            else {
                let what = name.text == "uid" ? "a numeric user id" : "a numeric group id"
                throw fail(.invalidValue(directive: name.text, value: word.text, expected: what), at: word)
            }
            mark(name.text, name, in: &section)
            if name.text == "uid" { section.settings.uid = id } else { section.settings.gid = id }
        case "user":
            let word = try one(name, args)
            mark("user", name, in: &section)
            section.settings.user = word.text
        case "logname":
            let word = try one(name, args)
            mark("logname", name, in: &section)
            section.settings.logname = word.text
        case "setenv":
            let word = try one(name, args)
            guard ChildEnvironment.isVariablePrefix(word.text) else {
                throw fail(
                    .invalidValue(
                        directive: "setenv", value: word.text,
                        expected: "a variable prefix of letters, digits and _"), at: word)
            }
            mark("setenv", name, in: &section)
            section.settings.variablePrefix = word.text
        case "timeout":
            let word = try one(name, args)
            guard word.text.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
                let seconds = Int32(word.text)
            else {
                throw fail(
                    .invalidValue(
                        directive: "timeout", value: word.text,
                        expected: "a number of seconds, 0 for none"), at: word)
            }
            mark("timeout", name, in: &section)
            section.settings.timeout = Int(seconds)
        case "writefile", "debug":
            let word = try one(name, args)
            mark("writefile", name, in: &section)
            section.settings.writefile = (word.text, name.text == "debug")
        case "rules":
            let word = try one(name, args)
            mark("rules", name, in: &section)
            section.settings.rules = word.text
        default:  // proxy-protocol
            let word = try one(name, args)
            let version: ProxyProtocolVersion
            switch word.text {
            case "v1": version = .v1
            case "v2": version = .v2
            default:
                throw fail(.invalidValue(directive: "proxy-protocol", value: word.text, expected: "v1 or v2"), at: word)
            }
            mark("proxy-protocol", name, in: &section)
            section.settings.proxyProtocol = version
        }
    }

    // MARK: - Building services

    /// Turns the open port block into a service.
    private mutating func finishBlock() throws(ConfigurationError) {
        guard let block else { return }
        self.block = nil
        inInterface = false
        let portSettings = block.wide.settings.over(defaults.settings)
        var handlers: [ProxyHandler] = []
        let anyHandler = try handler(
            block.wide, port: block.port, inherited: defaults.settings,
            required: block.interfaces.isEmpty)
        for section in block.interfaces {
            if let handler = try handler(section, port: block.port, inherited: portSettings, required: true) {
                handlers.append(handler)
            }
        }
        if let anyHandler { handlers.append(anyHandler) }
        services.append(ProxyService(listen: .any, port: block.port, handlers: handlers, line: block.line))
    }

    /// The handler a section makes; nil for a port's section for every address that has no target (its settings
    /// still go to the interface sections), unless `required`.
    private func handler(
        _ section: Section,
        port: UInt16,
        inherited: Settings,
        required: Bool
    ) throws(ConfigurationError) -> ProxyHandler? {
        let name = "port \(port)" + (section.interface.map { " interface \($0)" } ?? "")
        let target: ProxyTarget
        if let server = section.server {
            if let rotate = section.rotate, let family = literalFamily(server.host), family != rotate.range.family {
                let text =
                    "rotate addresses are \(familyName(rotate.range.family)) but server \(server.host) is "
                    + familyName(family)
                throw ConfigurationError(
                    path: path, line: rotate.line, column: rotate.column,
                    problem: .familyConflict(text))
            }
            target = .forward(host: server.host, port: server.port, rotate: section.rotate?.range)
        } else if let exec = section.exec {
            if let rotate = section.rotate {
                throw ConfigurationError(
                    path: path, line: rotate.line, column: rotate.column,
                    problem: .rotateWithoutServer)
            }
            target = .exec(argv: exec)
        } else {
            if let rotate = section.rotate {
                throw ConfigurationError(
                    path: path, line: rotate.line, column: rotate.column,
                    problem: .rotateWithoutServer)
            }
            if !section.tls.isEmpty {
                throw ConfigurationError(
                    path: path, line: section.line, column: section.column,
                    problem: .tls(
                        "TLS directives belong to one handler and are not inherited: \(name) has no server "
                            + "or exec, so give them in each interface section"))
            }
            guard required else { return nil }
            throw ConfigurationError(
                path: path, line: section.line, column: section.column,
                problem: .missingTarget(name))
        }
        let settings = section.settings.over(inherited)
        let tls: (server: TLSServerSettings?, client: TLSClientSettings?)
        do { tls = try section.tls.settings() } catch {
            throw ConfigurationError(path: path, line: section.line, column: section.column, problem: error)
        }
        return ProxyHandler(
            interface: section.interface,
            target: target,
            accessControlProgram: settings.accessControlProgram,
            uid: settings.uid,
            gid: settings.gid,
            user: settings.user,
            logname: settings.logname,
            variablePrefix: settings.variablePrefix ?? ProxyHandler.defaultVariablePrefix,
            timeout: settings.timeout ?? ProxyHandler.defaultTimeout,
            writefile: settings.writefile?.basename,
            debug: settings.writefile?.debug ?? false,
            rules: settings.rules,
            proxyProtocol: settings.proxyProtocol,
            tls: tls.server,
            remoteTLS: tls.client,
            line: section.line)
    }
}

/// `IPv4` or `IPv6`.
func familyName(_ family: IPAddress.Family) -> String { family == .v4 ? "IPv4" : "IPv6" }

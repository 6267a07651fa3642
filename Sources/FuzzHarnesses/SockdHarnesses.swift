import GatewayKit
import Socks

/// sockd's configuration files on arbitrary bytes: sockd.conf and sockd.route as text (both
/// modes; what parses lists as text that parses back the same and freezes to what thaws the
/// same; the matchers answer every rule's own request at or before it), and frozen files
/// (whatever decodes re-encodes to the same bytes and dumps as text that parses back).
enum SockdHarnesses {
    /// The user list files the fuzzed configurations can name.
    static let userFiles: [[UInt8]: [UInt8]] = [
        Array("/u".utf8): Array("ann bob,carl\n# comment\n\tdan # more\n".utf8),
        Array("/e".utf8): Array("# nobody\n".utf8),
    ]
    static let services: [[UInt8]: UInt16] = [
        Array("telnet".utf8): 23, Array("ftp".utf8): 21, Array("http".utf8): 80, Array("smtp".utf8): 25,
    ]

    static let parser = SockdConfParser(
        path: "sockd.conf",
        readUserFile: { (path: [UInt8]) throws(SystemError) -> [UInt8] in
            guard let text = userFiles[path] else { throw SystemError(errno: 2) }
            return text
        },
        servicePort: { services[$0] })

    // MARK: - sockd.conf

    static func configuration(_ data: UnsafeRawBufferPointer) {
        let text = Array(data)
        let (configuration, errors) = parser.parse(text)
        checkModes(errors: errors) { () throws(SockdConfigRejection) in
            let loaded = try parser.load(text, mode: .strict)
            precondition(loaded.configuration == configuration && loaded.warnings.isEmpty, "strict gives the same")
        }
        check(configuration, with: parser)
    }

    /// The listing parses back to the same configuration and lists the same; the frozen form
    /// thaws to it; every rule answers its own request, and the matcher's answer is no later.
    static func check(_ configuration: SockdConfiguration, with parser: SockdConfParser) {
        let dumped = configuration.text
        let (again, againErrors) = parser.parse(dumped)
        precondition(againErrors.isEmpty, "the listing parses: \(againErrors)")
        precondition(again == configuration, "the listing parses back to the same configuration")
        precondition(again.text == dumped, "and lists the same")
        let frozen = configuration.frozen
        precondition((try? SockdConfiguration(frozen: frozen)) == configuration, "the frozen form thaws to the same")
        for rule in configuration.rules.prefix(16) {
            guard let query = request(for: rule) else { continue }
            precondition(rule.matches(query), "a rule matches the request made of its own fields")
            let found = configuration.match(query)
            precondition(found != nil && found!.line <= rule.line, "first match wins")
        }
    }

    /// A request that `rule` matches, when one exists (a `lt 0` or an empty user list has none).
    static func request(for rule: SockdRule) -> RuleQuery? {
        var user = Array("someone".utf8)
        if let users = rule.users {
            var first: [UInt8]?
            for entry in users.entries {
                switch entry {
                case .name(let name): first = first ?? name
                case .file(_, let names): first = first ?? names.first
                }
            }
            guard let first else { return nil }
            user = first
        }
        let (client, clientName) = sample(rule.source)
        let (destination, destinationName) = rule.destination.map(sample) ?? (IPAddress(v4: 192, 0, 2, 1), nil)
        var port: UInt16 = 1080
        if let condition = rule.port {
            switch condition.op {
            case .eq, .le, .ge: port = condition.port
            case .neq: port = condition.port &+ 1
            case .lt:
                guard condition.port > 0 else { return nil }
                port = condition.port - 1
            case .gt:
                guard condition.port < .max else { return nil }
                port = condition.port + 1
            }
        }
        return RuleQuery(
            user: user, client: client, clientName: clientName, destination: destination,
            destinationName: destinationName, port: port)
    }

    /// An address (and name) the pattern matches.
    static func sample(_ pattern: AddressPattern) -> (IPAddress, [UInt8]?) {
        switch pattern {
        case .all: return (IPAddress(v4: 198, 51, 100, 7), nil)
        case .network(let network): return (network.address, nil)
        case .host(let name): return (IPAddress(v4: 203, 0, 113, 9), name)
        case .domain(let name): return (IPAddress(v4: 203, 0, 113, 10), Array("www.".utf8) + name)
        }
    }

    /// Strict mode either gives what lenient mode gives with no error, or rejects with exactly
    /// lenient mode's errors.
    static func checkModes(errors: [SockdConfigError], strict: () throws(SockdConfigRejection) -> Void) {
        do {
            try strict()
            precondition(errors.isEmpty, "strict mode accepts only a file without bad lines")
        } catch {
            precondition(!errors.isEmpty && error.errors == errors, "strict mode names every bad line")
        }
    }

    // MARK: - sockd.route

    static func routes(_ data: UnsafeRawBufferPointer) {
        let text = Array(data)
        let parser = SockdRouteParser(path: "sockd.route")
        let (routes, errors) = parser.parse(text)
        checkModes(errors: errors) { () throws(SockdConfigRejection) in
            let loaded = try parser.load(text, mode: .strict)
            precondition(loaded.routes == routes && loaded.warnings.isEmpty, "strict gives the same")
        }
        check(routes)
    }

    static func check(_ routes: SockdRoutes) {
        let dumped = routes.text
        let (again, againErrors) = SockdRouteParser(path: "sockd.route").parse(dumped)
        precondition(againErrors.isEmpty && again == routes && again.text == dumped, "the listing parses back")
        precondition((try? SockdRoutes(frozen: routes.frozen)) == routes, "the frozen form thaws to the same")
        for route in routes.routes.prefix(16) {
            let (address, name) = sample(route.destination)
            let found = routes.route(to: address, name: name)
            precondition(found != nil && found!.line <= route.line, "first match wins")
        }
    }

    // MARK: - Frozen files

    /// The first byte: bit 0 set wraps the rest in a correct header (so the fuzzer explores
    /// the body behind the checksum), bit 1 picks routes over a configuration; clear, the rest
    /// is decoded as it is.
    static func frozen(_ data: UnsafeRawBufferPointer) {
        guard let mode = data.first else { return }
        let rest = Array(data.dropFirst())
        let routes = mode & 2 != 0
        let bytes: [UInt8]
        if mode & 1 != 0 {
            bytes = FrozenFormat.container(routes ? .routes : .configuration, body: rest)
        } else {
            bytes = rest
        }
        if let configuration = try? SockdConfiguration(frozen: bytes) {
            precondition(configuration.frozen == bytes, "a decoded configuration re-encodes to the same bytes")
            let lastLine = max(
                configuration.rules.last?.line ?? 0, configuration.noIdentd?.line ?? 0,
                configuration.badIdent?.line ?? 0)
            if lastLine <= 100_000 { check(configuration, with: parser(servingFilesOf: configuration)) }
        }
        if let decoded = try? SockdRoutes(frozen: bytes) {
            precondition(decoded.frozen == bytes, "decoded routes re-encode to the same bytes")
            if (decoded.routes.last?.line ?? 0) <= 100_000 { check(decoded) }
        }
    }

    /// A parser whose user files and services are the ones a frozen configuration holds, so
    /// that its listing reads back as make_sockdfc read the text.
    static func parser(servingFilesOf configuration: SockdConfiguration) -> SockdConfParser {
        var files: [[UInt8]: [UInt8]] = [:]
        var ports: [[UInt8]: UInt16] = [:]
        for rule in configuration.rules {
            for case .file(let path, let names) in rule.users?.entries ?? [] {
                files[path] = Array(names.joined(separator: [10]))
            }
            if let port = rule.port, let service = port.service { ports[service] = port.port }
        }
        return SockdConfParser(
            path: "sockd.conf",
            readUserFile: { [files] (path: [UInt8]) throws(SystemError) -> [UInt8] in
                guard let text = files[path] else { throw SystemError(errno: 2) }
                return text
            },
            servicePort: { [ports] in ports[$0] })
    }
}

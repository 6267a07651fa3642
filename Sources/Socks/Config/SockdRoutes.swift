import GatewayKit

/// The local address of a route: where outgoing connections are made from and BIND listens.
public enum RouteInterface: Hashable, Sendable {
    case address(IPAddress)
    /// A host name, resolved by the daemon when it loads the routes (lower case, no trailing dot).
    case name([UInt8])

    public var text: [UInt8] {
        switch self {
        case .address(let address): Array(address.description.utf8)
        case .name(let name): name
        }
    }
}

/// One line of sockd.route: `interface_address destination_address destination_mask`.
public struct SockdRoute: Hashable, Sendable {
    public var line: Int
    public var interface: RouteInterface
    public var destination: AddressPattern

    public init(line: Int, interface: RouteInterface, destination: AddressPattern) {
        self.line = line
        self.interface = interface
        self.destination = destination
    }

    public var text: [UInt8] { interface.text + [ConfigWords.space] + destination.text }
}

/// A parsed sockd.route: first match wins.
public struct SockdRoutes: Hashable, Sendable {
    public var routes: [SockdRoute]

    public init(routes: [SockdRoute] = []) { self.routes = routes }

    /// The first route for a destination address (and its name, when the request gave one);
    /// nil when none applies: the daemon logs the manual's message and the client gets a failure.
    public func route(to destination: IPAddress, name: [UInt8]? = nil) -> SockdRoute? {
        let name = AddressPattern.normalisedName(name)
        return routes.first { $0.destination.matches(destination, normalisedName: name) }
    }

    /// The routes as sockd.route text, each at its own line number.
    public var text: [UInt8] { ConfigText.numbered(routes.map { ($0.line, $0.text) }) }
}

/// The sockd.route parser. Pure: lines in, routes and located errors out.
public struct SockdRouteParser: Sendable {
    /// The file's name in messages.
    public var path: String

    public init(path: String) { self.path = path }

    /// Every good line, and every bad line's error (the bad lines are left out).
    public func parse(_ text: [UInt8]) -> (routes: SockdRoutes, errors: [SockdConfigError]) {
        var routes = SockdRoutes()
        var errors: [SockdConfigError] = []
        ConfigWords.forEachLine(text) { line, number in
            do throws(SockdConfigProblem) {
                if let route = try parseLine(line, number: number) { routes.routes.append(route) }
            } catch {
                errors.append(SockdConfigError(path: path, line: number, problem: error))
            }
        }
        return (routes, errors)
    }

    /// As ``SockdConfParser/load(_:mode:)``: strict rejects the file when any line is bad.
    public func load(_ text: [UInt8], mode: SockdConfigMode) throws(SockdConfigRejection) -> (
        routes: SockdRoutes, warnings: [SockdConfigError]
    ) {
        let (routes, errors) = parse(text)
        if mode == .strict && !errors.isEmpty { throw SockdConfigRejection(path: path, errors: errors) }
        return (routes, errors)
    }

    private func parseLine(_ line: ArraySlice<UInt8>, number: Int) throws(SockdConfigProblem) -> SockdRoute? {
        let words = ConfigWords.words(line.prefix { $0 != ConfigWords.hash })
        guard let first = words.first else { return nil }
        let interface: RouteInterface
        if let address = IPAddress(String(decoding: first, as: UTF8.self)) {
            interface = .address(address)
        } else if let name = AddressPattern.normalisedName(Array(first)), AddressPattern.isHostName(name) {
            interface = .name(name)
        } else {
            throw .invalidAddress(Array(first))
        }
        let (destination, used) = try AddressPattern.parse(words, at: 1, what: "destination address and mask")
        if 1 + used < words.count { throw .unexpectedWord(Array(words[1 + used]), expected: "the end of the line") }
        return SockdRoute(line: number, interface: interface, destination: destination)
    }
}

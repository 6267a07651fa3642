import Gateway
import GatewayKit

/// What identd said when a UDP association began (asked once, for every destination).
enum IdentAnswer: Equatable {
    /// Not asked: no option and no line wants it.
    case notAsked
    /// Asked, and no usable answer came.
    case none
    /// The user id it gave.
    case user([UInt8])
}

/// The relay of one SOCKS5 UDP ASSOCIATE (RFC 1928 section 7), once granted: datagrams from
/// the client's address only, each destination decided by sockd.conf as a CONNECT to it would
/// be (user, client, destination, port; identd's answer from the association's start), sent
/// from the route's address; answers only from destinations the client has sent to, with the
/// header that names them. Pure: datagram events in, datagram actions out, inside
/// ``SocksSession``.
///
/// Bounded whatever the client sends: decisions and destinations are remembered up to
/// ``memory`` each (then forgotten and made again), at most ``resolving`` names are asked of
/// DNS at once and their datagrams hold at most ``pendingLimit`` bytes, and one source
/// address's socket is opened at most once.
final class UDPAssociation {
    /// The socket the client sends to (bound where it reached sockd).
    static let inside = DatagramID(0)
    /// The most decisions, destinations, and names remembered.
    static let memory = 1024
    /// The most bytes of datagrams waiting for their destination's name.
    static let pendingLimit = 256 * 1024
    /// The most names asked of DNS at once (each query holds two sockets).
    static let resolving = 16
    /// How long a name's address and the decision about it are kept.
    static let nameLifetime = Duration.seconds(60)

    static func expiry(after now: Deadline) -> Deadline {
        Deadline(nanoseconds: now.nanoseconds &+ nameLifetime.nanosecondsClamped)
    }

    struct Decision {
        /// Permitted: the header of the answers, the socket it goes out of, where to.
        var route: (header: [UInt8], socket: DatagramID, destination: Endpoint)?
        var expires: Deadline?
    }

    let settings: SockdSessionSettings
    let request: SocksRequest
    let client: Endpoint
    let clientName: [UInt8]?
    let ident: IdentAnswer
    /// USER(IDENT)@CLIENT, as the log names the client.
    let who: String
    /// The client's own UDP address: its port given in the request, or learnt from its first
    /// datagram.
    private var clientPort: UInt16?
    private var decisions: [SocksAddress: Decision] = [:]
    /// Destinations the client has sent to: answers from them are relayed back, under this header.
    private var answering: [Endpoint: [UInt8]] = [:]
    /// The outgoing sockets by source address (a family's wildcard when no route names one).
    private var outside: [IPAddress: DatagramID] = [:]
    private var failedSources: Set<IPAddress> = []
    private var nextOutside: UInt8 = 1
    private var names: [String: (address: IPAddress, expires: Deadline)] = [:]
    private var waiting: [String: [(port: UInt16, payload: [UInt8])]] = [:]
    private var waitingBytes = 0
    private var strayLogged = false

    private(set) var bytesFromClient: UInt64 = 0
    private(set) var bytesToClient: UInt64 = 0
    private(set) var datagramsFromClient: UInt64 = 0
    private(set) var datagramsToClient: UInt64 = 0
    private(set) var dropped: UInt64 = 0

    init(
        settings: SockdSessionSettings, request: SocksRequest, client: Endpoint, clientName: [UInt8]?,
        ident: IdentAnswer, who: String
    ) {
        self.settings = settings
        self.request = request
        self.client = Endpoint(address: client.address.unmapped, port: client.port)
        self.clientName = clientName
        self.ident = ident
        self.who = who
        clientPort = request.destination.port == 0 ? nil : request.destination.port
    }

    /// The final line: what went each way.
    var summary: String {
        "\(bytesFromClient) bytes in \(datagramsFromClient) datagrams from \(who), \(bytesToClient) bytes in "
            + "\(datagramsToClient) datagrams to it, \(dropped) dropped"
    }

    // MARK: - Datagrams

    func received(
        _ id: DatagramID, from: Endpoint, _ bytes: ArraySlice<UInt8>, now: Deadline, into actions: inout [SessionAction]
    ) {
        if id == Self.inside {
            fromClient(Endpoint(address: from.address.unmapped, port: from.port), bytes, now: now, into: &actions)
        } else {
            fromOutside(Endpoint(address: from.address.unmapped, port: from.port), bytes, into: &actions)
        }
    }

    private func fromClient(
        _ from: Endpoint, _ bytes: ArraySlice<UInt8>, now: Deadline, into actions: inout [SessionAction]
    ) {
        guard from.address == client.address, clientPort == nil || clientPort == from.port else {
            dropped += 1
            if !strayLogged {
                strayLogged = true
                actions.append(
                    .log(.info, "UDP associate from \(who): a datagram from \(from) dropped (not the client's)"))
            }
            return
        }
        clientPort = from.port
        guard case .datagram(let destination, let offset) = SocksDatagram.parse(bytes) else {
            // A fragment or not a SOCKS header: dropped (RFC 1928 allows no reassembly).
            dropped += 1
            return
        }
        let payload = bytes.dropFirst(offset)
        if let known = decisions[destination], known.expires.map({ now < $0 }) ?? true {
            return send(payload, known, into: &actions)
        }
        switch destination.host {
        case .ip(let address):
            decide(destination, address: address.unmapped, name: nil, now: now, into: &actions)
            if let made = decisions[destination] { send(payload, made, into: &actions) }
        case .name(let raw):
            let name = String(decoding: raw, as: UTF8.self)
            if let cached = names[name], now < cached.expires {
                decide(destination, address: cached.address, name: raw, now: now, into: &actions)
                if let made = decisions[destination] { send(payload, made, into: &actions) }
                return
            }
            guard waitingBytes + payload.count <= Self.pendingLimit,
                waiting[name] != nil || waiting.count < Self.resolving
            else {
                dropped += 1
                return
            }
            if waiting[name] == nil {
                waiting[name] = []
                actions.append(.resolve(name))
            }
            waiting[name]?.append((destination.port, Array(payload)))
            waitingBytes += payload.count
        }
    }

    private func fromOutside(_ from: Endpoint, _ bytes: ArraySlice<UInt8>, into actions: inout [SessionAction]) {
        guard let header = answering[from], let port = clientPort else {
            dropped += 1
            return
        }
        datagramsToClient += 1
        bytesToClient += UInt64(bytes.count)
        actions.append(
            .sendDatagram(
                Self.inside, to: Endpoint(address: client.address, port: port), prefix: header, payload: bytes))
    }

    private func send(_ payload: ArraySlice<UInt8>, _ decision: Decision, into actions: inout [SessionAction]) {
        guard let route = decision.route else {
            dropped += 1
            return
        }
        datagramsFromClient += 1
        bytesFromClient += UInt64(payload.count)
        if answering[route.destination] == nil {
            if answering.count >= Self.memory { answering.removeAll(keepingCapacity: true) }
            answering[route.destination] = route.header
        }
        actions.append(.sendDatagram(route.socket, to: route.destination, prefix: [], payload: payload))
    }

    // MARK: - Names

    func resolved(_ name: String, addresses: [IPAddress], now: Deadline, into actions: inout [SessionAction]) {
        guard let first = addresses.first?.unmapped else {
            return resolveFailed(name, reason: "no address", now: now, into: &actions)
        }
        if names.count >= Self.memory { names.removeAll(keepingCapacity: true) }
        names[name] = (first, Self.expiry(after: now))
        for (port, payload) in take(name) {
            let destination = SocksAddress(host: .name(Array(name.utf8)), port: port)
            if decisions[destination] == nil {
                decide(destination, address: first, name: Array(name.utf8), now: now, into: &actions)
            }
            if let made = decisions[destination] { send(payload[...], made, into: &actions) }
        }
    }

    func resolveFailed(_ name: String, reason: String, now: Deadline, into actions: inout [SessionAction]) {
        let held = take(name)
        dropped += UInt64(held.count)
        for port in Set(held.map(\.port)) {
            let destination = SocksAddress(host: .name(Array(name.utf8)), port: port)
            actions.append(
                .log(
                    .notice, "failed -- \(text(destination)): cannot resolve \(printable(Array(name.utf8))): \(reason)")
            )
            remember(destination, Decision(route: nil, expires: Self.expiry(after: now)))
        }
    }

    private func take(_ name: String) -> [(port: UInt16, payload: [UInt8])] {
        let held = waiting.removeValue(forKey: name) ?? []
        waitingBytes -= held.reduce(0) { $0 + $1.payload.count }
        return held
    }

    // MARK: - Decisions

    /// `UDP from USER(IDENT)@CLIENT to DESTINATION (SERVICE)`.
    func text(_ destination: SocksAddress) -> String {
        let service = settings.serviceName(destination.port).map { printable($0) } ?? String(destination.port)
        let host: String
        switch destination.host {
        case .ip(let address): host = address.unmapped.description
        case .name(let name): host = printable(name)
        }
        return "UDP from \(who) to \(host) (\(service))"
    }

    /// sockd.conf on one destination, as for a CONNECT to it; the route; the socket.
    private func decide(
        _ destination: SocksAddress, address: IPAddress, name: [UInt8]?, now: Deadline,
        into actions: inout [SessionAction]
    ) {
        let expires = name == nil ? nil : Self.expiry(after: now)
        let query = RuleQuery(
            user: request.user, client: client.address, clientName: clientName, destination: address,
            destinationName: name, port: destination.port)
        let matched = settings.configuration.match(query)
        let refusal: String?
        if let rule = matched, rule.action == .permit {
            refusal = identRefusal(rule.identCheck(default: settings.identCheck))
        } else {
            refusal = ""
        }
        if let command = matched?.command {
            actions.append(.runDetached(program(command, destination: destination, address: address)))
        }
        if let refusal {
            actions.append(.log(.notice, "refused -- \(text(destination))\(refusal)"))
            return remember(destination, Decision(route: nil, expires: expires))
        }
        let source: IPAddress
        switch settings.route(address, name) {
        case .system: source = address.family == .v4 ? .anyV4 : .anyV6
        case .from(let from, _): source = from
        case .none:
            actions.append(.log(.notice, "failed -- \(text(destination)): no route in the route file"))
            return remember(destination, Decision(route: nil, expires: expires))
        }
        guard source.family == address.family, let socket = socket(from: source, into: &actions) else {
            actions.append(.log(.notice, "failed -- \(text(destination)): cannot send from \(source)"))
            return remember(destination, Decision(route: nil, expires: expires))
        }
        actions.append(.log(.notice, "connected -- \(text(destination))"))
        let target = Endpoint(address: address, port: destination.port)
        let header = SocksDatagram.header(SocksAddress(address, port: destination.port))
        remember(destination, Decision(route: (header, socket, target), expires: expires))
    }

    /// Why identd's answer of the association's start refuses a line of this check; nil when
    /// it does not.
    private func identRefusal(_ check: IdentCheck) -> String? {
        switch (check, ident) {
        case (.off, _): return nil
        case (.strict, .none), (.strict, .notAsked): return ": no identd answer"
        case (_, .user(let real)) where real != request.user:
            return ": real user is \(printable(real)), not \(printable(request.user))"
        default: return nil
        }
    }

    private func remember(_ destination: SocksAddress, _ decision: Decision) {
        if decisions.count >= Self.memory { decisions.removeAll(keepingCapacity: true) }
        decisions[destination] = decision
    }

    /// The socket sending from `source`, opened at its first use (ids 1 to 15).
    private func socket(from source: IPAddress, into actions: inout [SessionAction]) -> DatagramID? {
        if let known = outside[source] { return known }
        guard !failedSources.contains(source), Int(nextOutside) < DatagramID.limit else { return nil }
        let id = DatagramID(nextOutside)
        nextOutside += 1
        outside[source] = id
        actions.append(.openDatagram(id, on: Endpoint(address: source, port: 0)))
        return id
    }

    /// An outgoing socket could not be made: its source is not tried again.
    func socketFailed(_ id: DatagramID, _ error: SystemError, into actions: inout [SessionAction]) {
        guard let source = outside.first(where: { $0.value == id })?.key else { return }
        failedSources.insert(source)
        actions.append(.log(.notice, "failed -- UDP from \(who): cannot send from \(source): \(error)"))
        // The decisions that go out of it are made again (and refused).
        decisions = decisions.filter { $0.value.route?.socket != id }
        outside[source] = nil
    }

    private func program(_ command: [UInt8], destination: SocksAddress, address: IPAddress) -> SessionProgram {
        var name: [UInt8]?
        if case .name(let given) = destination.host { name = given }
        var identUser: [UInt8]?
        if case .user(let user) = ident { identUser = user }
        let values = CommandValues(
            clientAddress: client.address, clientName: clientName, direction: .udp, pid: settings.pid,
            port: destination.port, service: settings.serviceName(destination.port), identUser: identUser,
            user: request.user, destinationAddress: address, destinationName: name)
        let line = CommandSubstitution.expand(command, with: values)
        return SessionProgram(
            argv: ["/bin/sh", "-c", String(decoding: line, as: UTF8.self)], environment: settings.environment)
    }
}

#if canImport(Glibc)
import Glibc
#endif
import Gateway
import GatewayKit
import Relay

/// Where sockd's outgoing connections for a destination are made from (sockd.route).
public enum RouteChoice: Equatable, Sendable {
    /// No route file: the system picks the source address (single-homed).
    case system
    /// The route on `line` says to connect from `address`.
    case from(IPAddress, line: Int)
    /// A route file is in use and no line covers the destination.
    case none
}

/// What every session of one sockd configuration shares: the rules, the routes, the options.
/// Made again on SIGHUP; a session keeps the one it started with.
public struct SockdSessionSettings: Sendable {
    public var configuration: SockdConfiguration
    /// The route for a destination (address, and name when the request gave one).
    public var route: @Sendable (IPAddress, [UInt8]?) -> RouteChoice
    /// `-I` / `-i` (a line's `?=` overrides it).
    public var identCheck: IdentCheck
    public var identTimeout: Duration
    /// `--passwd` is in force.
    public var passwordRequired: Bool
    /// sockd's process id, for `%p`.
    public var pid: Int32
    /// A port's /etc/services name, for the log and `%S`.
    public var serviceName: @Sendable (UInt16) -> [UInt8]?
    /// How long a client has to send its request.
    public var negotiationTimeout = Duration.seconds(30)
    /// How long a connection to a destination may take.
    public var connectTimeout = Duration.seconds(60)
    /// The relay's settings (its idle timeout included).
    public var relay = RelayConfiguration()
    /// The route file's lines in force, as text (nil: none), for SIGUSR1's listing.
    public var routeText: [UInt8]?
    /// The environment shell commands run with: sockd's own (so `$USER` and the like mean
    /// what they meant to CSTC's `system()`), PATH at least.
    public var environment: [[UInt8]] = [Array("PATH=/usr/local/bin:/usr/bin:/bin".utf8)]

    /// Some line names hosts or domains for the client: its name is looked up (reverse, then
    /// confirmed forward) before the rules are matched.
    public let rulesNeedClientName: Bool

    public init(
        configuration: SockdConfiguration, route: @escaping @Sendable (IPAddress, [UInt8]?) -> RouteChoice,
        identCheck: IdentCheck, identTimeout: Duration, passwordRequired: Bool, pid: Int32,
        serviceName: @escaping @Sendable (UInt16) -> [UInt8]?
    ) {
        self.configuration = configuration
        self.route = route
        self.identCheck = identCheck
        self.identTimeout = identTimeout
        self.passwordRequired = passwordRequired
        self.pid = pid
        self.serviceName = serviceName
        rulesNeedClientName = configuration.rules.contains { rule in
            switch rule.source {
            case .host, .domain: true
            default: false
            }
        }
    }
}

/// One SOCKS client, from its first byte to the end of its tunnel: negotiation (the wire
/// layer's ``SocksNegotiation``), the password check, the destination's name resolved, the
/// client's name when a rule needs it, sockd.conf's decision, identd, the route, the
/// connection, the reply, and the relay. Pure: the ``SessionDriver`` carries its actions out.
///
/// Log lines are the manual's: `connected -- Connect from USER(IDENT)@CLIENT to DESTINATION
/// (SERVICE)`, `terminated -- ...`, `N bytes from CLIENT, M bytes from DESTINATION`,
/// `refused -- ...`, `failed -- ...: why`, and the identd lines.
public final class SocksSession: SessionMachine {
    enum Phase {
        case negotiating
        case checkingPassword
        case resolvingDestination
        case namingClient
        case confirmingClientName([UInt8])
        case askingIdent(SockdRule)
        case connecting(SockdRule)
        /// BIND: the listener is being made.
        case binding
        /// BIND: the first reply went out; waiting for the peer's connection.
        case awaitingPeer
        /// UDP ASSOCIATE: identd is asked once, for every destination.
        case askingIdentForUDP
        /// UDP ASSOCIATE: the client's socket is being made.
        case openingUDP(IdentAnswer)
        /// UDP ASSOCIATE granted: datagrams are relayed until the control connection ends.
        case associated(UDPAssociation)
        case relaying
        case ended
    }

    let settings: SockdSessionSettings
    let client: Endpoint
    private var negotiation: SocksNegotiation
    private var phase = Phase.negotiating
    private var scratch: [NegotiationAction] = []
    private var request: SocksRequest?
    private var following: [UInt8] = []
    private var destination: IPAddress?
    private var clientName: [UInt8]?
    private var identUser: [UInt8]?
    private var started: Deadline?
    /// The driver's context of the current event (BIND listens on the client's local address).
    private var context: (any SessionContext)?

    public init(settings: SockdSessionSettings, client: Endpoint) {
        self.settings = settings
        self.client = client
        negotiation = SocksNegotiation(policy: NegotiationPolicy(passwordRequired: settings.passwordRequired))
    }

    // MARK: - Words of the log

    /// CLIENT: the client's confirmed name, else its address.
    var clientText: String { clientName.map { printable($0) } ?? client.address.unmapped.description }

    /// DESTINATION: the name the request gave, else the address.
    var destinationText: String {
        guard let request else { return "?" }
        switch request.destination.host {
        case .name(let name): return printable(name)
        case .ip(let address): return address.unmapped.description
        }
    }

    /// SERVICE: the port's /etc/services name, else its number.
    var serviceText: String {
        guard let port = request?.destination.port else { return "?" }
        return settings.serviceName(port).map { printable($0) } ?? String(port)
    }

    /// `Connect from USER(IDENT)@CLIENT to DESTINATION (SERVICE)`.
    var connectText: String {
        let user = request.map { printable($0.user) } ?? ""
        let ident = identUser.map { printable($0) } ?? "unknown"
        let verb =
            switch request?.command {
            case .bind: "Bind"
            case .udpAssociate: "UDP associate"
            default: "Connect"
            }
        return "\(verb) from \(user)(\(ident))@\(clientText) to \(destinationText) (\(serviceText))"
    }

    // MARK: - Events

    public func handle(_ event: SessionEvent, context: any SessionContext, into actions: inout [SessionAction]) {
        if started == nil { started = context.now }
        self.context = context
        switch event {
        case .started:
            actions.append(.read(.client))
            actions.append(.setTimer(settings.negotiationTimeout))
        case .received(.client, let bytes):
            // After a UDP ASSOCIATE the control connection carries nothing: read and dropped.
            guard case .negotiating = phase else { return }
            scratch.removeAll(keepingCapacity: true)
            negotiation.receive(bytes, into: &scratch)
            negotiated(into: &actions)
        case .endOfFile(.client), .streamFailed(.client, _):
            switch phase {
            case .negotiating:
                scratch.removeAll(keepingCapacity: true)
                negotiation.endOfInput(into: &scratch)
                negotiated(into: &actions)
                if case .negotiating = phase { end(into: &actions) }
            case .relaying, .ended: break
            case .associated(let association):
                say("terminated -- \(connectText)", &actions)
                say(association.summary, &actions)
                end(into: &actions)
            default:
                // Gone while sockd was deciding: nobody to answer.
                end(into: &actions)
            }
        case .passwordChecked(let accepted):
            guard case .checkingPassword = phase else { return }
            phase = .negotiating
            actions.append(.read(.client))
            scratch.removeAll(keepingCapacity: true)
            negotiation.passwordChecked(accepted, into: &scratch)
            negotiated(into: &actions)
        case .resolved(let name, let addresses):
            switch phase {
            case .resolvingDestination:
                guard let first = addresses.first else { return }
                destination = first.unmapped
                nameClientOrDecide(into: &actions)
            case .confirmingClientName(let name):
                // The reverse name counts only when it leads back to the client.
                let address = client.address.unmapped
                clientName = addresses.contains { $0.unmapped == address } ? name : nil
                decide(into: &actions)
            case .associated(let association):
                association.resolved(name, addresses: addresses, now: context.now, into: &actions)
            default: break
            }
        case .resolveFailed(let name, let reason):
            switch phase {
            case .resolvingDestination:
                fail(.hostUnreachable, "cannot resolve \(printable(Array(name.utf8))): \(reason)", into: &actions)
            case .confirmingClientName:
                // The name does not lead back: decide as if there were none.
                clientName = nil
                decide(into: &actions)
            case .associated(let association):
                association.resolveFailed(name, reason: reason, now: context.now, into: &actions)
            default: break
            }
        case .nameFound(let answer):
            guard case .namingClient = phase else { return }
            let name: String? =
                switch answer {
                case .hosts(let name): name
                case .dns(let name): name
                case .failed: nil
                }
            guard let name, !name.isEmpty else { return decide(into: &actions) }
            phase = .confirmingClientName(Array(name.utf8))
            actions.append(.resolve(name))
        case .identAnswered(let result):
            if case .askingIdentForUDP = phase { return associationIdentAnswered(result, into: &actions) }
            guard case .askingIdent(let rule) = phase else { return }
            identAnswered(result, rule: rule, into: &actions)
        case .datagramOpened(let id, let bound):
            guard id == UDPAssociation.inside, case .openingUDP(let ident) = phase, let request else { return }
            let association = UDPAssociation(
                settings: settings, request: request, client: client, clientName: clientName, ident: ident,
                who: whoText)
            phase = .associated(association)
            say("connected -- \(connectText), relaying at \(bound)", &actions)
            actions.append(.send(.client, request.reply(.granted, bound: Self.address(bound))[...]))
            actions.append(.read(.client))
        case .datagramFailed(let id, let error):
            switch phase {
            case .openingUDP:
                fail(.generalFailure, "cannot open a UDP socket: \(error)", into: &actions)
            case .associated(let association) where id == UDPAssociation.inside:
                say("failed -- \(connectText): the UDP socket failed: \(error)", &actions)
                say(association.summary, &actions)
                end(into: &actions)
            case .associated(let association):
                association.socketFailed(id, error, into: &actions)
            default: break
            }
        case .datagram(let id, let from, let bytes):
            guard case .associated(let association) = phase else { return }
            association.received(id, from: from, bytes, now: context.now, into: &actions)
        case .streamConnected(.server):
            guard case .connecting = phase, let request else { return }
            var bound = SocksAddress.unspecified
            if let local = try? context.endpoint(of: .server, local: true) {
                bound = SocksAddress(local.address.unmapped, port: local.port)
            }
            say("connected -- \(connectText)", &actions)
            actions.append(.send(.client, request.reply(.granted, bound: bound)[...]))
            phase = .relaying
            actions.append(.relayStreams(settings.relay, toServer: following))
            following = []
        case .connectFailed(.server, let error):
            guard case .connecting = phase else { return }
            fail(Self.outcome(of: error), "\(error)", into: &actions)
        case .hostUnknown(.server, let reason):
            guard case .connecting = phase else { return }
            fail(.hostUnreachable, reason, into: &actions)
        case .listening(.server, let local):
            guard case .binding = phase, let request else { return }
            phase = .awaitingPeer
            actions.append(.send(.client, request.reply(.granted, bound: Self.address(local))[...]))
        case .accepted(.server, let from):
            guard case .awaitingPeer = phase, let request, let destination else { return }
            let expected = destination.unmapped
            // 0.0.0.0 (or ::): the client does not know its peer's address; any will do.
            guard expected.bytes.allSatisfy({ $0 == 0 }) || from.address.unmapped == expected else {
                say("refused -- \(connectText): the connection came from \(from.address.unmapped)", &actions)
                return refuse(.notAllowed, into: &actions)
            }
            say("connected -- \(connectText)", &actions)
            actions.append(.send(.client, request.reply(.granted, bound: Self.address(from))[...]))
            phase = .relaying
            actions.append(.relayStreams(settings.relay, toServer: following))
            following = []
        case .listenFailed(.server, let error):
            guard case .binding = phase else { return }
            fail(.generalFailure, "cannot listen: \(error)", into: &actions)
        case .relayEnded(let summary):
            say("terminated -- \(connectText)", &actions)
            say(
                "\(summary.bytesClientToServer) bytes from \(clientText), \(summary.bytesServerToClient) bytes from \(destinationText)",
                &actions)
            phase = .ended
            actions.append(.close)
        case .relayFailed(let error):
            fail(.generalFailure, "\(error)", into: &actions)
        case .timerFired:
            switch phase {
            case .relaying, .ended, .associated: break
            case .negotiating, .checkingPassword:
                say(
                    "timeout -- no request from \(clientText) within \(settings.negotiationTimeout.components.seconds) s",
                    &actions)
                end(into: &actions)
            case .awaitingPeer:
                fail(.timedOut, "no connection within \(Self.bindWait.components.seconds) s", into: &actions)
            default:
                fail(.timedOut, "timed out", into: &actions)
            }
        default:
            break
        }
    }

    public func statusLine(bytesFromClient: UInt64, bytesToClient: UInt64, now: Deadline) -> String? {
        guard case .relaying = phase else { return nil }
        return
            "\(connectText): \(bytesFromClient) bytes from \(clientText), \(bytesToClient) bytes from \(destinationText)"
    }

    // MARK: - Steps

    /// Carries out what the negotiation said.
    private func negotiated(into actions: inout [SessionAction]) {
        for step in scratch {
            switch step {
            case .send(let bytes):
                actions.append(.send(.client, bytes[...]))
            case .checkPassword(let username, let password):
                phase = .checkingPassword
                actions.append(.pause(.client))
                actions.append(.checkPassword(user: username, password: password))
            case .ready(let request, let following):
                self.request = request
                self.following = following
                actions.append(.pause(.client))
                requestReady(request, into: &actions)
            case .failed(let failure):
                switch failure.kind {
                case .malformed: say("malformed request from \(clientText): \(failure)", &actions)
                case .refused: say("refused -- \(clientText): \(failure)", &actions)
                case .closed: actions.append(.log(.info, "closed -- \(clientText): \(failure)"))
                }
                end(into: &actions)
            }
        }
        scratch.removeAll(keepingCapacity: true)
    }

    private func requestReady(_ request: SocksRequest, into actions: inout [SessionAction]) {
        guard request.command != .udpAssociate else {
            // DST is where the client will send from: no name to resolve, no rule to apply yet.
            return nameClientOrDecide(into: &actions)
        }
        switch request.destination.host {
        case .ip(let address):
            destination = address.unmapped
            nameClientOrDecide(into: &actions)
        case .name(let name):
            phase = .resolvingDestination
            actions.append(.setTimer(settings.connectTimeout))
            actions.append(.resolve(String(decoding: name, as: UTF8.self)))
        }
    }

    private func nameClientOrDecide(into actions: inout [SessionAction]) {
        guard settings.rulesNeedClientName else { return decide(into: &actions) }
        phase = .namingClient
        actions.append(.lookUpName(client.address))
    }

    private func query() -> RuleQuery? {
        guard let request, let destination else { return nil }
        var name: [UInt8]?
        if case .name(let given) = request.destination.host { name = given }
        return RuleQuery(
            user: request.user, client: client.address.unmapped, clientName: clientName, destination: destination,
            destinationName: name, port: request.destination.port)
    }

    /// sockd.conf's first matching line decides; no line denies.
    private func decide(into actions: inout [SessionAction]) {
        if request?.command == .udpAssociate { return associate(into: &actions) }
        guard let query = query() else { return end(into: &actions) }
        let matched = settings.configuration.match(query)
        guard let rule = matched, rule.action == .permit else {
            if let command = matched?.command { runCommand(command, into: &actions) }
            say("refused -- \(connectText)", &actions)
            return refuse(.notAllowed, into: &actions)
        }
        switch rule.identCheck(default: settings.identCheck) {
        case .off:
            connect(rule, into: &actions)
        case .lenient, .strict:
            phase = .askingIdent(rule)
            actions.append(.setTimer(settings.identTimeout + .seconds(1)))
            actions.append(.askIdent(timeout: settings.identTimeout))
        }
    }

    private func identAnswered(
        _ result: Result<[UInt8], IdentError>, rule: SockdRule, into actions: inout [SessionAction]
    ) {
        let strict = rule.identCheck(default: settings.identCheck) == .strict
        // The user id as remoteinfo keeps it (after the third colon); an ERROR reply keeps none.
        guard case .success(let user) = result, !user.isEmpty else {
            guard strict else { return connect(rule, into: &actions) }
            say("cannot connect to identd on \(clientText)", &actions)
            if let special = settings.configuration.noIdentd { runCommand(special.command, into: &actions) }
            say("refused -- \(connectText)", &actions)
            return refuse(.noIdentd, into: &actions)
        }
        identUser = user
        guard let request, user == request.user else {
            say("*Alert*: real user is \(printable(user)), not \(printable(request?.user ?? []))", &actions)
            if let special = settings.configuration.badIdent { runCommand(special.command, into: &actions) }
            say("refused -- \(connectText)", &actions)
            return refuse(.identMismatch, into: &actions)
        }
        connect(rule, into: &actions)
    }

    /// The line permits (identd, if asked, agreed): its command runs (`%U` known by now),
    /// then the connection is made from the route's address.
    private func connect(_ rule: SockdRule, into actions: inout [SessionAction]) {
        guard let request, let destination else { return end(into: &actions) }
        if let command = rule.command { runCommand(command, into: &actions) }
        var name: [UInt8]?
        if case .name(let given) = request.destination.host { name = given }
        let source: IPAddress?
        switch settings.route(destination, name) {
        case .system: source = nil
        case .from(let address, _): source = address
        case .none:
            return fail(.networkUnreachable, "no route to \(destinationText) in the route file", into: &actions)
        }
        if request.command == .bind { return bind(from: source, into: &actions) }
        phase = .connecting(rule)
        actions.append(.setTimer(settings.connectTimeout))
        actions.append(
            .connect(
                .server, to: .tcp(Endpoint(address: destination, port: request.destination.port), from: source),
                timeout: settings.connectTimeout))
    }

    // MARK: - UDP ASSOCIATE

    /// USER(IDENT)@CLIENT.
    var whoText: String {
        let user = request.map { printable($0.user) } ?? ""
        let ident = identUser.map { printable($0) } ?? "unknown"
        return "\(user)(\(ident))@\(clientText)"
    }

    /// The association itself is granted to every client that negotiated; its destinations
    /// are decided one by one. identd is asked now, once, when the options or any line want
    /// it; `-I` without an answer, and an answer naming another user under `-I` or `-i`,
    /// refuse the association as they would a CONNECT.
    private func associate(into actions: inout [SessionAction]) {
        let wanted =
            settings.identCheck != .off
            || settings.configuration.rules.contains { ($0.ident ?? .off) != .off }
        guard wanted else { return openUDP(.notAsked, into: &actions) }
        phase = .askingIdentForUDP
        actions.append(.setTimer(settings.identTimeout + .seconds(1)))
        actions.append(.askIdent(timeout: settings.identTimeout))
    }

    private func associationIdentAnswered(_ result: Result<[UInt8], IdentError>, into actions: inout [SessionAction]) {
        guard case .success(let user) = result, !user.isEmpty else {
            guard settings.identCheck == .strict else { return openUDP(.none, into: &actions) }
            say("cannot connect to identd on \(clientText)", &actions)
            if let special = settings.configuration.noIdentd { runCommand(special.command, into: &actions) }
            say("refused -- \(connectText)", &actions)
            return refuse(.noIdentd, into: &actions)
        }
        identUser = user
        if let request, user != request.user, settings.identCheck != .off {
            say("*Alert*: real user is \(printable(user)), not \(printable(request.user))", &actions)
            if let special = settings.configuration.badIdent { runCommand(special.command, into: &actions) }
            say("refused -- \(connectText)", &actions)
            return refuse(.identMismatch, into: &actions)
        }
        openUDP(.user(user), into: &actions)
    }

    /// The client's socket, where it reached sockd (so it can reach the socket too).
    private func openUDP(_ ident: IdentAnswer, into actions: inout [SessionAction]) {
        guard let local = try? context?.localEndpoint() else {
            return fail(.generalFailure, "cannot tell where to listen", into: &actions)
        }
        phase = .openingUDP(ident)
        actions.append(.openDatagram(UDPAssociation.inside, on: Endpoint(address: local.address.unmapped, port: 0)))
    }

    /// How long a BIND listener waits for its peer.
    public static let bindWait = Duration.seconds(120)

    /// BIND: listen where the route says (else on the address the client reached sockd at) for
    /// the one connection of the peer the request named.
    private func bind(from source: IPAddress?, into actions: inout [SessionAction]) {
        guard let address = source ?? (try? context?.localEndpoint())?.address.unmapped else {
            return fail(.generalFailure, "cannot tell where to listen", into: &actions)
        }
        phase = .binding
        actions.append(.setTimer(Self.bindWait))
        actions.append(.listen(.server, on: address))
    }

    static func address(_ endpoint: Endpoint) -> SocksAddress {
        SocksAddress(endpoint.address.unmapped, port: endpoint.port)
    }

    private func runCommand(_ command: [UInt8], into actions: inout [SessionAction]) {
        guard let request else { return }
        let values = CommandValues(
            clientAddress: client.address.unmapped, clientName: clientName,
            direction: request.command == .bind ? .bind : request.command == .udpAssociate ? .udp : .connect,
            pid: settings.pid,
            port: request.destination.port, service: settings.serviceName(request.destination.port),
            identUser: identUser, user: request.user, destinationAddress: destination ?? .anyV4,
            destinationName: { if case .name(let n) = request.destination.host { n } else { nil } }())
        let line = CommandSubstitution.expand(command, with: values)
        actions.append(
            .runDetached(
                SessionProgram(
                    argv: ["/bin/sh", "-c", String(decoding: line, as: UTF8.self)],
                    environment: settings.environment)))
    }

    private func refuse(_ outcome: Outcome, into actions: inout [SessionAction]) {
        if let request { actions.append(.send(.client, request.reply(outcome)[...])) }
        end(into: &actions)
    }

    private func fail(_ outcome: Outcome, _ why: String, into actions: inout [SessionAction]) {
        say("failed -- \(connectText): \(why)", &actions)
        refuse(outcome, into: &actions)
    }

    private func end(into actions: inout [SessionAction]) {
        phase = .ended
        actions.append(.close)
    }

    private func say(_ line: String, _ actions: inout [SessionAction]) {
        actions.append(.log(.notice, line))
    }

    /// The reply for a connect that failed.
    static func outcome(of error: SystemError) -> Outcome {
        switch error.errno {
        case ECONNREFUSED: .connectionRefused
        case ENETUNREACH, ENETDOWN: .networkUnreachable
        case EHOSTUNREACH, EHOSTDOWN: .hostUnreachable
        case ETIMEDOUT: .timedOut
        default: .generalFailure
        }
    }
}

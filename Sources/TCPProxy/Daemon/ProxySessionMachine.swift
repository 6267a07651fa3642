#if canImport(Glibc)
import Glibc
#endif
import AccessRules
import Gateway
import GatewayKit
import Relay
import TLS

/// What the sessions of one listener (of one table) share: the handler's configuration and
/// the table's resolved targets, the daemon's log level and environment. Made once per
/// listener and table, not per connection (an idle connection holds a reference, not a copy).
/// All values, except `nextSource`, the one shared counter (a `rotate` range's round robin,
/// an atomic add in the table).
package final class ProxySessionSetup {
    /// The configuration file's path, for the trace.
    let configurationPath: String
    /// The listener's service.
    let service: ProxyService
    /// The handler the listener serves, or nil to choose it by local address (inetd mode).
    let chosenHandler: Int?
    /// The service's resolved forward targets, by handler (nil for exec handlers).
    let targets: [ResolvedTarget?]
    /// The service's TLS contexts, by handler.
    let tls: [HandlerTLS]
    /// The most detailed level the daemon logs.
    let logLevel: LogLevel
    /// The environment programs start from (empty with -c).
    let baseEnvironment: [[UInt8]]
    /// Client names can be looked up (some handler runs a program, and names are not off).
    let namesAvailable: Bool
    /// Relay buffer size (-b).
    let relayBufferSize: Int
    /// The next source address of a `rotate` range for handler `handler`.
    let nextSource: (_ handler: Int, AddressRange) -> IPAddress

    package init(
        configurationPath: String, service: ProxyService, chosenHandler: Int?, targets: [ResolvedTarget?],
        tls: [HandlerTLS] = [], logLevel: LogLevel, baseEnvironment: [[UInt8]], namesAvailable: Bool,
        relayBufferSize: Int,
        nextSource: @escaping (_ handler: Int, AddressRange) -> IPAddress
    ) {
        self.configurationPath = configurationPath
        self.service = service
        self.chosenHandler = chosenHandler
        self.targets = targets
        self.tls = tls
        self.logLevel = logLevel
        self.baseEnvironment = baseEnvironment
        self.namesAvailable = namesAvailable
        self.relayBufferSize = relayBufferSize
        self.nextSource = nextSource
    }
}

/// One tcpproxy connection as a pure state machine (``SessionMachine``), from accept to the
/// end of its relay or the start of its handler program: handler selection by local address,
/// the rules database, the client's name (only when a program will run), the access control
/// program, then forwarding (connect, PROXY header, relay) or a handler program. Out of
/// descriptors for the server socket, it waits and tries again (100 ms pauses, up to 10 s).
///
/// A handler with ``ProxyHandler/debug`` (`debug NAME`, or -d for all) gets the debug trace:
/// every step logged at notice level as `WHO: trace: STEP`. Without it each step costs one test.
///
/// A class rather than a struct so that the driver holds it without a box and an idle
/// connection costs a reference to its listener's setup plus a few words; it is still pure:
/// no descriptor, no loop, no clock.
package final class ProxySessionMachine: SessionMachine {
    private enum State {
        case created, checkingRules, handshaking, findingName, accessControl, handingOver, connecting, relaying,
            waiting, ended
    }

    private let setup: ProxySessionSetup
    /// The connection's number.
    let id: UInt64
    /// The client.
    let peer: Endpoint
    private var state = State.created
    private var handlerIndex = 0
    /// The chosen handler, read in place (never copied: it is large).
    private var handler: ProxyHandler {
        _read { yield setup.service.handlers[handlerIndex] }
    }
    private var tracing = false
    private var ruleEnvironment: [RuleDecision.Variable] = []
    /// PROXY_CLIENTNAME: the client's name once looked up (nil: none, the address is used).
    private var clientName: String?
    private var serverDescription = ""
    private var started = Deadline(nanoseconds: 0)
    /// The local end, once read; read only when something needs it.
    private var local: Endpoint?
    /// The client socket is the relay's: its local address is known only if read before.
    private var handedOff = false
    private var descriptorWaits = 0
    /// The client's TLS, once its handshake is done.
    private var clientTLS: TLSFacts?

    /// Pauses of 100 ms a connection waits for a descriptor before it is given up (10 s).
    static let descriptorWaitLimit = 100

    package init(_ setup: ProxySessionSetup, id: UInt64, peer: Endpoint) {
        self.setup = setup
        self.id = id
        self.peer = peer
    }

    // MARK: - Words

    /// The local end: read through the context the first time (an unreadable one counts as
    /// 0.0.0.0:0, as the original's zeroed sockaddr).
    private func localEnd(_ context: any SessionContext) -> Endpoint {
        if let local { return local }
        let found = (try? context.localEndpoint()) ?? Endpoint(address: .anyV4, port: 0)
        local = found
        return found
    }

    /// `connection N from CLIENT on LOCAL`, the prefix of every line about this connection.
    private func who(_ context: any SessionContext) -> String {
        // Once the relay owns (and may have closed) the client socket, the local address is
        // known only if it was read before; a quiet log level skips that system call.
        guard !handedOff || local != nil else { return "connection \(id) from \(peer)" }
        return "connection \(id) from \(peer) on \(localEnd(context))"
    }

    private func trace(
        _ step: @autoclosure () -> String, _ context: any SessionContext, _ actions: inout [SessionAction]
    ) {
        guard tracing else { return }
        actions.append(.log(.notice, "\(who(context)): trace: \(step())"))
    }

    private func say(
        _ level: LogLevel, _ text: String, _ context: any SessionContext, _ actions: inout [SessionAction]
    ) {
        guard level <= setup.logLevel else { return }
        actions.append(.log(level, "\(who(context))\(text)"))
    }

    private func end(_ context: any SessionContext, _ actions: inout [SessionAction]) {
        trace("end after \(SessionDriver.seconds(since: started, now: context.now))", context, &actions)
        state = .ended
        actions.append(.close)
    }

    // MARK: - Events

    package func handle(_ event: SessionEvent, context: any SessionContext, into actions: inout [SessionAction]) {
        switch (state, event) {
        case (.created, .started):
            started = context.now
            begin(context, &actions)
        case (.checkingRules, .rulesChecked(let outcome)):
            rulesChecked(outcome, context, &actions)
        case (.handshaking, .tlsEstablished(.client, let facts)):
            clientTLS = facts
            trace("TLS with the client: \(facts.summary)", context, &actions)
            afterHandshake(context, &actions)
        case (.handshaking, .tlsFailed(.client, let error)):
            say(.notice, ": TLS handshake failed: \(error), closed", context, &actions)
            end(context, &actions)
        case (.connecting, .tlsEstablished(.server, let facts)), (.relaying, .tlsEstablished(.server, let facts)):
            let unverified = setup.tls[handlerIndex].client?.settings.verify == false ? " (not verified)" : ""
            say(
                .notice, " to \(serverDescription): TLS with the server: \(facts.summary)\(unverified)", context,
                &actions)
        case (.connecting, .tlsFailed(.server, let error)), (.relaying, .tlsFailed(.server, let error)):
            say(.error, " to \(serverDescription): TLS with the server failed: \(error)", context, &actions)
        case (.findingName, .nameFound(let answer)):
            nameFound(answer, context, &actions)
        case (.accessControl, .programStarted(let pid)):
            let argv = handler.accessControlProgram ?? []
            trace("access control program started (pid \(pid)): \(argv.joined(separator: " "))", context, &actions)
        case (.accessControl, .programFailed(let error)):
            let name = handler.accessControlProgram?.first ?? ""
            say(.error, ": unable to run access control program \(name): \(error), closed", context, &actions)
            end(context, &actions)
        case (.accessControl, .programSaid(let line)):
            say(.notice, ": \(handler.accessControlProgram?.first ?? ""): \(line)", context, &actions)
        case (.accessControl, .programExited(let pid, let status)):
            trace("access control program \(pid) ended: \(WaitStatus.describe(status))", context, &actions)
            guard WaitStatus.exited(status) == 0 else {
                say(.notice, ": denied by access control program (\(WaitStatus.describe(status)))", context, &actions)
                return end(context, &actions)
            }
            serve(context, &actions)
        case (.handingOver, .handedOver(let pid)):
            say(.notice, " to \(serverDescription)", context, &actions)
            trace("handler program started (pid \(pid)); it serves the connection from now on", context, &actions)
            end(context, &actions)
        case (.handingOver, .handOverFailed(let error)):
            say(.error, ": unable to run \(handler.execArgv.first ?? ""): \(error), closed", context, &actions)
            end(context, &actions)
        case (.connecting, .relayFailed(let error)):
            handedOff = false
            if Self.isShortage(error) && descriptorWaits < Self.descriptorWaitLimit {
                // Out of descriptors: wait (the daemon pauses accepting meanwhile), then again.
                descriptorWaits += 1
                state = .waiting
                actions.append(.waitForDescriptors(error))
                return
            }
            say(.error, ": unable to connect to \(serverDescription): \(error), closed", context, &actions)
            end(context, &actions)
        case (.waiting, .timerFired):
            serve(context, &actions)
        case (.connecting, .connected(let serverLocal, let recording)):
            state = .relaying
            connected(serverLocal, recording, context, &actions)
        case (.connecting, .relayEnded(let summary)), (.relaying, .relayEnded(let summary)):
            relayEnded(summary, context, &actions)
        case (.relaying, .finished(let direction, let bytes)):
            switch direction {
            case .clientToServer:
                trace(
                    "client finished sending (\(bytes) bytes to the server); passed on to the server", context, &actions
                )
            case .serverToClient:
                trace(
                    "server finished sending (\(bytes) bytes to the client); passed on to the client", context, &actions
                )
            }
        default:
            break  // nothing this state waits for (a late report after the end, say)
        }
    }

    package func statusLine(bytesFromClient: UInt64, bytesToClient: UInt64, now: Deadline) -> String? {
        guard state == .relaying || state == .connecting else { return nil }
        let who =
            local.map { "connection \(id) from \(peer) on \($0)" }
            ?? "connection \(id) from \(peer)"
        return
            "\(who) to \(serverDescription): \(bytesFromClient) bytes from client, \(bytesToClient) bytes to client, "
            + "open \(SessionDriver.seconds(since: started, now: now))"
    }

    // MARK: - Steps

    private func begin(_ context: any SessionContext, _ actions: inout [SessionAction]) {
        let service = setup.service
        if setup.chosenHandler == nil {
            do { local = try context.localEndpoint() } catch {
                actions.append(
                    .log(
                        .warning,
                        "connection \(id) from \(peer): unable to get local address: \(error)"))
                state = .ended
                actions.append(.close)
                return
            }
        }
        let address = setup.chosenHandler == nil ? local?.address.unmapped : nil
        guard
            let index = setup.chosenHandler ?? service.handlers.firstIndex(where: { $0.interface == address })
                ?? service.handlers.firstIndex(where: { $0.interface == nil })
        else {
            say(.notice, ": no service for this address, closed", context, &actions)
            return end(context, &actions)
        }
        handlerIndex = index
        tracing = handler.debug
        trace("handler \(handlerName()): \(handler.target.summary(listeningPort: service.port))", context, &actions)
        if let rules = handler.rules {
            state = .checkingRules
            actions.append(.checkRules(path: rules, client: RuleClient(ip: peer.address.unmapped.description)))
            return
        }
        afterRules(context, &actions)
    }

    /// `port 8080 interface 127.0.0.2 (/etc/tcpproxy.conf line 7)`, for the trace.
    private func handlerName() -> String {
        let service = setup.service
        let path = setup.configurationPath
        let place = handler.line > 0 ? "\(path) line \(handler.line)" : path
        let address: String
        if let interface = handler.interface {
            address = " interface \(interface)"
        } else if service.listen != .any {
            address = " listen \(service.listen)"
        } else {
            address = ""
        }
        return "port \(service.port)\(address) (\(place))"
    }

    /// Applies the rules as tcpserver -x does (by address; tcpproxy does no DNS or ident
    /// lookups for rules). A denial or an unreadable database refuses the connection.
    private func rulesChecked(
        _ outcome: RulesCheck.Outcome, _ context: any SessionContext, _ actions: inout [SessionAction]
    ) {
        let path = handler.rules ?? ""
        switch outcome {
        case .missing:
            trace("rules \(path) does not exist, allowed", context, &actions)
        case .noRule:
            trace("rules \(path): no rule matches, allowed", context, &actions)
        case .allowed(let rule, let variables):
            ruleEnvironment = variables
            trace("rules \(path): allowed by rule \"\(rule.text)\"\(Self.setting(variables))", context, &actions)
        case .denied(let rule):
            say(.notice, ": denied by rule \"\(rule.text)\" of \(path)", context, &actions)
            return end(context, &actions)
        case .unreadable(let errno):
            say(.error, ": unable to read \(path): \(SystemError.message(errno)), closed", context, &actions)
            return end(context, &actions)
        }
        afterRules(context, &actions)
    }

    private func afterRules(_ context: any SessionContext, _ actions: inout [SessionAction]) {
        if handlerIndex < setup.tls.count, let tls = setup.tls[handlerIndex].server {
            state = .handshaking
            trace("TLS handshake with the client (\(tls))", context, &actions)
            let timeout = Duration.seconds(handler.timeout > 0 ? handler.timeout : ProxyHandler.defaultTimeout)
            actions.append(.startTLS(.client, .accept(tls), timeout: timeout))
            return
        }
        afterHandshake(context, &actions)
    }

    private func afterHandshake(_ context: any SessionContext, _ actions: inout [SessionAction]) {
        if handler.runsProgram && setup.namesAvailable {
            state = .findingName
            actions.append(.lookUpName(peer.address.unmapped))
        } else {
            checkAccess(context, &actions)
        }
    }

    private func nameFound(
        _ answer: ClientNameAnswer, _ context: any SessionContext, _ actions: inout [SessionAction]
    ) {
        switch answer {
        case .hosts(let name):
            clientName = name
            trace("client name from the hosts file: \(name)", context, &actions)
        case .dns(let name):
            clientName = name
            trace(name.map { "client name from DNS: \($0)" } ?? "no name for the client in DNS", context, &actions)
        case .failed(let error):
            if tracing {
                trace("no name for the client: \(error)", context, &actions)
            } else {
                say(.debug, ": no name for the client: \(error)", context, &actions)
            }
        }
        checkAccess(context, &actions)
    }

    private func checkAccess(_ context: any SessionContext, _ actions: inout [SessionAction]) {
        if let acp = handler.accessControlProgram {
            state = .accessControl
            actions.append(.run(SessionProgram(argv: acp, environment: programEnvironment(context)), stdout: true))
        } else {
            serve(context, &actions)
        }
    }

    /// The PROXY_ variables (with the handler's prefix) and the rule's variables.
    private func programEnvironment(_ context: any SessionContext) -> [[UInt8]] {
        var env = ChildEnvironment(base: setup.baseEnvironment)
        let prefix = handler.variablePrefix
        let client = peer.address.unmapped.description
        let local = localEnd(context)
        env.set(prefix + "PORT", String(local.port))
        env.set(prefix + "INTERFACE", local.address.unmapped.description)
        env.set(prefix + "CLIENT", client)
        env.set(prefix + "CLIENTNAME", clientName ?? client)
        env.setTLS(clientTLS, prefix: prefix)
        for variable in ruleEnvironment { env.set(variable.name, variable.value) }
        return env.bytes
    }

    private func serve(_ context: any SessionContext, _ actions: inout [SessionAction]) {
        switch handler.target {
        case .exec(let argv):
            serverDescription = argv.joined(separator: " ")
            state = .handingOver
            let program = SessionProgram(argv: argv, environment: programEnvironment(context))
            actions.append(.handOver(program, endLine: "\(who(context)) to \(argv.first ?? "") ended"))
        case .forward:
            guard let target = setup.targets[handlerIndex] else { return end(context, &actions) }
            connect(target, context, &actions)
        }
    }

    /// Connects to the server and relays: one relay does both, writing what the client sent
    /// (after the PROXY header, if any) as soon as the connection takes it.
    private func connect(
        _ target: ResolvedTarget, _ context: any SessionContext, _ actions: inout [SessionAction]
    ) {
        let port = target.port ?? localEnd(context).port
        let destination = Endpoint(address: target.address, port: port)
        serverDescription = destination.description
        var source = target.source
        if let range = target.rotate { source = setup.nextSource(handlerIndex, range) }
        var configuration = RelayConfiguration()
        configuration.bufferSize = setup.relayBufferSize
        configuration.idleTimeout = .seconds(handler.timeout)
        // accept4(SOCK_NONBLOCK), the relay's own socket, inetd's fd set so.
        configuration.assumeNonBlocking = true
        // TCP_NODELAY: the client socket inherited it from the listener (inetd's socket is set
        // when the daemon starts); the server socket gets it before connecting.
        configuration.noDelay = false
        let preamble = handler.proxyProtocol?.header(client: peer, server: localEnd(context), tls: clientTLS) ?? []
        if setup.logLevel >= .notice { _ = localEnd(context) }  // the end-of-connection line needs it
        trace(
            "connecting to \(serverDescription) from \(Self.sourceText(source, rotated: target.rotate != nil))",
            context, &actions)
        state = .connecting
        handedOff = true
        let recording = handler.writefile.map { RecordingRequest(basename: $0, server: serverDescription) }
        actions.append(
            .relay(
                RelayPlan(
                    destination: destination, source: source, preamble: preamble, configuration: configuration,
                    recording: recording, traced: tracing,
                    serverTLS: setup.tls.indices.contains(handlerIndex)
                        ? setup.tls[handlerIndex].client.map { ($0, target.host) } : nil)))
    }

    private func connected(
        _ serverLocal: Endpoint?, _ recording: RecordingOutcome?, _ context: any SessionContext,
        _ actions: inout [SessionAction]
    ) {
        if tracing {
            let shown = serverLocal?.description ?? "unknown"
            trace("connected to the server: local \(shown), remote \(serverDescription)", context, &actions)
            if let version = handler.proxyProtocol {
                // The relay sends it ahead of the client's bytes, as soon as the socket takes it.
                let header = version.header(client: peer, server: localEnd(context), tls: clientTLS)
                trace("PROXY header queued for the server: \(Self.describeHeader(header, version))", context, &actions)
            }
        }
        if let recording {
            if let error = recording.error {
                trace("unable to open the recording file \(recording.path): \(error); not recording", context, &actions)
            } else {
                trace("recording to \(recording.path)", context, &actions)
            }
        }
        say(.notice, " to \(serverDescription)\(clientTLS.map { ", TLS \($0.summary)" } ?? "")", context, &actions)
    }

    private func relayEnded(
        _ summary: RelaySummary, _ context: any SessionContext, _ actions: inout [SessionAction]
    ) {
        if case .connectFailed(let error) = summary.end {
            say(.error, ": unable to connect to \(serverDescription): \(error), closed", context, &actions)
            return end(context, &actions)
        }
        if summary.end == .idleTimeout {
            trace("idle timeout: nothing moved for \(handler.timeout) s", context, &actions)
        }
        let seconds = SessionDriver.seconds(since: started, now: context.now)
        say(
            .notice,
            " to \(serverDescription) closed: \(summary.bytesClientToServer) bytes from client, "
                + "\(summary.bytesServerToClient) bytes to client, \(seconds) (\(Self.describe(summary.end)))",
            context, &actions)
        end(context, &actions)
    }

    // MARK: - Words for the log

    static func isShortage(_ error: SystemError) -> Bool { error.isDescriptorShortage }

    static func describe(_ end: RelayEnd) -> String {
        switch end {
        case .completed: return "completed"
        case .idleTimeout: return "idle timeout"
        case .failed(let side, let error): return "\(side == .client ? "client" : "server"): \(error)"
        case .cancelled: return "cancelled"
        case .connectFailed(let error): return "connect failed: \(error)"
        }
    }

    /// The trace's words for the variables a rule sets: `, setting A B`, or nothing.
    static func setting(_ variables: [RuleDecision.Variable]) -> String {
        guard !variables.isEmpty else { return "" }
        return ", setting " + variables.map { String(decoding: $0.name, as: UTF8.self) }.joined(separator: " ")
    }

    /// The trace's words for the address a connection to the server comes from.
    static func sourceText(_ source: IPAddress?, rotated: Bool) -> String {
        guard let source else { return "an address the system picks" }
        return rotated ? "\(source) (rotate)" : source.description
    }

    /// The trace's words for a PROXY header: v1's line, or v2's size.
    static func describeHeader(_ header: [UInt8], _ version: ProxyProtocolVersion) -> String {
        guard version == .v1 else { return "v2, \(header.count) bytes" }
        return String(decoding: header.prefix { $0 != 13 && $0 != 10 }, as: UTF8.self)
    }
}

extension ProxyHandler {
    /// The handler program's argv, empty for a forward.
    var execArgv: [String] {
        if case .exec(let argv) = target { return argv }
        return []
    }
}

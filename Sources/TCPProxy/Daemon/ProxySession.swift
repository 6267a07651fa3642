#if canImport(Glibc)
import Glibc
#endif
import AccessRules
import CDB
import GatewayKit
import Loop
import Relay

/// One client connection, from accept to the end of its relay or the start of its handler:
/// handler selection by local address, rules, the client's name (only when a program will
/// run), access control program, then forwarding (connect, PROXY header, relay) or a handler
/// program. Lives on one event loop and is driven by it.
///
/// A handler with ``ProxyHandler/debug`` (`debug NAME`, or -d for all) gets the debug trace:
/// every step logged at notice level as `WHO: trace: STEP`. Without it each step costs one test
/// of ``tracing``.
final class ProxySession: RelayDelegate, RelayRecorder {
    let worker: ProxyWorker
    let table: ServiceTable
    let serviceIndex: Int
    var client: Int32
    let peer: Endpoint
    /// The local end, read (getsockname) only when something needs it: a server port taken
    /// from it, a PROXY header, program variables, handler selection in inetd mode, or a log
    /// line. The fast path of a plain forward with quiet logging never asks.
    private var cachedLocal: Endpoint?
    var local: Endpoint {
        if let cachedLocal { return cachedLocal }
        let found = client >= 0 ? (try? Socket.localEndpoint(client)) : nil
        let endpoint = found ?? Endpoint(address: .anyV4, port: 0)
        cachedLocal = endpoint
        return endpoint
    }
    var handlerIndex = 0
    var handler: ProxyHandler!
    var ruleEnvironment: [RuleDecision.Variable] = []
    var serverDescription = ""
    var relay: RelayConnection?
    var acp: ChildProgram?
    /// PROXY_CLIENTNAME: the client's name once looked up (nil: none, the address is used).
    var clientName: String?
    var nameQuery: DNSQuery?
    var recorder: ConnectionRecorder?
    let started = Deadline.now
    let id: UInt64
    /// The chosen handler asks for the debug trace.
    var tracing = false

    /// The handler chosen by the listener, or nil to choose it by local address (inetd mode).
    let chosenHandler: Int?

    init(
        worker: ProxyWorker, table: ServiceTable, service: Int, handler: Int?, client: Int32, peer: Endpoint, id: UInt64
    ) {
        self.worker = worker
        self.table = table
        self.serviceIndex = service
        self.chosenHandler = handler
        self.client = client
        self.peer = peer
        self.id = id
    }

    var log: ProxyLog { worker.log }

    /// `CLIENT on LOCAL`, the prefix of every line about this connection.
    var who: String {
        // Once the relay owns (and may have closed) the client socket, the local address is
        // known only if it was read before; a quiet log level skips that system call.
        guard client >= 0 || cachedLocal != nil else { return "connection \(id) from \(Self.text(peer))" }
        return "connection \(id) from \(Self.text(peer)) on \(Self.text(local))"
    }

    /// Logs one step of the debug trace, when this connection is traced.
    @inline(__always)
    func trace(_ step: @autoclosure () -> String) {
        guard tracing else { return }
        log.notice("\(who): trace: \(step())")
    }

    static func text(_ e: Endpoint) -> String {
        let a = e.address.unmapped
        return a.family == .v6 ? "[\(a)]:\(e.port)" : "\(a):\(e.port)"
    }

    func start() {
        let service = table.configuration.services[serviceIndex]
        if chosenHandler == nil {
            do { cachedLocal = try Socket.localEndpoint(client) } catch {
                log.warning("connection \(id) from \(Self.text(peer)): unable to get local address: \(error)")
                return finish()
            }
        }
        guard
            let index = chosenHandler ?? service.handlers.firstIndex(where: { $0.interface == local.address.unmapped })
                ?? service.handlers.firstIndex(where: { $0.interface == nil })
        else {
            log.notice("\(who): no service for this address, closed")
            return finish()
        }
        handlerIndex = index
        handler = service.handlers[index]
        tracing = handler.debug
        trace("handler \(handlerName(service)): \(handler.target.summary(listeningPort: service.port))")
        if let rules = handler.rules, !checkRules(rules) { return finish() }
        if handler.runsProgram, let names = table.clientNames {
            lookUpClientName(names)
        } else {
            checkAccess()
        }
    }

    /// After the rules and the name lookup: the access control program, if any, then serving.
    func checkAccess() {
        if let acp = handler.accessControlProgram {
            runAccessControl(acp)
        } else {
            serve()
        }
    }

    /// `port 8080 interface 127.0.0.2 (/etc/tcpproxy.conf line 7)`, for the trace.
    func handlerName(_ service: ProxyService) -> String {
        let path = table.configuration.path
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

    // MARK: - Access control

    /// Applies a tcprules database as tcpserver -x does (by address; tcpproxy does no DNS or
    /// ident lookups for rules). Returns false when the connection is denied or the rules
    /// cannot be read (then it is refused, as tcpserver drops it).
    func checkRules(_ path: String) -> Bool {
        let ip = Array(peer.address.unmapped.description.utf8)
        do {
            let file = try CDBFile(path: path)
            guard let rule = try RuleLookup.find(RuleClient(ip: ip), in: file.reader) else {
                trace("rules \(path): no rule matches, allowed")
                return true
            }
            let decision = rule.decision
            if decision.deny {
                log.notice("\(who): denied by rule \"\(rule.key.text)\" of \(path)")
                return false
            }
            ruleEnvironment = decision.environment
            trace("rules \(path): allowed by rule \"\(rule.key.text)\"\(Self.setting(ruleEnvironment))")
            return true
        } catch let error as CDBOpenError {
            if error.errno == ENOENT {
                trace("rules \(path) does not exist, allowed")
                return true
            }
            log.error("\(who): unable to read \(path): \(SystemError.message(error.errno)), closed")
        } catch let error as CDBReadError {
            let e = error == .empty ? EINVAL : EPROTO
            log.error("\(who): unable to read \(path): \(SystemError.message(e)), closed")
        } catch {
            log.error("\(who): unable to read \(path): \(error), closed")
        }
        return false
    }

    /// The PROXY_ variables (with the handler's prefix) and the rule's variables.
    func programEnvironment() -> [[UInt8]] {
        var env = ChildEnvironment(base: worker.clearEnvironment ? [] : worker.inherited)
        let prefix = handler.variablePrefix
        let client = peer.address.unmapped.description
        env.set(prefix + "PORT", String(local.port))
        env.set(prefix + "INTERFACE", local.address.unmapped.description)
        env.set(prefix + "CLIENT", client)
        env.set(prefix + "CLIENTNAME", clientName ?? client)
        for variable in ruleEnvironment { env.set(variable.name, variable.value) }
        return env.bytes
    }

    func runAccessControl(_ argv: [String]) {
        do {
            acp = try ChildProgram(
                loop: worker.loop, argv: argv, environment: programEnvironment(), stdin: -1, stdout: client,
                onErrorLine: { [log, who] line in log.notice("\(who): \(argv[0]): \(line)") },
                onExit: { [weak self] pid, status in self?.accessControlDone(pid, status) })
            trace("access control program started (pid \(acp!.pid)): \(argv.joined(separator: " "))")
        } catch {
            log.error("\(who): unable to run access control program \(argv[0]): \(error), closed")
            finish()
        }
    }

    func accessControlDone(_ pid: Int32, _ status: Int32) {
        trace("access control program \(pid) ended: \(WaitStatus.describe(status))")
        acp = nil
        guard WaitStatus.exited(status) == 0 else {
            log.notice("\(who): denied by access control program (\(WaitStatus.describe(status)))")
            return finish()
        }
        serve()
    }

    // MARK: - Serving

    func serve() {
        switch handler.target {
        case .exec(let argv):
            runHandler(argv)
        case .forward:
            guard let target = table.targets[serviceIndex][handlerIndex] else { return finish() }
            connect(target)
        }
    }

    func runHandler(_ argv: [String]) {
        serverDescription = argv.joined(separator: " ")
        do {
            let worker = self.worker
            let child = try ChildProgram(
                loop: worker.loop, argv: argv, environment: programEnvironment(), stdin: client, stdout: client,
                onErrorLine: nil,
                onExit: { [log, who, started, weak worker] pid, status in
                    log.notice(
                        "\(who) to \(argv[0]) ended: \(WaitStatus.describe(status)), \(Self.seconds(since: started))")
                    worker?.release(pid)
                })
            worker.adopt(child)
            log.notice("\(who) to \(serverDescription)")
            trace("handler program started (pid \(child.pid)); it serves the connection from now on")
        } catch {
            log.error("\(who): unable to run \(argv[0]): \(error), closed")
        }
        finish()
    }

    /// Connects to the server and relays: one `RelayConnection` does both, writing what the
    /// client sent (after the PROXY header, if any) as soon as the connection takes it.
    func connect(_ target: ResolvedTarget) {
        let port = target.port ?? local.port
        let destination = Endpoint(address: target.address, port: port)
        serverDescription = Self.text(destination)
        var source = target.source
        if let range = target.rotate {
            source = table.nextRotatedSource(service: serviceIndex, handler: handlerIndex, range: range)
        }
        var configuration = RelayConfiguration()
        configuration.bufferSize = table.relayBufferSize
        configuration.idleTimeout = .seconds(handler.timeout)
        configuration.assumeNonBlocking = true  // accept4(SOCK_NONBLOCK), the relay's own socket, inetd's fd set so
        // TCP_NODELAY: the client socket inherited it from the listener (inetd's socket is set in
        // serveInetd); the server socket gets it before connecting.
        configuration.noDelay = false
        let preamble = handler.proxyProtocol?.header(client: peer, server: local) ?? []
        if log.maximumLevel >= .notice { _ = local }  // the end-of-connection line needs it
        trace("connecting to \(serverDescription) from \(Self.sourceText(source, rotated: target.rotate != nil))")
        do {
            let relay = try RelayConnection.connecting(
                loop: worker.loop, client: client, to: destination, from: source, serverNoDelay: true,
                preamble: preamble, configuration: configuration, delegate: self,
                recorder: handler.writefile == nil ? nil : self)
            client = -1  // the relay owns it now
            self.relay = relay
            relay.start()
        } catch {
            if Self.isShortage(error) && descriptorWaits < Self.descriptorWaitLimit {
                // Out of descriptors: wait (the worker pauses accepting meanwhile) and try again.
                descriptorWaits += 1
                return worker.waitForDescriptors(self, error: error)
            }
            log.error("\(who): unable to connect to \(serverDescription): \(error), closed")
            finish()
        }
    }

    /// Pauses of 100 ms a connection waits for a descriptor before it is given up (10 s).
    static let descriptorWaitLimit = 100
    var descriptorWaits = 0

    static func isShortage(_ error: SystemError) -> Bool {
        [EMFILE, ENFILE, ENOBUFS, ENOMEM].contains(error.errno)
    }

    func relayDidConnect(_ relay: RelayConnection) {
        if tracing {
            // The remote end is where it connected; getpeername would fail on a socket that
            // has already closed both ways (the server may be that quick).
            let local = (try? Socket.localEndpoint(relay.serverDescriptor)).map(Self.text) ?? "unknown"
            trace("connected to the server: local \(local), remote \(serverDescription)")
            if let version = handler.proxyProtocol {
                // The relay sends it ahead of the client's bytes, as soon as the socket takes it.
                let header = version.header(client: peer, server: self.local)
                trace("PROXY header queued for the server: \(Self.describeHeader(header, version))")
            }
        }
        if let basename = handler.writefile {
            do {
                recorder = try ConnectionRecorder(
                    basename: basename, pid: worker.daemonPID, connection: id, client: peer, server: serverDescription)
                trace("recording to \(recorder!.path)")
            } catch {
                let path = RecordingFormat.fileName(basename: basename, pid: worker.daemonPID)
                trace("unable to open the recording file \(path): \(error); not recording")
            }
        }
        log.notice("\(who) to \(serverDescription)")
    }

    func relay(_ relay: RelayConnection, read bytes: UnsafeRawBufferPointer, direction: RelayDirection) {
        recorder?.record(direction: direction == .clientToServer ? .clientToServer : .serverToClient, bytes: bytes)
    }

    func relay(_ relay: RelayConnection, finished direction: RelayDirection, bytes: UInt64) {
        switch direction {
        case .clientToServer: trace("client finished sending (\(bytes) bytes to the server); passed on to the server")
        case .serverToClient: trace("server finished sending (\(bytes) bytes to the client); passed on to the client")
        }
    }

    func relayDidEnd(_ relay: RelayConnection, summary: RelaySummary) {
        self.relay = nil
        if case .connectFailed(let error) = summary.end {
            log.error("\(who): unable to connect to \(serverDescription): \(error), closed")
            return finish()
        }
        if summary.end == .idleTimeout { trace("idle timeout: nothing moved for \(handler.timeout) s") }
        let seconds = Self.seconds(since: started)
        recorder?.finish(
            clientToServer: summary.bytesClientToServer, serverToClient: summary.bytesServerToClient,
            seconds: Double(Deadline.now.nanoseconds &- started.nanoseconds) / 1e9)
        log.notice(
            "\(who) to \(serverDescription) closed: \(summary.bytesClientToServer) bytes from client, "
                + "\(summary.bytesServerToClient) bytes to client, \(seconds) (\(Self.describe(summary.end)))")
        finish()
    }

    /// One line for SIGUSR2.
    var statusLine: String {
        let up = relay?.bytesClientToServer ?? 0
        let down = relay?.bytesServerToClient ?? 0
        return "\(who) to \(serverDescription): \(up) bytes from client, \(down) bytes to client, "
            + "open \(Self.seconds(since: started))"
    }

    static func describe(_ end: RelayEnd) -> String {
        switch end {
        case .completed: return "completed"
        case .idleTimeout: return "idle timeout"
        case .failed(let side, let error): return "\(side == .client ? "client" : "server"): \(error)"
        case .cancelled: return "cancelled"
        case .connectFailed(let error): return "connect failed: \(error)"
        }
    }

    static func seconds(since start: Deadline) -> String {
        let ms = (Deadline.now.nanoseconds &- start.nanoseconds) / 1_000_000
        return "\(ms / 1000).\(String(ms % 1000 + 1000).dropFirst()) s"
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

    /// Closes what this session still owns.
    func finish() {
        trace("end after \(Self.seconds(since: started))")
        nameQuery?.cancel()
        nameQuery = nil
        if client >= 0 {
            close(client)
            client = -1
        }
        worker.ended(self)
    }
}

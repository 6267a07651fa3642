#if canImport(Glibc)
import Glibc
#endif
import AccessRules
import GatewayKit
import Loop
import Relay
import TLS

/// Records the chunks a session's relay moves (tcpproxy's `writefile`): made by the daemon
/// when the machine asks (``RelayPlan/recording``), fed on the loop's thread.
public protocol SessionRecorder: AnyObject {
    /// The file recorded to.
    var path: String { get }
    /// One chunk read from `direction`'s source, valid only during the call.
    func record(_ bytes: UnsafeRawBufferPointer, direction: RelayDirection)
    /// The relay has ended, `seconds` after the session began.
    func finish(_ summary: RelaySummary, seconds: Double)
}

/// The daemon's side of its sessions on one loop: the log, the programs that outlive a
/// session, recordings, and the pause when descriptors run out. Called on the loop's thread.
public protocol SessionHost: AnyObject {
    /// The loop the sessions run on.
    var loop: EventLoop { get }
    /// Writes a line to the daemon's log.
    func log(_ level: LogLevel, _ line: String)
    /// Keeps a program that has taken over a connection until it exits.
    func adopt(_ program: ChildProgram)
    /// An adopted program has exited.
    func release(_ pid: Int32)
    /// Opens the recording the machine asked for: the recorder, or the file's path and why
    /// it cannot be opened.
    func recorder(for request: RecordingRequest, session: SessionDriver) -> Result<
        any SessionRecorder, RecordingFailure
    >
    /// `session` found no descriptor: call ``SessionDriver/descriptorPauseOver()`` after a pause.
    func waitForDescriptors(_ session: SessionDriver, error: SystemError)
    /// The session is over; forget it.
    func sessionEnded(_ session: SessionDriver)
    /// Whether `password` is `user`'s (``SessionAction/checkPassword(user:password:)``):
    /// checked off the loop (a crypt(3) check takes milliseconds on purpose, so the daemon
    /// runs it as `BlockingWork`), `answer` called once, on the loop's thread, at any time
    /// (at once too: the driver queues it). The driver drops an answer that comes after the
    /// session's close. By default every password is wrong.
    func checkPassword(
        user: [UInt8], password: [UInt8], session: SessionDriver, answer: @escaping (Bool) -> Void)
    /// The port ``SessionAction/askIdent(timeout:)`` asks on the client's host: 113 (tests
    /// choose their own).
    var identPort: UInt16 { get }
}

extension SessionHost {
    /// No password is right when the daemon checks none.
    public func checkPassword(
        user: [UInt8], password: [UInt8], session: SessionDriver, answer: @escaping (Bool) -> Void
    ) {
        answer(false)
    }

    /// RFC 1413's port.
    public var identPort: UInt16 { IdentClient.defaultPort }
}

/// A recording file that could not be opened.
public struct RecordingFailure: Error, Sendable {
    public var path: String
    public var error: SystemError
    public init(path: String, error: SystemError) {
        self.path = path
        self.error = error
    }
}

/// Runs one ``SessionMachine`` on an event loop: feeds it events one at a time, in order, and
/// carries out its actions with the loop's tools (rules, name queries, programs, the relay,
/// timers). It owns the client socket until the machine hands it to a relay or a program,
/// and closes whatever is still open when the machine says ``SessionAction/close``.
///
/// An event that arises while the machine's actions are being carried out (an answer known
/// at once, a relay that fails as it starts) is queued and fed after them, never nested.
public final class SessionDriver: SessionContext, RelayDelegate, RelayRecorder, ConnectorDelegate {
    /// The connection's number in the daemon's log.
    public let id: UInt64
    /// The client's address.
    public let peer: Endpoint
    /// When the session began (the recording's duration counts from here).
    public let started = Deadline.now

    private unowned let host: any SessionHost
    private var machine: any SessionMachine
    private let names: ClientNameSource?
    /// The client socket while it is the driver's; -1 once a relay or a program has it.
    private var client: Int32
    private var cachedLocal: Endpoint?
    /// The relay, while it runs.
    public private(set) var relay: RelayConnection?
    /// What the relay's reports need of its plan: whether it is traced, and the recording.
    private var traced = false
    private var recording: RecordingRequest?
    private var program: ChildProgram?
    private var nameQuery: DNSQuery?
    /// The queries of ``SessionAction/resolve(_:)`` still running.
    private var resolutions: [AddressQuery] = []
    /// A connect to a host name waiting for its addresses, by the peer's raw value.
    private var hostQueries: [AddressQuery?] = []
    private var identQuery: IdentQuery?
    /// A handshake under way (``SessionAction/startTLS(_:_:timeout:)``), and the client's TLS
    /// once established, which the relay reads and writes through.
    private var handshakes: [TLSHandshake?] = []
    private var clientTLS: TLSConnection?
    /// Streams waiting for their queue to drain before their handshake, by peer.
    private var pendingTLS: [Peer: (role: TLSRole, timeout: Duration)] = [:]
    /// The server's TLS inside the relay, whose failure is told before the relay's end.
    private var serverTLS: TLSConnection?
    /// ``SessionAction/relayStreams(_:toServer:)`` waits for the streams' queues to drain.
    private var pendingStreamRelay: (configuration: RelayConfiguration, toServer: [UInt8])?
    private var timer: LoopTimer?
    private var recorder: (any SessionRecorder)?
    private var queue: [SessionEvent] = []
    private var dispatching = false
    private var closed = false

    // Streams (``Peer``), by the peer's raw value; made at their first use.
    private var streams: [SessionStream?] = []
    /// The UDP sockets (``DatagramID``), by number; empty until the first is opened.
    private var datagramSockets: [SessionDatagramSocket?] = []
    private var connectors: [Connector?] = []
    /// Peers with more than their high-water mark queued: no other stream is read meanwhile.
    private var blocked: UInt8 = 0
    /// After ``SessionAction/close``: the client's last bytes are still being written.
    private var lingering = false
    /// The spool file (unlinked), and what of it is being sent where.
    private var spool: Int32 = -1
    /// What the spool is read into on its way out (kept while the spool is).
    private var spoolBuffer: [UInt8] = []
    private static let spoolChunk = 256 * 1024
    private var spoolPump: (peer: Peer, offset: Int, end: Int)?

    /// The relay's buffer per direction when a side is TLS (at least): four full records.
    public static let tlsBufferSize = 64 * 1024
    /// How long ``SessionAction/close`` waits for the client to take what is queued for it.
    public static let lingerLimit = Duration.seconds(10)
    /// The waits of the rounds of a name's DNS queries (``SessionAction/resolve(_:)``, a
    /// connect to a host name): djb's first three steps, 1, 3 and 11 s per server.
    public static let resolveTimeouts: [Duration] = [.seconds(1), .seconds(3), .seconds(11)]
    /// The longest a name's DNS queries take (a connect's timeout bounds it too).
    public static let resolveLimit = Duration.seconds(15)
    /// Read buffer and write queue of each peer's stream. The server's and the scanner's
    /// buffers are large, for bulk answers; the client's small, for command lines.
    public static func streamConfiguration(for peer: Peer) -> BufferedSocket.Configuration {
        var configuration = BufferedSocket.Configuration()
        switch peer {
        case .client, .program:
            configuration.readCapacity = 8 * 1024
            configuration.highWaterMark = 256 * 1024
        case .server, .scanner:
            configuration.readCapacity = 64 * 1024
            configuration.highWaterMark = 256 * 1024
        }
        return configuration
    }

    /// A session for the accepted socket `client` (non-blocking) from `peer`, run by `machine`.
    /// `names` is where ``SessionAction/lookUpName(_:)`` looks. Nothing happens before `start`.
    public init(
        host: any SessionHost, machine: any SessionMachine, client: Int32, peer: Endpoint, id: UInt64,
        names: ClientNameSource?, local: Endpoint? = nil
    ) {
        self.host = host
        self.machine = machine
        self.client = client
        self.peer = peer
        self.id = id
        self.names = names
        self.cachedLocal = local
    }

    /// Feeds ``SessionEvent/started``.
    public func start() { feed(.started) }

    /// The pause of ``SessionAction/waitForDescriptors(_:)`` is over.
    public func descriptorPauseOver() { feed(.timerFired) }

    /// The machine's status line (SIGUSR2), while the session relays.
    public var statusLine: String? {
        guard let relay else { return nil }
        return machine.statusLine(
            bytesFromClient: relay.bytesClientToServer, bytesToClient: relay.bytesServerToClient, now: host.loop.now)
    }

    // MARK: - SessionContext

    public var now: Deadline { host.loop.now }

    /// The loop the session runs on (for a host's work on its behalf: a password check).
    public var loop: EventLoop { host.loop }

    public func localEndpoint() throws(SystemError) -> Endpoint {
        if let cachedLocal { return cachedLocal }
        var fd = client >= 0 ? client : stream(.client)?.socket.descriptor ?? -1
        if fd < 0, let relay, relay.isRunning { fd = relay.clientDescriptor }
        guard fd >= 0 else { throw SystemError(errno: EBADF) }
        let found = try Socket.localEndpoint(fd)
        cachedLocal = found
        return found
    }

    public func endpoint(of peer: Peer, local: Bool) throws(SystemError) -> Endpoint {
        if peer == .client {
            // The accepted peer is known; the local end is read once.
            return local ? try localEndpoint() : self.peer
        }
        var fd = stream(peer)?.socket.descriptor ?? -1
        if fd < 0, peer == .server, let relay, relay.isRunning { fd = relay.serverDescriptor }
        guard fd >= 0 else { throw SystemError(errno: ENOTCONN) }
        return local ? try Socket.localEndpoint(fd) : try Socket.remoteEndpoint(fd)
    }

    // MARK: - Events and actions

    private func feed(_ event: SessionEvent) {
        guard !dispatching else { return queue.append(event) }
        dispatching = true
        // The actions go into the loop's scratch array (no allocation per event, nothing held
        // by an idle session); a driver fed while another one dispatches uses its own.
        let scratch = host.loop.resource(SessionScratch.self)
        let borrowed = !scratch.inUse
        scratch.inUse = true
        var actions = borrowed ? scratch.take() : []
        var next: SessionEvent? = event
        while let current = next, !closed {
            actions.removeAll(keepingCapacity: true)
            machine.handle(current, context: self, into: &actions)
            for action in actions where !closed { perform(action) }
            next = queue.isEmpty ? nil : queue.removeFirst()
        }
        if borrowed {
            actions.removeAll(keepingCapacity: true)
            scratch.give(actions)
            scratch.inUse = false
        }
        if !queue.isEmpty { queue = [] }
        dispatching = false
    }

    private func perform(_ action: SessionAction) {
        switch action {
        case .log(let level, let line):
            host.log(level, line)
        case .checkRules(let path, let client):
            feed(.rulesChecked(RulesCheck.check(client, in: path)))
        case .lookUpName(let address):
            lookUpName(address)
        case .run(let program, let stdout):
            run(program, stdout: stdout)
        case .handOver(let program, let endLine):
            handOver(program, endLine: endLine)
        case .relay(let plan):
            startRelay(plan)
        case .waitForDescriptors(let error):
            host.waitForDescriptors(self, error: error)
        case .setTimer(let duration):
            let timer = self.timer ?? LoopTimer(loop: host.loop) { [unowned self] in self.feed(.timerFired) }
            self.timer = timer
            timer.cancel()
            timer.setUnlessArmed(after: duration)
        case .close:
            close()
        case .read(let peer):
            setReading(peer, true)
        case .pause(let peer):
            setReading(peer, false)
        case .send(let peer, let bytes):
            send(bytes, to: peer)
        case .shutdownWrite(let peer):
            stream(peer)?.socket.shutdownWrite()
        case .closeStream(let peer):
            closeStream(peer)
        case .connect(let peer, let destination, let timeout):
            connect(peer, to: destination, timeout: timeout)
        case .runCapturing(let program):
            runCapturing(program)
        case .spoolBegin:
            spoolBegin()
        case .spoolWrite(let bytes):
            guard spool >= 0 else { return }
            let failure: SystemError? = bytes.withUnsafeBytes { raw in
                do throws(SystemError) {
                    try FD.writeAll(spool, raw)
                    return nil
                } catch { return error }
            }
            if let failure {
                spoolEnd()
                feed(.spoolFailed(failure))
            }
        case .sendSpool(let peer, let offset, let count):
            spoolPump = (peer, offset, offset + count)
            pumpSpool()
        case .spoolEnd:
            spoolEnd()
        case .killProgram:
            if let program { kill(program.pid, SIGKILL) }
        case .replaceFile(let path, let contents):
            do {
                try FD.replaceFile(path, contents: contents)
                feed(.fileReplaced(path: path, error: nil))
            } catch {
                feed(.fileReplaced(path: path, error: error))
            }
        case .resolve(let name):
            resolve(name)
        case .askIdent(let timeout):
            askIdent(timeout: timeout)
        case .checkPassword(let user, let password):
            host.checkPassword(user: user, password: password, session: self) { [weak self] right in
                guard let self, !self.closed else { return }
                self.feed(.passwordChecked(right))
            }
        case .relayStreams(let configuration, let toServer):
            relayStreams(configuration, toServer: toServer)
        case .runDetached(let program):
            runDetached(program)
        case .listen(let peer, let address):
            listen(peer, on: address)
        case .openDatagram(let id, let local):
            openDatagram(id, on: local)
        case .sendDatagram(let id, let destination, let prefix, let payload):
            datagramSockets[Int(id.rawValue)]?.send(to: destination, prefix: prefix, payload: payload)
        case .closeDatagram(let id):
            closeDatagram(id)
        case .startTLS(let peer, let role, let timeout):
            startTLS(peer, role, timeout: timeout)
        }
    }

    // MARK: - TLS

    private func startTLS(_ peer: Peer, _ role: TLSRole, timeout: Duration) {
        if peer == .client, client >= 0, stream(.client) == nil {
            // The client's socket before it is a stream: the relay of a later `relay` takes
            // the connection (tcpproxy).
            guard clientTLS == nil else {
                return feed(.tlsFailed(peer, TLSError("TLS has already started on the client's socket")))
            }
            return shakeHands(peer, role, fd: client, timeout: timeout) { [unowned self] connection in
                self.clientTLS = connection
            }
        }
        // A stream (pop3.proxy's STLS, POP3S toward the server): once what is queued for it is
        // out (the +OK that STLS answers, say), its socket leaves the loop for the handshake and
        // comes back as a stream reading through TLS.
        guard let target = stream(peer), target.socket.transport == nil, pendingTLS[peer] == nil else {
            return feed(.tlsFailed(peer, TLSError("no stream of the \(peer) to start TLS on, or TLS already")))
        }
        target.wantsReading = false
        target.socket.pauseReading()
        pendingTLS[peer] = (role, timeout)
        startStreamTLSIfDrained(peer)
    }

    /// The stream's handshake, once nothing is queued for it.
    private func startStreamTLSIfDrained(_ peer: Peer) {
        guard let (role, timeout) = pendingTLS[peer], let target = stream(peer), target.socket.queuedBytes == 0 else {
            return
        }
        pendingTLS[peer] = nil
        streams[Int(peer.rawValue)] = nil
        let released = target.socket.release()
        guard released.leftover.isEmpty else {
            // RFC 2595: nothing may follow STLS before the handshake (an injection otherwise).
            Glibc.close(released.descriptor)
            return feed(.tlsFailed(peer, TLSError("the \(peer) sent bytes in the clear after asking for TLS")))
        }
        shakeHands(peer, role, fd: released.descriptor, timeout: timeout) { [unowned self] connection in
            self.adopt(released.descriptor, as: peer, reading: false, transport: connection)
        }
    }

    /// The handshake of `peer` on `fd`; `established` takes the connection before the machine
    /// hears of it. On a failure a stream's socket is closed, the client's raw socket kept.
    private func shakeHands(
        _ peer: Peer, _ role: TLSRole, fd: Int32, timeout: Duration, established: @escaping (TLSConnection) -> Void
    ) {
        let connection: TLSConnection
        do throws(TLSError) {
            switch role {
            case .accept(let context): connection = try context.connection(on: fd)
            case .connect(let context, let host): connection = try context.connection(on: fd, host: host)
            }
        } catch {
            if fd != client { Glibc.close(fd) }
            return feed(.tlsFailed(peer, error))
        }
        let index = Int(peer.rawValue)
        while handshakes.count <= index { handshakes.append(nil) }
        let made = TLSHandshake(loop: host.loop, connection: connection) { [unowned self] result in
            self.handshakes[index] = nil
            switch result {
            case .success(let facts):
                established(connection)
                self.feed(.tlsEstablished(peer, facts))
            case .failure(let error):
                connection.close()
                if fd != self.client { Glibc.close(fd) }
                self.feed(.tlsFailed(peer, error))
            }
        }
        handshakes[index] = made
        made.start(timeout: timeout)
    }

    // MARK: - Datagrams

    private func openDatagram(_ id: DatagramID, on local: Endpoint) {
        closeDatagram(id)
        if datagramSockets.isEmpty { datagramSockets = Array(repeating: nil, count: DatagramID.limit) }
        do {
            let socket = try SessionDatagramSocket(id: id, local: local, loop: host.loop, driver: self)
            datagramSockets[Int(id.rawValue)] = socket
            guard let bound = socket.localEndpoint else {
                closeDatagram(id)
                return feed(.datagramFailed(id, SystemError.current))
            }
            feed(.datagramOpened(id, bound))
        } catch {
            feed(.datagramFailed(id, error))
        }
    }

    private func closeDatagram(_ id: DatagramID) {
        let index = Int(id.rawValue)
        guard index < datagramSockets.count, let socket = datagramSockets[index] else { return }
        datagramSockets[index] = nil
        socket.close()
    }

    func datagramSocket(_ id: DatagramID, received bytes: ArraySlice<UInt8>, from: Endpoint) {
        feed(.datagram(id, from: from, bytes))
    }

    func datagramSocket(_ id: DatagramID, failed error: SystemError) {
        closeDatagram(id)
        feed(.datagramFailed(id, error))
    }

    private func lookUpName(_ address: IPAddress) {
        guard let names else { return feed(.nameFound(.dns(nil))) }
        if let name = names.hosts[address] { return feed(.nameFound(.hosts(name))) }
        nameQuery = DNSQuery.start(
            loop: host.loop, question: ClientNameSource.question(for: address), servers: names.servers,
            timeouts: ClientNameSource.timeouts, limit: ClientNameSource.limit
        ) { [weak self] result in
            guard let self else { return }
            self.nameQuery = nil
            switch result {
            case .success(let response): self.feed(.nameFound(.dns(ClientNameSource.name(in: response))))
            case .failure(let error): self.feed(.nameFound(.failed(error)))
            }
        }
    }

    private func run(_ program: SessionProgram, stdout: Bool) {
        // A program gets the client socket blocking, as every program expects its standard
        // descriptors (a non-blocking one makes a write fail with EAGAIN); the flag is the open
        // file's, shared with us, so the socket is made non-blocking again once it has exited.
        let client = stdout ? self.client : -1
        if client >= 0 { Socket.setNonBlocking(client, false) }
        do {
            let child = try ChildProgram(
                loop: host.loop, argv: program.argv, environment: program.environment, stdin: -1, stdout: client,
                onErrorLine: { [weak self] line in self?.feed(.programSaid(line)) },
                onExit: { [weak self] pid, status in
                    guard let self else { return }
                    self.program = nil
                    if client >= 0 && self.client == client { Socket.setNonBlocking(client, true) }
                    self.feed(.programExited(pid: pid, status: status))
                })
            self.program = child
            feed(.programStarted(pid: child.pid))
        } catch {
            if client >= 0 { Socket.setNonBlocking(client, true) }
            feed(.programFailed(error))
        }
    }

    private func handOver(_ program: SessionProgram, endLine: String) {
        // The program's standard input and output block, as programs expect (a handler such as
        // cat that reads before the client has sent fails with EAGAIN otherwise).
        Socket.setNonBlocking(client, false)
        do {
            let host = self.host
            let started = self.started
            let child = try ChildProgram(
                loop: host.loop, argv: program.argv, environment: program.environment, stdin: client, stdout: client,
                onErrorLine: nil,
                onExit: { [weak host] pid, status in
                    host?.log(.notice, "\(endLine): \(WaitStatus.describe(status)), \(Self.seconds(since: started))")
                    host?.release(pid)
                })
            host.adopt(child)
            feed(.handedOver(pid: child.pid))
        } catch {
            Socket.setNonBlocking(client, true)
            feed(.handOverFailed(error))
        }
    }

    private func startRelay(_ plan: RelayPlan) {
        var transports: RelayTransports?
        var origin: TLSConnection?
        if let tls = plan.serverTLS {
            do throws(TLSError) {
                origin = try tls.context.connection(host: tls.host)
            } catch {
                return feed(.tlsFailed(.server, error))
            }
            // The PROXY header goes ahead of the handshake, in the clear, as HAProxy sends it.
            origin?.sendFirstInTheClear(plan.preamble)
            origin?.established = { [unowned self] connection in
                self.feed(.tlsEstablished(.server, connection.facts))
            }
        }
        var configuration = plan.configuration
        if clientTLS != nil || origin != nil {
            transports = RelayTransports(client: clientTLS, server: origin)
            // A TLS record holds up to 16 KiB: smaller reads cut records and multiply them.
            configuration.bufferSize = max(configuration.bufferSize, Self.tlsBufferSize)
        }
        do {
            let relay = try RelayConnection.connecting(
                loop: host.loop, client: client, to: plan.destination, from: plan.source, serverNoDelay: true,
                preamble: origin == nil ? plan.preamble : [], configuration: configuration, delegate: self,
                recorder: plan.recording == nil ? nil : self, transports: transports)
            origin?.attach(relay.serverDescriptor)
            serverTLS = origin
            clientTLS = nil  // the relay's now, with the socket
            client = -1  // the relay's now
            traced = plan.traced
            recording = plan.recording
            self.relay = relay
            relay.start()
        } catch {
            feed(.relayFailed(error))
        }
    }

    private func close() {
        closed = true
        for case let handshake? in handshakes {
            handshake.cancel()
            let fd = handshake.connection.fd
            handshake.connection.close()
            if fd != client { Glibc.close(fd) }  // a stream's socket, out of the loop meanwhile
        }
        handshakes = []
        pendingTLS = [:]
        clientTLS?.close()
        clientTLS = nil
        nameQuery?.cancel()
        nameQuery = nil
        for query in resolutions { query.cancel() }
        resolutions = []
        for case let query? in hostQueries { query.cancel() }
        hostQueries = []
        identQuery?.cancel()
        identQuery = nil
        pendingStreamRelay = nil
        relay?.cancel()  // a relay of the streams (its end is not told: the session is over)
        timer?.invalidate()  // else the loop keeps it registered until the loop closes
        timer = nil
        if client >= 0 {
            Glibc.close(client)
            client = -1
        }
        for case let connector? in connectors { connector.cancel() }
        connectors = []
        for peer in Array(listeners.keys) { closeListener(peer) }
        for case let socket? in datagramSockets { socket.close() }
        datagramSockets = []
        for peer in Peer.allCases where peer != .client { closeStream(peer) }
        spoolEnd()
        if let clientStream = stream(.client), clientStream.socket.queuedBytes > 0 {
            // The last answer still waits for the client: write it out (bounded), then close.
            lingering = true
            clientStream.socket.pauseReading()
            clientStream.socket.shutdownWrite()
            let linger = LoopTimer(loop: host.loop) { [unowned self] in self.lingerOver() }
            timer = linger
            linger.setUnlessArmed(after: Self.lingerLimit)
            return
        }
        closeStream(.client)
        host.sessionEnded(self)
    }

    private func lingerOver() {
        guard lingering else { return }
        lingering = false
        timer?.invalidate()
        timer = nil
        closeStream(.client)
        host.sessionEnded(self)
    }

    // MARK: - Streams

    private func stream(_ peer: Peer) -> SessionStream? {
        let index = Int(peer.rawValue)
        return index < streams.count ? streams[index] : nil
    }

    /// The stream of `peer`, the client's made from its socket at the first use (reading
    /// through its TLS when a handshake came first: pop3.proxy's `--pop3s`).
    private func streamMakingClient(_ peer: Peer) -> SessionStream? {
        if let existing = stream(peer) { return existing }
        guard peer == .client, client >= 0 else { return nil }
        let made = adopt(client, as: .client, reading: false, transport: clientTLS)
        client = -1
        clientTLS = nil
        return made
    }

    @discardableResult
    private func adopt(
        _ fd: Int32, as peer: Peer, reading: Bool, transport: (any StreamTransport)? = nil
    ) -> SessionStream? {
        let made = SessionStream(peer: peer, driver: self)
        let socket = BufferedSocket(
            loop: host.loop, descriptor: fd, framing: .bytes, configuration: Self.streamConfiguration(for: peer),
            delegate: made)
        socket.transport = transport
        made.socket = socket
        made.wantsReading = reading
        do {
            try socket.start()
        } catch {
            socket.close()
            feed(.streamFailed(peer, error))
            return nil
        }
        let index = Int(peer.rawValue)
        while streams.count <= index { streams.append(nil) }
        streams[index] = made
        applyReading(made)
        return made
    }

    private func closeStream(_ peer: Peer) {
        closeListener(peer)
        let index = Int(peer.rawValue)
        if index < connectors.count, let connector = connectors[index] {
            connector.cancel()
            connectors[index] = nil
        }
        if index < hostQueries.count, let query = hostQueries[index] {
            query.cancel()
            hostQueries[index] = nil
        }
        if peer == .client || peer == .server { pendingStreamRelay = nil }
        guard let existing = stream(peer) else { return }
        streams[index] = nil
        existing.socket.close()
        if blocked & (1 << peer.rawValue) != 0 {
            blocked &= ~(1 << peer.rawValue)
            applyReadingToAll()
        }
    }

    private func setReading(_ peer: Peer, _ on: Bool) {
        guard let target = streamMakingClient(peer) else { return }
        target.wantsReading = on
        applyReading(target)
    }

    /// A stream is read when its machine wants it and no other peer is blocked.
    private func applyReading(_ target: SessionStream) {
        let others = blocked & ~(1 << target.peer.rawValue)
        if target.wantsReading && others == 0 {
            target.socket.resumeReading()
        } else {
            target.socket.pauseReading()
        }
    }

    private func applyReadingToAll() {
        for case let each? in streams { applyReading(each) }
    }

    private func send(_ bytes: ArraySlice<UInt8>, to peer: Peer) {
        guard let target = streamMakingClient(peer) else { return }
        target.socket.write(bytes)
        if target.socket.isAboveHighWaterMark && blocked & (1 << peer.rawValue) == 0 {
            blocked |= 1 << peer.rawValue
            applyReadingToAll()
        }
    }

    private func connect(_ peer: Peer, to destination: StreamDestination, timeout: Duration) {
        closeStream(peer)
        switch destination {
        case .unix(let path):
            do {
                let fd = try Socket.connectUnix(path, type: Int32(SOCK_STREAM.rawValue), nonBlocking: true)
                if adopt(fd, as: peer, reading: true) != nil { feed(.streamConnected(peer)) }
            } catch {
                feed(.connectFailed(peer, error))
            }
        case .host(let name, let port, let source):
            // A literal or the hosts file answers at once; a DNS name is asked on the loop, and
            // the connect goes on when the addresses come (a source address picks the family).
            let family: DNSResolver.Family = source.map { $0.unmapped.family == .v4 ? .ipv4 : .ipv6 } ?? .any
            let limit = timeout > .zero ? min(timeout, Self.resolveLimit) : Self.resolveLimit
            let query = resolveHost(name, family: family, limit: limit) { [weak self] outcome in
                guard let self else { return }
                let index = Int(peer.rawValue)
                if index < self.hostQueries.count { self.hostQueries[index] = nil }
                switch outcome {
                case .found(let addresses):
                    self.connect(
                        peer, to: .tcp(Endpoint(address: addresses[0], port: port), from: source), timeout: timeout)
                case .failed(let reason):
                    self.feed(.hostUnknown(peer, reason: reason))
                }
            }
            if let query {
                let index = Int(peer.rawValue)
                while hostQueries.count <= index { hostQueries.append(nil) }
                hostQueries[index] = query
            }
        case .tcp(let endpoint, let source):
            do {
                let connector = try Connector.start(
                    loop: host.loop, to: endpoint, from: source, timeout: timeout, delegate: self)
                let index = Int(peer.rawValue)
                while connectors.count <= index { connectors.append(nil) }
                connectors[index] = connector
            } catch {
                feed(.connectFailed(peer, error))
            }
        }
    }

    private func peer(of connector: Connector) -> Peer? {
        guard let index = connectors.firstIndex(where: { $0 === connector }) else { return nil }
        connectors[index] = nil
        return Peer(rawValue: UInt8(index))
    }

    public func connector(_ connector: Connector, connected fd: Int32) {
        guard let peer = peer(of: connector), !closed else {
            Glibc.close(fd)
            return
        }
        Socket.setNoDelay(fd)
        if adopt(fd, as: peer, reading: true) != nil { feed(.streamConnected(peer)) }
    }

    public func connector(_ connector: Connector, failed error: SystemError) {
        guard let peer = peer(of: connector) else { return }
        feed(.connectFailed(peer, error))
    }

    private func runCapturing(_ program: SessionProgram) {
        closeStream(.program)
        var ends: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &ends) == 0 else {
            return feed(.programFailed(SystemError.current))
        }
        do {
            let child = try ChildProgram(
                loop: host.loop, argv: program.argv, environment: program.environment, stdin: -1, stdout: ends[1],
                onErrorLine: { [weak self] line in self?.feed(.programSaid(line)) },
                onExit: { [weak self] pid, status in
                    guard let self else { return }
                    self.program = nil
                    self.feed(.programExited(pid: pid, status: status))
                })
            Glibc.close(ends[1])
            self.program = child
            adopt(ends[0], as: .program, reading: true)
            feed(.programStarted(pid: child.pid))
        } catch {
            Glibc.close(ends[0])
            Glibc.close(ends[1])
            feed(.programFailed(error))
        }
    }

    // MARK: - Names, ident, detached programs

    /// What a name resolved to.
    private enum Resolution {
        case found([IPAddress])
        case failed(String)
    }

    /// Finds `name`'s addresses of `family`: what is known at once is answered before this
    /// returns (nil then), a DNS name by the query returned, later, on the loop.
    private func resolveHost(
        _ name: String, family: DNSResolver.Family, limit: Duration, then answer: @escaping (Resolution) -> Void
    ) -> AddressQuery? {
        let hostsText = names?.hostsText ?? UserDatabase.readFile("/etc/hosts") ?? []
        let wire: [UInt8]
        let servers: [DNSServer]
        do {
            if let known = try HostResolver.answerLocally(name, family: family, hostsText: hostsText) {
                answer(known.isEmpty ? .failed("no address") : .found(known))
                return nil
            }
            wire = try DNSWire.encodeName(name)
            servers = try names?.servers ?? DNSConfiguration.servers(environment: Environment.get)
        } catch {
            answer(.failed("\(error)"))
            return nil
        }
        return AddressQuery.start(
            loop: host.loop, name: wire, types: HostResolver.questionTypes(for: family), servers: servers,
            timeouts: Self.resolveTimeouts, limit: limit
        ) { found in
            switch found {
            case .addresses(let addresses) where !addresses.isEmpty: answer(.found(addresses))
            case .addresses: answer(.failed("no address"))
            case .noSuchName: answer(.failed("no such name"))
            case .failed(let error): answer(.failed("\(error)"))
            }
        }
    }

    private func resolve(_ name: String) {
        var made: AddressQuery?
        made = resolveHost(name, family: .any, limit: Self.resolveLimit) { [weak self] outcome in
            guard let self else { return }
            if let made { self.resolutions.removeAll { $0 === made } }
            switch outcome {
            case .found(let addresses): self.feed(.resolved(name: name, addresses: addresses))
            case .failed(let reason): self.feed(.resolveFailed(name: name, reason: reason))
            }
        }
        if let made { resolutions.append(made) }
    }

    private func askIdent(timeout: Duration) {
        identQuery?.cancel()
        identQuery = nil
        let local: Endpoint
        do {
            local = try localEndpoint()
        } catch {
            return feed(.identAnswered(.failure(.system(error))))
        }
        identQuery = IdentQuery.start(
            loop: host.loop, client: peer, local: local, timeout: timeout, port: host.identPort
        ) { [weak self] result in
            guard let self else { return }
            self.identQuery = nil
            self.feed(.identAnswered(result))
        }
    }

    /// One listener per peer, while it waits for its connection.
    private var listeners: [Peer: (fd: Int32, watch: DescriptorWatch)] = [:]

    private func listen(_ peer: Peer, on address: IPAddress) {
        closeStream(peer)
        let fd: Int32
        do {
            fd = try Socket.tcp(address.family)
        } catch {
            return feed(.listenFailed(peer, error))
        }
        do throws(SystemError) {
            try Socket.bind(fd, to: address, port: 0, reuseAddress: false)
            try Socket.listen(fd, backlog: 1)
            Socket.setNonBlocking(fd, true)
            let local = try Socket.localEndpoint(fd)
            let watch = try DescriptorWatch(loop: host.loop, fd: fd) { [unowned self] _ in self.accept(peer) }
            listeners[peer] = (fd, watch)
            feed(.listening(peer, local))
        } catch {
            Glibc.close(fd)
            feed(.listenFailed(peer, error))
        }
    }

    private func accept(_ peer: Peer) {
        guard let listener = listeners[peer] else { return }
        let accepted: (Int32, Endpoint)
        do {
            accepted = try Socket.accept(listener.fd, nonBlocking: true)
        } catch {
            if error.errno == EAGAIN || error.errno == EINTR || error.errno == ECONNABORTED { return }
            closeListener(peer)
            return feed(.listenFailed(peer, error))
        }
        closeListener(peer)
        Socket.setNoDelay(accepted.0)
        if adopt(accepted.0, as: peer, reading: true) != nil { feed(.accepted(peer, from: accepted.1)) }
    }

    private func closeListener(_ peer: Peer) {
        guard let listener = listeners.removeValue(forKey: peer) else { return }
        listener.watch.cancel()
        Glibc.close(listener.fd)
    }

    private func runDetached(_ program: SessionProgram) {
        do {
            let host = self.host
            let child = try ChildProgram(
                loop: host.loop, argv: program.argv, environment: program.environment, stdin: -1, stdout: -1,
                discardErrors: true, onErrorLine: nil,
                onExit: { [weak host] pid, _ in host?.release(pid) })
            host.adopt(child)
        } catch {
            host.log(.warning, "connection \(id): unable to run \(program.argv.first ?? ""): \(error)")
        }
    }

    // MARK: - Relaying the streams

    private func relayStreams(_ configuration: RelayConfiguration, toServer: [UInt8]) {
        guard stream(.server) != nil, let clientStream = streamMakingClient(.client),
            let serverStream = stream(.server)
        else {
            return feed(.relayFailed(SystemError(errno: ENOTCONN)))
        }
        pendingStreamRelay = (configuration, toServer)
        for each in [clientStream, serverStream] {
            each.wantsReading = false
            each.socket.pauseReading()
        }
        startStreamRelayIfDrained()
    }

    /// Starts the relay of ``SessionAction/relayStreams(_:toServer:)`` once nothing is queued
    /// for either stream.
    private func startStreamRelayIfDrained() {
        guard let pending = pendingStreamRelay, let clientStream = stream(.client),
            let serverStream = stream(.server),
            clientStream.socket.queuedBytes == 0 && serverStream.socket.queuedBytes == 0
        else { return }
        pendingStreamRelay = nil
        streams[Int(Peer.client.rawValue)] = nil
        streams[Int(Peer.server.rawValue)] = nil
        if blocked & (1 << Peer.client.rawValue | 1 << Peer.server.rawValue) != 0 {
            blocked &= ~(1 << Peer.client.rawValue | 1 << Peer.server.rawValue)
            applyReadingToAll()
        }
        let (clientTransport, serverTransport) = (clientStream.socket.transport, serverStream.socket.transport)
        let fromClient = clientStream.socket.release()
        let fromServer = serverStream.socket.release()
        var configuration = pending.configuration
        configuration.assumeNonBlocking = true  // a BufferedSocket's descriptors are
        var transports: RelayTransports?
        if clientTransport != nil || serverTransport != nil {
            transports = RelayTransports(client: clientTransport, server: serverTransport)
            configuration.bufferSize = max(configuration.bufferSize, Self.tlsBufferSize)
        }
        let relay = RelayConnection(
            loop: host.loop, client: fromClient.descriptor, server: fromServer.descriptor,
            configuration: configuration, delegate: self, transports: transports)
        relay.deliverFirst(
            toServer: fromServer.unsent + pending.toServer + fromClient.leftover,
            toClient: fromClient.unsent + fromServer.leftover)
        traced = false
        recording = nil
        self.relay = relay
        relay.start()
    }

    // MARK: - The spool

    private func spoolBegin() {
        spoolEnd()
        let directory = Environment.get("TMPDIR").flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
        var template = Array("\(directory)/bastion-spool-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { return feed(.spoolFailed(SystemError.current)) }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
        spool = fd
    }

    private func spoolEnd() {
        spoolPump = nil
        spoolBuffer = []
        if spool >= 0 {
            Glibc.close(spool)
            spool = -1
        }
    }

    /// Sends the next pieces of the spool while the peer's stream takes them.
    private func pumpSpool() {
        while let pump = spoolPump {
            guard spool >= 0, let target = stream(pump.peer) else {
                spoolPump = nil
                return
            }
            if target.socket.isAboveHighWaterMark { return }  // its drain goes on
            if pump.offset >= pump.end {
                spoolPump = nil
                return feed(.spoolSent(pump.peer))
            }
            let size = min(Self.spoolChunk, pump.end - pump.offset)
            if spoolBuffer.count < size { spoolBuffer = [UInt8](repeating: 0, count: Self.spoolChunk) }
            let n = spoolBuffer.withUnsafeMutableBytes { pread(spool, $0.baseAddress!, size, off_t(pump.offset)) }
            guard n > 0 else {
                let error = n == 0 ? SystemError(errno: EIO) : SystemError.current
                spoolEnd()
                return feed(.spoolFailed(error))
            }
            target.socket.write(spoolBuffer[0..<n])
            spoolPump?.offset += n
        }
    }

    // The streams' reports.

    fileprivate func stream(_ peer: Peer, received bytes: ArraySlice<UInt8>) {
        guard !closed else { return }
        feed(.received(peer, bytes))
    }

    fileprivate func streamReachedEndOfFile(_ peer: Peer) {
        guard !closed else { return }
        feed(.endOfFile(peer))
    }

    fileprivate func streamDrained(_ peer: Peer) {
        if lingering && peer == .client { return lingerOver() }
        if pendingStreamRelay != nil && (peer == .client || peer == .server) { return startStreamRelayIfDrained() }
        if pendingTLS[peer] != nil { return startStreamTLSIfDrained(peer) }
        if spoolPump?.peer == peer { pumpSpool() }
        if blocked & (1 << peer.rawValue) != 0 {
            blocked &= ~(1 << peer.rawValue)
            applyReadingToAll()
        }
    }

    fileprivate func stream(_ peer: Peer, failed error: SystemError) {
        if lingering && peer == .client { return lingerOver() }
        guard !closed else { return }
        closeStream(peer)
        feed(.streamFailed(peer, error))
    }

    // MARK: - The relay's reports

    public func relayDidConnect(_ relay: RelayConnection) {
        var local: Endpoint?
        if traced {
            // Where it connected from; getpeername would fail on a socket that has already
            // closed both ways (the server may be that quick), getsockname does not.
            local = try? Socket.localEndpoint(relay.serverDescriptor)
        }
        var outcome: RecordingOutcome?
        if let request = recording {
            recording = nil
            switch host.recorder(for: request, session: self) {
            case .success(let made):
                recorder = made
                outcome = RecordingOutcome(path: made.path, error: nil)
            case .failure(let failure):
                outcome = RecordingOutcome(path: failure.path, error: failure.error)
            }
        }
        feed(.connected(local: local, recording: outcome))
    }

    public func relay(_ relay: RelayConnection, read bytes: UnsafeRawBufferPointer, direction: RelayDirection) {
        recorder?.record(bytes, direction: direction)
    }

    public func relay(_ relay: RelayConnection, finished direction: RelayDirection, bytes: UInt64) {
        guard traced else { return }
        feed(.finished(direction, bytes: bytes))
    }

    public func relayDidEnd(_ relay: RelayConnection, summary: RelaySummary) {
        self.relay = nil
        if let failure = serverTLS?.failure { feed(.tlsFailed(.server, failure)) }
        serverTLS = nil
        recorder?.finish(summary, seconds: Double(Deadline.now.nanoseconds &- started.nanoseconds) / 1e9)
        recorder = nil
        feed(.relayEnded(summary))
    }

    // MARK: - Words for logs

    /// `1.234 s` since `start`, as every end-of-connection line says.
    public static func seconds(since start: Deadline, now: Deadline = .now) -> String {
        let ms = (now.nanoseconds &- start.nanoseconds) / 1_000_000
        return "\(ms / 1000).\(String(ms % 1000 + 1000).dropFirst()) s"
    }
}

/// Whether the recording asked for is being written.
public struct RecordingOutcome: Equatable, Sendable {
    /// The recording file.
    public var path: String
    /// Why it could not be opened; nil when it is being written.
    public var error: SystemError?

    public init(path: String, error: SystemError?) {
        self.path = path
        self.error = error
    }
}

/// One stream of a session: tells the driver what its socket reports, with the peer.
final class SessionStream: BufferedSocketDelegate {
    let peer: Peer
    unowned let driver: SessionDriver
    var socket: BufferedSocket!
    /// The machine wants its bytes (``SessionAction/read(_:)``).
    var wantsReading = false

    init(peer: Peer, driver: SessionDriver) {
        self.peer = peer
        self.driver = driver
    }

    func bufferedSocket(_ socket: BufferedSocket, receivedLine line: ArraySlice<UInt8>) {
        driver.stream(peer, received: line)  // not used: streams are read as bytes
    }

    func bufferedSocket(_ socket: BufferedSocket, receivedBytes bytes: ArraySlice<UInt8>) {
        driver.stream(peer, received: bytes)
    }

    func bufferedSocketDidReachEndOfFile(_ socket: BufferedSocket) { driver.streamReachedEndOfFile(peer) }

    func bufferedSocketDidDrain(_ socket: BufferedSocket) { driver.streamDrained(peer) }

    func bufferedSocket(_ socket: BufferedSocket, failed error: SystemError) { driver.stream(peer, failed: error) }
}

/// The array a loop's session drivers collect actions in, reused event after event.
final class SessionScratch: LoopResource {
    var inUse = false
    private var actions: [SessionAction] = []

    init(loop: EventLoop) { actions.reserveCapacity(8) }

    func take() -> [SessionAction] {
        defer { actions = [] }
        return actions
    }

    func give(_ actions: [SessionAction]) { self.actions = actions }

    func loopDidClose() { actions = [] }
}

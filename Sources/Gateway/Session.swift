#if canImport(Glibc)
import Glibc
#endif
import AccessRules
import GatewayKit
import Relay
import TLS

// The contract between a daemon's session (a pure state machine: events in, actions out)
// and the one driver that carries the actions out on an event loop (``SessionDriver``).
// tcpproxy's session is the first machine; pop3.proxy's and sockd's follow the same shape.

/// A program a session wants started, with pathexec's semantics (``ProgramExec``'s PATH
/// search and errno precedence) and a prepared environment.
public struct SessionProgram: Equatable, Sendable {
    /// The program and its arguments; `argv[0]` is looked up in PATH when it has no slash.
    public var argv: [String]
    /// The whole environment, `NAME=value` entries.
    public var environment: [[UInt8]]

    public init(argv: [String], environment: [[UInt8]]) {
        self.argv = argv
        self.environment = environment
    }
}

/// What the session wants relayed once it hands the client over: a connection to `destination`
/// (from `source`), `preamble` first (a PROXY header), then both directions until they end.
public struct RelayPlan: Equatable, Sendable {
    public var destination: Endpoint
    public var source: IPAddress?
    public var preamble: [UInt8]
    public var configuration: RelayConfiguration
    /// Record every chunk (``SessionHost/recorder(for:)`` is asked once connected).
    public var recording: RecordingRequest?
    /// Report the half-closes (``SessionEvent/finished(_:bytes:)``) and the server
    /// connection's local address: only a traced session asks, so an untraced relay costs
    /// nothing for them.
    public var traced: Bool
    /// TLS toward the server, for `host` (the name checked and sent as SNI): the preamble
    /// goes first in the clear, then the handshake, made by the relay's first write.
    public var serverTLS: (context: TLSClientContext, host: String)?

    public init(
        destination: Endpoint, source: IPAddress?, preamble: [UInt8], configuration: RelayConfiguration,
        recording: RecordingRequest?, traced: Bool, serverTLS: (context: TLSClientContext, host: String)? = nil
    ) {
        self.destination = destination
        self.source = source
        self.preamble = preamble
        self.configuration = configuration
        self.recording = recording
        self.traced = traced
        self.serverTLS = serverTLS
    }

    public static func == (a: RelayPlan, b: RelayPlan) -> Bool {
        a.destination == b.destination && a.source == b.source && a.preamble == b.preamble
            && a.configuration == b.configuration && a.recording == b.recording && a.traced == b.traced
            && a.serverTLS?.context == b.serverTLS?.context && a.serverTLS?.host == b.serverTLS?.host
    }
}

/// Where a session's relayed bytes are to be recorded: the daemon decides how.
public struct RecordingRequest: Equatable, Sendable {
    /// The file name's stem (tcpproxy's `writefile`).
    public var basename: String
    /// What the connection went to, for the record's first line.
    public var server: String

    public init(basename: String, server: String) {
        self.basename = basename
        self.server = server
    }
}

/// Where the client's name came from, or why there is none.
public enum ClientNameAnswer: Equatable, Sendable {
    /// The hosts file names the address.
    case hosts(String)
    /// A PTR query answered (nil: with no name).
    case dns(String?)
    /// The query failed or timed out.
    case failed(DNSError)
}

/// The byte streams a session may hold while it speaks a protocol itself (pop3.proxy stays in
/// the middle of its session, where tcpproxy hands the client to the relay): the client, the
/// server it connected to, the standard output of a program it runs, and a scanner.
public enum Peer: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case client
    case server
    case program
    case scanner

    public var description: String {
        switch self {
        case .client: "client"
        case .server: "server"
        case .program: "program"
        case .scanner: "scanner"
        }
    }
}

/// A UDP socket a session holds (sockd's UDP ASSOCIATE), by a number the machine chooses:
/// 0 to ``limit`` - 1.
public struct DatagramID: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt8
    /// The most sockets one session may hold.
    public static let limit = 16

    public init(_ rawValue: UInt8) {
        precondition(Int(rawValue) < Self.limit, "a session holds at most \(Self.limit) datagram sockets")
        self.rawValue = rawValue
    }

    public var description: String { "datagram socket \(rawValue)" }
}

/// Where a session's stream connects to: a TCP endpoint (from a source address when given),
/// or a Unix socket's path (clamd's local socket).
/// Which end of a TLS handshake a session is: a server to its client (with the listener's
/// certificates), or a client to its server, checking the certificate against `host`.
public enum TLSRole: Equatable, Sendable {
    case accept(TLSServerContext)
    case connect(TLSClientContext, host: String)
}

public enum StreamDestination: Equatable, Sendable {
    case tcp(Endpoint, from: IPAddress?)
    /// A host as a user wrote it (an address literal, a name in /etc/hosts or DNS): its first
    /// address. A name is resolved by the driver (see ``SessionDriver``).
    case host(String, port: UInt16, from: IPAddress?)
    case unix(String)
}

/// What the driver observed, fed to the machine one at a time, in order.
public enum SessionEvent: Equatable, Sendable {
    /// The session begins (the client socket is the driver's; `client` is its peer).
    case started
    /// The answer to ``SessionAction/checkRules(path:client:)``.
    case rulesChecked(RulesCheck.Outcome)
    /// The answer to ``SessionAction/lookUpName(_:)``.
    case nameFound(ClientNameAnswer)
    /// The program of ``SessionAction/run(_:stdout:)`` is running as `pid`.
    case programStarted(pid: Int32)
    /// It could not be started.
    case programFailed(SystemError)
    /// A line it wrote on its standard error.
    case programSaid(String)
    /// It has exited with wait status `status`.
    case programExited(pid: Int32, status: Int32)
    /// The program of ``SessionAction/handOver(_:endLine:)`` runs as `pid` and has the
    /// client; the session is over for the driver once it has said so.
    case handedOver(pid: Int32)
    /// It could not be started (the client is still the driver's).
    case handOverFailed(SystemError)
    /// The relay of ``SessionAction/relay(_:)`` has its server connection; `local` is that
    /// connection's own address when the plan is traced, `recording` whether the recording
    /// asked for is being written.
    case connected(local: Endpoint?, recording: RecordingOutcome?)
    /// One direction of the relay is over (only with ``RelayPlan/traced``).
    case finished(RelayDirection, bytes: UInt64)
    /// The relay could not even start (this host's error, such as EMFILE): the client is
    /// still the driver's.
    case relayFailed(SystemError)
    /// The relay has ended; both sockets are closed.
    case relayEnded(RelaySummary)
    /// The timer of ``SessionAction/setTimer(_:)`` or the pause of
    /// ``SessionAction/waitForDescriptors(_:)`` is over.
    case timerFired

    // Streams (see ``Peer``).

    /// Bytes arrived from `peer`. The slice shares the stream's read buffer: keeping it makes
    /// the stream copy its buffer at the next read, so take what is needed instead.
    case received(Peer, ArraySlice<UInt8>)
    /// `peer` sent end of file, after everything before it was delivered.
    case endOfFile(Peer)
    /// Reading from or writing to `peer` failed (reset, broken pipe): the stream is closed.
    case streamFailed(Peer, SystemError)
    /// The connection of ``SessionAction/connect(_:to:timeout:)`` is established; its bytes
    /// follow as ``received(_:_:)``.
    case streamConnected(Peer)
    /// It could not be established (refused, unreachable, timed out, no descriptor).
    case connectFailed(Peer, SystemError)
    /// The host of ``StreamDestination/host(_:port:from:)`` has no address: why, in words.
    case hostUnknown(Peer, reason: String)
    /// The answer to ``SessionAction/replaceFile(path:contents:)``: nil when written.
    case fileReplaced(path: String, error: SystemError?)
    /// The spool could not be made or written (the disk is full...): it is gone.
    case spoolFailed(SystemError)
    /// Everything of ``SessionAction/sendSpool(to:from:count:)`` is with `peer`'s
    /// stream (queued or written).
    case spoolSent(Peer)

    // What sockd asks of its surroundings.

    /// The answer to ``SessionAction/resolve(_:)``: `name` as asked and its addresses, at
    /// least one (from DNS: the AAAA records' before the A records').
    case resolved(name: String, addresses: [IPAddress])
    /// `name` has no address, and why, in words: "no such name", "no address", "timed out",
    /// a server's failure, an unreadable resolv.conf, an invalid name.
    case resolveFailed(name: String, reason: String)
    /// The answer to ``SessionAction/askIdent(timeout:)``: the reply as `IdentQuery` keeps
    /// it (the user id, possibly empty), or why there is none.
    case identAnswered(Result<[UInt8], IdentError>)
    /// The answer to ``SessionAction/checkPassword(user:password:)``: true when the password
    /// is the user's.
    case passwordChecked(Bool)
    /// ``SessionAction/listen(_:on:)`` is listening at this address and port (the port the
    /// kernel chose).
    case listening(Peer, Endpoint)
    /// The listener of ``SessionAction/listen(_:on:)`` took a connection from `from`: it is
    /// `peer`'s stream now (read from, written to, relayed as if connected), and the
    /// listener is closed.
    case accepted(Peer, from: Endpoint)
    /// The listener could not be made, or failed.
    case listenFailed(Peer, SystemError)

    // Datagrams (see ``DatagramID``).

    /// The socket of ``SessionAction/openDatagram(_:on:)`` is bound here (the port the kernel
    /// chose).
    case datagramOpened(DatagramID, Endpoint)
    /// It could not be made or bound, or reading from it failed: it is closed.
    case datagramFailed(DatagramID, SystemError)
    /// A datagram arrived on the socket from `from`. The slice shares the loop's receive
    /// buffer and is valid only during the call: take what is needed.
    case datagram(DatagramID, from: Endpoint, ArraySlice<UInt8>)

    // TLS (see ``SessionAction/startTLS(_:_:timeout:)``): a handshake finished, or failed
    // (then the peer's socket is still open; the machine closes it).

    case tlsEstablished(Peer, TLSFacts)
    case tlsFailed(Peer, TLSError)
}

/// What the machine wants done. The driver carries the actions out in order; those with an
/// answer feed it back as the next event (at once where it is known at once).
public enum SessionAction: Equatable, Sendable {
    /// Write a line to the daemon's log.
    case log(LogLevel, String)
    /// Apply the tcprules database at `path` (answer: ``SessionEvent/rulesChecked(_:)``).
    case checkRules(path: String, client: RuleClient)
    /// Find the client's name (answer: ``SessionEvent/nameFound(_:)``).
    case lookUpName(IPAddress)
    /// Start a program whose standard output is the client (when `stdout`) or /dev/null,
    /// standard input /dev/null, standard error lines to the session
    /// (``SessionEvent/programSaid(_:)``); its exit arrives as an event.
    case run(SessionProgram, stdout: Bool)
    /// Start a program with the client as its standard input and output, and leave the
    /// connection to it: the daemon waits for it and logs `endLine` + `: exit N, T s` when it
    /// exits (answer: ``SessionEvent/handedOver(pid:)`` or ``SessionEvent/handOverFailed(_:)``).
    case handOver(SessionProgram, endLine: String)
    /// Connect to the server and relay (answers: ``SessionEvent/connected(local:recording:)``, ...,
    /// ``SessionEvent/relayEnded(_:)``, or ``SessionEvent/relayFailed(_:)`` at once).
    case relay(RelayPlan)
    /// Out of descriptors: wait (the daemon holds its acceptors meanwhile, so the descriptors
    /// that free up go to waiting sessions first) and fire the timer after a pause.
    case waitForDescriptors(SystemError)
    /// Fire ``SessionEvent/timerFired`` after `duration` (moves an earlier one).
    case setTimer(Duration)
    /// The session is over: close what is still open (the client, a query, a program's
    /// pipes) and forget it. What is queued for the client is written first (for at most
    /// ``SessionDriver/lingerLimit``), so a last answer is not lost.
    case close

    // Streams (see ``Peer``).

    /// Start (or resume) delivering `peer`'s bytes; the client becomes a stream at its first
    /// stream action.
    case read(Peer)
    /// Stop delivering `peer`'s bytes (its socket is read until its buffer is full, then the
    /// sender waits): a machine that holds what it cannot handle yet stops its source.
    case pause(Peer)
    /// Send bytes to `peer`. A peer that does not read stops the others: while more than its
    /// high-water mark is queued for it, the driver reads no other stream.
    case send(Peer, ArraySlice<UInt8>)
    /// End of file to `peer` once what is queued is written.
    case shutdownWrite(Peer)
    /// Close `peer`'s stream (queued bytes are dropped).
    case closeStream(Peer)
    /// Connect `peer` (server or scanner) to `destination`, within `timeout` (answer:
    /// ``SessionEvent/streamConnected(_:)`` or ``SessionEvent/connectFailed(_:_:)``).
    case connect(Peer, to: StreamDestination, timeout: Duration)
    /// Start a program whose standard output is the stream ``Peer/program`` (standard input
    /// /dev/null, standard error lines as ``SessionEvent/programSaid(_:)``): its output
    /// arrives as ``SessionEvent/received(_:_:)`` and ``SessionEvent/endOfFile(_:)``, its
    /// start and exit as ``SessionEvent/programStarted(pid:)``,
    /// ``SessionEvent/programFailed(_:)`` and ``SessionEvent/programExited(pid:status:)``
    /// (in no fixed order with the end of its output).
    case runCapturing(SessionProgram)
    // The spool: a private file (mode 0600, unlinked as soon as it is made, so it goes away
    // on every path, a crash included) for what is too large to hold in memory, such as a
    // message waiting for its virus scan.

    /// Start an empty spool (an earlier one is dropped).
    case spoolBegin
    /// Append bytes to the spool.
    case spoolWrite(ArraySlice<UInt8>)
    /// Send `count` bytes of the spool from `offset` on to `peer`, as its stream takes them
    /// (answer: ``SessionEvent/spoolSent(_:)``).
    case sendSpool(to: Peer, from: Int, count: Int)
    /// Drop the spool.
    case spoolEnd
    /// Kill the program of ``runCapturing(_:)`` (SIGKILL): its exit follows as an event.
    case killProgram
    /// Replace the file at `path` with `contents` atomically (a new file beside it, renamed
    /// over it), mode 0644 (answer: ``SessionEvent/fileReplaced(path:error:)``).
    case replaceFile(path: String, contents: [UInt8])

    // What sockd asks of its surroundings.

    /// Find the addresses of a host as a user wrote it, without blocking the loop (answer:
    /// ``SessionEvent/resolved(name:addresses:)`` or ``SessionEvent/resolveFailed(name:reason:)``).
    /// An address literal, a name of the hosts file or a name of digits and dots answer at
    /// once (queued, never nested); any other name is asked of the DNS servers the daemon
    /// knows (its ``ClientNameSource``, else DNSCACHEIP or resolv.conf as read then), A and
    /// AAAA side by side, within ``SessionDriver/resolveLimit``. Several may run at once;
    /// ``close`` cancels them.
    case resolve(String)
    /// Ask the client's ident server (RFC 1413, port 113 unless the host says otherwise:
    /// ``SessionHost/identPort``) who owns the client's connection, from the connection's own
    /// local address, within `timeout` (answer: ``SessionEvent/identAnswered(_:)``). A new
    /// query replaces one still running; ``close`` cancels it.
    case askIdent(timeout: Duration)
    /// Ask the daemon whether `password` is `user`'s (``SessionHost/checkPassword(user:password:session:answer:)``,
    /// which checks it off the loop). The answer arrives as ``SessionEvent/passwordChecked(_:)``,
    /// never inside this action and never after ``close``.
    case checkPassword(user: [UInt8], password: [UInt8])
    /// Relay the open streams ``Peer/client`` and ``Peer/server`` (the latter from
    /// ``connect(_:to:timeout:)``) to each other until both directions end. Both streams stop
    /// delivering at once; once what is queued for each has been written (a last reply), a
    /// `RelayConnection` with `configuration` takes both sockets over. The server gets first
    /// `toServer` (bytes of the client's the machine holds), then the client's bytes read and
    /// not yet delivered; the client gets first the server's bytes read and not yet delivered.
    /// All of these count as relayed. Answers: ``SessionEvent/relayEnded(_:)`` (both sockets
    /// closed then), ``SessionEvent/relayFailed(_:)`` at once when a stream is not open
    /// (ENOTCONN); a stream that fails while its queue is written reports
    /// ``SessionEvent/streamFailed(_:_:)`` instead and no relay starts. No
    /// ``SessionEvent/connected(local:recording:)`` or ``SessionEvent/finished(_:bytes:)``
    /// are told. ``close`` ends a running relay.
    case relayStreams(RelayConfiguration, toServer: [UInt8])
    /// Start a program with standard input, output and error on /dev/null and leave it to the
    /// daemon, which reaps it when it exits (``SessionHost/adopt(_:)``): the session hears
    /// nothing of it, a failure to start included (logged at level warning).
    case runDetached(SessionProgram)
    /// Listen on `address` (an ephemeral port) for one connection that becomes `peer`'s
    /// stream (sockd's BIND): ``SessionEvent/listening(_:_:)`` once bound, then
    /// ``SessionEvent/accepted(_:from:)``; ``SessionEvent/listenFailed(_:_:)`` instead when it
    /// cannot. The listener is closed after one connection, on ``closeStream(_:)`` of the
    /// peer, and at ``close``. The session times the wait itself.
    case listen(Peer, on: IPAddress)

    // Datagrams (see ``DatagramID``).

    /// Make a UDP socket bound to `on` (port 0: one the kernel chooses) and deliver what
    /// arrives on it as ``SessionEvent/datagram(_:from:_:)`` (answer:
    /// ``SessionEvent/datagramOpened(_:_:)`` or ``SessionEvent/datagramFailed(_:_:)``, queued).
    /// The socket exists as soon as the action is carried out, so sends may follow at once.
    /// One already open under the number is closed first.
    case openDatagram(DatagramID, on: Endpoint)
    /// Send `prefix` followed by `payload` as one datagram to `to`. UDP's rules: a datagram
    /// the socket cannot take now (its buffer is full), or that the system refuses, is
    /// dropped, and nothing is told.
    case sendDatagram(DatagramID, to: Endpoint, prefix: [UInt8], payload: ArraySlice<UInt8>)
    /// Close the socket (``close`` closes every one).
    case closeDatagram(DatagramID)

    // TLS: a handshake on the client's socket (before it is a stream or the relay's), within
    // `timeout`; the relay of a later ``relay(_:)`` reads and writes through it.

    case startTLS(Peer, TLSRole, timeout: Duration)
}

/// What a machine may ask of its surroundings while it decides, without any effect: the
/// time, and the client socket's local address, read only when the machine needs it (a plain
/// forward with quiet logging never does, and saves the getsockname).
public protocol SessionContext {
    /// The loop's time of the current event.
    var now: Deadline { get }
    /// The local end of the client's connection (getsockname, once), or why it cannot be read.
    func localEndpoint() throws(SystemError) -> Endpoint
    /// The local (getsockname) or remote (getpeername) end of `peer`'s open connection, also
    /// while the streams are relayed (``SessionAction/relayStreams(_:toServer:)``): the
    /// server connection's local address is SOCKS5's BND.ADDR. ENOTCONN when `peer` has no
    /// open connection.
    func endpoint(of peer: Peer, local: Bool) throws(SystemError) -> Endpoint
}

extension SessionContext {
    /// For contexts that know only the client (a machine's unit tests): the client's local end
    /// from ``localEndpoint()``; ENOTCONN otherwise.
    public func endpoint(of peer: Peer, local: Bool) throws(SystemError) -> Endpoint {
        guard peer == .client && local else { throw SystemError(errno: ENOTCONN) }
        return try localEndpoint()
    }
}

/// A session's logic: no descriptors, no loop, no clock of its own. Every decision is made
/// in ``handle(_:context:into:)`` from the event, the machine's state and the context.
public protocol SessionMachine {
    /// Takes one event and appends what is to be done now.
    mutating func handle(_ event: SessionEvent, context: any SessionContext, into actions: inout [SessionAction])

    /// One line for a status report (SIGUSR2) while the session relays, given the relay's
    /// byte counts so far; nil when the session is not relaying.
    func statusLine(bytesFromClient: UInt64, bytesToClient: UInt64, now: Deadline) -> String?
}

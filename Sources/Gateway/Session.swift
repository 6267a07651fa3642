import AccessRules
import GatewayKit
import Relay

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

    public init(
        destination: Endpoint, source: IPAddress?, preamble: [UInt8], configuration: RelayConfiguration,
        recording: RecordingRequest?, traced: Bool
    ) {
        self.destination = destination
        self.source = source
        self.preamble = preamble
        self.configuration = configuration
        self.recording = recording
        self.traced = traced
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
    /// pipes) and forget it.
    case close
}

/// What a machine may ask of its surroundings while it decides, without any effect: the
/// time, and the client socket's local address, read only when the machine needs it (a plain
/// forward with quiet logging never does, and saves the getsockname).
public protocol SessionContext {
    /// The loop's time of the current event.
    var now: Deadline { get }
    /// The local end of the client's connection (getsockname, once), or why it cannot be read.
    func localEndpoint() throws(SystemError) -> Endpoint
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

#if canImport(Glibc)
import Glibc
#endif
import Gateway
import GatewayKit
import Loop
import Relay

/// A loop's worker in tcpproxy: the shared ``SessionWorker`` with tcpproxy's sessions.
typealias ProxyWorker = SessionWorker<ProxySessions>

/// How tcpproxy turns a connection into a session (a ``ProxySessionMachine`` for the
/// listener's handler, run by a ``SessionDriver``) and opens its recordings.
final class ProxySessions: SessionFactory {
    let log: ProxyLog
    /// The environment programs start from.
    let baseEnvironment: [[UInt8]]
    /// The daemon's pid (the master's when there are worker processes): recordings are named
    /// after it.
    let daemonPID: Int32

    init(log: ProxyLog, baseEnvironment: [[UInt8]], daemonPID: Int32) {
        self.log = log
        self.baseEnvironment = baseEnvironment
        self.daemonPID = daemonPID
    }

    /// A worker on `loop` serving tcpproxy's sessions.
    static func worker(loop: EventLoop, log: ProxyLog, baseEnvironment: [[UInt8]], daemonPID: Int32) -> ProxyWorker {
        SessionWorker(
            loop: loop, log: log,
            factory: ProxySessions(log: log, baseEnvironment: baseEnvironment, daemonPID: daemonPID))
    }

    func session(
        for client: Int32, peer: Endpoint, listener: Int32, table: ServiceTable, id: UInt64, worker: ProxyWorker
    ) -> SessionDriver? {
        if table !== setupsTable {
            setups = [:]
            setupsTable = table
        }
        let setup: ProxySessionSetup
        if let found = setups[listener] {
            setup = found
        } else {
            guard let target = table.listenerByDescriptor[listener] else { return nil }
            setup = self.setup(table: table, service: target.service, handler: target.handler)
            setups[listener] = setup
        }
        return SessionDriver(
            host: worker, machine: ProxySessionMachine(setup, id: id, peer: peer), client: client, peer: peer, id: id,
            names: table.clientNames)
    }

    /// The setups of the current table's listeners, made at their first connection.
    private var setups: [Int32: ProxySessionSetup] = [:]
    /// The table `setups` belong to. Strong: the setups hold it anyway (their `nextSource`),
    /// until the first connection after a reload replaces them. A weak reference would give
    /// the table a side table that Swift points to only from inside the table's reference
    /// count, where LeakSanitizer cannot see the pointer: one "leak" per loop at every exit.
    private var setupsTable: ServiceTable?

    /// What the sessions of `handler` of `service` share (nil: the handler is chosen by local
    /// address, in inetd mode).
    func setup(table: ServiceTable, service: Int, handler: Int?) -> ProxySessionSetup {
        ProxySessionSetup(
            configurationPath: table.configuration.path, service: table.configuration.services[service],
            chosenHandler: handler, targets: table.targets[service], tls: table.tls[service],
            logLevel: log.maximumLevel,
            baseEnvironment: baseEnvironment, namesAvailable: table.clientNames != nil,
            relayBufferSize: table.relayBufferSize,
            nextSource: { index, range in table.nextRotatedSource(service: service, handler: index, range: range) })
    }

    func recorder(for request: RecordingRequest, session: SessionDriver) -> Result<
        any SessionRecorder, RecordingFailure
    > {
        do {
            return .success(
                try ConnectionRecorder(
                    basename: request.basename, pid: daemonPID, connection: session.id, client: session.peer,
                    server: request.server))
        } catch {
            let path = RecordingFormat.fileName(basename: request.basename, pid: daemonPID)
            return .failure(RecordingFailure(path: path, error: error))
        }
    }
}

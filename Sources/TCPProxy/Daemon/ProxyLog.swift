import GatewayKit

/// The daemon's log, shared by every thread: GatewayKit's `DaemonLog` (a queue and a writer
/// thread per target, so logging never blocks an event loop).
public typealias ProxyLog = DaemonLog

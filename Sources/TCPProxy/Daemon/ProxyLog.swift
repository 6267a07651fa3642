import GatewayKit

/// tcpproxy's log is the shared daemon log.
public typealias ProxyLog = DaemonLog

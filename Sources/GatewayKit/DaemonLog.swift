import Synchronization

/// A daemon's log, shared by every thread: one Logger behind a mutex.
public final class DaemonLog: Sendable {
    private let logger: Mutex<Logger>
    public let maximumLevel: LogLevel

    public init(targets: [LogTarget]) {
        let logger = Logger(targets: targets)
        maximumLevel = logger.maximumLevel
        self.logger = Mutex(logger)
    }

    public func log(_ level: LogLevel, _ message: @autoclosure () -> String) {
        guard level != .off, level <= maximumLevel else { return }
        let text = message()
        logger.withLock { $0.log(level, text) }
    }

    public func error(_ message: @autoclosure () -> String) { log(.error, message()) }
    public func warning(_ message: @autoclosure () -> String) { log(.warning, message()) }
    public func notice(_ message: @autoclosure () -> String) { log(.notice, message()) }
    public func info(_ message: @autoclosure () -> String) { log(.info, message()) }
    public func debug(_ message: @autoclosure () -> String) { log(.debug, message()) }

    /// Reopens log files (after rotation, on SIGHUP).
    public func reopen() { logger.withLock { $0.reopen() } }
}

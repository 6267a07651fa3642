import CBastion

/// Connection numbers for the log: 1, 2, 3, ... shared by every loop and, when root runs a
/// worker process per user, by every worker. The counter lives in a page mapped MAP_SHARED
/// by the master before its first fork (`prepare`), so the workers, those started after a
/// SIGHUP too, draw from one sequence and no two log lines of a daemon share a number.
public enum ConnectionNumbers {
    /// The counter: shared memory, or (when mmap fails) this process's own.
    nonisolated(unsafe) private static let counter: UnsafeMutablePointer<UInt64> = {
        if let shared = bastion_shared_counter() { return shared }
        let own = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
        own.initialize(to: 0)
        return own
    }()

    /// Maps the counter now: call before forking the processes that must share it.
    public static func prepare() { _ = counter }

    /// The next number (an atomic add, no system call).
    public static func next() -> UInt64 { bastion_counter_next(counter) }
}

#if canImport(Glibc)
import Glibc
#endif

/// A value behind a pthread mutex, shared between threads. The package's lock instead of
/// `Synchronization.Mutex`: on Linux that Mutex's contended lock and unlock are futex calls in
/// the uninstrumented standard library, so under ThreadSanitizer (scripts/test --sanitize
/// thread) a contended hand-over orders nothing and the values it guards are reported as
/// races. pthread's mutex is intercepted, contended or not.
public final class Locked<Value>: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private var value: Value

    public init(_ value: Value) {
        self.value = value
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    public func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}

#if canImport(Glibc)
import Glibc
#endif

/// A daemon's log, shared by every thread, that never blocks its caller: an event loop that
/// logs a line only formats it and puts it in a queue. Each target has its own bounded queue
/// (`LogQueue`: 1024 lines or 1 MiB by default) and its own writer thread that drains it with
/// ordinary blocking writes, so a stalled target (a syslog daemon that stops reading, a full
/// disk, a pipe or terminal nobody reads) holds up neither the daemon nor the other targets.
/// Lines beyond the bound are dropped and counted, and once the target takes lines again it
/// gets `N log lines dropped` (at warning level) before the next line. The lines that are
/// written keep their order. A write that means "try later" (ENOSPC, EAGAIN, ENOBUFS) keeps
/// the line and is tried again after 100 ms.
///
/// Processes: the log may be used on both sides of a `fork`. A writer thread starts with the
/// first line a process logs (so a forked child starts its own); the queues' locks are taken
/// around every fork (pthread_atfork), and the child forgets the lines its parent had queued,
/// which the parent writes. At `exit` the queued lines are written, for at most a second
/// (an atexit handler); `Daemon.detach` writes them before its fork, since its parent leaves
/// with `_exit`.
///
/// Formatting is `Logger`'s, byte for byte: the time stamp and the syslog pid are those of
/// the call.
public final class DaemonLog: Sendable {
    /// The most detailed level any target wants; callers may skip building messages above it.
    public let maximumLevel: LogLevel
    private let writers: [LogWriter]

    /// Opens the file targets and connects the syslog ones (a file that cannot be opened is
    /// reported on stderr). No thread starts until a line is logged. `maximumLines` and
    /// `maximumBytes` bound each target's queue.
    public init(
        targets: [LogTarget], maximumLines: Int = LogQueue.defaultMaximumLines,
        maximumBytes: Int = LogQueue.defaultMaximumBytes
    ) {
        maximumLevel = targets.map(\.level).max() ?? .off
        writers = targets.map {
            LogWriter(
                sink: LogSink(target: $0), queue: LogQueue(maximumLines: maximumLines, maximumBytes: maximumBytes))
        }
        LogWriters.shared.add(writers)
    }

    /// The writers finish what is queued (unless their target is stalled) and end.
    deinit {
        LogWriters.shared.remove(writers)
        for writer in writers { writer.stop() }
    }

    /// Queues `message` at `level` for every target that wants it; returns at once.
    public func log(_ level: LogLevel, _ message: @autoclosure () -> String) {
        guard level != .off, level <= maximumLevel else { return }
        let text = message()
        var stamp: String?
        for writer in writers where level <= writer.target.level {
            writer.push(writer.target.line(level, text, stamp: &stamp))
        }
    }

    public func error(_ message: @autoclosure () -> String) { log(.error, message()) }
    public func warning(_ message: @autoclosure () -> String) { log(.warning, message()) }
    public func notice(_ message: @autoclosure () -> String) { log(.notice, message()) }
    public func info(_ message: @autoclosure () -> String) { log(.info, message()) }
    public func debug(_ message: @autoclosure () -> String) { log(.debug, message()) }

    /// Reopens the log files (after rotation, on SIGHUP). The writers do it, before their next
    /// line; the caller waits until they have, for at most `timeout` (a process about to fork
    /// must: its children keep the descriptor as it is at the fork, and a reopen still pending
    /// then would be done by the child, as whatever user it has become). False when a writer
    /// had not reopened in time.
    @discardableResult
    public func reopen(timeout: Duration = .seconds(2)) -> Bool {
        for writer in writers { writer.reopen() }
        let deadline = Deadline.after(timeout)
        var done = true
        for writer in writers { done = writer.waitUntilReopened(deadline) && done }
        return done
    }

    /// Waits until every line queued so far has been written (or given up), for at most
    /// `timeout`. False when a target did not take them in time.
    @discardableResult
    public func flush(timeout: Duration) -> Bool {
        LogWriter.waitUntilWritten(writers, timeout: timeout)
    }

    /// `flush` for every log of the process (at exit, before a fork whose parent `_exit`s).
    @discardableResult
    public static func flushAll(timeout: Duration) -> Bool { LogWriters.shared.flush(timeout: timeout) }
}

// MARK: - A target's writer

/// One target's queue and the thread that writes it. The queue and the flags are shared
/// under a pthread mutex (not `Mutex`: the fork handlers must hold it from the prepare step to
/// the parent's). The sink belongs to the writer thread: only that thread writes, reopens or
/// reconnects, outside the lock.
final class LogWriter: @unchecked Sendable {
    /// Between tries when the target answered "not now".
    static let retryPause: Duration = .milliseconds(100)

    let target: LogTarget
    private var sink: LogSink
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    /// Signalled for the writer: lines (when it waits for them), a reopen, a stop.
    private let wake = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    /// Broadcast by the writer when it has nothing left to write, for `waitUntilWritten`, and
    /// when it has reopened its target, for `waitUntilReopened`.
    private let idle = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    /// Under `mutex`.
    private struct State {
        var queue: LogQueue
        /// A writer thread serves this target in this process (or is being started).
        var running = false
        /// The writer is writing entries, outside the lock.
        var writing = false
        /// The writer waits for lines: the next push signals `wake`.
        var waiting = false
        var stopping = false
        var reopenAsked = 0
        var reopenDone = 0
    }

    private var state: State

    init(sink: LogSink, queue: LogQueue) {
        target = sink.target
        self.sink = sink
        state = State(queue: queue)
        pthread_mutex_init(mutex, nil)
        initializeConditions()
    }

    deinit {
        sink.close()
        pthread_cond_destroy(idle)
        pthread_cond_destroy(wake)
        pthread_mutex_destroy(mutex)
        idle.deallocate()
        wake.deallocate()
        mutex.deallocate()
    }

    private func initializeConditions() {
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(wake, &attributes)
        pthread_cond_init(idle, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    // MARK: - Callers (any thread)

    /// Queues `line` (or counts it, when the queue is full) and wakes the writer.
    func push(_ line: [UInt8]) {
        pthread_mutex_lock(mutex)
        state.queue.push(line)
        let signal = state.waiting
        state.waiting = false
        let start = claimStart()
        pthread_mutex_unlock(mutex)
        if signal { pthread_cond_signal(wake) }
        if start { startThread() }
    }

    /// Asks the writer to reopen a file target before its next write.
    func reopen() {
        guard case .file = target.kind else { return }
        pthread_mutex_lock(mutex)
        state.reopenAsked += 1
        let start = claimStart()
        pthread_mutex_unlock(mutex)
        pthread_cond_signal(wake)
        if start { startThread() }
    }

    /// Waits until every reopen asked so far is done, or `deadline`.
    func waitUntilReopened(_ deadline: Deadline) -> Bool {
        guard case .file = target.kind else { return true }
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        var until = Self.absolute(deadline)
        while state.reopenDone != state.reopenAsked {
            guard state.running else { return false }
            if pthread_cond_timedwait(idle, mutex, &until) == ETIMEDOUT {
                return state.reopenDone == state.reopenAsked
            }
        }
        return true
    }

    /// Lets the writer end once it has nothing to write (or its target is stalled).
    func stop() {
        pthread_mutex_lock(mutex)
        state.stopping = true
        pthread_mutex_unlock(mutex)
        pthread_cond_signal(wake)
    }

    /// Waits until the queue is written, or `deadline`. False if lines are left.
    func waitUntilWritten(_ deadline: Deadline) -> Bool {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        var until = Self.absolute(deadline)
        while state.queue.hasWork || state.writing {
            // Nobody would write them: the thread could not be started.
            guard state.running else { return false }
            if pthread_cond_timedwait(idle, mutex, &until) == ETIMEDOUT {
                return !(state.queue.hasWork || state.writing)
            }
        }
        return true
    }

    /// Waits for all of `writers`, for at most `timeout` in all.
    static func waitUntilWritten(_ writers: [LogWriter], timeout: Duration) -> Bool {
        let deadline = Deadline.after(timeout)
        var done = true
        for writer in writers { done = writer.waitUntilWritten(deadline) && done }
        return done
    }

    /// Under the lock: true when the caller must start the writer thread (none runs yet).
    private func claimStart() -> Bool {
        guard !state.running, !state.stopping else { return false }
        state.running = true
        return true
    }

    /// Starts the writer thread with every signal blocked, so that the daemon's signals go to
    /// the thread that reads them and a writer's EPIPE never becomes a SIGPIPE.
    private func startThread() {
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
        var all = sigset_t()
        var old = sigset_t()
        sigfillset(&all)
        pthread_sigmask(SIG_SETMASK, &all, &old)
        let context = Unmanaged.passRetained(self).toOpaque()
        var thread = pthread_t()
        let r = pthread_create(
            &thread, &attributes,
            { context in
                Unmanaged<LogWriter>.fromOpaque(context!).takeRetainedValue().run()
                return nil
            }, context)
        pthread_sigmask(SIG_SETMASK, &old, nil)
        pthread_attr_destroy(&attributes)
        guard r != 0 else { return }
        // No thread: the lines stay queued (and are counted once it is full); the next line
        // logged tries again.
        Unmanaged<LogWriter>.fromOpaque(context).release()
        pthread_mutex_lock(mutex)
        state.running = false
        pthread_mutex_unlock(mutex)
        pthread_cond_broadcast(idle)
    }

    // MARK: - The writer thread

    private func run() {
        var buffer: [UInt8] = []
        pthread_mutex_lock(mutex)
        while true {
            if state.reopenAsked != state.reopenDone {
                let asked = state.reopenAsked
                pthread_mutex_unlock(mutex)
                sink.reopen()
                pthread_mutex_lock(mutex)
                state.reopenDone = asked
                pthread_cond_broadcast(idle)  // for waitUntilReopened
                continue
            }
            guard state.queue.hasWork else {
                pthread_cond_broadcast(idle)
                if state.stopping { break }
                state.waiting = true
                pthread_cond_wait(wake, mutex)
                state.waiting = false
                continue
            }
            if state.stopping && state.queue.isStalled { break }
            var stamp: String?
            let chunks = state.queue.next(maximumBytes: sink.batchLimit) { entry in
                switch entry {
                case .line(let bytes): return bytes
                case .dropped(let n): return target.line(.warning, "\(n) log lines dropped", stamp: &stamp)
                }
            }
            state.writing = true
            pthread_mutex_unlock(mutex)
            let outcome: LogSink.Outcome
            if chunks.count == 1 {
                outcome = sink.write(chunks[0][...])
            } else {
                buffer.removeAll(keepingCapacity: true)
                for chunk in chunks { buffer += chunk }
                outcome = sink.write(buffer[...])
            }
            pthread_mutex_lock(mutex)
            state.writing = false
            switch outcome {
            case .wrote(let n): state.queue.wrote(n, of: chunks)
            case .refused: state.queue.refused()
            case .later:
                state.queue.stalled()
                // A pause, not a spin; lines pushed meanwhile do not cut it short.
                var until = Self.absolute(Deadline.after(Self.retryPause))
                if !state.stopping { _ = pthread_cond_timedwait(wake, mutex, &until) }
            }
        }
        state.running = false
        pthread_mutex_unlock(mutex)
        pthread_cond_broadcast(idle)
    }

    // MARK: - fork

    /// The prepare step: no other thread holds the lock while the process is copied.
    fileprivate func lockForFork() { pthread_mutex_lock(mutex) }

    fileprivate func unlockInParent() { pthread_mutex_unlock(mutex) }

    /// The child: the writer thread did not come along, the lines queued are the parent's
    /// to write, and the lock is released by the thread that took it in the prepare step (the
    /// child's only thread). Not made new: initialising a mutex that is held is undefined, and
    /// ThreadSanitizer, which knows a mutex by its address, would go on seeing it held by the
    /// forking thread and every later lock in the child as ordering nothing. The conditions
    /// are made new: the parent's writer may be recorded as a waiter on `wake`, and a signal
    /// in the child could go to that thread that is not there (no thread holds a condition,
    /// so this touches no lock). A reopen still pending is done by the child's writer too.
    fileprivate func resetInChild() {
        state.queue.removeAll()
        state.running = false
        state.writing = false
        state.waiting = false
        initializeConditions()
        pthread_mutex_unlock(mutex)
    }

    /// A deadline as pthread_cond_timedwait wants it (the conditions use CLOCK_MONOTONIC).
    private static func absolute(_ deadline: Deadline) -> timespec {
        timespec(
            tv_sec: Int(deadline.nanoseconds / 1_000_000_000), tv_nsec: Int(deadline.nanoseconds % 1_000_000_000))
    }
}

// MARK: - Every writer of the process

/// The writers of every `DaemonLog` in the process, for the fork handlers and the exit flush,
/// both installed when the first log is made.
final class LogWriters: @unchecked Sendable {
    static let shared = LogWriters()

    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    /// Under `mutex`.
    private var writers: [LogWriter] = []

    /// Bound on the lines' last chance at exit.
    static let exitFlushTimeout: Duration = .seconds(1)

    private init() {
        pthread_mutex_init(mutex, nil)
        pthread_atfork(
            { LogWriters.shared.prepareFork() }, { LogWriters.shared.parentAfterFork() },
            { LogWriters.shared.childAfterFork() })
        atexit { _ = LogWriters.shared.flush(timeout: LogWriters.exitFlushTimeout) }
    }

    func add(_ new: [LogWriter]) {
        pthread_mutex_lock(mutex)
        writers += new
        pthread_mutex_unlock(mutex)
    }

    func remove(_ old: [LogWriter]) {
        let gone = Set(old.map(ObjectIdentifier.init))
        pthread_mutex_lock(mutex)
        writers.removeAll { gone.contains(ObjectIdentifier($0)) }
        pthread_mutex_unlock(mutex)
    }

    @discardableResult
    func flush(timeout: Duration) -> Bool {
        pthread_mutex_lock(mutex)
        let all = writers
        pthread_mutex_unlock(mutex)
        return LogWriter.waitUntilWritten(all, timeout: timeout)
    }

    /// The fork's protocol: prepare takes every lock (this one, then each writer's), so that
    /// no other thread holds one while the process is copied; the parent and the child each
    /// release them, the child rather than re-initialise them, since its only thread is the
    /// one that took them.
    private func prepareFork() {
        pthread_mutex_lock(mutex)
        for writer in writers { writer.lockForFork() }
    }

    private func parentAfterFork() {
        for writer in writers { writer.unlockInParent() }
        pthread_mutex_unlock(mutex)
    }

    private func childAfterFork() {
        for writer in writers { writer.resetInChild() }
        pthread_mutex_unlock(mutex)
    }
}

#if canImport(Glibc)
import Glibc
#endif
import CBastion
import GatewayKit

extension EventLoop {
    /// The part of a loop other threads may use: queue a task to run on the loop's thread,
    /// wake it up, or stop it. Backed by an eventfd in the loop's epoll set.
    public final class Remote: Sendable {
        /// A task run on the loop's thread, with the loop.
        public typealias Task = @Sendable (EventLoop) -> Void

        let fd: Int32

        private struct State {
            var tasks: [Task] = []
            var stop = false
            var signalled = false
            var closed = false
        }

        private let state = Locked(State())

        init(fd: Int32) { self.fd = fd }

        deinit { Glibc.close(fd) }

        /// Runs `task` on the loop's thread soon. Returns false (and drops the task) when the
        /// loop has closed.
        @discardableResult
        public func execute(_ task: @escaping Task) -> Bool {
            let wake = state.withLock { s -> Bool? in
                if s.closed { return nil }
                s.tasks.append(task)
                defer { s.signalled = true }
                return !s.signalled
            }
            guard let wake else { return false }
            if wake { signal() }
            return true
        }

        /// Makes the loop's `run` return (after the tasks queued before).
        public func stop() {
            let wake = state.withLock { s -> Bool in
                s.stop = true
                defer { s.signalled = true }
                return !s.signalled
            }
            if wake { signal() }
        }

        /// Wakes the loop from its wait without giving it anything to do.
        public func wakeUp() { signal() }

        private func signal() {
            var one: UInt64 = 1
            _ = Glibc.write(fd, &one, 8)
        }

        /// For the loop: the queued tasks and whether a stop was asked for.
        func take() -> ([Task], Bool) {
            state.withLock { s in
                let out = (s.tasks, s.stop)
                s.tasks = []
                s.stop = false
                s.signalled = false
                return out
            }
        }

        /// For the loop's close: refuses further tasks and returns those still queued.
        func close() -> [Task] {
            state.withLock { s in
                s.closed = true
                let out = s.tasks
                s.tasks = []
                return out
            }
        }
    }
}

// MARK: - A loop on its own thread

/// An `EventLoop` running on a thread of its own (a POSIX thread, not Swift concurrency).
/// The loop is created on that thread and never leaves it; this object is how other threads
/// talk to it. A daemon starts one per core.
public final class EventLoopThread: Sendable {
    /// The loop's remote handle.
    public let remote: EventLoop.Remote
    private let thread: pthread_t
    private let joined = Locked(false)

    /// The state handed to the new thread.
    private final class Start: Sendable {
        let configuration: EventLoop.Configuration
        let setup: @Sendable (EventLoop) -> Void
        let ready = Completion<Result<EventLoop.Remote, SystemError>>()

        init(configuration: EventLoop.Configuration, setup: @escaping @Sendable (EventLoop) -> Void) {
            self.configuration = configuration
            self.setup = setup
        }

        func main() {
            let loop: EventLoop
            do {
                loop = try EventLoop(configuration: configuration)
            } catch {
                ready.complete(.failure(error))
                return
            }
            setup(loop)
            ready.complete(.success(loop.remote))
            loop.run()
            loop.close()
        }
    }

    private init(remote: EventLoop.Remote, thread: pthread_t) {
        self.remote = remote
        self.thread = thread
    }

    /// Dropping the last reference stops the loop; the thread is joined (or, when that happens
    /// on the loop's own thread, detached).
    deinit {
        remote.stop()
        let first = joined.withLock { j -> Bool in
            defer { j = true }
            return !j
        }
        guard first else { return }
        if pthread_equal(pthread_self(), thread) != 0 {
            pthread_detach(thread)
        } else {
            pthread_join(thread, nil)
        }
    }

    /// Starts a thread, creates a loop on it, calls `setup` there (to add listeners and such),
    /// and runs the loop until `stop`. Returns once `setup` has finished.
    public static func start(
        configuration: EventLoop.Configuration = EventLoop.Configuration(),
        setup: @escaping @Sendable (EventLoop) -> Void = { _ in }
    ) throws(SystemError) -> EventLoopThread {
        let start = Start(configuration: configuration, setup: setup)
        let context = Unmanaged.passRetained(start).toOpaque()
        var thread = pthread_t()
        let r = pthread_create(
            &thread, nil,
            { context in
                let start = Unmanaged<Start>.fromOpaque(context!).takeRetainedValue()
                start.main()
                return nil
            }, context)
        if r != 0 {
            Unmanaged<Start>.fromOpaque(context).release()
            throw SystemError(errno: r)
        }
        switch start.ready.wait() {
        case .success(let remote):
            return EventLoopThread(remote: remote, thread: thread)
        case .failure(let error):
            pthread_join(thread, nil)
            throw error
        }
    }

    /// Runs `task` on the loop's thread soon.
    @discardableResult
    public func execute(_ task: @escaping EventLoop.Remote.Task) -> Bool { remote.execute(task) }

    /// Runs `body` on the loop's thread and waits for its result. Never call it from the
    /// loop's own thread (it would wait for itself), nor after the loop has stopped.
    public func sync<T: Sendable>(_ body: @escaping @Sendable (EventLoop) -> T) -> T {
        let done = Completion<T>()
        let queued = remote.execute { loop in done.complete(body(loop)) }
        precondition(queued, "EventLoopThread.sync on a closed loop")
        return done.wait()
    }

    /// Asks the loop to stop; its handlers are told (`handleLoopClose`) before the thread ends.
    public func stop() { remote.stop() }

    /// Waits for the thread to end (after `stop`). Only the first call waits.
    public func join() {
        let first = joined.withLock { j -> Bool in
            defer { j = true }
            return !j
        }
        if first { pthread_join(thread, nil) }
    }

    /// `stop`, then `join`.
    public func stopAndJoin() {
        stop()
        join()
    }
}

// MARK: - One-shot completion

/// A value handed from one thread to another that waits for it, blocking on a process-private
/// semaphore: no condition variable to get wrong, no spinning, and no descriptor, so that it
/// works when the process has run out of them (a loop that accepted until EMFILE).
final class Completion<T: Sendable>: @unchecked Sendable {
    private let semaphore: UnsafeMutablePointer<sem_t>
    private let value = Locked<T?>(nil)

    init() {
        semaphore = .allocate(capacity: 1)
        sem_init(semaphore, 0, 0)
    }

    deinit {
        sem_destroy(semaphore)
        semaphore.deallocate()
    }

    func complete(_ result: T) {
        value.withLock { $0 = result }
        sem_post(semaphore)
    }

    func wait() -> T {
        while sem_wait(semaphore) != 0 && errno == EINTR {}
        return value.withLock { v in
            guard let result = v else { preconditionFailure("completion woken without a value") }
            return result
        }
    }
}

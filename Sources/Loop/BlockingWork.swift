#if canImport(Glibc)
import Glibc
#endif
import GatewayKit

/// Work that would block a loop (a crypt(3) password check takes milliseconds on purpose),
/// run on worker threads of the loop's own, its result handed back on the loop's thread.
///
/// A loop's handlers share it (``EventLoop/resource(_:)``). The threads start on the first
/// ``submit(_:completion:)``, so a process that forks its workers before using it has
/// threads only where the loop runs; they are stopped and joined when the loop closes (a
/// job already running finishes first). Completions run on the loop's thread, after
/// `submit` has returned, never for a cancelled ticket, and not at all once the loop closed.
public final class BlockingWork: LoopResource {
    /// A submitted job, to cancel its completion (the session that asked has gone).
    public struct Ticket: Hashable, Sendable {
        let id: UInt64
    }

    /// Threads doing the work.
    public static let threads = 2
    /// Jobs queued or running at most; beyond it ``submit(_:completion:)`` refuses.
    public static let limit = 1024

    private struct Job: @unchecked Sendable {
        let id: UInt64
        let run: @Sendable () -> any Sendable
    }

    private final class Queue: @unchecked Sendable {
        let state = Locked((jobs: [Job](), head: 0, closed: false))
        let semaphore: UnsafeMutablePointer<sem_t>
        let remote: EventLoop.Remote

        init(remote: EventLoop.Remote) {
            self.remote = remote
            semaphore = .allocate(capacity: 1)
            sem_init(semaphore, 0, 0)
        }

        deinit {
            sem_destroy(semaphore)
            semaphore.deallocate()
        }

        /// A worker thread: takes jobs until the queue closes.
        func work() {
            while true {
                while sem_wait(semaphore) != 0 && errno == EINTR {}
                let job = state.withLock { s -> Job? in
                    guard !s.closed, s.head < s.jobs.count else { return nil }
                    let job = s.jobs[s.head]
                    s.head += 1
                    if s.head == s.jobs.count {
                        s.jobs.removeAll(keepingCapacity: true)
                        s.head = 0
                    }
                    return job
                }
                guard let job else { return }
                let result = job.run()
                let id = job.id
                remote.execute { loop in loop.resource(BlockingWork.self).finish(id, result) }
            }
        }
    }

    private unowned let loop: EventLoop
    private let queue: Queue
    private var workers: [pthread_t] = []
    private var completions: [UInt64: (any Sendable) -> Void] = [:]
    private var nextID: UInt64 = 0
    private var closed = false

    public init(loop: EventLoop) {
        self.loop = loop
        queue = Queue(remote: loop.remote)
    }

    /// Jobs whose completion is still owed.
    public var pending: Int { completions.count }

    /// Runs `work` on a worker thread and `completion` with its result on the loop's thread.
    /// Returns nil, and runs nothing, when ``limit`` jobs are owed already or no thread can
    /// be started: the caller answers as it would for any shortage.
    public func submit<T: Sendable>(
        _ work: @escaping @Sendable () -> T, completion: @escaping (T) -> Void
    ) -> Ticket? {
        guard !closed, completions.count < Self.limit else { return nil }
        if workers.count < Self.threads && !startWorker() && workers.isEmpty { return nil }
        nextID += 1
        let id = nextID
        completions[id] = { result in completion(result as! T) }
        queue.state.withLock { $0.jobs.append(Job(id: id, run: { work() })) }
        sem_post(queue.semaphore)
        return Ticket(id: id)
    }

    /// Forgets `ticket`'s completion (the job itself may still run).
    public func cancel(_ ticket: Ticket) {
        completions[ticket.id] = nil
    }

    func finish(_ id: UInt64, _ result: any Sendable) {
        guard let completion = completions.removeValue(forKey: id) else { return }
        completion(result)
    }

    private func startWorker() -> Bool {
        let context = Unmanaged.passRetained(queue).toOpaque()
        var thread = pthread_t()
        let r = pthread_create(
            &thread, nil,
            { context in
                let queue = Unmanaged<Queue>.fromOpaque(context!).takeRetainedValue()
                queue.work()
                return nil
            }, context)
        guard r == 0 else {
            Unmanaged<Queue>.fromOpaque(context).release()
            return false
        }
        workers.append(thread)
        return true
    }

    public func loopDidClose() {
        closed = true
        completions = [:]
        queue.state.withLock { $0.closed = true }
        for _ in workers { sem_post(queue.semaphore) }
        for thread in workers { pthread_join(thread, nil) }
        workers = []
    }
}

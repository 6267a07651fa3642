#if canImport(Glibc)
import Glibc
#endif
import CBastion
import GatewayKit

/// Something an `EventLoop` calls back: readiness of the descriptors it registered, its
/// timers, deferred calls, and the loop's closing. Every call arrives on the loop's thread.
///
/// Handlers are objects, not closures, so that dispatching an event allocates nothing: the
/// loop keeps each registered handler in a slot table and epoll hands back the slot.
public protocol EventHandler: AnyObject {
    /// A descriptor added with `tag` is ready for `events`.
    func handle(events: IOEvents, tag: UInt8)
    /// The timer set with `EventLoop.setTimer` came due (it is not repeated).
    func handleTimer()
    /// A call requested with `EventLoop.deferCall` (after the current batch of events).
    func handleDeferred()
    /// The loop is closing (`EventLoop.close`): release resources and unregister.
    func handleLoopClose()
}

extension EventHandler {
    /// By default timers are not used.
    public func handleTimer() {}
    /// By default deferred calls are not used.
    public func handleDeferred() {}
    /// By default there is nothing to release.
    public func handleLoopClose() {}
}

/// One epoll instance and everything that runs on it: descriptor readiness, a timer wheel,
/// deferred calls and wake-ups from other threads.
///
/// A loop belongs to the thread that runs it: all its methods must be called on that thread
/// (typically from inside handlers, or before `run`). Other threads reach it only through its
/// `remote` (wake up, run a task on the loop, stop). A daemon runs one loop per core, each
/// with its own SO_REUSEPORT listener, so connections never move between threads.
///
/// What the handlers of one kind share per loop (the relay engine's buffer and pipe pools,
/// say) is a ``LoopResource``, made on first use and closed with the loop: the loop itself
/// knows nothing of relays or of any daemon.
///
/// Creating a loop sets SIGPIPE to be ignored for the whole process: splice(2) into a socket
/// the peer has reset raises SIGPIPE and, unlike send(2), has no flag to prevent it.
public final class EventLoop {
    /// A registered handler. Events, timers and deferred calls name it; once unregistered,
    /// anything still pending for it is dropped, even if its slot is reused.
    public struct Registration: Hashable, Sendable {
        let slot: UInt32
        let generation: UInt32

        /// A registration that names no handler (generation 0 is never handed out), for a
        /// handler's stored property before it registers.
        public static let none = Registration(slot: 0, generation: 0)
    }

    /// Settings of a loop.
    public struct Configuration: Sendable {
        /// Resolution of timers (idle and connect timeouts, accept pauses).
        public var timerTick: Duration = .milliseconds(100)
        /// Buckets in the timer wheel; timers further away than buckets x tick simply go round.
        public var timerBuckets: Int = 1024
        /// Events taken from epoll per wait.
        public var eventsPerWait: Int = 256

        /// The defaults.
        public init() {}
    }

    /// Counters of what the loop holds, for tests and status reports.
    public struct Statistics: Sendable, Equatable {
        /// Registered handlers (relays, acceptors, connectors, watches).
        public var handlers = 0
        /// Timers set.
        public var timers = 0
    }

    let epollFD: Int32
    /// The handle other threads use to reach this loop.
    public let remote: Remote
    let configuration: Configuration

    private struct Slot {
        var handler: (any EventHandler)?
        var generation: UInt32
    }

    private var slots: ContiguousArray<Slot> = []
    private var freeSlots: [UInt32] = []
    private var registered = 0
    private let events: UnsafeMutablePointer<epoll_event>
    private let eventCapacity: Int32
    private var wheel: TimerWheel
    private var dueTimers: [TimerWheel.Entry] = []
    private var deferred: [Registration] = []
    private var deferredRunning: [Registration] = []
    private var stopRequested = false
    private(set) var isClosed = false

    /// Cached CLOCK_MONOTONIC time in nanoseconds, refreshed after every wait.
    public private(set) var nowNanoseconds: UInt64

    /// What kinds of handlers share on this loop, by type (see ``resource(_:)``).
    private var resources: [ObjectIdentifier: any LoopResource] = [:]

    /// Epoll data that marks the remote wake-up descriptor.
    private static let wakeData = UInt64.max

    /// A new loop with its epoll instance and wake-up descriptor.
    public init(configuration: Configuration = Configuration()) throws(SystemError) {
        signal(SIGPIPE, SIG_IGN)
        let ep = epoll_create1(Int32(EPOLL_CLOEXEC))
        if ep < 0 { throw SystemError.current }
        let wake = eventfd(0, Int32(EFD_CLOEXEC) | Int32(EFD_NONBLOCK))
        if wake < 0 {
            let error = SystemError.current
            Glibc.close(ep)
            throw error
        }
        var event = epoll_event()
        event.events = EPOLLIN.rawValue
        event.data.u64 = EventLoop.wakeData
        if epoll_ctl(ep, EPOLL_CTL_ADD, wake, &event) != 0 {
            let error = SystemError.current
            Glibc.close(ep)
            Glibc.close(wake)
            throw error
        }
        epollFD = ep
        remote = Remote(fd: wake)
        self.configuration = configuration
        eventCapacity = Int32(clamping: max(configuration.eventsPerWait, 1))
        events = .allocate(capacity: Int(eventCapacity))
        let now = EventLoop.clock()
        nowNanoseconds = now
        wheel = TimerWheel(tick: configuration.timerTick, bucketCount: configuration.timerBuckets, now: now)
    }

    deinit {
        // Handlers still registered are released with the slot table; they close their own
        // descriptors. Call close() first to have them report their end. Resources free
        // what they hold when released.
        events.deallocate()
        Glibc.close(epollFD)
    }

    // MARK: - Time

    /// The time of the last wake-up: cheap to read, and what relays stamp activity with.
    public var now: Deadline { Deadline(nanoseconds: nowNanoseconds) }

    /// The monotonic clock itself (``Deadline/now``: one clock for the whole package), read
    /// afresh, for the rare stamp that must not be the cached ``now``.
    @inline(__always)
    public static func clock() -> UInt64 { Deadline.now.nanoseconds }

    // MARK: - Resources

    /// The loop's one instance of `type`, made on first use: what handlers of one kind share
    /// on a loop (pools, scratch buffers, counters). Look it up once per handler, not per
    /// event. It lives as long as the loop and is told when the loop closes.
    public func resource<R: LoopResource>(_ type: R.Type) -> R {
        let key = ObjectIdentifier(type)
        if let found = resources[key] { return unsafeDowncast(found, to: R.self) }
        let made = R(loop: self)
        resources[key] = made
        return made
    }

    // MARK: - Registration

    /// Adds `handler` to the slot table; the loop keeps it alive until `unregister`.
    public func register(_ handler: any EventHandler) -> Registration {
        registered += 1
        if let slot = freeSlots.popLast() {
            slots[Int(slot)].handler = handler
            return Registration(slot: slot, generation: slots[Int(slot)].generation)
        }
        precondition(slots.count < 0xFF_FFFF, "too many handlers on one event loop")
        slots.append(Slot(handler: handler, generation: 1))
        return Registration(slot: UInt32(slots.count - 1), generation: 1)
    }

    /// Releases a registration: pending events, timers and deferred calls for it are dropped.
    /// Remove (or close) its descriptors first.
    public func unregister(_ registration: Registration) {
        let index = Int(registration.slot)
        guard index < slots.count, slots[index].generation == registration.generation,
            slots[index].handler != nil
        else { return }
        slots[index].handler = nil
        wheel.cancel(slot: registration.slot)
        slots[index].generation = slots[index].generation == 0xFFFF_FFFE ? 1 : slots[index].generation + 1
        freeSlots.append(registration.slot)
        registered -= 1
    }

    /// The handler of a live registration.
    @inline(__always)
    private func handler(_ registration: Registration) -> (any EventHandler)? {
        let index = Int(registration.slot)
        guard index < slots.count, slots[index].generation == registration.generation else { return nil }
        return slots[index].handler
    }

    @inline(__always)
    private static func data(_ registration: Registration, _ tag: UInt8) -> UInt64 {
        UInt64(registration.generation) << 32 | UInt64(registration.slot) << 8 | UInt64(tag)
    }

    private func control(
        _ operation: Int32, _ fd: Int32, _ interest: IOEvents, _ registration: Registration, _ tag: UInt8
    ) throws(SystemError) {
        var event = epoll_event()
        event.events = interest.rawValue
        event.data.u64 = EventLoop.data(registration, tag)
        if epoll_ctl(epollFD, operation, fd, &event) != 0 { throw SystemError.current }
    }

    /// Watches `fd` for `interest` on behalf of `registration`; events arrive with `tag`, so
    /// one handler can tell several descriptors apart. Use `.edgeTriggered` to be told only
    /// of changes (then read or write until EAGAIN before waiting again).
    public func add(
        _ fd: Int32, interest: IOEvents, for registration: Registration, tag: UInt8 = 0
    ) throws(SystemError) {
        try control(EPOLL_CTL_ADD, fd, interest, registration, tag)
    }

    /// Changes what `fd` is watched for (or which registration and tag it reports to).
    public func modify(
        _ fd: Int32, interest: IOEvents, for registration: Registration, tag: UInt8 = 0
    ) throws(SystemError) {
        try control(EPOLL_CTL_MOD, fd, interest, registration, tag)
    }

    /// Stops watching `fd`. Closing a descriptor (that has no duplicates) does the same.
    public func remove(_ fd: Int32) {
        var event = epoll_event()
        _ = epoll_ctl(epollFD, EPOLL_CTL_DEL, fd, &event)
    }

    // MARK: - Timers and deferred calls

    /// Sets the timer of `registration`: `handleTimer` is called at `deadline` (rounded up to
    /// the timer tick). A registration has one timer; setting it again moves it.
    public func setTimer(_ registration: Registration, at deadline: Deadline) {
        guard handler(registration) != nil else { return }
        wheel.set(registration, at: deadline.nanoseconds)
    }

    /// Sets the timer of `registration` to `duration` after `now`.
    public func setTimer(_ registration: Registration, after duration: Duration) {
        guard handler(registration) != nil else { return }
        wheel.set(registration, at: nowNanoseconds &+ duration.nanosecondsClamped)
    }

    /// Cancels the timer of `registration` (unregistering does too).
    public func cancelTimer(_ registration: Registration) {
        guard handler(registration) != nil else { return }
        wheel.cancel(slot: registration.slot)
    }

    /// Calls `handleDeferred` of `registration` after the current batch of events, before the
    /// loop waits again. Handlers use it to yield after a budget of work, for fairness.
    public func deferCall(_ registration: Registration) {
        deferred.append(registration)
    }

    // MARK: - Running

    /// Runs until `stop` (here or through `remote`).
    public func run() {
        stopRequested = false
        while !stopRequested { runOnce(timeout: nil) }
    }

    /// Runs until `deadline` or `stop`, whichever comes first.
    public func run(until deadline: Deadline) {
        stopRequested = false
        while !stopRequested {
            let left = deadline.remaining
            if left == .zero { break }
            runOnce(timeout: left)
        }
    }

    /// Makes `run` return after the current batch.
    public func stop() { stopRequested = true }

    /// Waits once for events (at most `timeout`, nil for as long as needed), then handles
    /// them, the timers that came due and the deferred calls.
    public func runOnce(timeout: Duration?) {
        var milliseconds: Int32 = -1
        if !deferred.isEmpty || stopRequested {
            milliseconds = 0
        } else {
            if wheel.count > 0, let next = wheel.nanosecondsToNextTick(now: EventLoop.clock()) {
                milliseconds = Int32(clamping: (next + 999_999) / 1_000_000)
            }
            if let timeout {
                let limit = Int32(clamping: (timeout.nanosecondsClamped + 999_999) / 1_000_000)
                milliseconds = milliseconds < 0 ? limit : min(milliseconds, limit)
            }
        }
        let count = epoll_wait(epollFD, events, eventCapacity, milliseconds)
        nowNanoseconds = EventLoop.clock()
        if count > 0 { dispatch(Int(count)) }
        if wheel.count > 0 { fireTimers() }
        if !deferred.isEmpty { runDeferred() }
    }

    private func dispatch(_ count: Int) {
        for i in 0..<count {
            let data = events[i].data.u64
            if data == EventLoop.wakeData {
                drainRemote()
                continue
            }
            let index = Int(truncatingIfNeeded: (data >> 8) & 0xFF_FFFF)
            guard index < slots.count, slots[index].generation == UInt32(truncatingIfNeeded: data >> 32),
                let handler = slots[index].handler
            else { continue }
            handler.handle(events: IOEvents(rawValue: events[i].events), tag: UInt8(truncatingIfNeeded: data))
        }
    }

    private func fireTimers() {
        wheel.collect(now: nowNanoseconds, into: &dueTimers)
        if dueTimers.isEmpty { return }
        for entry in dueTimers {
            handler(entry.registration)?.handleTimer()
        }
        dueTimers.removeAll(keepingCapacity: true)
    }

    private func runDeferred() {
        swap(&deferred, &deferredRunning)
        for registration in deferredRunning {
            handler(registration)?.handleDeferred()
        }
        deferredRunning.removeAll(keepingCapacity: true)
    }

    private func drainRemote() {
        var value: UInt64 = 0
        _ = read(remote.fd, &value, 8)
        let (tasks, stop) = remote.take()
        for task in tasks { task(self) }
        if stop { stopRequested = true }
    }

    /// Ends the loop's life: runs the tasks other threads queued, tells every handler
    /// (`handleLoopClose`: relays end as `.cancelled` and close their sockets), and frees
    /// the pools. Call after `run` returns; `EventLoopThread` does.
    public func close() {
        guard !isClosed else { return }
        isClosed = true
        for task in remote.close() { task(self) }
        var index = 0
        let end = slots.count
        while index < end {
            if let handler = slots[index].handler { handler.handleLoopClose() }
            index += 1
        }
        for i in slots.indices where slots[i].handler != nil {
            unregister(Registration(slot: UInt32(i), generation: slots[i].generation))
        }
        for resource in resources.values { resource.loopDidClose() }
    }

    // MARK: - Statistics

    /// What the loop holds now.
    public var statistics: Statistics { Statistics(handlers: registered, timers: wheel.count) }
}

/// State that handlers of one kind share on one loop (``EventLoop/resource(_:)``), such as
/// the relay engine's buffer and pipe pools. Used on the loop's thread only.
public protocol LoopResource: AnyObject {
    /// Made by the loop on first use.
    init(loop: EventLoop)
    /// The loop has closed (every handler has been told): free what is pooled.
    func loopDidClose()
}

// MARK: - Watching a descriptor with a closure

/// Calls a closure when a descriptor is ready: for the daemon's own descriptors (a signalfd,
/// a control socket), where one closure per watch costs nothing that matters. The
/// descriptor stays the caller's; `cancel` stops watching it.
public final class DescriptorWatch: EventHandler {
    /// The descriptor watched.
    public let fd: Int32
    private unowned let loop: EventLoop
    private var registration: EventLoop.Registration?
    private let body: (IOEvents) -> Void

    /// Watches `fd` for `interest` (level-triggered unless `.edgeTriggered` is in it) and
    /// calls `body` with the events on the loop's thread until cancelled.
    public init(
        loop: EventLoop, fd: Int32, interest: IOEvents = .readable, _ body: @escaping (IOEvents) -> Void
    ) throws(SystemError) {
        self.fd = fd
        self.loop = loop
        self.body = body
        let registration = loop.register(self)
        do {
            try loop.add(fd, interest: interest, for: registration)
        } catch {
            loop.unregister(registration)
            throw error
        }
        self.registration = registration
    }

    /// Stops watching (the descriptor stays open).
    public func cancel() {
        guard let registration else { return }
        self.registration = nil
        loop.remove(fd)
        loop.unregister(registration)
    }

    /// Calls the closure.
    public func handle(events: IOEvents, tag: UInt8) { body(events) }

    /// The loop closes: stop watching.
    public func handleLoopClose() { cancel() }
}

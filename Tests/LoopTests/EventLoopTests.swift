#if canImport(Glibc)
import Glibc
#endif
import GatewayKit
@testable import Loop
import Synchronization
import Testing

/// A handler that records what the loop calls.
final class Probe: EventHandler {
    var events: [(IOEvents, UInt8)] = []
    var timers: [UInt64] = []
    var deferred = 0
    var closed = false
    var onEvent: ((Probe) -> Void)?

    func handle(events: IOEvents, tag: UInt8) {
        self.events.append((events, tag))
        onEvent?(self)
    }

    func handleTimer() { timers.append(EventLoop.clock()) }
    func handleDeferred() { deferred += 1 }
    func handleLoopClose() { closed = true }
}

@Suite("EventLoop")
struct EventLoopTests {
    @Test("readiness reaches the registered handler with its tag; closing the descriptor stops it")
    func readiness() throws {
        let loop = try EventLoop()
        defer { loop.close() }
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        defer { close(fds[1]) }
        let probe = Probe()
        let registration = loop.register(probe)
        try loop.add(fds[0], interest: [.readable], for: registration, tag: 7)
        loop.runOnce(timeout: .milliseconds(10))
        #expect(probe.events.isEmpty)
        #expect(write(fds[1], "x", 1) == 1)
        loop.runOnce(timeout: .seconds(1))
        #expect(probe.events.count == 1)
        #expect(probe.events.first?.0.contains(.readable) == true)
        #expect(probe.events.first?.1 == 7)
        loop.remove(fds[0])
        close(fds[0])
        loop.runOnce(timeout: .milliseconds(10))
        #expect(probe.events.count == 1)
        loop.unregister(registration)
        #expect(loop.statistics.handlers == 0)
    }

    @Test("events for a registration released in the same batch are dropped, even if its slot is reused")
    func staleEvents() throws {
        let loop = try EventLoop()
        defer { loop.close() }
        var a: [Int32] = [0, 0]
        var b: [Int32] = [0, 0]
        #expect(pipe(&a) == 0 && pipe(&b) == 0)
        defer { [a[0], a[1], b[0], b[1]].forEach { close($0) } }
        let first = Probe()
        let second = Probe()
        let newcomer = Probe()
        let r1 = loop.register(first)
        let r2 = loop.register(second)
        try loop.add(a[0], interest: .readable, for: r1)
        try loop.add(b[0], interest: .readable, for: r2)
        // Whichever runs first releases the other and gives its slot to a newcomer.
        first.onEvent = { _ in
            loop.remove(b[0])
            loop.unregister(r2)
            _ = loop.register(newcomer)
        }
        second.onEvent = { _ in
            loop.remove(a[0])
            loop.unregister(r1)
            _ = loop.register(newcomer)
        }
        _ = write(a[1], "x", 1)
        _ = write(b[1], "y", 1)
        loop.runOnce(timeout: .seconds(1))
        #expect(first.events.count + second.events.count == 1)
        #expect(newcomer.events.isEmpty)
    }

    @Test("timers fire at their deadline, rounded up to the tick, and not before")
    func timers() throws {
        var configuration = EventLoop.Configuration()
        configuration.timerTick = .milliseconds(10)
        let loop = try EventLoop(configuration: configuration)
        defer { loop.close() }
        let early = Probe()
        let late = Probe()
        let start = EventLoop.clock()
        loop.setTimer(loop.register(early), after: .milliseconds(50))
        loop.setTimer(loop.register(late), after: .milliseconds(120))
        #expect(loop.statistics.timers == 2)
        loop.run(until: .after(.milliseconds(300)))
        #expect(early.timers.count == 1 && late.timers.count == 1)
        let delays = (early.timers + late.timers).map { Double($0 - start) / 1e6 }
        #expect(delays[0] >= 49 && delays[0] < 100, "\(delays)")
        #expect(delays[1] >= 119 && delays[1] < 200, "\(delays)")
        #expect(loop.statistics.timers == 0)
    }

    @Test("setting a timer again moves it; cancelling removes it")
    func moveAndCancel() throws {
        var configuration = EventLoop.Configuration()
        configuration.timerTick = .milliseconds(5)
        let loop = try EventLoop(configuration: configuration)
        defer { loop.close() }
        let moved = Probe()
        let cancelled = Probe()
        let start = EventLoop.clock()
        let r1 = loop.register(moved)
        let r2 = loop.register(cancelled)
        loop.setTimer(r1, after: .milliseconds(10))
        loop.setTimer(r1, after: .milliseconds(60))
        loop.setTimer(r2, after: .milliseconds(10))
        loop.cancelTimer(r2)
        #expect(loop.statistics.timers == 1)
        loop.run(until: .after(.milliseconds(120)))
        #expect(cancelled.timers.isEmpty)
        #expect(moved.timers.count == 1)
        #expect(Double((moved.timers.first ?? 0) &- start) / 1e6 >= 59)
    }

    @Test("a LoopTimer stays registered after it fired until invalidated, and can be set again")
    func loopTimerInvalidate() throws {
        var configuration = EventLoop.Configuration()
        configuration.timerTick = .milliseconds(5)
        let loop = try EventLoop(configuration: configuration)
        defer { loop.close() }
        var fired = 0
        let timer = LoopTimer(loop: loop) { fired += 1 }
        #expect(loop.statistics.handlers == 0)
        timer.setUnlessArmed(after: .milliseconds(10))
        loop.run(until: .after(.milliseconds(40)))
        #expect(fired == 1)
        #expect(loop.statistics.handlers == 1, "the loop still holds it")
        timer.setUnlessArmed(after: .milliseconds(10))
        timer.invalidate()
        #expect(loop.statistics.handlers == 0)
        #expect(loop.statistics.timers == 0)
        loop.run(until: .after(.milliseconds(40)))
        #expect(fired == 1, "an invalidated timer does not fire")
        timer.setUnlessArmed(after: .milliseconds(10))
        loop.run(until: .after(.milliseconds(40)))
        #expect(fired == 2)
    }

    @Test("a timer further away than the wheel goes round and still fires on time")
    func longTimer() throws {
        var configuration = EventLoop.Configuration()
        configuration.timerTick = .milliseconds(1)
        configuration.timerBuckets = 8
        let loop = try EventLoop(configuration: configuration)
        defer { loop.close() }
        let probe = Probe()
        let registration = loop.register(probe)
        let start = EventLoop.clock()
        loop.setTimer(registration, after: .milliseconds(30))
        loop.run(until: .after(.milliseconds(80)))
        #expect(probe.timers.count == 1)
        let delay = Double((probe.timers.first ?? 0) &- start) / 1e6
        #expect(delay >= 29 && delay < 60)
    }

    @Test("timers of an unregistered handler are dropped")
    func droppedTimer() throws {
        var configuration = EventLoop.Configuration()
        configuration.timerTick = .milliseconds(5)
        let loop = try EventLoop(configuration: configuration)
        defer { loop.close() }
        let probe = Probe()
        let registration = loop.register(probe)
        loop.setTimer(registration, after: .milliseconds(10))
        loop.unregister(registration)
        #expect(loop.statistics.timers == 0)
        let other = Probe()
        _ = loop.register(other)  // takes the same slot
        loop.run(until: .after(.milliseconds(50)))
        #expect(probe.timers.isEmpty && other.timers.isEmpty)
    }

    @Test("deferred calls run after the batch, without waiting")
    func deferred() throws {
        let loop = try EventLoop()
        defer { loop.close() }
        let probe = Probe()
        let registration = loop.register(probe)
        loop.deferCall(registration)
        let start = Deadline.now
        loop.runOnce(timeout: .seconds(5))
        #expect(probe.deferred == 1)
        #expect(elapsedMilliseconds(since: start) < 1000)
    }

    @Test("another thread can run tasks on the loop and stop it")
    func remote() throws {
        let thread = try EventLoopThread.start()
        let counter = TaskCounter()
        for _ in 0..<100 { thread.execute { _ in counter.value.add(1, ordering: .relaxed) } }
        let handlers = thread.sync { loop -> Int in
            counter.value.add(1, ordering: .relaxed)
            return loop.statistics.handlers
        }
        #expect(handlers == 0)
        #expect(counter.value.load(ordering: .relaxed) == 101)
        thread.stopAndJoin()
        #expect(!thread.execute { _ in counter.value.add(1, ordering: .relaxed) })
    }

    @Test("run() returns after stop(), and close() tells handlers")
    func stopAndClose() throws {
        let loop = try EventLoop()
        let probe = Probe()
        _ = loop.register(probe)
        loop.remote.stop()
        loop.run()
        loop.close()
        #expect(probe.closed)
        #expect(loop.statistics.handlers == 0)
    }

    @Test("a descriptor watch calls its closure while the descriptor is ready")
    func watch() throws {
        let loop = try EventLoop()
        defer { loop.close() }
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        defer { fds.forEach { close($0) } }
        var seen = 0
        let watch = try DescriptorWatch(loop: loop, fd: fds[0]) { events in
            if events.contains(.readable) { seen += 1 }
        }
        _ = write(fds[1], "ab", 2)
        loop.runOnce(timeout: .seconds(1))
        loop.runOnce(timeout: .seconds(1))  // level-triggered: still readable
        #expect(seen == 2)
        watch.cancel()
        loop.runOnce(timeout: .milliseconds(10))
        #expect(seen == 2)
    }
}

@Suite("TimerWheel")
struct TimerWheelTests {
    static let tick: UInt64 = 1_000_000

    func registration(_ n: UInt32) -> EventLoop.Registration { EventLoop.Registration(slot: n, generation: 1) }

    @Test("entries come due in their tick, and the count follows")
    func due() {
        var wheel = TimerWheel(tick: .milliseconds(1), bucketCount: 16, now: 0)
        wheel.set(registration(1), at: 3 * TimerWheelTests.tick)
        wheel.set(registration(2), at: 3 * TimerWheelTests.tick + 1)  // rounds up to tick 4
        wheel.set(registration(3), at: 40 * TimerWheelTests.tick)  // beyond the wheel
        #expect(wheel.count == 3)
        var out: [TimerWheel.Entry] = []
        wheel.collect(now: 3 * TimerWheelTests.tick, into: &out)
        #expect(out.map(\.registration.slot) == [1])
        out.removeAll()
        wheel.collect(now: 20 * TimerWheelTests.tick, into: &out)
        #expect(out.map(\.registration.slot) == [2])
        out.removeAll()
        wheel.collect(now: 39 * TimerWheelTests.tick, into: &out)
        #expect(out.isEmpty)
        wheel.collect(now: 41 * TimerWheelTests.tick, into: &out)
        #expect(out.map(\.registration.slot) == [3])
        #expect(wheel.count == 0)
        #expect(wheel.nanosecondsToNextTick(now: 41 * TimerWheelTests.tick) == nil)
    }

    @Test("a deadline in the past fires on the next tick; a long gap visits every bucket once")
    func pastAndGap() {
        var wheel = TimerWheel(tick: .milliseconds(1), bucketCount: 4, now: 10 * TimerWheelTests.tick)
        wheel.set(registration(1), at: 0)
        for n in 2..<10 { wheel.set(registration(UInt32(n)), at: UInt64(10 + n) * TimerWheelTests.tick) }
        #expect(wheel.nanosecondsToNextTick(now: 10 * TimerWheelTests.tick) == TimerWheelTests.tick)
        var out: [TimerWheel.Entry] = []
        wheel.collect(now: 1000 * TimerWheelTests.tick, into: &out)
        #expect(Set(out.map(\.registration.slot)) == Set(1..<10))
        #expect(wheel.count == 0)
    }

    @Test("one entry per slot: moving and cancelling keep the other entries' positions right")
    func moveAndCancel() {
        var wheel = TimerWheel(tick: .milliseconds(1), bucketCount: 8, now: 0)
        // Many entries in one bucket, then remove from the middle and move some.
        for n in 0..<20 { wheel.set(registration(UInt32(n)), at: 5 * TimerWheelTests.tick) }
        for n in stride(from: 0, to: 20, by: 3) { wheel.cancel(slot: UInt32(n)) }
        for n in stride(from: 1, to: 20, by: 3) { wheel.set(registration(UInt32(n)), at: 6 * TimerWheelTests.tick) }
        wheel.cancel(slot: 99)
        #expect(wheel.count == 13)
        var out: [TimerWheel.Entry] = []
        wheel.collect(now: 5 * TimerWheelTests.tick, into: &out)
        #expect(Set(out.map(\.registration.slot)) == Set(stride(from: 2, to: 20, by: 3).map { UInt32($0) }))
        out.removeAll()
        wheel.collect(now: 6 * TimerWheelTests.tick, into: &out)
        #expect(Set(out.map(\.registration.slot)) == Set(stride(from: 1, to: 20, by: 3).map { UInt32($0) }))
        #expect(wheel.count == 0)
        // Cancelling after firing is harmless.
        wheel.cancel(slot: 1)
        #expect(wheel.count == 0)
    }
}

/// Tasks run, counted from several threads.
final class TaskCounter: Sendable {
    let value = Atomic(0)
}

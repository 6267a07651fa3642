#if canImport(Glibc)
import Glibc
#endif
import GatewayKit
import Loop
import Testing

/// BlockingWork: jobs on worker threads, completions back on the loop's thread.
@Suite("Blocking work off the loop")
struct BlockingWorkTests {
    func run(_ loop: EventLoop, until done: () -> Bool) {
        let deadline = Deadline.after(.seconds(10))
        while !done() && !deadline.hasPassed { loop.runOnce(timeout: .milliseconds(20)) }
    }

    /// A gate a job waits at until the test opens it.
    final class Gate: @unchecked Sendable {
        let open = Locked(false)
        func wait() { while !open.withLock({ $0 }) { usleep(1000) } }
    }

    @Test func resultsComeBackOnTheLoopsThreadAfterSubmitReturns() throws {
        let loop = try EventLoop()
        defer { loop.close() }
        let work = loop.resource(BlockingWork.self)
        let loopThread = pthread_self()
        var results: [Int] = []
        var onLoopThread = true
        var returned = false
        for n in 1...20 {
            let ticket = work.submit({ () -> Int in
                precondition(pthread_equal(pthread_self(), loopThread) == 0, "work runs off the loop")
                return n * n
            }) { square in
                onLoopThread = onLoopThread && pthread_equal(pthread_self(), loopThread) != 0 && returned
                results.append(square)
            }
            #expect(ticket != nil)
        }
        returned = true
        run(loop) { results.count == 20 }
        #expect(results.sorted() == (1...20).map { $0 * $0 })
        #expect(onLoopThread)
        #expect(work.pending == 0)
    }

    @Test func theLoopGoesOnWhileAJobBlocks() throws {
        let loop = try EventLoop()
        defer { loop.close() }
        let work = loop.resource(BlockingWork.self)
        let gate = Gate()
        var done = false
        _ = work.submit({ gate.wait() }) { done = true }
        // The loop keeps turning (a timer fires) while the job waits.
        var ticks = 0
        let timer = LoopTimer(loop: loop) { ticks += 1 }
        timer.setUnlessArmed(after: .milliseconds(10))
        run(loop) { ticks > 0 }
        #expect(!done)
        gate.open.withLock { $0 = true }
        run(loop) { done }
        #expect(done)
    }

    @Test func aCancelledTicketGetsNoCompletion() throws {
        let loop = try EventLoop()
        defer { loop.close() }
        let work = loop.resource(BlockingWork.self)
        var cancelled = false
        var kept = false
        let ticket = try #require(work.submit({ 1 }) { _ in cancelled = true })
        work.cancel(ticket)
        _ = work.submit({ 2 }) { _ in kept = true }
        run(loop) { kept }
        loop.runOnce(timeout: .milliseconds(20))
        #expect(kept && !cancelled)
    }

    @Test func moreThanTheLimitIsRefusedAndClosingJoinsTheThreads() throws {
        let loop = try EventLoop()
        let work = loop.resource(BlockingWork.self)
        let gate = Gate()
        var tickets = 0
        for _ in 0..<BlockingWork.limit where work.submit({ gate.wait() }, completion: {}) != nil { tickets += 1 }
        #expect(tickets == BlockingWork.limit)
        #expect(work.submit({ 0 }, completion: { _ in }) == nil)
        gate.open.withLock { $0 = true }
        // Closing with jobs queued: the running ones finish, the rest are dropped, no
        // completion runs, and the threads are joined (the test would hang otherwise).
        loop.close()
        #expect(work.pending == 0)
    }
}

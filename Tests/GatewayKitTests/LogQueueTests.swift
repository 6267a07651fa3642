import GatewayKit
import Glibc
import Testing

/// The queue's rules, driven as the writer drives it, without a thread or a descriptor.
@Suite("Log queue: bound, drops, order")
struct LogQueueTests {
    static func line(_ n: Int) -> [UInt8] { Array("line \(n)\n".utf8) }

    /// A writer's formatting: lines as they are, reports as `[N dropped]`.
    static func format(_ entry: LogQueue.Entry) -> [UInt8] {
        switch entry {
        case .line(let bytes): return bytes
        case .dropped(let n): return Array("[\(n) dropped]\n".utf8)
        }
    }

    /// Writes everything the queue gives, `limit` bytes a batch, as a target that takes it all.
    static func drain(_ queue: inout LogQueue, limit: Int = 1 << 16) -> String {
        var out: [UInt8] = []
        while queue.hasWork {
            let chunks = queue.next(maximumBytes: limit, format: format)
            let bytes = chunks.flatMap { $0 }
            out += bytes
            queue.wrote(bytes.count, of: chunks)
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func lines(_ range: ClosedRange<Int>) -> String { range.map { "line \($0)\n" }.joined() }

    @Test func keepsOrderWithinTheBound() {
        var queue = LogQueue(maximumLines: 10)
        for n in 1...10 {
            let queued = queue.push(Self.line(n))
            #expect(queued)
        }
        #expect(queue.count == 10 && queue.dropped == 0)
        #expect(Self.drain(&queue) == Self.lines(1...10))
        #expect(queue.isEmpty && queue.bytes == 0)
    }

    @Test func dropsAndCountsBeyondTheLineBoundThenReportsBeforeTheNextLine() {
        var queue = LogQueue(maximumLines: 4)
        for n in 1...4 {
            let queued = queue.push(Self.line(n))
            #expect(queued)
        }
        for n in 5...9 {
            let queued = queue.push(Self.line(n))
            #expect(!queued)
        }
        #expect(queue.dropped == 5 && queue.count == 4)
        // The target takes two lines: the next line fits, after the report.
        let chunks = queue.next(maximumBytes: 14, format: Self.format)
        #expect(chunks == [Self.line(1), Self.line(2)])
        queue.wrote(14, of: chunks)
        let queued10 = queue.push(Self.line(10))
        #expect(queued10)
        #expect(queue.dropped == 0)
        #expect(Self.drain(&queue) == Self.lines(3...4) + "[5 dropped]\n" + "line 10\n")
    }

    @Test func reportNeedsRoomForItselfAndTheLine() {
        var queue = LogQueue(maximumLines: 3)
        for n in 1...3 { queue.push(Self.line(n)) }
        queue.push(Self.line(4))
        let chunks = queue.next(maximumBytes: 0, format: Self.format)
        queue.wrote(chunks[0].count, of: chunks)
        // One entry free, but the line would need the report before it: dropped too.
        let queued5 = queue.push(Self.line(5))
        #expect(!queued5)
        #expect(queue.dropped == 2)
    }

    @Test func byteBound() {
        var queue = LogQueue(maximumLines: 100, maximumBytes: 20)
        let queued1 = queue.push(Self.line(1))  // 7 bytes
        #expect(queued1)
        let queued2 = queue.push(Self.line(2))  // 14
        #expect(queued2)
        let queued3 = queue.push(Self.line(3))  // 21 > 20
        #expect(!queued3)
        #expect(queue.bytes == 14 && queue.dropped == 1)
    }

    @Test func aLongLineStillGoesIntoAnEmptyQueue() {
        var queue = LogQueue(maximumLines: 4, maximumBytes: 4)
        let queued1 = queue.push(Self.line(1))
        #expect(queued1)
        let queued2 = queue.push(Self.line(2))
        #expect(!queued2)
    }

    @Test func countIsReportedWhenTheQueueEmptiesWithoutAnotherLine() {
        var queue = LogQueue(maximumLines: 2)
        for n in 1...5 { queue.push(Self.line(n)) }
        #expect(queue.dropped == 3)
        #expect(Self.drain(&queue) == Self.lines(1...2) + "[3 dropped]\n")
        #expect(!queue.hasWork && queue.dropped == 0)
    }

    @Test func batchesHoldWholeEntriesUpToTheLimitAndAtLeastOne() {
        var queue = LogQueue()
        for n in 1...5 { queue.push(Self.line(n)) }  // 7 bytes each
        let batch15 = queue.next(maximumBytes: 15, format: Self.format)
        #expect(batch15.count == 2)
        let batch14 = queue.next(maximumBytes: 14, format: Self.format)
        #expect(batch14.count == 2)
        let batch3 = queue.next(maximumBytes: 3, format: Self.format)
        #expect(batch3.count == 1)
        #expect(queue.count == 5)  // nothing leaves before `wrote`
    }

    @Test func aPartialWriteLeavesTheRestAtTheHead() {
        var queue = LogQueue()
        for n in 1...3 { queue.push(Self.line(n)) }
        let chunks = queue.next(maximumBytes: 100, format: Self.format)
        queue.wrote(10, of: chunks)  // "line 1\n" and "lin"
        #expect(queue.count == 2 && queue.bytes == 4 + 7)
        #expect(Self.drain(&queue) == "e 2\nline 3\n")
    }

    @Test func stalledTargetKeepsTheLineAndReportsOnlyOnceItTakesLinesAgain() {
        var queue = LogQueue(maximumLines: 2)
        queue.push(Self.line(1))
        queue.push(Self.line(2))
        let chunks = queue.next(maximumBytes: 100, format: Self.format)
        queue.stalled()  // ENOSPC
        #expect(queue.isStalled && queue.count == 2 && queue.hasWork)
        for n in 3...6 { queue.push(Self.line(n)) }
        #expect(queue.dropped == 4)
        let batch100 = queue.next(maximumBytes: 100, format: Self.format)  // the same lines again
        #expect(batch100 == chunks)
        queue.wrote(chunks.reduce(0) { $0 + $1.count }, of: chunks)
        #expect(!queue.isStalled)
        #expect(Self.drain(&queue) == "[4 dropped]\n")
    }

    /// A queue of one line whose target refused line 1 after line 2 had been dropped.
    static func afterARefusal() -> LogQueue {
        var queue = LogQueue(maximumLines: 1)
        queue.push(line(1))
        queue.push(line(2))
        refuseNext(&queue)
        return queue
    }

    /// The writer takes the next entry and the target refuses it.
    static func refuseNext(_ queue: inout LogQueue) {
        _ = queue.next(maximumBytes: 0, format: format)
        queue.refused()
    }

    @Test func noReportWhileStalledAndEmpty() {
        var queue = Self.afterARefusal()
        #expect(queue.isEmpty && queue.dropped == 2)  // line 1 given up, counted with line 2
        #expect(!queue.hasWork)  // the target refused: no report until it takes a line
        let queued3 = queue.push(Self.line(3))
        #expect(queued3)
        #expect(Self.drain(&queue) == "[2 dropped]\nline 3\n")
    }

    @Test func aRefusedReportAddsItsCountBack() {
        var queue = Self.afterARefusal()
        queue.push(Self.line(3))  // queued after "[2 dropped]"
        Self.refuseNext(&queue)  // the report
        Self.refuseNext(&queue)  // line 3
        #expect(queue.dropped == 3 && queue.isEmpty)
    }

    @Test func removeAllForgetsLinesAndCount() {
        var queue = LogQueue(maximumLines: 1)
        queue.push(Self.line(1))
        queue.push(Self.line(2))
        queue.removeAll()
        #expect(queue.isEmpty && queue.dropped == 0 && queue.bytes == 0 && !queue.hasWork)
    }

    @Test func manyLinesThroughASmallQueueKeepOrderAndAccountForEveryLine() {
        // A slow target: after every 7 lines logged it takes 3 entries.
        var queue = LogQueue(maximumLines: 16)
        var written: [String] = []
        for n in 1...2000 {
            queue.push(Self.line(n))
            if n % 7 == 0 {
                for _ in 0..<3 where queue.hasWork {
                    let chunks = queue.next(maximumBytes: 0, format: Self.format)
                    written.append(String(decoding: chunks[0], as: UTF8.self))
                    queue.wrote(chunks[0].count, of: chunks)
                }
            }
        }
        written += Self.drain(&queue).split(separator: "\n", omittingEmptySubsequences: true).map { $0 + "\n" }
        var last = 0
        var total = 0
        for text in written {
            if text.hasPrefix("line ") {
                let n = Int(text.dropFirst(5).dropLast())!
                #expect(n > last)
                last = n
                total += 1
            } else {
                total += Int(text.dropFirst().prefix { $0 != " " })!
            }
        }
        #expect(total == 2000)
        #expect(last == 2000 || written.last!.hasSuffix("dropped]\n"))
    }
}

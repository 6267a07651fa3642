import GatewayKit
import Glibc
import Testing

/// DaemonLog with its writer threads, on real descriptors: a file, and a FIFO that nobody
/// reads until the test says so (a stalled target, as a pipe or a syslog socket nobody reads).
@Suite("Daemon log: a queue and a writer thread per target")
struct DaemonLogTests {
    static func temporaryPath(_ name: String) -> String { "/tmp/bastion-daemonlog-\(getpid())-\(name)" }

    /// The file's lines, without their time stamps.
    static func messages(_ path: String) -> [String] {
        let text = String(decoding: UserDatabase.readFile(path) ?? [], as: UTF8.self)
        return text.split(separator: "\n").map { line in
            String(line.drop { $0 != "[" })
        }
    }

    /// A FIFO with its read end open (non-blocking), so that a writer can open it and fill it.
    static func fifo(_ path: String) throws -> Int32 {
        unlink(path)
        try #require(mkfifo(path, 0o600) == 0)
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        try #require(fd >= 0)
        return fd
    }

    /// Fills the FIFO at `path` until it takes no more (with `filler` lines), so that the
    /// next write to it blocks.
    static func fill(_ path: String) throws {
        let fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC)
        try #require(fd >= 0)
        defer { close(fd) }
        let line = Array("filler\n".utf8)
        while line.withUnsafeBytes({ Glibc.write(fd, $0.baseAddress, $0.count) }) > 0 {}
        try #require(errno == EAGAIN)
    }

    /// Reads `fd` until `done` holds for the lines read so far, for at most 10 seconds.
    static func readLines(_ fd: Int32, until done: ([String]) -> Bool) throws -> [String] {
        var text: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        let deadline = Deadline.after(.seconds(10))
        func lines() -> [String] {
            String(decoding: text, as: UTF8.self).split(separator: "\n").map { line in
                line.contains("[") ? String(line.drop { $0 != "[" }) : String(line)
            }
        }
        while !done(lines()) {
            try #require(try deadline.wait(for: fd, events: Int16(POLLIN)), "no more lines: \(lines().suffix(3))")
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n > 0 { text += chunk[0..<n] }
        }
        return lines()
    }

    /// The number of a `[NOTICE] line N` message, or nil.
    static func number(_ message: String) -> Int? {
        message.hasPrefix("[NOTICE] line ") ? Int(message.dropFirst("[NOTICE] line ".count)) : nil
    }

    /// N of a `[WARNING] N log lines dropped` message, or nil.
    static func droppedCount(_ message: String) -> Int? {
        guard message.hasPrefix("[WARNING] "), message.hasSuffix(" log lines dropped") else { return nil }
        return Int(message.dropFirst("[WARNING] ".count).prefix { $0 != " " })
    }

    @Test func fileTargetGetsEveryLineInOrder() throws {
        let path = Self.temporaryPath("file.log")
        defer { unlink(path) }
        let log = DaemonLog(targets: [LogTarget(kind: .file(path: path), level: .notice)])
        for n in 1...500 {
            log.notice("line \(n)")
            log.info("not wanted")
        }
        #expect(log.flush(timeout: .seconds(10)))
        #expect(Self.messages(path) == (1...500).map { "[NOTICE] line \($0)" })
    }

    @Test func stalledTargetDropsAndCountsThenReportsWhenItTakesLinesAgain() throws {
        let path = Self.temporaryPath("stalled.fifo")
        defer { unlink(path) }
        let reader = try Self.fifo(path)
        defer { close(reader) }
        try Self.fill(path)
        let log = DaemonLog(targets: [LogTarget(kind: .file(path: path), level: .notice)], maximumLines: 64)
        // The pipe is full and the queue holds 64 lines: every call returns all the same.
        for n in 1...5000 { log.notice("line \(n)") }
        #expect(!log.flush(timeout: .milliseconds(20)))
        // The reader starts: every line is either read, in order, or counted in a report.
        func accounted(_ lines: [String]) -> Int {
            lines.reduce(0) { $0 + (Self.number($1) != nil ? 1 : Self.droppedCount($1) ?? 0) }
        }
        let lines = try Self.readLines(reader) { accounted($0) >= 5000 }
        #expect(accounted(lines) == 5000)
        let numbers = lines.compactMap(Self.number)
        #expect(numbers == numbers.sorted() && Set(numbers).count == numbers.count)
        #expect(lines.contains { (Self.droppedCount($0) ?? 0) > 0 })
        #expect(lines.allSatisfy { $0 == "filler" || Self.number($0) != nil || Self.droppedCount($0) != nil })
        #expect(log.flush(timeout: .seconds(10)))
    }

    @Test func aStalledTargetDoesNotHoldUpAnother() throws {
        let fifoPath = Self.temporaryPath("other.fifo")
        let filePath = Self.temporaryPath("other.log")
        defer {
            unlink(fifoPath)
            unlink(filePath)
        }
        let reader = try Self.fifo(fifoPath)
        defer { close(reader) }
        let log = DaemonLog(targets: [
            LogTarget(kind: .file(path: fifoPath), level: .notice),
            LogTarget(kind: .file(path: filePath), level: .notice),
        ])
        try Self.fill(fifoPath)
        for n in 1...300 { log.notice("line \(n)") }
        let expected = (1...300).map { "[NOTICE] line \($0)" }
        let deadline = Deadline.after(.seconds(10))
        while Self.messages(filePath).count < 300 && !deadline.hasPassed { _ = poll(nil, 0, 10) }
        #expect(Self.messages(filePath) == expected)
        #expect(!log.flush(timeout: .milliseconds(20)))
        let read = try Self.readLines(reader) { $0.last == expected.last }
        #expect(read.filter { $0 != "filler" } == expected)
        #expect(log.flush(timeout: .seconds(10)))
    }

    @Test func reopenIsDoneByTheWriter() throws {
        let path = Self.temporaryPath("rotated.log")
        let old = path + ".1"
        defer {
            unlink(path)
            unlink(old)
        }
        let log = DaemonLog(targets: [LogTarget(kind: .file(path: path), level: .notice)])
        log.notice("before")
        #expect(log.flush(timeout: .seconds(10)))
        try #require(rename(path, old) == 0)
        // Done when reopen returns (a master forks its workers right after): the new file is
        // there, under the descriptor the log has kept, before any line is written to it.
        // Rotated again and again, since a reopen left to the writer is usually quick enough.
        for _ in 0..<200 {
            #expect(log.reopen())
            var status = stat()
            try #require(stat(path, &status) == 0, "the file is opened anew before reopen returns")
            try #require(unlink(path) == 0)
        }
        #expect(log.reopen())
        log.notice("after")
        #expect(log.flush(timeout: .seconds(10)))
        #expect(Self.messages(old) == ["[NOTICE] before"])
        #expect(Self.messages(path) == ["[NOTICE] after"])
    }
}

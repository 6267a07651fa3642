/// The lines waiting for one log target, in the order they were logged, with a bound and a
/// count of the lines that did not fit (HAProxy's behaviour: a stalled target costs log lines,
/// never service). Pure: no descriptors, no threads, no clock. `DaemonLog`'s writer drives it
/// under its lock; the tests drive it alone.
///
/// Ownership: the queue holds every entry until the writer says what became of it (`wrote`,
/// `stalled`, `refused`), so a write that must be tried again loses nothing and a line is
/// never written twice.
///
/// Drops: a line that finds the queue full (`maximumLines` entries or `maximumBytes` bytes of
/// lines) is dropped and counted. The count goes into the queue as a `.dropped(n)` entry just
/// before the next line that fits, which is where the lines went missing; when no line
/// follows, the writer gets the count as soon as it has emptied the queue and the target took
/// its last write. A line the target refuses outright (no syslog socket, a log file that could
/// not be opened) is counted the same way.
public struct LogQueue: Sendable {
    /// One queued item: a formatted line, or the report of `n` lines dropped (formatted by the
    /// writer when it writes it, with the time and process of that moment).
    public enum Entry: Equatable, Sendable {
        case line([UInt8])
        case dropped(Int)
    }

    /// The default bound per target: 1024 lines, which at the usual 100 to 200 bytes a line is
    /// some seconds of a busy daemon's logging and about 200 KiB...
    public static let defaultMaximumLines = 1024
    /// ... and at most 1 MiB of lines, whatever their length.
    public static let defaultMaximumBytes = 1 << 20

    public let maximumLines: Int
    public let maximumBytes: Int

    private var entries: [Entry] = []
    private var head = 0
    /// Bytes of the queued lines.
    public private(set) var bytes = 0
    /// Lines dropped (or refused) since the last report was queued.
    public private(set) var dropped = 0
    /// True after the target answered "not now" or refused a line, until it takes one again.
    public private(set) var isStalled = false

    public init(maximumLines: Int = defaultMaximumLines, maximumBytes: Int = defaultMaximumBytes) {
        self.maximumLines = max(1, maximumLines)
        self.maximumBytes = max(1, maximumBytes)
    }

    /// Queued entries, reports included.
    public var count: Int { entries.count - head }

    public var isEmpty: Bool { head == entries.count }

    /// True while the writer has something to do: an entry to write, or a count of dropped
    /// lines to report now that the target takes lines again.
    public var hasWork: Bool { !isEmpty || (dropped > 0 && !isStalled) }

    // MARK: - The logging side

    /// Queues `line`, after a report of the lines dropped before it if there were any. Returns
    /// false, and counts the line, when it does not fit. A line longer than the byte bound
    /// still goes into an empty queue, so that no line is refused for its length alone.
    @discardableResult
    public mutating func push(_ line: [UInt8]) -> Bool {
        let needed = dropped > 0 ? 2 : 1
        guard isEmpty || (count + needed <= maximumLines && bytes + line.count <= maximumBytes) else {
            dropped += 1
            return false
        }
        if dropped > 0 {
            entries.append(.dropped(dropped))
            dropped = 0
        }
        entries.append(.line(line))
        bytes += line.count
        return true
    }

    // MARK: - The writer's side

    /// The bytes to write next, one array per entry from the head: as many entries as fit in
    /// `limit` bytes, at least one (a syslog writer asks with 0: one datagram). A report of
    /// dropped lines that is due is queued first. Empty when there is nothing to write. The
    /// entries stay queued until `wrote`, `stalled` or `refused`.
    public mutating func next(maximumBytes limit: Int, format: (Entry) -> [UInt8]) -> [[UInt8]] {
        if isEmpty && dropped > 0 && !isStalled {
            entries.append(.dropped(dropped))
            dropped = 0
        }
        var out: [[UInt8]] = []
        var total = 0
        for entry in entries[head...] {
            let bytes = format(entry)
            if !out.isEmpty && total + bytes.count > limit { break }
            out.append(bytes)
            total += bytes.count
        }
        return out
    }

    /// The writer wrote `written` bytes of `formatted` (what `next` gave it): the entries
    /// written whole leave the queue; of one written in part, the rest stays at the head.
    public mutating func wrote(_ written: Int, of formatted: [[UInt8]]) {
        isStalled = false
        var left = written
        for chunk in formatted {
            guard !isEmpty else { return }
            if left >= chunk.count {
                left -= chunk.count
                _ = removeHead()
            } else {
                if left > 0 {
                    if case .line(let old) = entries[head] { bytes -= old.count }
                    entries[head] = .line(Array(chunk[left...]))
                    bytes += chunk.count - left
                }
                return
            }
        }
    }

    /// The target said "not now" (ENOSPC, EAGAIN, ENOBUFS): the head entry stays for the
    /// writer to try again after a pause; lines that do not fit meanwhile are counted.
    public mutating func stalled() { isStalled = true }

    /// The target refused the head entry for good: it is dropped and counted (a report
    /// refused adds its own count back), to be reported once the target takes lines again.
    public mutating func refused() {
        isStalled = true
        switch removeHead() {
        case .line: dropped += 1
        case .dropped(let n): dropped += n
        case nil: break
        }
    }

    /// Forgets every entry and the count: a forked child's copy, whose lines the parent writes.
    public mutating func removeAll() {
        entries = []
        head = 0
        bytes = 0
        dropped = 0
        isStalled = false
    }

    private mutating func removeHead() -> Entry? {
        guard !isEmpty else { return nil }
        let entry = entries[head]
        if case .line(let line) = entry { bytes -= line.count }
        head += 1
        if head == entries.count {
            entries.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= 256 && head * 2 >= entries.count {
            entries.removeFirst(head)
            head = 0
        }
        return entry
    }
}

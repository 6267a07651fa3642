/// A server's status line: `+OK` or `-ERR` and the rest (RFC 1939 section 3: the indicators
/// are in upper case). Anything else is not POP3, and pop3.proxy ends the session on it.
public enum POP3Status: Equatable, Sendable {
    case ok
    case error

    /// The status of `line` (without its line end), nil when it is neither `+OK` nor `-ERR`
    /// followed by the end or a space.
    public static func of(_ line: some Collection<UInt8>) -> POP3Status? {
        if hasIndicator(line, "+OK") { return .ok }
        if hasIndicator(line, "-ERR") { return .error }
        return nil
    }

    private static func hasIndicator(_ line: some Collection<UInt8>, _ indicator: StaticString) -> Bool {
        let word = UnsafeRawBufferPointer(start: indicator.utf8Start, count: indicator.utf8CodeUnitCount)
        guard line.starts(with: word) else { return false }
        let after = line.dropFirst(word.count)
        return after.first == nil || after.first == UInt8(ascii: " ")
    }
}

/// Lines of a byte stream, kept only up to a bound: the status lines of a server and the
/// command lines of a client. A line ends at LF (a CR before it is dropped); a line longer
/// than `limit` is an error, so a peer that never sends a line end holds at most `limit`
/// bytes of the proxy's memory.
public struct LineReader: Sendable {
    public let limit: Int
    private var pending: [UInt8] = []

    public init(limit: Int) { self.limit = limit }

    /// Bytes held for an unfinished line.
    public var pendingCount: Int { pending.count }

    public enum Line: Equatable, Sendable {
        /// A whole line, without CRLF or LF, and how many of the bytes given it used.
        case line([UInt8], used: Int)
        /// No line end yet: every byte given is kept.
        case incomplete
        /// The line is longer than the limit.
        case tooLong
    }

    /// The first line that `bytes` completes. The caller gives the rest again (from `used`).
    public mutating func next(_ bytes: UnsafeRawBufferPointer) -> Line {
        guard let end = bytes.firstIndex(of: 10) else {
            guard pending.count + bytes.count <= limit else { return .tooLong }
            pending += bytes
            return .incomplete
        }
        guard pending.count + end <= limit else { return .tooLong }
        var line = pending + bytes[..<end]
        pending.removeAll(keepingCapacity: true)
        if line.last == 13 { line.removeLast() }
        return .line(line, used: end + 1)
    }
}

/// Finds the end of a multi-line answer (RFC 1939 section 3: a line holding a single `.`,
/// after the status line) in the bytes as they stream by, without keeping any of them: the
/// proxy relays every byte unchanged (dot-stuffing, long lines, 8-bit bytes, bare CR or LF
/// all pass as they are) and only watches for `CRLF . CRLF`. A line starts after CRLF (or at
/// the start of the body), so a `.` after a bare LF is data, as a server that sends bare LF
/// has not ended its answer by RFC 1939's rule either.
public struct MultilineEnd: Sendable {
    private enum State: UInt8 {
        /// At the start of a line.
        case lineStart
        /// `.` at the start of a line.
        case dot
        /// `.` CR at the start of a line.
        case dotCR
        /// Inside a line.
        case inLine
        /// CR inside a line.
        case sawCR
    }

    private var state = State.lineStart

    public init() {}

    /// How many of `bytes` belong to the answer: all of them (nil, the end is not among them)
    /// or the count up to and including the final CRLF.
    public mutating func scan(_ bytes: UnsafeRawBufferPointer) -> Int? {
        var i = 0
        let count = bytes.count
        while i < count {
            let byte = bytes[i]
            i += 1
            switch state {
            case .lineStart:
                state = byte == UInt8(ascii: ".") ? .dot : byte == 13 ? .sawCR : .inLine
            case .dot:
                state = byte == 13 ? .dotCR : .inLine
            case .dotCR:
                if byte == 10 {
                    state = .lineStart
                    return i
                }
                state = byte == 13 ? .sawCR : .inLine
            case .inLine:
                // The body of a line: skip to its CR at once.
                if byte == 13 {
                    state = .sawCR
                } else if let cr = memchrIndex(bytes, from: i, 13) {
                    i = cr + 1
                    state = .sawCR
                } else {
                    i = count
                }
            case .sawCR:
                state = byte == 10 ? .lineStart : byte == 13 ? .sawCR : .inLine
            }
        }
        return nil
    }

    @inline(__always)
    private func memchrIndex(_ bytes: UnsafeRawBufferPointer, from start: Int, _ value: UInt8) -> Int? {
        guard start < bytes.count, let base = bytes.baseAddress else { return nil }
        guard let found = memchr(base + start, Int32(value), bytes.count - start) else { return nil }
        return base.distance(to: UnsafeRawPointer(found))
    }
}

#if canImport(Glibc)
import Glibc
#endif

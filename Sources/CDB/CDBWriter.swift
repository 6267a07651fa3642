/// Errors a cdb writer reports. The messages are djb's where a djb program would print one.
public enum CDBWriteError: Error, Equatable, CustomStringConvertible {
    /// The database would pass the format's 4 GiB limit.
    case tooLarge
    /// The sink failed with this errno.
    case system(Int32)

    public var description: String {
        switch self {
        case .tooLarge: return "database would exceed the cdb format's 4 GiB limit"
        case .system(let errno): return "errno \(errno)"
        }
    }
}

/// Where a writer's bytes go: a file descriptor in the tools, an array in tests.
public protocol CDBSink {
    /// Appends bytes at the current end.
    mutating func write(_ bytes: UnsafeRawBufferPointer) throws(CDBWriteError)
    /// Overwrites the first bytes (the 2048-byte header) once everything else is written.
    mutating func writeHeader(_ bytes: UnsafeRawBufferPointer) throws(CDBWriteError)
}

/// An in-memory sink; `bytes` holds the finished database.
public struct CDBMemorySink: CDBSink {
    public private(set) var bytes: [UInt8] = []
    public init() {}
    public mutating func write(_ b: UnsafeRawBufferPointer) throws(CDBWriteError) { bytes.append(contentsOf: b) }
    public mutating func writeHeader(_ b: UnsafeRawBufferPointer) throws(CDBWriteError) {
        for i in 0..<b.count { bytes[i] = b[i] }
    }
}

/// Builds a constant database with exactly the record order and hash-table layout of djb's
/// cdb_make, so the same records in the same order give the same bytes.
///
/// Records are written as they are added (through a 64 KiB buffer); only 8 bytes per record
/// (hash and position) are kept in memory until `finish()` writes the tables.
public struct CDBWriter<Sink: CDBSink> {
    public private(set) var sink: Sink
    private var hashes: [UInt32] = []
    private var positions: [UInt32] = []
    private var position: UInt64 = 2048
    private let buffer = WriteBuffer(capacity: 65536)

    public init(sink: Sink) throws(CDBWriteError) {
        self.sink = sink
        let zeros = [UInt8](repeating: 0, count: 2048)
        var start = sink
        try zeros.withUnsafeBytes { b in Result { () throws(CDBWriteError) in try start.write(b) } }.get()
        self.sink = start
    }

    /// Number of records added so far.
    public var count: Int { hashes.count }

    /// Adds one record. Keys may repeat; readers find the first one added.
    public mutating func add(key: UnsafeRawBufferPointer, data: UnsafeRawBufferPointer) throws(CDBWriteError) {
        let recordSize = 8 + UInt64(key.count) + UInt64(data.count)
        // 8 more bytes per record are needed for its hash slots (two slots of 8 bytes each
        // are reserved per record at the end: 16 bytes).
        guard position + recordSize + 16 * UInt64(hashes.count + 1) <= UInt64(UInt32.max) else {
            throw .tooLarge
        }
        hashes.append(cdbHash(key))
        positions.append(UInt32(position))
        var header = (UInt32(key.count).littleEndian, UInt32(data.count).littleEndian)
        try withUnsafeBytes(of: &header) { b in Result { () throws(CDBWriteError) in try put(b) } }.get()
        try put(key)
        try put(data)
        position += recordSize
    }

    /// Convenience for byte arrays.
    public mutating func add(key: [UInt8], data: [UInt8]) throws(CDBWriteError) {
        try key.withUnsafeBytes { k in
            data.withUnsafeBytes { d in Result { () throws(CDBWriteError) in try self.add(key: k, data: d) } }
        }.get()
    }

    private mutating func put(_ bytes: UnsafeRawBufferPointer) throws(CDBWriteError) {
        if buffer.count + bytes.count > buffer.capacity {
            try flush()
            if bytes.count >= buffer.capacity {
                try sink.write(bytes)
                return
            }
        }
        buffer.append(bytes)
    }

    private mutating func flush() throws(CDBWriteError) {
        guard buffer.count > 0 else { return }
        try sink.write(UnsafeRawBufferPointer(start: buffer.base, count: buffer.count))
        buffer.count = 0
    }

    /// Writes the 256 hash tables and the header. The writer must not be used afterwards.
    public mutating func finish() throws(CDBWriteError) {
        let n = hashes.count
        var counts = [Int](repeating: 0, count: 256)
        for h in hashes { counts[Int(h & 255)] += 1 }
        // Group records by table, keeping the order they were added in (cdb_make's split),
        // as (hash, position) pairs so the table pass reads them sequentially.
        var start = [Int](repeating: 0, count: 257)
        for i in 0..<256 { start[i + 1] = start[i] + counts[i] }
        var next = start
        var split = [UInt64](repeating: 0, count: n)
        for i in 0..<n {
            let h = hashes[i]
            let b = Int(h & 255)
            split[next[b]] = UInt64(h) << 32 | UInt64(positions[i])
            next[b] += 1
        }
        var header = [UInt8](repeating: 0, count: 2048)
        // One table at a time, as (hash, position) little-endian word pairs, written whole.
        var table = [UInt32](repeating: 0, count: 4 * (counts.max() ?? 0))
        for t in 0..<256 {
            let count = counts[t]
            let len = 2 * count
            storeLE(UInt32(position), into: &header, at: 8 * t)
            storeLE(UInt32(len), into: &header, at: 8 * t + 4)
            guard len > 0 else { continue }
            try table.withUnsafeMutableBufferPointer { (slots) throws(CDBWriteError) in
                for u in 0..<(2 * len) { slots[u] = 0 }
                for j in start[t]..<start[t + 1] {
                    let h = UInt32(truncatingIfNeeded: split[j] >> 32)
                    var slot = Int((h >> 8) % UInt32(len))
                    while slots[2 * slot + 1] != 0 {
                        slot += 1
                        if slot == len { slot = 0 }
                    }
                    slots[2 * slot] = h.littleEndian
                    slots[2 * slot + 1] = UInt32(truncatingIfNeeded: split[j]).littleEndian
                }
                try put(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(slots)[0..<(8 * len)]))
            }
            position += 8 * UInt64(len)
            guard position <= UInt64(UInt32.max) else { throw .tooLarge }
        }
        try flush()
        try header.withUnsafeBytes { b in Result { () throws(CDBWriteError) in try self.sink.writeHeader(b) } }.get()
    }
}

@inline(__always)
func storeLE(_ value: UInt32, into bytes: inout [UInt8], at offset: Int) {
    bytes[offset] = UInt8(truncatingIfNeeded: value)
    bytes[offset + 1] = UInt8(truncatingIfNeeded: value >> 8)
    bytes[offset + 2] = UInt8(truncatingIfNeeded: value >> 16)
    bytes[offset + 3] = UInt8(truncatingIfNeeded: value >> 24)
}

/// The writer's output buffer: raw memory, so appending is a memcpy. Shared by copies of a
/// writer, which must therefore not be used side by side (nobody needs to).
final class WriteBuffer {
    let base: UnsafeMutableRawPointer
    let capacity: Int
    var count = 0

    init(capacity: Int) {
        self.capacity = capacity
        base = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 16)
    }

    @inline(__always)
    func append(_ bytes: UnsafeRawBufferPointer) {
        guard let source = bytes.baseAddress, bytes.count > 0 else { return }
        (base + count).copyMemory(from: source, byteCount: bytes.count)
        count += bytes.count
    }

    deinit { base.deallocate() }
}

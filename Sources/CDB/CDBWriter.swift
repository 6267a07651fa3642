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
    private var buffer: [UInt8] = []
    private static var bufferSize: Int { 65536 }

    public init(sink: Sink) throws(CDBWriteError) {
        self.sink = sink
        buffer.reserveCapacity(Self.bufferSize)
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
        try putWord(UInt32(key.count))
        try putWord(UInt32(data.count))
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
        if buffer.count + bytes.count > Self.bufferSize {
            try flush()
            if bytes.count >= Self.bufferSize {
                try sink.write(bytes)
                return
            }
        }
        buffer.append(contentsOf: bytes)
    }

    @inline(__always)
    private mutating func putWord(_ w: UInt32) throws(CDBWriteError) {
        if buffer.count + 4 > Self.bufferSize { try flush() }
        buffer.append(UInt8(truncatingIfNeeded: w))
        buffer.append(UInt8(truncatingIfNeeded: w >> 8))
        buffer.append(UInt8(truncatingIfNeeded: w >> 16))
        buffer.append(UInt8(truncatingIfNeeded: w >> 24))
    }

    private mutating func flush() throws(CDBWriteError) {
        guard !buffer.isEmpty else { return }
        try buffer.withUnsafeBytes { b in Result { () throws(CDBWriteError) in try self.sink.write(b) } }.get()
        buffer.removeAll(keepingCapacity: true)
    }

    /// Writes the 256 hash tables and the header. The writer must not be used afterwards.
    public mutating func finish() throws(CDBWriteError) {
        let n = hashes.count
        var counts = [Int](repeating: 0, count: 256)
        for h in hashes { counts[Int(h & 255)] += 1 }
        // Group records by table, keeping the order they were added in (cdb_make's split).
        var start = [Int](repeating: 0, count: 257)
        for i in 0..<256 { start[i + 1] = start[i] + counts[i] }
        var next = start
        var split = [Int](repeating: 0, count: n)
        for i in 0..<n {
            let b = Int(hashes[i] & 255)
            split[next[b]] = i
            next[b] += 1
        }
        var header = [UInt8](repeating: 0, count: 2048)
        var slotHash = [UInt32](repeating: 0, count: 2 * (counts.max() ?? 0))
        var slotPos = [UInt32](repeating: 0, count: slotHash.count)
        for table in 0..<256 {
            let count = counts[table]
            let len = 2 * count
            storeLE(UInt32(position), into: &header, at: 8 * table)
            storeLE(UInt32(len), into: &header, at: 8 * table + 4)
            guard len > 0 else { continue }
            for u in 0..<len {
                slotHash[u] = 0
                slotPos[u] = 0
            }
            for j in start[table]..<start[table + 1] {
                let r = split[j]
                var where_ = Int((hashes[r] >> 8) % UInt32(len))
                while slotPos[where_] != 0 {
                    where_ += 1
                    if where_ == len { where_ = 0 }
                }
                slotHash[where_] = hashes[r]
                slotPos[where_] = positions[r]
            }
            for u in 0..<len {
                try putWord(slotHash[u])
                try putWord(slotPos[u])
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

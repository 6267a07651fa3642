import Testing
import CDB

/// A sink that keeps nothing but a count and the header, so a 4 GiB database costs no memory.
struct CountingSink: CDBSink {
    var written: UInt64 = 0
    var header: [UInt8] = []
    mutating func write(_ bytes: UnsafeRawBufferPointer) throws(CDBWriteError) { written += UInt64(bytes.count) }
    mutating func writeHeader(_ bytes: UnsafeRawBufferPointer) throws(CDBWriteError) { header = Array(bytes) }
}

/// A sink that fails with an errno once it has taken `limit` bytes.
struct FailingSink: CDBSink {
    var limit: Int
    var errno: Int32 = 28
    var headerFails = false
    var bytes: [UInt8] = []
    mutating func write(_ b: UnsafeRawBufferPointer) throws(CDBWriteError) {
        guard bytes.count + b.count <= limit else { throw .system(errno) }
        bytes.append(contentsOf: b)
    }
    mutating func writeHeader(_ b: UnsafeRawBufferPointer) throws(CDBWriteError) {
        if headerFails { throw .system(errno) }
        for i in 0..<b.count { bytes[i] = b[i] }
    }
}

// Serialized so the two 64 MiB allocations are never alive at the same time.
@Suite("cdb writer limits and sink errors", .serialized)
struct CDBWriterLimitTests {
    /// The file may be at most 2^32 - 1 bytes. Records are 64 MiB views of one reused
    /// allocation (the writer hands inputs of 64 KiB and more straight to the sink, which
    /// drops them), so the test needs 64 MiB of memory and no copying.
    @Test func fourGiBLimit() throws {
        let chunk = 64 << 20
        let big = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 16)
        defer { big.deallocate() }
        big.initializeMemory(as: UInt8.self, repeating: 0x5a)
        let data = UnsafeRawBufferPointer(big)
        let limit = UInt64(UInt32.max)

        var writer = try CDBWriter(sink: CountingSink())
        var position: UInt64 = 2048
        func add(_ key: UInt8, _ data: UnsafeRawBufferPointer) throws(CDBWriteError) {
            try [key].withUnsafeBytes { k in
                Result { () throws(CDBWriteError) in try writer.add(key: k, data: data) }
            }.get()
        }

        // 63 records of 64 MiB + 9 bytes fit; the 64th would need 2^32 + 2048 + ... bytes.
        for i in 0..<63 {
            try add(UInt8(i), data)
            position += 8 + 1 + UInt64(chunk)
        }
        #expect(writer.count == 63)
        #expect(writer.sink.written == position)
        #expect(throws: CDBWriteError.tooLarge) { try add(63, data) }
        #expect(writer.count == 63)
        #expect(writer.sink.written == position)

        // The largest record that still fits, counting 16 bytes of hash table per record.
        let room = limit - position - 16 * 64 - 8 - 1
        #expect(room < UInt64(chunk))
        let tooBig = UnsafeRawBufferPointer(rebasing: data[0..<Int(room) + 1])
        #expect(throws: CDBWriteError.tooLarge) { try add(63, tooBig) }
        #expect(writer.count == 63)
        try add(63, UnsafeRawBufferPointer(rebasing: data[0..<Int(room)]))
        position += 8 + 1 + room
        #expect(writer.count == 64)
        // Now even an empty record (8 bytes + 16 of table) is too much.
        #expect(throws: CDBWriteError.tooLarge) { try writer.add(key: [], data: []) }
        #expect(writer.count == 64)

        try writer.finish()
        // Exactly 2^32 - 1 bytes: header, records, 128 slots.
        #expect(position + 16 * 64 == limit)
        #expect(writer.sink.written == limit)
        let header = writer.sink.header
        #expect(header.count == 2048)
        var tablesEnd: UInt64 = position
        var slotTotal: UInt64 = 0
        for t in 0..<256 {
            let start = UInt64(word(header, at: 8 * t)), slots = UInt64(word(header, at: 8 * t + 4))
            #expect(start == tablesEnd, "table \(t) starts where the previous one ends")
            tablesEnd = start + 8 * slots
            slotTotal += slots
            // Keys are the single bytes 0...63, hashing to 0xa5 ^ byte: one record per table.
            #expect(slots == 0 || slots == 2)
        }
        #expect(slotTotal == 128)
        #expect(tablesEnd == limit)
    }

    /// A single add whose record alone passes the limit.
    @Test func oneRecordPastTheLimit() throws {
        let chunk = 64 << 20
        let big = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 16)
        defer { big.deallocate() }
        big.initializeMemory(as: UInt8.self, repeating: 0)
        var writer = try CDBWriter(sink: CountingSink())
        // Fill to just under the limit with empty keys.
        let n = 63
        for _ in 0..<n {
            try writer.add(key: UnsafeRawBufferPointer(start: nil, count: 0), data: UnsafeRawBufferPointer(big))
        }
        // What is left for the last record's data once its 8-byte head and the 64 records'
        // 16 bytes of hash table each are counted.
        let used: UInt64 = 2048 + UInt64(n) * (8 + UInt64(chunk))
        let spare = UInt64(UInt32.max) - used - 16 * UInt64(n + 1) - 8
        let fits = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(big)[0..<Int(spare)])
        let overflows = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(big)[0..<Int(spare) + 1])
        #expect(throws: CDBWriteError.tooLarge) {
            try writer.add(key: UnsafeRawBufferPointer(start: nil, count: 0), data: overflows)
        }
        try writer.add(key: UnsafeRawBufferPointer(start: nil, count: 0), data: fits)
        try writer.finish()
        #expect(writer.sink.written == UInt64(UInt32.max))
        // All 64 records share the empty key's table 5: 128 slots.
        #expect(word(writer.sink.header, at: 8 * 5 + 4) == 128)
    }

    @Test func initReportsSinkFailure() {
        #expect(throws: CDBWriteError.system(28)) { try CDBWriter(sink: FailingSink(limit: 0)) }
        #expect(throws: CDBWriteError.system(5)) { try CDBWriter(sink: FailingSink(limit: 2047, errno: 5)) }
    }

    /// A sink that fills up: the error reaches the caller of add (once the buffer is flushed)
    /// or finish, whichever first writes past the limit.
    @Test(arguments: [2048, 2049, 3000, 70_000, 200_000, 1_000_000])
    func sinkFailurePropagates(limit: Int) {
        var rng = SplitMix64(seed: UInt64(limit))
        let result = Result { () throws(CDBWriteError) in
            var writer = try CDBWriter(sink: FailingSink(limit: limit))
            for i in 0..<400 { try writer.add(key: bytes("key\(i)"), data: rng.bytes(count: 900)) }
            try writer.finish()
        }
        // 400 records of about 915 bytes: over 360 KB, so only the largest limit succeeds.
        if limit >= 1_000_000 {
            #expect(throws: Never.self) { try result.get() }
        } else {
            #expect(throws: CDBWriteError.system(28)) { try result.get() }
        }
    }

    @Test func headerWriteFailure() {
        #expect(throws: CDBWriteError.system(9)) {
            var writer = try CDBWriter(sink: FailingSink(limit: .max, errno: 9, headerFails: true))
            try writer.add(key: bytes("k"), data: bytes("v"))
            try writer.finish()
        }
    }

    @Test func largeRecordWrittenThroughReachesTheSink() throws {
        // Bytes of a record over 64 KiB must arrive in order around the buffered words.
        var rng = SplitMix64(seed: 99)
        let big = rng.bytes(count: 300_000)
        var writer = try CDBWriter(sink: FailingSink(limit: .max))
        try writer.add(key: bytes("x"), data: bytes("y"))
        try writer.add(key: bytes("big"), data: big)
        try writer.add(key: bytes("z"), data: [])
        try writer.finish()
        let expected = referenceDatabase([(bytes("x"), bytes("y")), (bytes("big"), big), (bytes("z"), [])])
        #expect(writer.sink.bytes == expected)
    }
}

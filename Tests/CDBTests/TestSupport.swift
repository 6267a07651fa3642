import CDB

// MARK: - Helpers shared by the CDB tests

/// Bytes of a string, NULs and all.
func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

/// Little-endian encoding of a 32-bit word, as the cdb format stores every number.
func le32(_ v: Int) -> [UInt8] {
    precondition(v >= 0 && v <= Int(UInt32.max))
    return [UInt8(v & 0xff), UInt8((v >> 8) & 0xff), UInt8((v >> 16) & 0xff), UInt8((v >> 24) & 0xff)]
}

func le32(_ v: UInt32) -> [UInt8] { le32(Int(v)) }

/// Reads a little-endian word back out of a byte array.
func word(_ b: [UInt8], at offset: Int) -> UInt32 {
    UInt32(b[offset]) | UInt32(b[offset + 1]) << 8 | UInt32(b[offset + 2]) << 16 | UInt32(b[offset + 3]) << 24
}

/// djb's hash written independently of the module: 64-bit arithmetic, masked by hand.
func referenceHash(_ key: [UInt8]) -> UInt32 {
    var h: UInt64 = 5381
    for c in key {
        h = ((h * 33) & 0xffff_ffff) ^ UInt64(c)
    }
    return UInt32(h)
}

/// A straightforward port of djb's cdb_make, independent of `CDBWriter`, for differential tests.
func referenceDatabase(_ records: [([UInt8], [UInt8])]) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: 2048)
    var entries: [(hash: UInt32, position: UInt32)] = []
    for (key, data) in records {
        entries.append((referenceHash(key), UInt32(out.count)))
        out += le32(key.count) + le32(data.count) + key + data
    }
    var header: [UInt8] = []
    for table in 0..<256 {
        let members = entries.filter { Int($0.hash & 255) == table }
        let length = 2 * members.count
        header += le32(out.count) + le32(length)
        var slots = [(hash: UInt32, position: UInt32)](repeating: (0, 0), count: length)
        for entry in members {
            var slot = Int((entry.hash >> 8) % UInt32(length))
            while slots[slot].position != 0 { slot = (slot + 1) % length }
            slots[slot] = entry
        }
        for slot in slots { out += le32(slot.hash) + le32(slot.position) }
    }
    out.replaceSubrange(0..<2048, with: header)
    return out
}

/// One record as plain bytes, comparable in expectations.
struct Record: Equatable, CustomStringConvertible {
    var key: [UInt8]
    var data: [UInt8]
    init(_ key: [UInt8], _ data: [UInt8]) {
        self.key = key
        self.data = data
    }
    var description: String { "\(key) -> \(data.count) bytes" }
}

/// Builds a database with the module's writer into memory.
func buildDatabase(_ records: [([UInt8], [UInt8])]) throws -> [UInt8] {
    var writer = try CDBWriter(sink: CDBMemorySink())
    for (key, data) in records { try writer.add(key: key, data: data) }
    try writer.finish()
    return writer.sink.bytes
}

/// Owns a heap copy of a database for as long as a reader over it is used.
final class DatabaseMemory {
    let buffer: UnsafeMutableRawBufferPointer
    init(_ db: [UInt8]) {
        // An exact-size allocation, so reading one byte past the end is a real overrun.
        buffer = .allocate(byteCount: db.count, alignment: 1)
        db.withUnsafeBytes { buffer.copyMemory(from: $0) }
    }
    deinit { buffer.deallocate() }
}

/// A reader over an exact-size private copy of `db`, kept alive by the reader itself.
func reader(_ db: [UInt8]) -> CDBReader {
    if db.isEmpty { return CDBReader(bytes: UnsafeRawBufferPointer(start: nil, count: 0)) }
    let memory = DatabaseMemory(db)
    return CDBReader(bytes: UnsafeRawBufferPointer(memory.buffer), owner: memory)
}

/// A lookup's outcome with the reader's typed error kept.
func attempt<T>(_ body: () throws(CDBReadError) -> T) -> Result<T, CDBReadError> {
    Result { () throws(CDBReadError) -> T in try body() }
}

extension CDBReader {
    /// First data for `key` as bytes, nil when absent.
    func firstData(_ key: [UInt8]) throws(CDBReadError) -> [UInt8]? {
        guard let r = try find(key) else { return nil }
        return Array(bytes[r])
    }

    /// Every data for `key` as bytes, in insertion order.
    func allData(_ key: [UInt8]) throws(CDBReadError) -> [[UInt8]] {
        let ranges = try key.withUnsafeBytes { k in
            Result { () throws(CDBReadError) -> [Range<Int>] in try findAll(k) }
        }.get()
        return ranges.map { Array(bytes[$0]) }
    }

    /// Every record in file order.
    func allRecords() throws(CDBReadError) -> [Record] {
        try records().map { Record(Array(bytes[$0.key]), Array(bytes[$0.data])) }
    }
}

/// SplitMix64: a tiny deterministic generator so every run sees the same "random" inputs.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

extension SplitMix64 {
    mutating func bytes(count: Int, from alphabet: [UInt8]? = nil) -> [UInt8] {
        (0..<count).map { _ in
            if let alphabet { return alphabet.randomElement(using: &self)! }
            return UInt8.random(in: 0...255, using: &self)
        }
    }
}

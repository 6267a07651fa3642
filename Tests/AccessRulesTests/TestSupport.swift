import AccessRules
import CDB

// MARK: - Helpers shared by the AccessRules tests

/// Bytes of a string, NULs and all.
func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

/// Readable form of bytes for failure messages.
func show(_ b: [UInt8]) -> String {
    b.map { $0 >= 0x20 && $0 < 0x7f ? String(UnicodeScalar($0)) : "\\x\(String($0, radix: 16))" }.joined()
}

/// Owns a heap copy of a database for as long as a reader over it is used.
final class DatabaseMemory {
    let buffer: UnsafeMutableRawBufferPointer
    init(_ db: [UInt8]) {
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

/// Compiles rules text fed as the given chunks into database bytes.
func compile(chunks: [[UInt8]]) throws(RulesCompileError) -> [UInt8] {
    let writer: CDBWriter<CDBMemorySink>
    do { writer = try CDBWriter(sink: CDBMemorySink()) } catch { throw .write(error) }
    var compiler = RulesCompiler(writer: writer)
    for chunk in chunks {
        try chunk.withUnsafeBytes { c in Result { () throws(RulesCompileError) in try compiler.feed(c) } }.get()
    }
    try compiler.finish()
    return compiler.writer.sink.bytes
}

/// Compiles rules text in one piece.
func compile(_ text: String) throws(RulesCompileError) -> [UInt8] {
    try compile(chunks: [bytes(text)])
}

/// Splits `text` into chunks of `size` bytes (the last may be shorter).
func chunked(_ text: [UInt8], size: Int) -> [[UInt8]] {
    stride(from: 0, to: text.count, by: size).map { Array(text[$0..<min($0 + size, text.count)]) }
}

/// The database the writer makes for these records, in this order.
func database(_ records: [(String, String)]) throws -> [UInt8] {
    var writer = try CDBWriter(sink: CDBMemorySink())
    for (key, data) in records { try writer.add(key: bytes(key), data: bytes(data)) }
    try writer.finish()
    return writer.sink.bytes
}

/// Every record of a database as (key, data) strings, in file order.
func recordList(_ db: [UInt8]) throws -> [String] {
    let r = reader(db)
    return try r.records().map { "\(show(Array(r.bytes[$0.key])))=>\(show(Array(r.bytes[$0.data])))" }
}

/// A sink that fails with an errno once it has taken `limit` bytes.
struct FailingSink: CDBSink {
    var limit: Int
    var taken = 0
    mutating func write(_ b: UnsafeRawBufferPointer) throws(CDBWriteError) {
        guard taken + b.count <= limit else { throw .system(28) }
        taken += b.count
    }
    mutating func writeHeader(_ b: UnsafeRawBufferPointer) throws(CDBWriteError) {}
}

/// SplitMix64: a tiny deterministic generator.
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

/// A decision's variables as "NAME=value" text, in order.
func variables(_ d: RuleDecision) -> [String] {
    d.environment.map { show($0.name) + "=" + show($0.value) }
}

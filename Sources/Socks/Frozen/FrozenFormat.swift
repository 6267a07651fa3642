import GatewayKit

/// The frozen files' container: portable between machines (big-endian, no memory images),
/// versioned and checksummed.
///
/// ```
/// offset  size  field
///      0     8  magic: 0x89 "SOCKDFC" (a frozen sockd.conf) or 0x89 "SOCKDFR" (sockd.route)
///      8     2  format version (1)
///     10     2  flags, 0
///     12     4  body length
///     16     4  CRC-32 (IEEE 802.3, as zlib's crc32) of the body
///     20     …  body
/// ```
///
/// The body is a sequence of fields: unsigned integers big-endian, byte strings as a 4-byte
/// length then the bytes, lists as a 4-byte count then the items. A configuration's body is
/// its user file table (each file once, with its names: rules refer to it by number), the
/// rules, then the two special commands; a route file's is its routes. The decoder checks every
/// length against the bytes that remain before it takes anything, grows lists item by item
/// (never reserving what a count claims), and accepts only what the text parser could have
/// produced, so a frozen file that decodes re-encodes to the same bytes and dumps as text that
/// parses back to the same model. The first byte, 0x89, never begins a text configuration:
/// the daemon tells a frozen file from a text file by its first eight bytes.
public enum FrozenFormat {
    public enum Kind: UInt8, Sendable {
        case configuration = 0x43  // "C"
        case routes = 0x52  // "R"

        var name: String { self == .configuration ? "configuration (sockd.fc)" : "route file (sockd.fr)" }
    }

    /// The version this code writes and reads.
    public static let version: UInt16 = 1
    static let headerSize = 20
    static let magicStem: [UInt8] = [0x89] + Array("SOCKDF".utf8)

    static func magic(_ kind: Kind) -> [UInt8] { magicStem + [kind.rawValue] }

    /// True when `bytes` begin with the magic of a frozen file of `kind`.
    public static func isFrozen(_ bytes: [UInt8], kind: Kind) -> Bool { bytes.starts(with: magic(kind)) }

    /// The header and `body` (the fuzz harness wraps arbitrary bodies with it).
    package static func container(_ kind: Kind, body: [UInt8]) -> [UInt8] {
        var out = FrozenWriter()
        out.bytes = magic(kind)
        out.u16(version)
        out.u16(0)
        out.u32(UInt32(body.count))
        out.u32(CRC32.checksum(body))
        return out.bytes + body
    }

    /// The body of a frozen file of `kind`, once the header checks out.
    static func body(_ bytes: [UInt8], kind: Kind) throws(FrozenError) -> ArraySlice<UInt8> {
        guard bytes.starts(with: magic(kind)) else {
            if bytes.count >= 8 && bytes.starts(with: magicStem),
                let other = Kind(rawValue: bytes[7]), other != kind
            {
                throw .wrongKind(expected: kind, found: other)
            }
            throw .notFrozen(kind)
        }
        guard bytes.count >= headerSize else { throw .truncated(expected: headerSize, found: bytes.count) }
        var header = FrozenReader(bytes[8..<headerSize])
        let version = try header.u16()
        let flags = try header.u16()
        let length = try header.u32()
        let checksum = try header.u32()
        guard version == FrozenFormat.version else { throw .unsupportedVersion(version) }
        guard flags == 0 else { throw .malformed(offset: 10, "unknown flags \(flags)") }
        let available = bytes.count - headerSize
        guard UInt64(length) <= UInt64(available) else {
            throw .truncated(expected: headerSize + Int(length), found: bytes.count)
        }
        guard Int(length) == available else { throw .trailingBytes(available - Int(length)) }
        let body = bytes[headerSize...]
        guard CRC32.checksum(body) == checksum else { throw .checksum }
        return body
    }
}

/// Why a frozen file cannot be used. Never a crash: every message names what is wrong.
public enum FrozenError: Error, Sendable, Equatable, CustomStringConvertible {
    /// No frozen file's magic: a text file, or something else.
    case notFrozen(FrozenFormat.Kind)
    /// A frozen file of the other kind (a route file given for a configuration).
    case wrongKind(expected: FrozenFormat.Kind, found: FrozenFormat.Kind)
    /// A format version this program does not read (a newer make_sockdfc wrote it).
    case unsupportedVersion(UInt16)
    /// Shorter than its header says.
    case truncated(expected: Int, found: Int)
    /// Longer than its header says.
    case trailingBytes(Int)
    /// The body's CRC-32 differs from the header's: damaged.
    case checksum
    /// The body does not hold what a frozen file holds, at `offset` in the file.
    case malformed(offset: Int, String)

    public var description: String {
        switch self {
        case .notFrozen(let kind):
            return "not a frozen \(kind.name): no magic number (a text file? make_sockdf"
                + (kind == .configuration ? "c" : "r") + " freezes one)"
        case .wrongKind(let expected, let found):
            return "a frozen \(found.name), not a frozen \(expected.name)"
        case .unsupportedVersion(let version):
            return "frozen format version \(version) is not supported (this program reads version "
                + "\(FrozenFormat.version); freeze the text file again)"
        case .truncated(let expected, let found):
            return "truncated: \(found) bytes, the header says \(expected)"
        case .trailingBytes(let count):
            return "damaged: \(count) bytes after the end the header gives"
        case .checksum:
            return "damaged: checksum mismatch"
        case .malformed(let offset, let what):
            return "damaged at byte \(offset): \(what)"
        }
    }
}

// MARK: - Fields

struct FrozenWriter {
    var bytes: [UInt8] = []

    mutating func u8(_ value: UInt8) { bytes.append(value) }
    mutating func u16(_ value: UInt16) { bytes += [UInt8(value >> 8), UInt8(value & 0xff)] }
    mutating func u32(_ value: UInt32) {
        bytes += [UInt8(value >> 24), UInt8((value >> 16) & 0xff), UInt8((value >> 8) & 0xff), UInt8(value & 0xff)]
    }
    mutating func string(_ value: [UInt8]) {
        u32(UInt32(value.count))
        bytes += value
    }
    mutating func optionalString(_ value: [UInt8]?) {
        if let value {
            u8(1)
            string(value)
        } else {
            u8(0)
        }
    }
}

struct FrozenReader {
    private let bytes: ArraySlice<UInt8>
    private(set) var offset: Int

    init(_ bytes: ArraySlice<UInt8>) {
        self.bytes = bytes
        offset = bytes.startIndex
    }

    var isAtEnd: Bool { offset == bytes.endIndex }

    /// The bytes read since `start` (an earlier ``offset``).
    func bytes(from start: Int) -> ArraySlice<UInt8> { bytes[start..<offset] }

    func fail(_ what: String) -> FrozenError { .malformed(offset: offset, what) }

    private mutating func take(_ count: Int, _ what: @autoclosure () -> String) throws(FrozenError) -> ArraySlice<UInt8>
    {
        guard count <= bytes.endIndex - offset else { throw fail("\(what()) runs past the end") }
        defer { offset += count }
        return bytes[offset..<offset + count]
    }

    mutating func u8(_ what: @autoclosure () -> String = "a byte") throws(FrozenError) -> UInt8 {
        try take(1, what()).first!
    }

    mutating func u16(_ what: @autoclosure () -> String = "a number") throws(FrozenError) -> UInt16 {
        let b = try take(2, what())
        return UInt16(b[b.startIndex]) << 8 | UInt16(b[b.startIndex + 1])
    }

    mutating func u32(_ what: @autoclosure () -> String = "a number") throws(FrozenError) -> UInt32 {
        try take(4, what()).reduce(0) { $0 << 8 | UInt32($1) }
    }

    mutating func string(_ what: @autoclosure () -> String) throws(FrozenError) -> [UInt8] {
        let length = try u32("the length of \(what())")
        guard UInt64(length) <= UInt64(bytes.endIndex - offset) else { throw fail("\(what()) runs past the end") }
        return Array(try take(Int(length), what()))
    }

    mutating func optionalString(_ what: @autoclosure () -> String) throws(FrozenError) -> [UInt8]? {
        switch try u8("a flag") {
        case 0: return nil
        case 1: return try string(what())
        case let flag: throw fail("flag \(flag) for \(what()) (expected 0 or 1)")
        }
    }

    /// A list count, checked against the bytes left (each item takes at least `minimumSize`).
    mutating func count(_ what: @autoclosure () -> String, minimumSize: Int) throws(FrozenError) -> Int {
        let count = try u32("the number of \(what())")
        guard UInt64(count) * UInt64(minimumSize) <= UInt64(bytes.endIndex - offset) else {
            throw fail("\(count) \(what()) cannot fit in what is left")
        }
        return Int(count)
    }
}

/// CRC-32 as zlib and PNG compute it (reflected polynomial 0xEDB88320).
enum CRC32 {
    static let table: [UInt32] = (0..<256).map { n in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func checksum(_ bytes: some Sequence<UInt8>) -> UInt32 {
        var crc: UInt32 = 0xffff_ffff
        for byte in bytes { crc = table[Int((crc ^ UInt32(byte)) & 0xff)] ^ (crc >> 8) }
        return crc ^ 0xffff_ffff
    }
}

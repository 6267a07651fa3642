/// Why a lookup could not be answered.
public enum CDBReadError: Error, Equatable {
    /// The file is not a well-formed cdb: a pointer or length leads outside it (djb: "protocol error").
    case format
    /// The file is empty, which djb's reader reports as the mmap error: "invalid argument".
    case empty
}

/// Looks keys up in a constant database held in memory (usually a mapped file).
///
/// Every offset read from the file is checked against its size, so a truncated or corrupted
/// database gives `CDBReadError.format`, never a crash.
public struct CDBReader {
    public let bytes: UnsafeRawBufferPointer
    /// Keeps the memory behind `bytes` alive (a mapped file) as long as the reader is used.
    let owner: AnyObject?

    public init(bytes: UnsafeRawBufferPointer, owner: AnyObject? = nil) {
        self.bytes = bytes
        self.owner = owner
    }

    @inline(__always)
    private func uint32(at offset: Int) throws(CDBReadError) -> UInt32 {
        guard offset >= 0, offset <= bytes.count - 4 else { throw .format }
        return UInt32(bytes[offset]) | UInt32(bytes[offset + 1]) << 8 | UInt32(bytes[offset + 2]) << 16
            | UInt32(bytes[offset + 3]) << 24
    }

    /// The data of every record whose key is `key`, in the order they were added.
    public func findAll(_ key: UnsafeRawBufferPointer) throws(CDBReadError) -> [Range<Int>] {
        var results: [Range<Int>] = []
        var search = Search(key: key)
        while let r = try next(&search) { results.append(r) }
        return results
    }

    /// The data of the first record whose key is `key`, as a range of `bytes`; nil when absent.
    public func find(_ key: UnsafeRawBufferPointer) throws(CDBReadError) -> Range<Int>? {
        var search = Search(key: key)
        return try next(&search)
    }

    public func find(_ key: [UInt8]) throws(CDBReadError) -> Range<Int>? {
        try key.withUnsafeBytes { k in Result { () throws(CDBReadError) in try find(k) } }.get()
    }

    public func find(_ key: String) throws(CDBReadError) -> Range<Int>? {
        var k = key
        return try k.withUTF8 { k in Result { () throws(CDBReadError) in try find(UnsafeRawBufferPointer(k)) } }.get()
    }

    /// Convenience: the bytes of the first record for `key`.
    public func value(_ key: String) throws(CDBReadError) -> [UInt8]? {
        guard let r = try find(key) else { return nil }
        return Array(bytes[r])
    }

    /// State of a lookup that may return several records (cdb_findstart/cdb_findnext).
    public struct Search {
        let key: UnsafeRawBufferPointer
        let hash: UInt32
        var started = false
        var loop: UInt32 = 0
        var slots: UInt32 = 0
        /// The slots this search reads at most: the table's, but no more than the file has
        /// places for (see ``CDBReader/next(_:)``).
        var limit: UInt32 = 0
        var tablePos: UInt32 = 0
        var slotPos: UInt32 = 0

        public init(key: UnsafeRawBufferPointer) {
            self.key = key
            self.hash = cdbHash(key)
        }

        /// How many slots the search has read so far.
        public var probes: UInt32 { loop }
    }

    /// The next record matching the search, or nil when there are no more.
    public func next(_ s: inout Search) throws(CDBReadError) -> Range<Int>? {
        if bytes.isEmpty { throw .empty }
        if !s.started {
            let headerSlot = Int(s.hash & 255) << 3
            s.tablePos = try uint32(at: headerSlot)
            s.slots = try uint32(at: headerSlot + 4)
            s.started = true
            if s.slots == 0 { return nil }
            s.slotPos = s.tablePos &+ ((s.hash >> 8) % s.slots) << 3
            // A damaged table can claim more slots than the file holds: with `slots << 3`
            // wrapping round, 2^29 + 1 slots make a table of one slot that djb's loop (and
            // this one) would read 2^29 + 1 times. The slots read form a cycle through at most
            // one place per 8 bytes of the file, so a search that has read that many has seen
            // every slot it will ever see: stopping there finds exactly what the whole loop
            // would find, in bounded time.
            s.limit = UInt32(min(Int(s.slots), bytes.count / 8 + 1))
        }
        while s.loop < s.limit {
            let h = try uint32(at: Int(s.slotPos))
            let recordPos = try uint32(at: Int(s.slotPos) + 4)
            if recordPos == 0 { return nil }
            s.loop += 1
            s.slotPos &+= 8
            if s.slotPos == s.tablePos &+ (s.slots << 3) { s.slotPos = s.tablePos }
            if h == s.hash {
                let p = Int(recordPos)
                let keyLength = Int(try uint32(at: p))
                let dataLength = Int(try uint32(at: p + 4))
                if keyLength == s.key.count {
                    let keyStart = p + 8
                    if try keyMatches(s.key, at: keyStart) {
                        let dataStart = keyStart + keyLength
                        guard dataStart <= bytes.count - dataLength else { throw .format }
                        return dataStart..<dataStart + dataLength
                    }
                }
            }
        }
        return nil
    }

    /// djb's match(): compares 32 bytes at a time and stops at the first difference, so a key
    /// that differs early is no match even where the file is cut short further on.
    private func keyMatches(_ key: UnsafeRawBufferPointer, at start: Int) throws(CDBReadError) -> Bool {
        var offset = 0
        while offset < key.count {
            let n = min(32, key.count - offset)
            guard start + offset <= bytes.count - n else { throw .format }
            if !memEqual(bytes.baseAddress! + start + offset, key.baseAddress! + offset, n) { return false }
            offset += n
        }
        return true
    }

    /// Every record in file order, for dumping (cdbdump); stops with `.format` at damage.
    public func records() throws(CDBReadError) -> [(key: Range<Int>, data: Range<Int>)] {
        if bytes.isEmpty { throw .empty }
        let end = Int(try uint32(at: 0))
        var p = 2048
        var out: [(key: Range<Int>, data: Range<Int>)] = []
        while p < end {
            let k = Int(try uint32(at: p))
            let d = Int(try uint32(at: p + 4))
            let ks = p + 8
            guard ks <= bytes.count - k, ks + k <= bytes.count - d else { throw .format }
            out.append((ks..<ks + k, ks + k..<ks + k + d))
            p = ks + k + d
        }
        return out
    }
}

@inline(__always)
func memEqual(_ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ n: Int) -> Bool {
    var i = 0
    while i < n {
        if a.load(fromByteOffset: i, as: UInt8.self) != b.load(fromByteOffset: i, as: UInt8.self) { return false }
        i += 1
    }
    return true
}

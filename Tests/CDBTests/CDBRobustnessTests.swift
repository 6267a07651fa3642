import Testing
import CDB

/// A damaged database must give `.format` (or `.empty`), never a crash or a wrong answer
/// that a truncated file could not explain.
@Suite("cdb reader on damaged files")
struct CDBRobustnessTests {
    static let records: [([UInt8], [UInt8])] = [
        (bytes("hm"), bytes("1")),
        (bytes("anj"), []),
        ([], bytes("empty key")),
        (bytes("a"), bytes("xyz")),
        (bytes("avr"), bytes("22")),
        (bytes("a"), bytes("second a")),
        (bytes(" !@"), bytes("collides")),
        (bytes("  a"), bytes("with this")),
        ([UInt8](repeating: 0x41, count: 70), bytes("a key longer than 64 bytes")),
        (bytes("127.0.0.1"), bytes("+RELAYCLIENT=\0")),
    ]

    static let probes: [[UInt8]] =
        records.map(\.0) + [
            bytes("cbd"), bytes("afb"), bytes("cjl"), bytes("b"), bytes("missing"), [0],
            [UInt8](repeating: 0x41, count: 69), [UInt8](repeating: 0x41, count: 71),
        ]

    /// Every prefix of a small database: each lookup throws `.format` (`.empty` for no bytes)
    /// or gives exactly the answer of the whole file.
    @Test func everyTruncation() throws {
        let db = try buildDatabase(Self.records)
        let whole = reader(db)
        var answers: [[UInt8]: ([UInt8]?, [[UInt8]])] = [:]
        for key in Self.probes { answers[key] = (try whole.firstData(key), try whole.allData(key)) }
        let allRecords = try whole.allRecords()

        var answered = 0, refused = 0
        for length in 0..<db.count {
            let r = reader(Array(db[0..<length]))
            let expectedError: CDBReadError = length == 0 ? .empty : .format
            for key in Self.probes {
                switch attempt({ () throws(CDBReadError) in try r.firstData(key) }) {
                case .success(let data):
                    #expect(data == answers[key]!.0, "find at length \(length)")
                    answered += 1
                case .failure(let e):
                    #expect(e == expectedError, "find at length \(length)")
                    refused += 1
                }
                switch attempt({ () throws(CDBReadError) in try r.allData(key) }) {
                case .success(let all): #expect(all == answers[key]!.1, "findAll at length \(length)")
                case .failure(let e): #expect(e == expectedError)
                }
            }
            switch attempt({ () throws(CDBReadError) in try r.allRecords() }) {
            case .success(let all): #expect(all == allRecords, "records at length \(length)")
            case .failure(let e): #expect(e == expectedError)
            }
        }
        // Both outcomes occur: absent keys of empty tables are answered from the header alone.
        #expect(answered > 0)
        #expect(refused > 0)
    }

    /// Header words, slot words and length words set to values that point just past the
    /// end, far past it, or wrap round: `.format` or an answer, never a crash.
    @Test(arguments: [
        UInt32(0), 1, 4, 7, 8, 2047, 2048, 0x7fff_ffff, 0x8000_0000, 0xffff_fff8, 0xffff_fffc, 0xffff_ffff,
    ])
    func hostileWords(value: UInt32) throws {
        let db = try buildDatabase(Self.records)
        var offsets = Array(stride(from: 0, to: db.count - 3, by: 4))
        // Unaligned positions too, within the records.
        offsets += Array(2048..<min(db.count - 3, 2200))
        for offset in offsets {
            var damaged = db
            damaged.replaceSubrange(offset..<offset + 4, with: le32(value))
            // Also the same damage with the end cut off.
            for copy in [damaged, Array(damaged.dropLast(5))] {
                exercise(reader(copy))
            }
        }
        // Every word of the file also set relative to the file's size.
        for offset in stride(from: 0, to: db.count - 3, by: 4) {
            for v in [db.count - 4, db.count - 3, db.count, db.count + 1] {
                var damaged = db
                damaged.replaceSubrange(offset..<offset + 4, with: le32(v))
                exercise(reader(damaged))
            }
        }
    }

    /// Random byte damage with a fixed seed.
    @Test(arguments: 0..<4)
    func randomCorruption(round: Int) throws {
        var rng = SplitMix64(seed: 0xfeed_0000 + UInt64(round))
        // A bigger database too, so pointers land inside it more often.
        var records = Self.records
        for i in 0..<200 { records.append((bytes("key\(i % 150)"), rng.bytes(count: i % 23))) }
        let db = try buildDatabase(round % 2 == 0 ? Self.records : records)
        for _ in 0..<1500 {
            var damaged = db
            let changes = Int.random(in: 1...8, using: &rng)
            for _ in 0..<changes {
                let i: Int
                switch Int.random(in: 0..<3, using: &rng) {
                case 0: i = Int.random(in: 0..<2048, using: &rng)  // header
                case 1: i = Int.random(in: 2048..<damaged.count, using: &rng)  // records and tables
                default: i = Int.random(in: 0..<damaged.count, using: &rng)
                }
                damaged[i] = UInt8.random(in: 0...255, using: &rng)
            }
            if Int.random(in: 0..<4, using: &rng) == 0 {
                damaged.removeLast(Int.random(in: 0..<damaged.count, using: &rng))
            }
            exercise(reader(damaged))
        }
    }

    /// Random bytes that are not a database at all.
    @Test func randomGarbage() {
        var rng = SplitMix64(seed: 7)
        for length in [1, 3, 4, 7, 8, 100, 2047, 2048, 2049, 3000, 5000] {
            for _ in 0..<20 {
                exercise(reader(rng.bytes(count: length)))
            }
        }
    }

    /// djb's match() compares keys 32 bytes at a time and stops at the first difference:
    /// a key that differs early is no match even though the record is cut short further on,
    /// while the key itself runs into the cut and gives `.format`.
    /// The database is built by hand with its hash table before the (truncated) record.
    @Test func keyComparisonStopsAtFirstDifference() throws {
        let suffix = [UInt8](repeating: UInt8(ascii: "x"), count: 67)
        let k1 = bytes(" !@") + suffix, k2 = bytes("  a") + suffix  // same hash, differ at byte 1
        let h = cdbHash(k1)
        #expect(cdbHash(k2) == h)
        let table = Int(h & 255)
        var db: [UInt8] = []
        for t in 0..<256 { db += t == table ? le32(2048) + le32(2) : le32(2064) + le32(0) }
        let slot = Int((h >> 8) % 2)
        for s in 0..<2 { db += s == slot ? le32(h) + le32(2064) : le32(0) + le32(0) }
        db += le32(70) + le32(5) + Array(k1[0..<40])  // record cut 40 bytes into its key
        let r = reader(db)
        #expect(try r.find(k2) == nil)
        #expect(try r.allData(k2) == [])
        #expect(throws: CDBReadError.format) { try r.find(k1) }
        // With the whole key present but the data cut, the key matches and the data is refused.
        var db2 = Array(db[0..<2072]) + k1 + [1, 2]
        #expect(throws: CDBReadError.format) { try reader(db2).find(k1) }
        #expect(try reader(db2).find(k2) == nil)
        db2 += [3, 4, 5]
        #expect(try reader(db2).firstData(k1) == [1, 2, 3, 4, 5])
    }

    /// Runs every kind of lookup; outcomes are free, crashes and non-format errors are not.
    func exercise(_ r: CDBReader) {
        for key in Self.probes {
            if case .failure(let e) = attempt({ () throws(CDBReadError) in try r.firstData(key) }) {
                #expect(e == .format)
            }
            if case .failure(let e) = attempt({ () throws(CDBReadError) in try r.allData(key) }) {
                #expect(e == .format)
            }
        }
        if case .success(let records) = attempt({ () throws(CDBReadError) in try r.records() }) {
            for rec in records {
                #expect(rec.key.lowerBound >= 0 && rec.key.upperBound <= r.bytes.count)
                #expect(rec.data.lowerBound >= 0 && rec.data.upperBound <= r.bytes.count)
            }
        }
    }
}

/// A table that claims more slots than the file holds must not make a lookup run for as
/// many. The empty key (tcpserver tries it on every lookup: the rule `:allow`) hashes to 5381:
/// its table is header slot 5 and its search starts at slot 21. A table of 22 slots claiming
/// 2^29 + 22 makes `slots << 3` wrap round to 22 slots' size, so djb's loop (and ours until
/// this test) reads those 22 slots round and round, 2^29 + 22 times for every lookup.
@Suite("cdb reader on tables larger than the file")
struct CDBSlotCountTests {
    /// A database whose table for the empty key claims `slots` slots and holds 22, each
    /// pointing at a record of key "x" (never the empty key, so every probe reads on).
    static func database(slots: UInt32) -> [UInt8] {
        var db = [UInt8](repeating: 0, count: 2048)
        func put(_ value: UInt32, at offset: Int) {
            for i in 0..<4 { db[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * i)) }
        }
        let hash = cdbHash([UInt8]())
        let table = 2048 + 12
        put(UInt32(table), at: Int(hash & 255) * 8)
        put(slots, at: Int(hash & 255) * 8 + 4)
        db += [1, 0, 0, 0, 0, 0, 0, 0, UInt8(ascii: "x"), 0, 0, 0]  // the record at 2048
        db += [UInt8](repeating: 0, count: 22 * 8)
        for slot in 0..<22 {
            put(hash, at: table + 8 * slot)
            put(2048, at: table + 8 * slot + 4)
        }
        return db
    }

    @Test(.timeLimit(.minutes(1)), arguments: [UInt32(1) << 29 + 22, UInt32.max, 22])
    func aLookupReadsNoMoreSlotsThanTheFileHolds(slots: UInt32) throws {
        let db = Self.database(slots: slots)
        let key: [UInt8] = []
        db.withUnsafeBytes { raw in
            key.withUnsafeBytes { k in
                let r = CDBReader(bytes: raw)
                var search = CDBReader.Search(key: k)
                let found = attempt({ () throws(CDBReadError) in try r.next(&search) })
                // Not found, or a damaged file: what djb's loop ends with too, when it ends.
                if case .success(let range) = found { #expect(range == nil) }
                #expect(search.probes <= UInt32(db.count / 8 + 1), "probes: \(search.probes)")
            }
        }
    }
}

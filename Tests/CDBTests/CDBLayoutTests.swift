import Testing
import CDB

/// Exact bytes of small databases, worked out by hand from the format:
/// a 2048-byte header of 256 (table position, slot count) pairs, the records
/// (key length, data length, key, data), then the 256 hash tables of (hash, record position)
/// slots, twice as many slots as records, each record at slot (hash >> 8) % slots or the next
/// free one, wrapping round.
@Suite("cdb byte layout")
struct CDBLayoutTests {
    /// The header for tables given as table number -> (position, slots); every other table
    /// gets the position of the next table at or after it, with no slots.
    static func header(_ tables: [Int: (Int, Int)], end: Int) -> [UInt8] {
        var out: [UInt8] = []
        for t in 0..<256 {
            if let (p, n) = tables[t] {
                out += le32(p) + le32(n)
            } else {
                let next = tables.keys.filter { $0 > t }.min().map { tables[$0]!.0 } ?? end
                out += le32(next) + le32(0)
            }
        }
        return out
    }

    @Test func emptyDatabase() throws {
        let db = try buildDatabase([])
        var expected: [UInt8] = []
        for _ in 0..<256 { expected += le32(2048) + le32(0) }
        #expect(db.count == 2048)
        #expect(db == expected)
        #expect(db == referenceDatabase([]))
        do {
            let r = reader(db)
            #expect(try r.find(bytes("")) == nil)
            #expect(try r.find(bytes("anything")) == nil)
            #expect(try r.records().isEmpty)
        }
    }

    /// "hm", "anj" and "avr" all hash into table 0 and (with 6 slots) start at slots 5, 5, 0:
    /// "hm" takes slot 5, "anj" wraps round to slot 0, "avr" moves on to slot 1.
    /// "a" is alone in table 0xc4 (2 slots) and starts at slot 1.
    @Test func linearProbingWithWrapAround() throws {
        #expect(cdbHash(bytes("hm")) == 0x0059_6f00)  // (0x596f) % 6 == 5
        #expect(cdbHash(bytes("anj")) == 0x0b87_3300)  // (0xb8733) % 6 == 5
        #expect(cdbHash(bytes("avr")) == 0x0b87_3400)  // (0xb8734) % 6 == 0
        #expect(cdbHash(bytes("a")) == 0x0002_b5c4)  // table 0xc4, (0x2b5) % 2 == 1

        let db = try buildDatabase([
            (bytes("hm"), bytes("1")),
            (bytes("anj"), []),
            (bytes("a"), bytes("xyz")),
            (bytes("avr"), bytes("22")),
        ])

        var expected = Self.header([0: (2095, 6), 0xc4: (2143, 2)], end: 2159)
        // Records.
        expected += le32(2) + le32(1) + bytes("hm") + bytes("1")  // at 2048
        expected += le32(3) + le32(0) + bytes("anj")  // at 2059
        expected += le32(1) + le32(3) + bytes("a") + bytes("xyz")  // at 2070
        expected += le32(3) + le32(2) + bytes("avr") + bytes("22")  // at 2082
        // Table 0 at 2095: six slots.
        expected += le32(0x0b87_3300) + le32(2059)  // slot 0: anj (wrapped)
        expected += le32(0x0b87_3400) + le32(2082)  // slot 1: avr (pushed on)
        expected += le32(0) + le32(0)  // slot 2
        expected += le32(0) + le32(0)  // slot 3
        expected += le32(0) + le32(0)  // slot 4
        expected += le32(0x0059_6f00) + le32(2048)  // slot 5: hm
        // Table 0xc4 at 2143: two slots.
        expected += le32(0) + le32(0)
        expected += le32(0x0002_b5c4) + le32(2070)
        #expect(expected.count == 2159)

        #expect(db.count == expected.count)
        #expect(db == expected)
        for t in 0..<256 {
            #expect(Array(db[(8 * t)..<(8 * t + 8)]) == Array(expected[(8 * t)..<(8 * t + 8)]), "header entry \(t)")
        }

        do {
            let r = reader(db)
            #expect(try r.firstData(bytes("hm")) == bytes("1"))
            #expect(try r.firstData(bytes("anj")) == [])
            #expect(try r.firstData(bytes("a")) == bytes("xyz"))
            #expect(try r.firstData(bytes("avr")) == bytes("22"))
            // Absent keys of table 0: probing from slot 5 passes hm, anj, avr and stops at
            // the empty slot 2; from slot 4 it stops at once; from slot 0 after two slots.
            #expect(cdbHash(bytes("cbd")) == 0x0b87_4b00)
            #expect(cdbHash(bytes("afb")) == 0x0b87_3200)
            #expect(cdbHash(bytes("cjl")) == 0x0b87_4c00)
            #expect(try r.find(bytes("cbd")) == nil)
            #expect(try r.find(bytes("afb")) == nil)
            #expect(try r.find(bytes("cjl")) == nil)
            // Absent key of an empty table.
            #expect(try r.find(bytes("b")) == nil)
            #expect(
                try r.allRecords() == [
                    Record(bytes("hm"), bytes("1")), Record(bytes("anj"), []),
                    Record(bytes("a"), bytes("xyz")), Record(bytes("avr"), bytes("22")),
                ])
        }
    }

    @Test func duplicateKeysTakeConsecutiveSlots() throws {
        let db = try buildDatabase([(bytes("a"), bytes("1")), (bytes("a"), bytes("2"))])
        var expected = Self.header([0xc4: (2068, 4)], end: 2100)
        expected += le32(1) + le32(1) + bytes("a1")  // at 2048
        expected += le32(1) + le32(1) + bytes("a2")  // at 2058
        expected += le32(0) + le32(0)  // slot 0
        expected += le32(0x0002_b5c4) + le32(2048)  // slot 1: (0x2b5) % 4 == 1
        expected += le32(0x0002_b5c4) + le32(2058)  // slot 2
        expected += le32(0) + le32(0)  // slot 3
        #expect(db == expected)
    }

    @Test func emptyKeyAndEmptyData() throws {
        let db = try buildDatabase([([], [])])
        var expected = Self.header([5: (2056, 2)], end: 2072)
        expected += le32(0) + le32(0)  // the record at 2048
        expected += le32(0) + le32(0)  // slot 0
        expected += le32(0x1505) + le32(2048)  // slot 1: (0x15) % 2 == 1
        #expect(db == expected)
        do {
            let r = reader(db)
            #expect(try r.firstData([]) == [])
            #expect(try r.allData([]) == [[]])
        }
    }

    /// Two different keys with the same 32-bit hash share a table and a start slot; the reader
    /// must compare the keys themselves.
    @Test func fullHashCollision() throws {
        let k1 = bytes(" !@"), k2 = bytes("  a")
        #expect(cdbHash(k1) == cdbHash(k2))
        let db = try buildDatabase([(k1, bytes("first")), (k2, bytes("second"))])
        #expect(db == referenceDatabase([(k1, bytes("first")), (k2, bytes("second"))]))
        do {
            let r = reader(db)
            #expect(try r.firstData(k1) == bytes("first"))
            #expect(try r.firstData(k2) == bytes("second"))
            #expect(try r.allData(k1) == [bytes("first")])
            #expect(try r.allData(k2) == [bytes("second")])
            #expect(try r.find(bytes(" !A")) == nil)
        }
    }

    /// Same records in the same order give the bytes of an independent port of cdb_make.
    @Test(arguments: [1, 2, 3, 7, 50, 300, 1000])
    func matchesReferenceWriter(count: Int) throws {
        var rng = SplitMix64(seed: 0xcdb0_0000 + UInt64(count))
        var records: [([UInt8], [UInt8])] = []
        for i in 0..<count {
            // Some duplicate keys and a few empty keys/data among them.
            let key: [UInt8] =
                i % 17 == 5
                ? []
                : (i % 5 == 0 && !records.isEmpty
                    ? records.randomElement(using: &rng)!.0
                    : rng.bytes(count: Int.random(in: 0...12, using: &rng)))
            let data = rng.bytes(count: i % 7 == 0 ? 0 : Int.random(in: 0...40, using: &rng))
            records.append((key, data))
        }
        #expect(try buildDatabase(records) == referenceDatabase(records))
    }
}

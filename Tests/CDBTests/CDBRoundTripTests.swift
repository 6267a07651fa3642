import Testing
import CDB

@Suite("cdb write then read")
struct CDBRoundTripTests {
    /// A model of what a database holds: every key's data in insertion order.
    struct Model {
        var records: [Record] = []
        var byKey: [[UInt8]: [[UInt8]]] = [:]
        mutating func add(_ key: [UInt8], _ data: [UInt8]) {
            records.append(Record(key, data))
            byKey[key, default: []].append(data)
        }
    }

    static func check(_ model: Model, absent: [[UInt8]]) throws {
        let db = try buildDatabase(model.records.map { ($0.key, $0.data) })
        let r = reader(db)
        for (key, all) in model.byKey {
            #expect(try r.firstData(key) == all.first, "find \(key)")
            #expect(try r.allData(key) == all, "findAll \(key)")
        }
        for key in absent where model.byKey[key] == nil {
            #expect(try r.find(key) == nil)
            #expect(try r.allData(key) == [])
        }
        #expect(try r.allRecords() == model.records)
    }

    @Test(arguments: [0, 1, 2, 10, 100, 1000, 5000])
    func randomRecords(count: Int) throws {
        var rng = SplitMix64(seed: 0xab_c000 + UInt64(count))
        var model = Model()
        var keys: [[UInt8]] = []
        for i in 0..<count {
            let key: [UInt8]
            if !keys.isEmpty && Int.random(in: 0..<4, using: &rng) == 0 {
                key = keys.randomElement(using: &rng)!  // a duplicate
            } else if i % 97 == 3 {
                key = []  // empty key, several times over
            } else {
                key = rng.bytes(count: Int.random(in: 1...40, using: &rng))
            }
            keys.append(key)
            let data = i % 11 == 0 ? [] : rng.bytes(count: Int.random(in: 0...300, using: &rng))
            model.add(key, data)
        }
        let absent = (0..<200).map { _ in rng.bytes(count: Int.random(in: 0...40, using: &rng)) }
        try Self.check(model, absent: absent + [[0], [0, 0], bytes("nothere")])
    }

    @Test func duplicatesFindFirstAndFindAllInOrder() throws {
        var model = Model()
        model.add(bytes("k"), bytes("one"))
        model.add(bytes("other"), bytes("x"))
        model.add(bytes("k"), bytes("two"))
        model.add(bytes("k"), [])
        model.add([], bytes("empty key 1"))
        model.add(bytes("k"), bytes("four"))
        model.add([], bytes("empty key 2"))
        try Self.check(model, absent: [bytes("K"), bytes("kk"), bytes("")])
        let db = try buildDatabase(model.records.map { ($0.key, $0.data) })
        let r = reader(db)
        #expect(try r.allData(bytes("k")) == [bytes("one"), bytes("two"), [], bytes("four")])
        #expect(try r.firstData([]) == bytes("empty key 1"))
        #expect(try r.allData([]) == [bytes("empty key 1"), bytes("empty key 2")])
    }

    /// The same key 1000 times fills one hash table with 2000 slots: findAll walks it all.
    @Test func manyDuplicatesOfOneKey() throws {
        var model = Model()
        for i in 0..<1000 { model.add(bytes("dup"), bytes(String(i))) }
        try Self.check(model, absent: [bytes("dup2")])
    }

    /// Records around the writer's 64 KiB buffer size, mixed with small ones, so every
    /// buffering path (append, flush then append, flush then write through) is taken.
    @Test func recordsAroundTheBufferSize() throws {
        var rng = SplitMix64(seed: 42)
        var model = Model()
        let sizes = [0, 1, 65_527, 65_528, 65_535, 65_536, 65_537, 3, 131_072, 200_000, 65_536 - 8, 5, 70_000]
        for (i, size) in sizes.enumerated() {
            model.add(bytes("small\(i)"), rng.bytes(count: i))
            model.add(bytes("big\(i)"), rng.bytes(count: size))
            // A big key too.
            if i % 3 == 0 { model.add(rng.bytes(count: size), bytes("big key \(i)")) }
        }
        try Self.check(model, absent: [bytes("big"), bytes("small")])
        #expect(
            try buildDatabase(model.records.map { ($0.key, $0.data) })
                == referenceDatabase(model.records.map { ($0.key, $0.data) }))
    }

    @Test func countAndRawAdd() throws {
        var writer = try CDBWriter(sink: CDBMemorySink())
        #expect(writer.count == 0)
        try writer.add(key: bytes("a"), data: bytes("b"))
        let key = bytes("raw"), data = bytes("bytes")
        try key.withUnsafeBytes { k in
            try data.withUnsafeBytes { d in try writer.add(key: k, data: d) }
        }
        try writer.add(
            key: UnsafeRawBufferPointer(start: nil, count: 0), data: UnsafeRawBufferPointer(start: nil, count: 0))
        #expect(writer.count == 3)
        try writer.finish()
        let r = reader(writer.sink.bytes)
        #expect(try r.firstData(bytes("raw")) == bytes("bytes"))
        #expect(try r.firstData([]) == [])
        #expect(
            try r.allRecords() == [
                Record(bytes("a"), bytes("b")), Record(bytes("raw"), bytes("bytes")), Record([], []),
            ])
    }

    @Test func readerConveniences() throws {
        let db = try buildDatabase([
            (bytes("name"), bytes("value")), (bytes("name"), bytes("later")), (bytes("é"), [0, 1]),
        ])
        let r = reader(db)
        #expect(try r.value("name") == bytes("value"))
        #expect(try r.value("missing") == nil)
        #expect(try r.value("é") == [0, 1])
        let range = try #require(try r.find("name"))
        #expect(Array(r.bytes[range]) == bytes("value"))
        #expect(try r.find(bytes("name")) == range)
        #expect(try bytes("name").withUnsafeBytes { k in try r.find(k) } == range)
        // Iterating by hand, as cdb_findnext.
        try bytes("name").withUnsafeBytes { k in
            var search = CDBReader.Search(key: k)
            var seen: [[UInt8]] = []
            while let next = try r.next(&search) { seen.append(Array(r.bytes[next])) }
            #expect(seen == [bytes("value"), bytes("later")])
            // Stays finished.
            #expect(try r.next(&search) == nil)
        }
    }

    @Test func emptyBufferIsEmptyError() {
        for r in [CDBReader(bytes: UnsafeRawBufferPointer(start: nil, count: 0)), reader([])] {
            #expect(throws: CDBReadError.empty) { try r.find(bytes("x")) }
            #expect(throws: CDBReadError.empty) { try r.find([]) }
            #expect(throws: CDBReadError.empty) { try r.find("x") }
            #expect(throws: CDBReadError.empty) { try r.value("x") }
            #expect(throws: CDBReadError.empty) { try r.records() }
            #expect(throws: CDBReadError.empty) { try bytes("x").withUnsafeBytes { try r.findAll($0) } }
        }
        // An empty array's own buffer behaves the same, whatever its base address.
        [UInt8]().withUnsafeBytes { raw in
            #expect(throws: CDBReadError.empty) { try CDBReader(bytes: raw).find(bytes("x")) }
            return ()
        }
    }

    @Test func writeErrorDescriptions() {
        #expect(CDBWriteError.tooLarge.description.contains("4 GiB"))
        #expect(CDBWriteError.system(28).description == "errno 28")
    }
}

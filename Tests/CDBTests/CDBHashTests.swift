import Testing
import CDB

@Suite("cdb hash")
struct CDBHashTests {
    /// Values computed outside Swift (h = 5381; h = ((h << 5) + h) ^ c, modulo 2^32, bytes unsigned).
    @Test(
        arguments: [
            ([], 0x0000_1505),
            (bytes("a"), 0x0002_b5c4),
            (bytes("b"), 0x0002_b5c7),
            (bytes("ab"), 0x0059_6e26),
            (bytes("abc"), 0x0b87_3285),
            (bytes("hello"), 0x0a9c_ede7),
            (bytes("127.0.0.1"), 0x5478_120e),
            (bytes("joe@127.0.0.1"), 0x01ac_390e),
            (bytes("=movie.edu"), 0x9449_ae3a),
            ([0x00], 0x0002_b5a5),
            // Bytes above 0x7f are unsigned (djb casts to unsigned char).
            ([0x80], 0x0002_b525),
            ([0xff, 0xff, 0xff, 0xff], 0x7c33_2dc5),
            (bytes("The quick brown fox jumps over the lazy dog"), 0xb679_b80a),
            ([UInt8](repeating: UInt8(ascii: "a"), count: 1000), 0x807b_4785),
            // A full 32-bit collision, used again by the reader tests.
            (bytes(" !@"), 0x0b86_26c4),
            (bytes("  a"), 0x0b86_26c4),
        ] as [([UInt8], UInt32)])
    func knownValues(key: [UInt8], expected: UInt32) {
        #expect(cdbHash(key) == expected)
        #expect(key.withUnsafeBytes { cdbHash($0) } == expected)
        #expect(referenceHash(key) == expected)
    }

    @Test func emptyRawBufferWithoutBaseAddress() {
        #expect(cdbHash(UnsafeRawBufferPointer(start: nil, count: 0)) == 5381)
    }

    @Test func sequenceKindsAgree() {
        let key = bytes("10.0.")
        #expect(cdbHash(key[...]) == cdbHash(key))
        #expect(cdbHash("10.0.".utf8) == cdbHash(key))
        #expect(cdbHash(key.reversed().reversed()) == cdbHash(key))
    }

    @Test func matchesIndependentImplementationOnRandomKeys() {
        var rng = SplitMix64(seed: 0x5eed_0001)
        for _ in 0..<2000 {
            let key = rng.bytes(count: Int.random(in: 0...200, using: &rng))
            let expected = referenceHash(key)
            #expect(cdbHash(key) == expected)
            #expect(key.withUnsafeBytes { cdbHash($0) } == expected)
        }
    }
}

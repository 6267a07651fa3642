import Testing
import AccessRules

@Suite("tcprules address ranges")
struct RangeKeysTests {
    static func keys(_ prefix: String, _ numbers: ClosedRange<Int>, _ suffix: String = "") -> [String] {
        numbers.map { "\(prefix)\($0)\(suffix)" }
    }

    @Test(
        arguments: [
            // The manual's forms: the last component, or a middle one followed by a dot.
            ("1.2.3.40-50", keys("1.2.3.", 40...50)),
            ("1.2.3.37-53", keys("1.2.3.", 37...53)),
            ("10.2-3.", ["10.2.", "10.3."]),
            ("10.2-3.4", ["10.2.4", "10.3.4"]),
            ("10.2-3.4.5", ["10.2.4.5", "10.3.4.5"]),
            ("1-3.", ["1.", "2.", "3."]),
            ("5-7", ["5", "6", "7"]),
            ("1.2.3.4-4", ["1.2.3.4"]),
            // The top is clamped at 255.
            ("1.2.3.250-300", keys("1.2.3.", 250...255)),
            ("1.2.3.0-99999999999", keys("1.2.3.", 0...255)),
            ("1.2.3.255-256", ["1.2.3.255"]),
            // Bottom above top: no keys at all.
            ("1.2.3.50-40", []),
            ("1.2.3.300-400", []),
            ("1.2.3.256-255", []),
            // An empty number is 0.
            ("1.2.3.-2", ["1.2.3.0", "1.2.3.1", "1.2.3.2"]),
            ("1.2.3.-", ["1.2.3.0"]),
            ("1.2.3.5-", []),
            ("-", ["0"]),
            ("-.", ["0."]),
            // Leading zeros are numbers like any other; keys are written without them.
            ("1.2.3.007-009", keys("1.2.3.", 7...9)),
            // Only the dotted component holding the dash counts; the rest is copied as it is.
            ("x.y.1-2.z", ["x.y.1.z", "x.y.2.z"]),
            ("..1-2..", ["..1..", "..2.."]),
            // As in C, a NUL ends a number and the rest of that component is dropped.
            ("1.2.3.4\0x-6", keys("1.2.3.", 4...6)),
            ("1.2.3.4-6\0z", keys("1.2.3.", 4...6)),
            ("1.2.3.4-6\0z.9", keys("1.2.3.", 4...6, ".9")),
            // Numbers wrap like a 64-bit unsigned long: 2^64 + 1 is 1.
            ("1.2.3.18446744073709551617-2", ["1.2.3.1", "1.2.3.2"]),
        ] as [(String, [String])])
    func range(address: String, expected: [String]) {
        #expect(RuleParser.keys(for: bytes(address)) == expected.map(bytes))
    }

    /// Addresses without a dash, or with '=' or '@' anywhere, are a single key, unchanged.
    @Test(arguments: [
        "", "1.2.3.4", "127.", "::1", "=", "=.heaven.af.mil",
        "=host-name.example", "=1-2.", "joe@1.2.3.4-5", "joe-smith@127.0.0.1", "a-b=c", "@-",
        "x@=a-b.c", "1-2=3",
    ])
    func singleKey(address: String) {
        #expect(RuleParser.keys(for: bytes(address)) == [bytes(address)])
    }

    /// Numbers must be decimal digits only: anything else makes the line unparsable.
    @Test(arguments: [
        "1.2.3.4a-5", "1.2.3.4-5x", "1.2.3.+4-5", "1.2.3.4-+5", "1.2.3. 4-5", "1.2.3.4-5 ",
        "1.2.3.4-5-6", "1-2-3", "2001:db8::1-3", "::1-2", "1.2.3.0x10-0x20", "a-b", "1.2.3.-1-2",
        "1.2.3.4-\u{ff}",
    ])
    func notANumber(address: String) {
        #expect(RuleParser.keys(for: bytes(address)) == nil)
    }
}

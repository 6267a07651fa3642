#if canImport(Glibc)
import Glibc
#endif
import FuzzHarnesses
import GatewayKit
import Testing

// A parse whose cost grows faster than its input is a denial of service as much as a crash.
// Every harness gets inputs of several shapes at 10 KB and at 100 KB: the larger must cost
// about 10 times the smaller, and never 100 times (quadratic). A ratio, not a time: the
// machine's speed cancels out; the best of five runs of each keeps noise down (the other
// tests run in parallel), and the bound (50) sits between 10 and 100. Measured here, quiet:
// 9-15x for most, 24-29x for the configuration harness (two parses, listings, allocation).

/// Input shapes that stress a text parser differently, `count` bytes long.
enum Shape: CaseIterable {
    case text, oneLongLine, separators, newlines, dictionaryWords

    func bytes(_ count: Int, words: [[UInt8]]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(count)
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next() -> UInt8 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return UInt8(truncatingIfNeeded: state >> 56)
        }
        while out.count < count {
            let r = next()
            switch self {
            case .text: out.append(r < 20 ? 10 : r < 60 ? 58 : r < 80 ? 32 : 97 &+ r % 26)
            case .oneLongLine: out.append(r < 128 ? 97 &+ r % 26 : 46)
            case .separators: out.append([58, 44, 61, 46, 45, 59, 123, 125, 0][Int(r) % 9])
            case .newlines: out.append(10)
            case .dictionaryWords:
                out += words.isEmpty ? [r] : words[Int(r) % words.count]
                out.append(r < 128 ? 32 : 10)
            }
        }
        return Array(out.prefix(count))
    }
}

/// The words of a libFuzzer dictionary file (`"..."` lines, \xNN escapes).
func dictionaryWords(_ harness: String) -> [[UInt8]] {
    guard let text = try? FD.readWholeFile("\(fuzzRoot)/dict/\(harness).dict") else { return [] }
    return text.split(separator: 10).compactMap { line -> [UInt8]? in
        guard line.first == 34, line.last == 34, line.count >= 2 else { return nil }
        var out: [UInt8] = []
        var i = line.index(after: line.startIndex)
        let end = line.index(before: line.endIndex)
        while i < end {
            if line[i] == 92, line.distance(from: i, to: end) >= 4, line[line.index(after: i)] == 120 {
                let hex = String(decoding: line[line.index(i, offsetBy: 2)..<line.index(i, offsetBy: 4)], as: UTF8.self)
                out.append(UInt8(hex, radix: 16) ?? 0)
                i = line.index(i, offsetBy: 4)
            } else {
                out.append(line[i])
                i = line.index(after: i)
            }
        }
        return out
    }
}

/// The best of five runs of `harness` on `input`, in nanoseconds.
func cost(_ harness: Harnesses.Harness, _ input: [UInt8]) -> UInt64 {
    var best = UInt64.max
    for _ in 0..<5 {
        let start = Deadline.now.nanoseconds
        input.withUnsafeBytes { harness.run($0) }
        best = min(best, Deadline.now.nanoseconds - start)
    }
    return max(best, 1)
}

@Suite("Parsers scale linearly")
struct ScalingTests {
    @Test(arguments: Harnesses.all.map(\.name))
    func tenTimesTheInputCostsAboutTenTimes(harness name: String) throws {
        let harness = try #require(Harnesses.named(name))
        let words = dictionaryWords(name)
        for shape in Shape.allCases {
            let smallInput = shape.bytes(10_000, words: words)
            let largeInput = shape.bytes(100_000, words: words)
            // A quadratic parse exceeds the bound every time; noise (a busy machine) once in a
            // while: up to three measurements, the best counts.
            var best = Double.infinity
            var detail = ""
            for _ in 0..<3 where best >= 50 {
                let small = cost(harness, smallInput)
                let large = cost(harness, largeInput)
                // Below 50 µs for 100 KB the parse stops early (a bound or a first error).
                guard large > 50_000 else {
                    best = 0
                    break
                }
                let ratio = Double(large) / Double(small)
                if ratio < best {
                    best = ratio
                    detail = "\(small) ns, then \(large) ns"
                }
            }
            #expect(best < 50, "\(name), \(shape): 10x the input cost \(best)x (\(detail))")
        }
    }
}

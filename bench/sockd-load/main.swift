import GatewayKit
import Socks

// sockd-load-bench CONF FC [ROUNDS]: the time sockd takes to load a configuration as text
// (parse: words, addresses, user files, services) and frozen (decode: lengths, checksum,
// checks), best of ROUNDS each, on files bench/sockd-frozen writes. Built only by that script.
let arguments = Arguments.raw.dropFirst().map { String(decoding: $0, as: UTF8.self) }
guard arguments.count >= 2 else { Stderr.die(1, "usage: sockd-load-bench CONF FC [ROUNDS]") }
let rounds = arguments.count > 2 ? Int(arguments[2]) ?? 50 : 50
let text = try FD.readWholeFile(arguments[0])
let frozen = try FD.readWholeFile(arguments[1])
let services = SockdSystemFiles.services()

func best(_ body: () throws -> Int) rethrows -> (UInt64, Int) {
    var fastest = UInt64.max
    var rules = 0
    for _ in 0..<rounds {
        let start = Deadline.now.nanoseconds
        rules = try body()
        fastest = min(fastest, Deadline.now.nanoseconds - start)
    }
    return (fastest, rules)
}

let (parse, parsedRules) = try best {
    let parser = SockdConfParser(
        path: arguments[0], readUserFile: SockdSystemFiles.userFileReader, servicePort: services.lookup)
    return try parser.load(text, mode: .strict).configuration.rules.count
}
let (decode, decodedRules) = try best { try SockdConfiguration(frozen: frozen).rules.count }
precondition(parsedRules == decodedRules, "the two files hold the same rules")
func micro(_ ns: UInt64) -> String { String(Double(ns / 100) / 10) + " µs" }
print("| rules | text (\(text.count) bytes), parse | frozen (\(frozen.count) bytes), decode | ratio |")
print("|---:|---:|---:|---:|")
print("| \(parsedRules) | \(micro(parse)) | \(micro(decode)) | \(String(Double(parse * 10 / max(decode, 1)) / 10))x |")

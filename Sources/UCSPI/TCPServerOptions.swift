/// tcpserver's command line, parsed as ucspi-tcp 0.88 and its IPv6 variant parse it
/// (djb's getopt: clustered flags, an option's argument attached or in the next word,
/// `--` ends the options, the first non-option word ends them too).
public struct TCPServerOptions: Equatable, Sendable {
    public var verbosity = 1  // -q 0, -Q 1, -v 2
    public var killIPOptions = true  // -O / -o
    public var delay = true  // -d / -D (TCP_NODELAY off / on)
    public var banner: [UInt8] = []  // -B
    public var remoteInfo = true  // -r / -R
    public var remoteHost = true  // -h / -H
    public var paranoid = false  // -p / -P
    public var identTimeout: UInt64 = 26  // -t
    public var uid: UInt64 = 0  // -u, -U
    public var gid: UInt64 = 0  // -g, -U
    public var backlog: UInt64 = 20  // -b
    public var limit: UInt64 = 40  // -c
    public var rules: [UInt8]?  // -x
    public var allowMissingRules = false  // -X
    public var printPort = false  // -1
    public var localHost: [UInt8]?  // -l
    public var ipv4Only = false  // -4
    public var forceIPv6 = false  // -6
    public var interface: String?  // -I
    public var host = ""
    public var port = ""
    public var program: [[UInt8]] = []

    public init() {}

    public static let usage =
        "tcpserver: usage: tcpserver [ -461UXpPhHrRoOdDqQv ] [ -c limit ] [ -x rules.cdb ] [ -B banner ] [ -g gid ] [ -u uid ] [ -b backlog ] [ -l localname ] [ -t timeout ] [ -I interface ] host port program"

    /// Why the command line was refused: the lines to print before exiting 100.
    public struct UsageError: Error, Equatable {
        public let lines: [String]
        public init(lines: [String]) { self.lines = lines }
    }

    /// djb's scan_ulong: the leading decimal digits (0 if none), wrapping like unsigned long.
    public static func scanNumber(_ text: String) -> (value: UInt64, digits: Int) {
        scanNumber(Array(text.utf8))
    }

    public static func scanNumber(_ text: [UInt8]) -> (value: UInt64, digits: Int) {
        var value: UInt64 = 0
        var digits = 0
        for c in text {
            guard c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") else { break }
            value = value &* 10 &+ UInt64(c - UInt8(ascii: "0"))
            digits += 1
        }
        return (value, digits)
    }

    /// Parses text arguments (tests, callers that have Strings).
    public static func parse(_ args: [String], environment: (String) -> String? = { _ in nil })
        throws(UsageError) -> TCPServerOptions
    {
        try parse(args.map { Array($0.utf8) }, environment: environment)
    }

    /// Parses the arguments after the program name, byte for byte. `environment` supplies
    /// $UID and $GID for -U. As in the original, -q also silences the usage message for
    /// missing host, port or program (it takes effect once the options are read).
    public static func parse(_ args: [[UInt8]], environment: (String) -> String? = { _ in nil })
        throws(UsageError) -> TCPServerOptions
    {
        var o = TCPServerOptions()
        let withArgument: Set<UInt8> = Set("xtuglbBcI".utf8)
        var i = 0
        parsing: while i < args.count {
            let word = args[i]
            if word == Array("--".utf8) {
                i += 1
                break
            }
            guard word.first == UInt8(ascii: "-"), word.count > 1 else { break }
            var letters = word.dropFirst()
            while let opt = letters.first {
                letters = letters.dropFirst()
                var value: [UInt8] = []
                let letter = Character(Unicode.Scalar(opt))
                if withArgument.contains(opt) {
                    if !letters.isEmpty {
                        value = Array(letters)
                        letters = []
                    } else if i + 1 < args.count {
                        i += 1
                        value = args[i]
                    } else {
                        throw UsageError(lines: ["tcpserver: option requires an argument -- \(letter)", usage])
                    }
                }
                switch letter {
                case "b": o.backlog = scanNumber(value).value
                case "c": o.limit = scanNumber(value).value
                case "X": o.allowMissingRules = true
                case "x": o.rules = value
                case "B": o.banner = value
                case "d": o.delay = true
                case "D": o.delay = false
                case "v": o.verbosity = 2
                case "q": o.verbosity = 0
                case "Q": o.verbosity = 1
                case "P": o.paranoid = false
                case "p": o.paranoid = true
                case "O": o.killIPOptions = true
                case "o": o.killIPOptions = false
                case "H": o.remoteHost = false
                case "h": o.remoteHost = true
                case "R": o.remoteInfo = false
                case "r": o.remoteInfo = true
                case "t": o.identTimeout = scanNumber(value).value
                case "U":
                    if let u = environment("UID") { o.uid = scanNumber(u).value }
                    if let g = environment("GID") { o.gid = scanNumber(g).value }
                case "u": o.uid = scanNumber(value).value
                case "g": o.gid = scanNumber(value).value
                case "I": o.interface = String(decoding: value, as: UTF8.self)
                case "1": o.printPort = true
                case "4": o.ipv4Only = true
                case "6": o.forceIPv6 = true
                case "l": o.localHost = value
                default:
                    let shown = opt < 128 ? String(letter) : "?"
                    throw UsageError(lines: ["tcpserver: illegal option -- \(shown)", usage])
                }
            }
            i += 1
            continue parsing
        }
        let rest = Array(args[i...])
        guard rest.count >= 3 else { throw UsageError(lines: o.verbosity == 0 ? [] : [usage]) }
        o.host = String(decoding: rest[0], as: UTF8.self)
        o.port = String(decoding: rest[1], as: UTF8.self)
        o.program = Array(rest[2...])
        return o
    }
}

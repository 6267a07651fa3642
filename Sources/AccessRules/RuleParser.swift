/// What one line of a rules file means to tcprules.
public enum RuleLine: Equatable {
    /// A comment, a blank line, or a line without a colon: ignored, as tcprules does.
    case skip
    /// A rule: the address as written and the encoded instructions stored in the cdb.
    case rule(address: [UInt8], instructions: [UInt8])
}

/// A line tcprules cannot parse. `line` is the line as tcprules quotes it: trailing blanks
/// and newline removed, cut at the first NUL byte.
public struct RuleParseError: Error, Equatable {
    public let line: [UInt8]
    public init(line: [UInt8]) { self.line = line }

    /// The error for a raw input line, quoted as tcprules quotes it.
    public init(quoting raw: UnsafeBufferPointer<UInt8>) {
        var len = raw.count
        if len > 0 && raw[len - 1] == UInt8(ascii: "\n") { len -= 1 }
        while len > 0 && (raw[len - 1] == UInt8(ascii: " ") || raw[len - 1] == UInt8(ascii: "\t")) { len -= 1 }
        var end = 0
        while end < len && raw[end] != 0 { end += 1 }
        self.line = Array(raw[0..<end])
    }

    /// tcprules' message: `unable to parse this line: LINE`, with the line's bytes as they are.
    public var message: [UInt8] {
        Array("unable to parse this line: ".utf8) + line
    }
}

/// The tcprules grammar, as ucspi-tcp 0.88 with the IPv6 variant's choice of colon.
///
/// A rule is `address:instructions`; the separating colon is the first `:` followed by
/// `allow` or `deny`, so `::1:allow` is a rule for `::1`. Instructions are `allow` or `deny`
/// followed by any number of `,NAME=XvalueX` where X is any character that repeats.
/// The cdb value is `D\0` for deny, then `+NAME=value\0` for each variable.
public enum RuleParser {
    private static let allow = Array("allow".utf8)
    private static let deny = Array("deny".utf8)

    /// Parses one line, with or without its trailing newline.
    public static func parse(_ raw: [UInt8]) throws(RuleParseError) -> RuleLine {
        try raw.withUnsafeBufferPointer { p in Result { () throws(RuleParseError) in try parse(p) } }.get()
    }

    public static func parse(_ raw: UnsafeBufferPointer<UInt8>) throws(RuleParseError) -> RuleLine {
        var data: [UInt8] = []
        guard let addressLength = try scan(raw, instructions: &data) else { return .skip }
        return .rule(address: Array(raw[0..<addressLength]), instructions: data)
    }

    /// The allocation-free core of `parse` for the compiler: appends the encoded instructions
    /// to `instructions` and returns the address's length (the address is the line's start),
    /// or nil for a line to skip.
    public static func scan(
        _ raw: UnsafeBufferPointer<UInt8>, instructions data: inout [UInt8]
    ) throws(RuleParseError) -> Int? {
        var len = raw.count
        if len == 0 || raw[0] == UInt8(ascii: "#") { return nil }
        if raw[len - 1] == UInt8(ascii: "\n") { len -= 1 }
        while len > 0 && (raw[len - 1] == UInt8(ascii: " ") || raw[len - 1] == UInt8(ascii: "\t")) { len -= 1 }
        if len == 0 { return nil }
        let x = UnsafeBufferPointer(rebasing: raw[0..<len])

        func bad() -> RuleParseError { RuleParseError(quoting: x) }

        guard let first = x.firstIndex(of: UInt8(ascii: ":")) else { return nil }
        // The separating colon: the first one followed by "allow" or "deny".
        var colon = first
        while true {
            if startsWith(x, at: colon + 1, deny) || startsWith(x, at: colon + 1, allow) { break }
            guard let n = x[(colon + 1)...].firstIndex(of: UInt8(ascii: ":")) else {
                // IPv4 tcprules would reject the text after the first colon; the IPv6 variant
                // loops forever here. Both ways it is not a rule.
                throw bad()
            }
            colon = n
        }
        var i = colon + 1
        if startsWith(x, at: i, deny) {
            data.append(UInt8(ascii: "D"))
            data.append(0)
            i += 4
        } else {
            i += 5
        }
        while i < len {
            guard x[i] == UInt8(ascii: ",") else { throw bad() }
            guard let eq = x[i...].firstIndex(of: UInt8(ascii: "=")) else { throw bad() }
            data.append(UInt8(ascii: "+"))
            data.append(contentsOf: x[(i + 1)...eq])
            i = eq + 1
            guard i < len else { throw bad() }
            let quote = x[i]
            i += 1
            guard let close = x[i...].firstIndex(of: quote) else { throw bad() }
            data.append(contentsOf: x[i..<close])
            data.append(0)
            i = close + 1
        }
        return colon
    }

    @inline(__always)
    static func startsWith(_ x: UnsafeBufferPointer<UInt8>, at i: Int, _ word: [UInt8]) -> Bool {
        guard i + word.count <= x.count else { return false }
        for j in 0..<word.count where x[i + j] != word[j] { return false }
        return true
    }

    /// The cdb keys a rule's address stands for. An address with a `-` (and no `=` or `@`) is a
    /// range of one dotted component, `1.2.3.40-50` or `10.2-3.`: one key per number, the
    /// top clamped to 255, none when bottom > top. Anything else is its own single key.
    /// Both numbers must be decimal digits only (possibly empty, meaning 0); as in C, a
    /// number ends at a NUL byte.
    public static func keys(for address: [UInt8]) -> [[UInt8]]? {
        guard !address.contains(UInt8(ascii: "=")), !address.contains(UInt8(ascii: "@")),
            let dash = address.firstIndex(of: UInt8(ascii: "-"))
        else {
            return [address]
        }
        var left = dash
        while left > 0 && address[left - 1] != UInt8(ascii: ".") { left -= 1 }
        var right = dash + 1
        while right < address.count && address[right] != UInt8(ascii: ".") { right += 1 }
        guard let bottom = number(address[left..<dash]), var top = number(address[(dash + 1)..<right]) else {
            return nil
        }
        if top > 255 { top = 255 }
        guard bottom <= top else { return [] }
        var keys: [[UInt8]] = []
        keys.reserveCapacity(Int(top - bottom + 1))
        for n in bottom...top {
            var key = Array(address[0..<left])
            key.append(contentsOf: String(n).utf8)
            key.append(contentsOf: address[right...])
            keys.append(key)
        }
        return keys
    }

    /// djb's scan_ulong over the whole field: digits only, wrapping like unsigned long.
    static func number(_ digits: ArraySlice<UInt8>) -> UInt64? {
        var value: UInt64 = 0
        for c in digits {
            if c == 0 { break }
            guard c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") else { return nil }
            value = value &* 10 &+ UInt64(c - UInt8(ascii: "0"))
        }
        return value
    }
}

import GatewayKit

/// An address with a mask: `128.12.0.0 255.255.0.0`, `2001:db8:: ffff:ffff::`, or the same as
/// `128.12.0.0/16` and `2001:db8::/32`. The address is kept as written (bits outside the mask
/// included), so the listing shows what the file said.
public struct IPNetwork: Hashable, Sendable, CustomStringConvertible {
    /// The address as written.
    public let address: IPAddress
    /// The mask, of the address's length; any bits may be set (CSTC allowed holes).
    public let mask: [UInt8]
    /// The prefix length when the network was written `address/prefix` (the mask is then that
    /// many leading ones).
    public let prefixLength: Int?

    /// A network from an address and a mask of the same family; nil when the lengths differ.
    public init?(address: IPAddress, mask: [UInt8]) {
        guard mask.count == address.bytes.count else { return nil }
        self.address = address
        self.mask = mask
        prefixLength = nil
    }

    /// A network written `address/prefix`; nil when the prefix is beyond the family's length.
    public init?(address: IPAddress, prefixLength: Int) {
        let bits = address.bytes.count * 8
        guard prefixLength >= 0 && prefixLength <= bits else { return nil }
        self.address = address
        self.mask = IPNetwork.mask(prefixLength: prefixLength, bytes: address.bytes.count)
        self.prefixLength = prefixLength
    }

    /// `count` bytes whose first `prefixLength` bits are set.
    static func mask(prefixLength: Int, bytes count: Int) -> [UInt8] {
        (0..<count).map { index in
            let bits = min(max(prefixLength - index * 8, 0), 8)
            return bits == 0 ? 0 : UInt8(truncatingIfNeeded: 0xff << (8 - bits))
        }
    }

    /// True when `candidate`, under the mask, equals the address under the mask. An IPv4
    /// address is compared with an IPv6 network as `::ffff:a.b.c.d`, and an IPv4-mapped IPv6
    /// address with an IPv4 network as plain IPv4 (a dual-stack socket's clients are mapped).
    public func contains(_ candidate: IPAddress) -> Bool {
        var other = candidate.unmapped
        if other.bytes.count != address.bytes.count {
            guard address.bytes.count == 16 else { return false }
            other = other.v4Mapped
        }
        for index in 0..<mask.count where (other.bytes[index] ^ address.bytes[index]) & mask[index] != 0 {
            return false
        }
        return true
    }

    /// `address/prefix`, or `address mask`.
    public var description: String {
        if let prefixLength { return "\(address)/\(prefixLength)" }
        return "\(address) \(IPAddress(bytes: mask)!)"
    }
}

/// What an address field of sockd.conf or sockd.route matches.
public enum AddressPattern: Hashable, Sendable {
    /// `ALL`: anything.
    case all
    /// Addresses under a mask.
    case network(IPNetwork)
    /// One host by name (lower case, no trailing dot): matches the name sockd knows for the
    /// address (the client's reverse-confirmed name, the destination's requested name).
    case host([UInt8])
    /// `.domain`: the domain itself and every name under it (stored lower case, without the
    /// leading dot).
    case domain([UInt8])

    /// True when the pattern matches an address whose name (if known) is `name`, already
    /// normalised by ``AddressPattern/normalisedName(_:)``.
    public func matches(_ address: IPAddress, normalisedName name: [UInt8]?) -> Bool {
        switch self {
        case .all:
            return true
        case .network(let network):
            return network.contains(address)
        case .host(let host):
            return name == host
        case .domain(let domain):
            guard let name else { return false }
            if name == domain { return true }
            return name.count > domain.count && name[name.count - domain.count - 1] == ConfigWords.dot
                && name.suffix(domain.count).elementsEqual(domain)
        }
    }

    /// A name as patterns compare it: lower case, without one trailing dot; nil for no name.
    public static func normalisedName(_ name: [UInt8]?) -> [UInt8]? {
        guard var name, !name.isEmpty else { return nil }
        if name.count > 1 && name.last == ConfigWords.dot { name.removeLast() }
        return ConfigWords.lowercased(name)
    }

    /// The words the pattern is written as: names and `ALL` take a mask word that is ignored
    /// (the original's grammar), written `0.0.0.0`.
    public var text: [UInt8] {
        switch self {
        case .all: return Array("ALL 0.0.0.0".utf8)
        case .network(let network): return Array(network.description.utf8)
        case .host(let host):
            // A host named `eq` (written `eq.`) keeps its dot: in the destination's place the
            // bare word is the port operator.
            let written = PortCondition.Operator(word: host) == nil ? host : host + [ConfigWords.dot]
            return written + Array(" 0.0.0.0".utf8)
        case .domain(let domain): return [ConfigWords.dot] + domain + Array(" 0.0.0.0".utf8)
        }
    }

    /// True when the pattern is one the parser can produce (a frozen file's patterns are checked so).
    var isValid: Bool {
        switch self {
        case .all: return true
        case .network(let network):
            guard let prefix = network.prefixLength else { return true }
            return network.mask == IPNetwork.mask(prefixLength: prefix, bytes: network.mask.count)
        case .host(let host): return AddressPattern.isHostName(host) && host != Array("all".utf8)
        case .domain(let domain): return AddressPattern.isHostName(domain)
        }
    }

    // MARK: - Parsing

    /// Reads a pattern from `words` at `index`; returns it and how many words it used (1 for
    /// `address/prefix`, else 2: the mask, ignored for names and `ALL` but required, as the
    /// manual says).
    static func parse(_ words: [ArraySlice<UInt8>], at index: Int, what: String) throws(SockdConfigProblem) -> (
        AddressPattern, Int
    ) {
        guard index < words.count else { throw .missing(what) }
        let word = words[index]
        func needsMask() throws(SockdConfigProblem) -> ArraySlice<UInt8> {
            guard index + 1 < words.count else { throw .missing("mask after \(quote(word))") }
            return words[index + 1]
        }
        // `ALL.` too: a trailing dot is dropped from every name, and a host named "all" could
        // not be written back apart from ALL.
        if normalisedName(Array(word)) == Array("all".utf8) {
            _ = try needsMask()
            return (.all, 2)
        }
        if let slash = word.lastIndex(of: ConfigWords.slash) {
            guard let address = IPAddress(String(decoding: word[..<slash], as: UTF8.self)) else {
                throw .invalidAddress(Array(word))
            }
            let digits = word[(slash + 1)...]
            guard !digits.isEmpty, digits.count <= 3, digits.allSatisfy({ $0 >= 48 && $0 <= 57 }),
                let length = Int(String(decoding: digits, as: UTF8.self)),
                let network = IPNetwork(address: address, prefixLength: length)
            else { throw .invalidPrefix(Array(word)) }
            return (.network(network), 1)
        }
        if let address = IPAddress(String(decoding: word, as: UTF8.self)) {
            let maskWord = try needsMask()
            guard let mask = IPAddress(parsing: String(decoding: maskWord, as: UTF8.self), family: address.family),
                let network = IPNetwork(address: address, mask: mask.bytes)
            else { throw .invalidMask(Array(maskWord), family: address.family) }
            return (.network(network), 2)
        }
        if word.first == ConfigWords.dot {
            var domain = ConfigWords.lowercased(word.dropFirst())
            if domain.count > 1 && domain.last == ConfigWords.dot { domain.removeLast() }
            guard isHostName(domain) else { throw .invalidAddress(Array(word)) }
            _ = try needsMask()
            return (.domain(domain), 2)
        }
        guard let host = normalisedName(Array(word)), isHostName(host) else { throw .invalidAddress(Array(word)) }
        _ = try needsMask()
        return (.host(host), 2)
    }

    /// A host name as a pattern holds it: lower-case letters, digits, `-`, `_` and inner dots,
    /// and not only digits and dots (that would be a mistyped IPv4 address).
    static func isHostName(_ name: [UInt8]) -> Bool {
        guard let first = name.first, let last = name.last, first != ConfigWords.dot, last != ConfigWords.dot
        else { return false }
        var previousDot = false
        var allNumeric = true
        for byte in name {
            let isLetter = byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")
            let isDigit = byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")
            let isDot = byte == ConfigWords.dot
            guard isLetter || isDigit || isDot || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_") else {
                return false
            }
            if isDot && previousDot { return false }
            previousDot = isDot
            if !isDigit && !isDot { allNumeric = false }
        }
        return !allNumeric
    }
}

/// A DNS resource record type (RFC 1035 TYPE / QTYPE).
public struct DNSType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The 16-bit type code.
    public let rawValue: UInt16

    /// The type with code `rawValue`.
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// IPv4 address.
    public static let a = DNSType(rawValue: 1)
    /// Canonical name.
    public static let cname = DNSType(rawValue: 5)
    /// Domain name pointer (reverse lookups).
    public static let ptr = DNSType(rawValue: 12)
    /// IPv6 address.
    public static let aaaa = DNSType(rawValue: 28)

    public var description: String {
        switch rawValue {
        case 1: return "A"
        case 5: return "CNAME"
        case 12: return "PTR"
        case 28: return "AAAA"
        default: return "TYPE\(rawValue)"
        }
    }
}

/// The question of a query: a name in wire format, a type and a class.
public struct DNSQuestion: Hashable, Sendable {
    /// The name in wire format (length-prefixed labels ending with a zero byte).
    public var name: [UInt8]
    /// The record type asked for.
    public var type: DNSType
    /// The class; always IN (1) for this client.
    public var dnsClass: UInt16

    /// A question for `name` (wire format) of `type`, class IN by default.
    public init(name: [UInt8], type: DNSType, dnsClass: UInt16 = DNSWire.classIN) {
        self.name = name
        self.type = type
        self.dnsClass = dnsClass
    }

    /// True when `other` asks the same: same type and class, names equal ignoring ASCII case
    /// (djb's dns_domain_equal).
    public func matches(_ other: DNSQuestion) -> Bool {
        type == other.type && dnsClass == other.dnsClass && DNSWire.namesEqual(name, other.name)
    }
}

// MARK: - Names and queries

/// DNS names and queries on the wire (RFC 1035), built and read the way djb's dns library
/// does. Pure: no I/O, so every rule here is unit tested alone.
public enum DNSWire {
    /// Class IN.
    public static let classIN: UInt16 = 1
    /// Longest name in wire format, terminating zero included.
    public static let maximumNameLength = 255
    /// Longest label.
    public static let maximumLabelLength = 63

    /// A dotted name in wire format, as djb's dns_domain_fromdot reads it: empty labels
    /// (`a..b`, a trailing dot) are dropped, `\ooo` (one to three octal digits) is that byte,
    /// `\c` is `c` (so `\.` is a dot inside a label). Throws `invalidName` for a label over 63
    /// bytes or a name over 255.
    public static func encodeName(_ text: String) throws(DNSError) -> [UInt8] {
        let input = Array(text.utf8)
        var name: [UInt8] = []
        var label: [UInt8] = []
        func flush() throws(DNSError) {
            guard !label.isEmpty else { return }
            guard name.count + label.count + 1 <= maximumNameLength else { throw DNSError.invalidName(text) }
            name.append(UInt8(label.count))
            name += label
            label.removeAll()
        }
        var i = 0
        while i < input.count {
            var ch = input[i]
            i += 1
            if ch == UInt8(ascii: ".") {
                try flush()
                continue
            }
            if ch == UInt8(ascii: "\\") {
                guard i < input.count else { break }
                ch = input[i]
                i += 1
                if let d = octalDigit(ch) {
                    var value = UInt32(d)
                    for _ in 0..<2 {
                        guard i < input.count, let next = octalDigit(input[i]) else { break }
                        value = value << 3 + UInt32(next)
                        i += 1
                    }
                    ch = UInt8(truncatingIfNeeded: value)
                }
            }
            guard label.count < maximumLabelLength else { throw DNSError.invalidName(text) }
            label.append(ch)
        }
        try flush()
        guard name.count + 1 <= maximumNameLength else { throw DNSError.invalidName(text) }
        name.append(0)
        return name
    }

    private static func octalDigit(_ c: UInt8) -> UInt8? {
        c >= UInt8(ascii: "0") && c <= UInt8(ascii: "7") ? c - UInt8(ascii: "0") : nil
    }

    /// A wire-format name as text, as djb's dns_domain_todot prints it: letters lowercased,
    /// bytes other than `a-z 0-9 - _` as `\ooo` (so a dot inside a label is `\056`), labels
    /// joined by dots, no trailing dot; the root is `.`. Stops at malformed input.
    public static func formatName(_ wire: [UInt8]) -> String {
        var out: [UInt8] = []
        var i = 0
        while i < wire.count {
            let length = Int(wire[i])
            i += 1
            if length == 0 || i + length > wire.count { break }
            if !out.isEmpty { out.append(UInt8(ascii: ".")) }
            for var c in wire[i..<(i + length)] {
                if c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z") { c += 32 }
                let plain =
                    (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z"))
                    || (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9"))
                    || c == UInt8(ascii: "-") || c == UInt8(ascii: "_")
                if plain {
                    out.append(c)
                } else {
                    out += [
                        UInt8(ascii: "\\"), UInt8(ascii: "0") + (c >> 6),
                        UInt8(ascii: "0") + ((c >> 3) & 7), UInt8(ascii: "0") + (c & 7),
                    ]
                }
            }
            i += length
        }
        return out.isEmpty ? "." : String(decoding: out, as: UTF8.self)
    }

    /// The reverse-lookup name of an address in wire format: `d.c.b.a.in-addr.arpa` for IPv4,
    /// 32 lowercase nibbles then `ip6.arpa` for IPv6 (an IPv4-mapped address gets the IPv6
    /// form here; `DNSResolver.name(for:)` asks the IPv4 name for it, as djb's code does).
    public static func reverseName(for address: IPAddress) -> [UInt8] {
        var name: [UInt8] = []
        if address.family == .v4 {
            for b in address.bytes.reversed() {
                let digits = Array(String(b).utf8)
                name.append(UInt8(digits.count))
                name += digits
            }
            name += [7] + Array("in-addr".utf8) + [4] + Array("arpa".utf8) + [0]
        } else {
            let hex = Array("0123456789abcdef".utf8)
            for b in address.bytes.reversed() {
                name += [1, hex[Int(b & 15)], 1, hex[Int(b >> 4)]]
            }
            name += [3] + Array("ip6".utf8) + [4] + Array("arpa".utf8) + [0]
        }
        return name
    }

    /// A query as dns_transmit sends it over UDP: header with `id`, RD set when asked, one
    /// question of class IN, no other records. Prefix the 2-byte length for TCP.
    public static func query(id: UInt16, question: DNSQuestion, recursionDesired: Bool = true) -> [UInt8] {
        var q: [UInt8] = [UInt8(id >> 8), UInt8(id & 0xff), recursionDesired ? 1 : 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]
        q += question.name
        q += [UInt8(question.type.rawValue >> 8), UInt8(question.type.rawValue & 0xff)]
        q += [UInt8(question.dnsClass >> 8), UInt8(question.dnsClass & 0xff)]
        return q
    }

    /// Wire-format names equal ignoring ASCII case (dns_domain_equal).
    public static func namesEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        for (x, y) in zip(a, b) where lower(x) != lower(y) { return false }
        return true
    }

    private static func lower(_ c: UInt8) -> UInt8 {
        c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z") ? c + 32 : c
    }

    // MARK: Reading packets

    /// Reads the name at `offset`, following compression pointers (dns_packet_getname): at
    /// most 1000 steps, at most 255 bytes, every index checked. Returns the name in wire
    /// format and the offset just after it in the original position.
    static func readName(_ packet: [UInt8], at offset: Int) throws(DNSError) -> (name: [UInt8], next: Int) {
        var position = offset
        var firstAfterPointer: Int?
        var steps = 0
        var name: [UInt8] = []
        while true {
            guard position < packet.count else { throw DNSError.malformedResponse }
            var ch = packet[position]
            position += 1
            steps += 1
            while ch >= 192 {
                guard position < packet.count else { throw DNSError.malformedResponse }
                let target = Int(ch - 192) << 8 | Int(packet[position])
                position += 1
                if firstAfterPointer == nil { firstAfterPointer = position }
                position = target
                guard position < packet.count else { throw DNSError.malformedResponse }
                ch = packet[position]
                position += 1
                steps += 1
                guard steps < 1000 else { throw DNSError.malformedResponse }
            }
            guard ch < 64, steps < 1000 else { throw DNSError.malformedResponse }
            let length = Int(ch)
            guard name.count + 1 + length <= maximumNameLength,
                position + length <= packet.count
            else { throw DNSError.malformedResponse }
            name.append(ch)
            if length == 0 { break }
            name += packet[position..<(position + length)]
            position += length
            steps += length
        }
        return (name, firstAfterPointer ?? position)
    }

    /// Skips the name at `offset` without following pointers (dns_packet_skipname).
    static func skipName(_ packet: [UInt8], at offset: Int) throws(DNSError) -> Int {
        var position = offset
        while position < packet.count {
            let ch = packet[position]
            position += 1
            if ch >= 192 { return position + 1 }
            if ch >= 64 { break }
            if ch == 0 { return position }
            position += Int(ch)
        }
        throw DNSError.malformedResponse
    }

    static func uint16(_ packet: [UInt8], at offset: Int) throws(DNSError) -> UInt16 {
        guard offset >= 0, offset + 2 <= packet.count else { throw DNSError.malformedResponse }
        return UInt16(packet[offset]) << 8 | UInt16(packet[offset + 1])
    }
}

// MARK: - Responses

/// A DNS reply whose header and question have been read; answers are read on demand, so a
/// damaged answer section only matters to the caller that needs it (as in djb's library).
public struct DNSResponse: Sendable {
    /// The whole packet as received (without TCP's length prefix).
    public let packet: [UInt8]
    /// The query id.
    public let id: UInt16
    /// The header flags word (QR, opcode, AA, TC, RD, RA, rcode).
    public let flags: UInt16
    /// QDCOUNT.
    public let questionCount: UInt16
    /// ANCOUNT.
    public let answerCount: UInt16
    /// The first question, when QDCOUNT is at least 1.
    public let question: DNSQuestion?
    /// Where the answer section starts (after QDCOUNT questions).
    private let answersOffset: Int

    /// Reads the header and the question section. Throws `malformedResponse` when the
    /// packet is shorter than a header or a question runs past its end.
    public init(parsing packet: [UInt8]) throws(DNSError) {
        guard packet.count >= 12 else { throw DNSError.malformedResponse }
        self.packet = packet
        id = try DNSWire.uint16(packet, at: 0)
        flags = try DNSWire.uint16(packet, at: 2)
        questionCount = try DNSWire.uint16(packet, at: 4)
        answerCount = try DNSWire.uint16(packet, at: 6)
        var position = 12
        var first: DNSQuestion?
        for index in 0..<Int(questionCount) {
            if index == 0 {
                let (name, next) = try DNSWire.readName(packet, at: position)
                let type = try DNSWire.uint16(packet, at: next)
                let dnsClass = try DNSWire.uint16(packet, at: next + 2)
                first = DNSQuestion(name: name, type: DNSType(rawValue: type), dnsClass: dnsClass)
                position = next + 4
            } else {
                position = try DNSWire.skipName(packet, at: position) + 4
            }
        }
        question = first
        answersOffset = position
    }

    /// QR: the packet is a response.
    public var isResponse: Bool { flags & 0x8000 != 0 }
    /// TC: the answer did not fit in UDP; ask again over TCP.
    public var isTruncated: Bool { flags & 0x0200 != 0 }
    /// RCODE: 0 no error, 2 server failure, 3 name does not exist, 5 refused, ...
    public var rcode: UInt8 { UInt8(flags & 0x000f) }
    /// True for an rcode that means the server could not answer (anything but 0 and
    /// NXDOMAIN), which dns_transmit treats as a failed server.
    public var isServerFailure: Bool { rcode != 0 && rcode != 3 }

    /// djb's relevance test: same id, exactly one question, and that question is `question`
    /// (names compared ignoring case).
    public func answers(_ question: DNSQuestion, id: UInt16) -> Bool {
        guard self.id == id, questionCount == 1, let q = self.question else { return false }
        return q.matches(question)
    }

    /// Calls `body` with the type, class and data range of each answer record until it
    /// returns false; owner names are skipped, as dns_name_packet and dns_ip4_packet do.
    private func forEachAnswer(
        _ body: (DNSType, UInt16, Range<Int>) throws(DNSError) -> Bool
    ) throws(DNSError) {
        var position = answersOffset
        for _ in 0..<Int(answerCount) {
            position = try DNSWire.skipName(packet, at: position)
            guard position + 10 <= packet.count else { throw DNSError.malformedResponse }
            let type = try DNSWire.uint16(packet, at: position)
            let dnsClass = try DNSWire.uint16(packet, at: position + 2)
            let length = Int(try DNSWire.uint16(packet, at: position + 8))
            position += 10
            guard try body(DNSType(rawValue: type), dnsClass, position..<(position + length)) else { return }
            position += length
        }
    }

    /// The target of the first PTR record of class IN in the answer section, in wire format;
    /// nil when there is none (NXDOMAIN, no data). As dns_name_packet, records after it are
    /// not examined.
    public func firstPointerName() throws(DNSError) -> [UInt8]? {
        var found: [UInt8]?
        try forEachAnswer { (type, dnsClass, data) throws(DNSError) -> Bool in
            guard type == .ptr, dnsClass == DNSWire.classIN else { return true }
            found = try DNSWire.readName(packet, at: data.lowerBound).name
            return false
        }
        return found
    }

    /// The addresses in the A (4-byte) or AAAA (16-byte) records of class IN in the answer
    /// section, in answer order; records of other types or sizes are skipped.
    public func addresses(of type: DNSType) throws(DNSError) -> [IPAddress] {
        let size = type == .a ? 4 : 16
        var out: [IPAddress] = []
        try forEachAnswer { (recordType, dnsClass, data) throws(DNSError) -> Bool in
            guard recordType == type, dnsClass == DNSWire.classIN, data.count == size else { return true }
            guard data.upperBound <= packet.count else { throw DNSError.malformedResponse }
            out.append(IPAddress(bytes: packet[data])!)
            return true
        }
        return out
    }
}

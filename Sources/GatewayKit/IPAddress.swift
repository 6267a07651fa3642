#if canImport(Glibc)
import Glibc
#endif

/// An IPv4 or IPv6 address as raw bytes in network order: 4 bytes for IPv4, 16 for IPv6.
///
/// Text forms follow ucspi-tcp: IPv4 as dotted decimal (`ip4_fmt`), IPv6 the way the IPv6
/// variant's `ip6_fmt` prints it (lowercase hex, the longest run of zero groups, even a single
/// one, compressed to `::`, IPv4-mapped addresses as `::ffff:1.2.3.4`).
public struct IPAddress: Hashable, Sendable, CustomStringConvertible {
    /// Which protocol the address belongs to.
    public enum Family: Hashable, Sendable {
        case v4
        case v6
    }

    /// The address in network byte order: 4 bytes (IPv4) or 16 bytes (IPv6).
    public let bytes: [UInt8]

    /// IPv4 when the address has 4 bytes, IPv6 when it has 16.
    public var family: Family { bytes.count == 4 ? .v4 : .v6 }

    /// An address from 4 (IPv4) or 16 (IPv6) bytes in network order; nil for any other count.
    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == 4 || bytes.count == 16 else { return nil }
        self.bytes = Array(bytes)
    }

    /// The IPv4 address `a.b.c.d`.
    public init(v4 a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
        bytes = [a, b, c, d]
    }

    /// Parses text as inet_pton does: dotted-quad IPv4 first, then any IPv6 form
    /// (including `::ffff:1.2.3.4`). Nil when the text is neither.
    public init?(_ text: String) {
        if let v4 = IPAddress(parsing: text, family: .v4) {
            self = v4
        } else if let v6 = IPAddress(parsing: text, family: .v6) {
            self = v6
        } else {
            return nil
        }
    }

    /// Parses text as an address of one family only (inet_pton with AF_INET or AF_INET6).
    public init?(parsing text: String, family: Family) {
        guard !text.utf8.contains(0) else { return nil }
        var buffer = [UInt8](repeating: 0, count: family == .v4 ? 4 : 16)
        let ok = buffer.withUnsafeMutableBytes { raw in
            inet_pton(family == .v4 ? AF_INET : AF_INET6, text, raw.baseAddress) == 1
        }
        guard ok else { return nil }
        bytes = buffer
    }

    /// 0.0.0.0
    public static let anyV4 = IPAddress(v4: 0, 0, 0, 0)
    /// 127.0.0.1
    public static let loopbackV4 = IPAddress(v4: 127, 0, 0, 1)
    /// ::
    public static let anyV6 = IPAddress(bytes: [UInt8](repeating: 0, count: 16))!
    /// ::1
    public static let loopbackV6 = IPAddress(bytes: [UInt8](repeating: 0, count: 15) + [1])!

    private static let mappedPrefix: [UInt8] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]

    /// True for an IPv6 address of the form `::ffff:a.b.c.d`.
    public var isV4Mapped: Bool {
        bytes.count == 16 && bytes[0..<12].elementsEqual(IPAddress.mappedPrefix)
    }

    /// The IPv4 address inside an IPv4-mapped IPv6 address; nil for any other address.
    public var v4FromMapped: IPAddress? {
        isV4Mapped ? IPAddress(bytes: bytes[12..<16]) : nil
    }

    /// This address as IPv6: an IPv4 address becomes `::ffff:a.b.c.d`, IPv6 stays as it is.
    public var v4Mapped: IPAddress {
        bytes.count == 4 ? IPAddress(bytes: IPAddress.mappedPrefix + bytes)! : self
    }

    /// An IPv4-mapped address as plain IPv4; any other address unchanged. Use it to compare
    /// addresses that may come from an IPv6 socket with addresses that may not.
    public var unmapped: IPAddress { v4FromMapped ?? self }

    /// ucspi-tcp's text form (ip4_fmt, or the IPv6 variant's ip6_fmt).
    public var description: String {
        bytes.count == 4 ? IPAddress.formatV4(bytes[...]) : IPAddress.formatV6(bytes)
    }

    private static func formatV4(_ b: ArraySlice<UInt8>) -> String {
        b.map { String($0) }.joined(separator: ".")
    }

    /// ip6_fmt: find the longest run of zero 16-bit groups (the first one on a tie, a single
    /// group counts), print it as `::`, the rest as lowercase hex without leading zeros.
    private static func formatV6(_ b: [UInt8]) -> String {
        var bestStart = 0
        var bestLength = 0
        var runStart: Int?
        for k in stride(from: 0, through: 16, by: 2) {
            let zero = k < 16 && b[k] == 0 && b[k + 1] == 0
            if zero {
                if runStart == nil { runStart = k }
            } else if let start = runStart {
                if k - start > bestLength {
                    bestLength = k - start
                    bestStart = start
                }
                runStart = nil
            }
        }
        let mapped = b[0..<12].elementsEqual(mappedPrefix)
        var out = ""
        var k = 0
        while k < 16 {
            if k == 12 && mapped {
                out += formatV4(b[12..<16])
                break
            }
            if k == bestStart && bestLength > 0 {
                out += k == 0 ? "::" : ":"
                k += bestLength
                continue
            }
            out += String(UInt16(b[k]) << 8 | UInt16(b[k + 1]), radix: 16)
            if k < 14 { out += ":" }
            k += 2
        }
        return out
    }
}

// MARK: - Socket addresses

extension IPAddress {
    /// Calls `body` with a `sockaddr_in` (IPv4) or `sockaddr_in6` (IPv6) for this address
    /// and `port`, for bind, connect and sendto.
    public func withSocketAddress<R, E: Error>(
        port: UInt16,
        scopeID: UInt32 = 0,
        _ body: (UnsafePointer<sockaddr>, socklen_t) throws(E) -> R
    ) throws(E) -> R {
        if bytes.count == 4 {
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = port.bigEndian
            withUnsafeMutableBytes(of: &sin.sin_addr) { $0.copyBytes(from: bytes) }
            return try withUnsafePointer(to: &sin) { (p) throws(E) -> R in
                try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { (sa) throws(E) -> R in
                    try body(sa, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        }
        var sin6 = sockaddr_in6()
        sin6.sin6_family = sa_family_t(AF_INET6)
        sin6.sin6_port = port.bigEndian
        sin6.sin6_scope_id = scopeID
        withUnsafeMutableBytes(of: &sin6.sin6_addr) { $0.copyBytes(from: bytes) }
        return try withUnsafePointer(to: &sin6) { (p) throws(E) -> R in
            try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { (sa) throws(E) -> R in
                try body(sa, socklen_t(MemoryLayout<sockaddr_in6>.size))
            }
        }
    }

    /// The address, port and IPv6 scope id in a `sockaddr_in` or `sockaddr_in6` (as filled in
    /// by accept, getsockname, getpeername or recvfrom); nil for other families.
    public static func fromSocketAddress(
        _ address: UnsafePointer<sockaddr>
    ) -> (address: IPAddress, port: UInt16, scopeID: UInt32)? {
        switch Int32(address.pointee.sa_family) {
        case AF_INET:
            return UnsafeRawPointer(address).withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                var a = sin.pointee.sin_addr
                let bytes = withUnsafeBytes(of: &a) { Array($0) }
                return (IPAddress(bytes: bytes)!, UInt16(bigEndian: sin.pointee.sin_port), 0)
            }
        case AF_INET6:
            return UnsafeRawPointer(address).withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 in
                var a = sin6.pointee.sin6_addr
                let bytes = withUnsafeBytes(of: &a) { Array($0) }
                return (IPAddress(bytes: bytes)!, UInt16(bigEndian: sin6.pointee.sin6_port), sin6.pointee.sin6_scope_id)
            }
        default:
            return nil
        }
    }
}

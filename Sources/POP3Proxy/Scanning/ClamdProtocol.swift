import GatewayKit

/// clamd's protocol for scanning a stream (clamd(8), "INSTREAM"), as bytes: pure, so the
/// driver only moves what these functions make and read.
///
/// The z-prefixed commands end with NUL and so do the replies. INSTREAM sends the data in
/// chunks, each preceded by its length as 4 bytes in network order, and a chunk of length 0
/// ends it; clamd answers `stream: OK`, `stream: NAME FOUND`, or `... ERROR` (for instance
/// `INSTREAM size limit exceeded. ERROR` when StreamMaxLength is passed).
public enum ClamdProtocol {
    /// `zVERSION\0`: the reply is clamd's version line (`ClamAV 1.0.7/27500/...`).
    public static let version: [UInt8] = Array("zVERSION".utf8) + [0]
    /// `zINSTREAM\0`: the chunks follow.
    public static let instream: [UInt8] = Array("zINSTREAM".utf8) + [0]
    /// The chunk of length 0 that ends a stream.
    public static let endOfStream: [UInt8] = [0, 0, 0, 0]

    /// The 4-byte length that precedes a chunk of `count` bytes (at most 2^32 - 1).
    public static func chunkHeader(_ count: Int) -> [UInt8] {
        precondition(count > 0 && count <= Int(UInt32.max), "a chunk of 1 to 2^32 - 1 bytes")
        let n = UInt32(count)
        return [UInt8(n >> 24), UInt8(n >> 16 & 0xff), UInt8(n >> 8 & 0xff), UInt8(n & 0xff)]
    }

    /// What clamd said of a stream.
    public enum Verdict: Equatable, Sendable {
        case clean
        /// The signature's name (`Eicar-Test-Signature`).
        case infected(String)
        /// clamd could not scan it; its words.
        case failed(String)
    }

    /// The verdict in a reply (NUL or newline at its end optional); anything that is not one of
    /// clamd's three forms is `.failed` with the reply shown, so an unexpected answer never
    /// counts as clean.
    public static func verdict(_ reply: some Collection<UInt8>) -> Verdict {
        var text = String(decoding: reply, as: UTF8.self)
        while let last = text.last, last == "\0" || last == "\n" || last == "\r" { text.removeLast() }
        guard let colon = text.firstIndex(of: ":") else { return .failed(shown(text)) }
        let result = text[text.index(after: colon)...].drop { $0 == " " }
        if result == "OK" { return .clean }
        if result.hasSuffix(" FOUND") {
            let name = result.dropLast(" FOUND".count)
            if !name.isEmpty { return .infected(shown(String(name))) }
        }
        return .failed(shown(text))
    }

    /// The version line without its NUL, or nil when the reply does not look like one.
    public static func versionLine(_ reply: some Collection<UInt8>) -> String? {
        var text = String(decoding: reply, as: UTF8.self)
        while let last = text.last, last == "\0" || last == "\n" || last == "\r" { text.removeLast() }
        guard text.hasPrefix("ClamAV "), text.utf8.allSatisfy({ $0 >= 32 && $0 < 127 }) else { return nil }
        return text
    }

    /// At most 200 printable characters of clamd's words, for a log line or an `-ERR`.
    static func shown(_ text: String) -> String {
        printable(text.utf8.prefix(200))
    }
}

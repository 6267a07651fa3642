/// The bytes of an RFC 1413 exchange as ucspi-tcp's remoteinfo writes and reads them. Pure:
/// the client feeds it what the socket delivers, byte by byte, and stops when it says so.
///
/// remoteinfo does not parse the reply's fields: it drops every space, tab and CR anywhere,
/// ignores everything up to and including the third colon, and keeps every byte after it (a
/// colon too) up to the newline, or until more than 256 bytes are kept. So
/// `6191, 23 : USERID : UNIX : joe` gives `joe`, `6191, 23 : ERROR : NO-USER` gives nothing,
/// and a name with spaces loses them.
public struct IdentReplyReader: Sendable {
    /// remoteinfo stops once the kept bytes exceed this count (so it keeps at most 257).
    public static let maximumLength = 256

    /// What the reader needs after a byte.
    public enum Step: Hashable, Sendable {
        /// The reply goes on: feed the next byte.
        case needMore
        /// The reply is complete (newline seen, or the length bound passed): `collected` holds it.
        case finished
    }

    /// The bytes kept so far.
    public private(set) var collected: [UInt8] = []
    /// Colons seen before the kept part, up to three.
    public private(set) var colons = 0
    /// True once `finished` has been returned; further bytes are ignored.
    public private(set) var isFinished = false

    /// A reader at the start of a reply.
    public init() {}

    /// Takes one byte of the reply.
    public mutating func consume(_ byte: UInt8) -> Step {
        if isFinished { return .finished }
        switch byte {
        case UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\r"):
            return .needMore
        case UInt8(ascii: "\n"):
            isFinished = true
            return .finished
        default:
            if colons < 3 {
                if byte == UInt8(ascii: ":") { colons += 1 }
                return .needMore
            }
            collected.append(byte)
            if collected.count > IdentReplyReader.maximumLength {
                isFinished = true
                return .finished
            }
            return .needMore
        }
    }

    /// What remoteinfo makes of a whole reply: the kept bytes, or nil when the reply ends
    /// before it is complete (remoteinfo then fails, since the connection closed too early).
    public static func interpret(_ reply: some Sequence<UInt8>) -> [UInt8]? {
        var reader = IdentReplyReader()
        for byte in reply where reader.consume(byte) == .finished {
            return reader.collected
        }
        return nil
    }

    /// The query remoteinfo sends: the remote port, ` , `, the local port, CRLF.
    public static func request(remotePort: UInt16, localPort: UInt16) -> [UInt8] {
        Array("\(remotePort) , \(localPort)\r\n".utf8)
    }
}

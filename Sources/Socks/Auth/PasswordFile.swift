import CBastion
import GatewayKit

/// `--passwd FILE`: the users who may log in with SOCKS5's username/password method
/// (RFC 1929), one `user:HASH` line each, HASH a crypt(3) string such as `mkpasswd` or
/// `openssl passwd -6` prints. Blank lines and lines starting with `#` are skipped.
///
/// Parsing is pure and checks every line (a user name without `:`, an empty name, a hash
/// crypt(3) cannot use, a user twice): the file is refused as a whole, with the line numbers,
/// since a password file half applied locks out or lets in the wrong people.
public struct PasswordFile: Equatable, Sendable {
    /// A line that cannot be used.
    public struct LineError: Error, Equatable, Sendable, CustomStringConvertible {
        public var line: Int
        public var message: String
        public var description: String { "line \(line): \(message)" }
    }

    /// Every line that cannot be used, in order.
    public struct Errors: Error, Equatable, Sendable, CustomStringConvertible {
        public var path: String
        public var lines: [LineError]
        public var description: String { lines.map { "\(path): \($0)" }.joined(separator: "\n") }
    }

    /// The hashes by user name.
    public private(set) var hashes: [String: String]

    /// The longest user name and password RFC 1929 can carry.
    public static let longestField = 255

    /// Parses the contents of the file at `path` (the path is for the messages).
    public init(_ contents: some Collection<UInt8>, path: String) throws(Errors) {
        var hashes: [String: String] = [:]
        var firstLine: [String: Int] = [:]
        var errors: [LineError] = []
        var number = 0
        for raw in contents.split(separator: 10, omittingEmptySubsequences: false) {
            number += 1
            var line = Array(raw)
            if line.last == 13 { line.removeLast() }
            if line.allSatisfy({ $0 == 32 || $0 == 9 }) || line.first == UInt8(ascii: "#") { continue }
            func refuse(_ message: String) { errors.append(LineError(line: number, message: message)) }
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else {
                refuse("no \":\" between user and hash")
                continue
            }
            let user = line[..<colon]
            var hash = Array(line[(colon + 1)...])
            // `/etc/shadow`-like lines: the hash ends at the next colon.
            if let end = hash.firstIndex(of: UInt8(ascii: ":")) { hash.removeSubrange(end...) }
            guard !user.isEmpty, user.count <= Self.longestField,
                !user.contains(where: { $0 < 33 || $0 == 127 })
            else {
                refuse("the user name \"\(printable(user))\" is empty, longer than 255 bytes or has blanks")
                continue
            }
            let name = String(decoding: user, as: UTF8.self)
            guard !hash.contains(0), Self.known(hash) else {
                refuse("the hash for \(printable(user)) is not one crypt(3) knows (make one with mkpasswd)")
                continue
            }
            if let first = firstLine[name] {
                refuse("user \(printable(user)) is already on line \(first)")
                continue
            }
            firstLine[name] = number
            hashes[name] = String(decoding: hash, as: UTF8.self)
        }
        guard errors.isEmpty else { throw Errors(path: path, lines: errors) }
        self.hashes = hashes
    }

    /// Whether `hash` is a whole crypt(3) hash, not only a setting crypt accepts: a plain
    /// password whose first two letters make a DES salt must not pass for a hash.
    static func known(_ hash: [UInt8]) -> Bool {
        let alphabet: (UInt8) -> Bool = { c in
            (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c == 46 || c == 47
        }
        guard hash.allSatisfy({ alphabet($0) || $0 == UInt8(ascii: "$") || $0 == UInt8(ascii: "=") }) else {
            return false
        }
        if hash.first != UInt8(ascii: "$") {
            guard hash.count == 13, hash.allSatisfy(alphabet) else { return false }
        } else {
            let fields = hash.split(separator: UInt8(ascii: "$"), omittingEmptySubsequences: false)
            guard fields.count >= 4, let last = fields.last, !last.isEmpty else { return false }
            let lengths: [String: Int] = [
                "1": 22, "5": 43, "6": 86, "y": 43, "gy": 43, "7": 43, "2a": 53, "2b": 53, "2y": 53,
            ]
            if let want = lengths[String(decoding: fields[1], as: UTF8.self)], last.count != want { return false }
        }
        return (hash + [0]).withUnsafeBufferPointer { bastion_crypt_known($0.baseAddress!) == 1 }
    }

    /// Whether `user` may log in with `password`. Slow on purpose (crypt(3) takes
    /// milliseconds): the daemon calls it away from its event loops. An unknown user costs
    /// the same as a wrong password, so the time does not tell which users exist.
    public func verify(user: [UInt8], password: [UInt8]) -> Bool {
        let name = String(decoding: user, as: UTF8.self)
        let known = hashes[name]
        let hash = known ?? Self.decoy
        guard !password.contains(0), !user.contains(0) else { return false }
        let matches = (password + [0]).withUnsafeBufferPointer { p in
            hash.withCString { bastion_crypt_matches(p.baseAddress!, $0) }
        }
        return known != nil && matches == 1
    }

    /// A sha512crypt setting that no password matches (its hash part is all dots), for users
    /// who are not in the file.
    static let decoy = "$6$bastiondecoysalt$" + String(repeating: ".", count: 86)
}

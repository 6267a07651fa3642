/// How pop3.proxy reads a client's USER and PASS: which server it wants (with `-e`), which
/// user it logs in as there, and the proxy's own login (proxy authentication), as the manual
/// describes them.
///
/// `USER proxy-user:server-user@server` and `PASS proxy-pass:server-pass`: the colon splits
/// at its first occurrence, the proxy parts going to the access control program; without a
/// colon the proxy login is the server login. With server selection the last of the
/// delimiter characters (`-c`, `@` by default) splits user and server, so
/// `joe@example.org@pop.example.org` is user `joe@example.org` on `pop.example.org`.
public struct ServerLogin: Equatable, Sendable {
    /// The user name sent to the server (PROXY_SERVERLOGIN).
    public var serverUser: [UInt8]
    /// The proxy's user name (PROXY_USERNAME): the part before the colon, or the whole login.
    public var proxyUser: [UInt8]
    /// The server the client named (`host` or `host:port`, as given), nil when it named none.
    public var server: [UInt8]?
    /// The USER had a colon (proxy authentication): PASS is split at its first colon too.
    public var proxyAuthentication: Bool

    /// The USER argument read with `delimiters` (nil: server selection is off, `-e` absent).
    public init(user argument: [UInt8], delimiters: [UInt8]?) {
        var login = argument
        server = nil
        if let delimiters, let split = login.lastIndex(where: { delimiters.contains($0) }) {
            server = Array(login[(split + 1)...])
            login = Array(login[..<split])
        }
        if let colon = login.firstIndex(of: UInt8(ascii: ":")) {
            proxyUser = Array(login[..<colon])
            serverUser = Array(login[(colon + 1)...])
            proxyAuthentication = true
        } else {
            proxyUser = login
            serverUser = login
            proxyAuthentication = false
        }
    }

    /// The PASS argument: the proxy's password (PROXY_PASSWD) and the server's, split at the
    /// first colon when the USER had one (proxy authentication), else both the whole.
    public func passwords(_ argument: [UInt8]) -> (proxy: [UInt8], server: [UInt8]) {
        guard proxyAuthentication, let colon = argument.firstIndex(of: UInt8(ascii: ":")) else {
            return (argument, argument)
        }
        return (Array(argument[..<colon]), Array(argument[(colon + 1)...]))
    }

}

/// `-s`: the servers a client may select, a comma-separated list whose entries may use `?`
/// (one character) and `*` (any run, also empty), matched against the name exactly as the
/// client gave it, ignoring case. No lookup: an IP number on the list matches only that
/// number, and an entry without a port matches only a name without one.
public struct ServerList: Equatable, Sendable {
    public let patterns: [[UInt8]]

    /// The list as `-s` gives it; empty entries are ignored.
    public init(_ text: String) {
        patterns = text.utf8.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: true).map {
            Array($0).map(lowercased)
        }
    }

    /// Whether `server` matches an entry.
    public func allows(_ server: [UInt8]) -> Bool {
        let name = server.map(lowercased)
        return patterns.contains { Self.matches(name, $0) }
    }

    /// Wildcard matching in linear space and O(name × pattern) time at worst: the classic
    /// backtrack to the last `*` only (never exponential, whatever the pattern).
    static func matches(_ name: [UInt8], _ pattern: [UInt8]) -> Bool {
        var n = 0
        var p = 0
        var star: Int?
        var resume = 0
        while n < name.count {
            if p < pattern.count && (pattern[p] == UInt8(ascii: "?") || pattern[p] == name[n]) {
                n += 1
                p += 1
            } else if p < pattern.count && pattern[p] == UInt8(ascii: "*") {
                star = p
                resume = n
                p += 1
            } else if let s = star {
                p = s + 1
                resume += 1
                n = resume
            } else {
                return false
            }
        }
        while p < pattern.count && pattern[p] == UInt8(ascii: "*") { p += 1 }
        return p == pattern.count
    }
}

@inline(__always)
func lowercased(_ byte: UInt8) -> UInt8 {
    byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte + 32 : byte
}

#if canImport(Glibc)
import Glibc
#endif

/// Host names from /etc/hosts, read directly: the tools are static binaries, where glibc's
/// name-service switch cannot load its modules, so even `localhost` needs the file read by hand.
///
/// Each line is an address followed by a canonical name and any aliases, separated by blanks;
/// `#` starts a comment. Names match without regard to ASCII case, and a query with one
/// trailing dot (`localhost.`) matches the name without it. Lines whose first word is no
/// address are skipped, and so are IPv6 addresses with a zone (`fe80::1%eth0`): an
/// `IPAddress` has no room for the zone, and a link-local address is no use without it.
public enum HostsFile {
    /// The addresses `name` has in a hosts file's text, in file order, each once.
    public static func addresses(of name: String, in text: [UInt8]) -> [IPAddress] {
        var wanted = Array(name.utf8).map(lowercased)
        if wanted.count > 1 && wanted.last == UInt8(ascii: ".") { wanted.removeLast() }
        guard !wanted.isEmpty else { return [] }
        var found: [IPAddress] = []
        forEachEntry(in: text) { words in
            guard words.dropFirst().contains(where: { $0.count == wanted.count && $0.map(lowercased) == wanted })
            else { return }
            guard let address = IPAddress(String(decoding: words[0], as: UTF8.self)) else { return }
            if !found.contains(address) { found.append(address) }
        }
        return found
    }

    /// The name of each address in a hosts file's text, as gethostbyaddr's `files` source
    /// gives it: the canonical name (second word) of the first line for that address.
    /// IPv4-mapped addresses count as IPv4, so look up `IPAddress.unmapped`.
    public static func names(in text: [UInt8]) -> [IPAddress: String] {
        var names: [IPAddress: String] = [:]
        forEachEntry(in: text) { words in
            guard let address = IPAddress(String(decoding: words[0], as: UTF8.self))?.unmapped,
                names[address] == nil
            else { return }
            names[address] = String(decoding: words[1], as: UTF8.self)
        }
        return names
    }

    /// Calls `body` with the words of every line that has at least two (an address and a
    /// name), comments removed.
    private static func forEachEntry(in text: [UInt8], _ body: ([ArraySlice<UInt8>]) -> Void) {
        for rawLine in text.split(separator: UInt8(ascii: "\n")) {
            let line = rawLine.prefix { $0 != UInt8(ascii: "#") }
            let words = line.split { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") || $0 == UInt8(ascii: "\r") }
            if words.count >= 2 { body(words) }
        }
    }

    /// The addresses `name` has in the hosts file at `path`; empty when the file cannot be read.
    public static func addresses(of name: String, path: String = "/etc/hosts") -> [IPAddress] {
        guard let text = UserDatabase.readFile(path) else { return [] }
        return addresses(of: name, in: text)
    }

    private static func lowercased(_ byte: UInt8) -> UInt8 {
        byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte + 32 : byte
    }
}

/// Turns a host given on a command line or in a configuration file into addresses, the way a
/// dynamically linked program's getaddrinfo would with `hosts: files dns`, without glibc's
/// name-service switch: an address literal (also in brackets, `[::1]`), else /etc/hosts, else
/// DNS through `DNSResolver` (djb's stub: DNSCACHEIP, else resolv.conf).
public enum HostResolver {
    /// The addresses of `host` of `family`, in the order the source that knew them gave them.
    ///
    /// Families: `.ipv4` keeps IPv4 addresses, IPv4-mapped ones included, and returns them as
    /// plain IPv4; `.ipv6` keeps IPv6 addresses that are not IPv4-mapped; `.any` keeps
    /// everything as it is. The hosts file decides only when it has addresses of the family
    /// asked for; otherwise DNS is asked, as NSS goes on to `dns` after a `files` miss.
    /// Empty when the host is a literal of the other family or DNS knows no such addresses.
    public static func resolve(
        _ host: String, family: DNSResolver.Family = .any, hostsPath: String = "/etc/hosts"
    ) throws(DNSError) -> [IPAddress] {
        if let known = try answerLocally(host, family: family, hostsText: UserDatabase.readFile(hostsPath) ?? []) {
            return known
        }
        return filter(try DNSResolver().addresses(of: host, family: family), family: family)
    }

    /// What `host` is without asking DNS, in the order ``resolve(_:family:hostsPath:)`` tries:
    /// an address literal (also in brackets), the addresses of the hosts file's text
    /// `hostsText` (when it has some of `family`), a name of only digits and dots (djb's
    /// dns_ip4 reads such a name as addresses and never asks a server); nil when DNS must be
    /// asked. Pure, so a daemon on an event loop answers these at once and sends only real
    /// names to its non-blocking query. Filtered by `family` as `resolve` does.
    public static func answerLocally(
        _ host: String, family: DNSResolver.Family, hostsText: [UInt8]
    ) throws(DNSError) -> [IPAddress]? {
        guard !host.isEmpty else { throw DNSError.invalidName(host) }
        var text = Substring(host)
        let bracketed = text.hasPrefix("[") && text.hasSuffix("]") && text.count >= 2
        if bracketed { text = text.dropFirst().dropLast() }
        if let literal = IPAddress(String(text)) {
            return filter([literal], family: family)
        }
        if bracketed { throw DNSError.invalidName(host) }
        let fromFile = filter(HostsFile.addresses(of: host, in: hostsText), family: family)
        if !fromFile.isEmpty { return fromFile }
        if DNSResolver.looksNumeric(host) { return filter(DNSResolver.numericIPv4(host), family: family) }
        return nil
    }

    /// The DNS questions' types for `family`, in the order their addresses are given (AAAA
    /// before A for `.any`, as `DNSResolver.addresses(of:family:)`).
    public static func questionTypes(for family: DNSResolver.Family) -> [DNSType] {
        switch family {
        case .ipv4: return [.a]
        case .ipv6: return [.aaaa]
        case .any: return [.aaaa, .a]
        }
    }

    /// The addresses of `family` among `addresses` (see `resolve(_:family:hostsPath:)`).
    public static func filter(_ addresses: [IPAddress], family: DNSResolver.Family) -> [IPAddress] {
        switch family {
        case .any: return addresses
        case .ipv4: return addresses.map(\.unmapped).filter { $0.family == .v4 }
        case .ipv6: return addresses.filter { $0.family == .v6 && !$0.isV4Mapped }
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif

/// A DNS server to send queries to.
public struct DNSServer: Hashable, Sendable, CustomStringConvertible {
    /// The server's address.
    public var address: IPAddress
    /// The server's UDP and TCP port, normally 53.
    public var port: UInt16

    /// The server at `address`, port 53 unless told otherwise.
    public init(address: IPAddress, port: UInt16 = 53) {
        self.address = address
        self.port = port
    }

    public var description: String {
        Endpoint.text(address, port)
    }
}

/// How long to wait for each UDP attempt, as djb's dns_transmit: every timeout in turn is
/// tried against every server, each attempt with a fresh id and source port; a truncated
/// answer is asked again over TCP, bounded by `tcpTimeout`.
public struct DNSRetrySchedule: Hashable, Sendable {
    /// Waits of the successive UDP rounds; each round asks every server once.
    public var udpTimeouts: [Duration]
    /// The bound on one TCP exchange (connect, send, receive).
    public var tcpTimeout: Duration

    /// A schedule of `udpTimeouts` rounds and a `tcpTimeout` per TCP exchange.
    public init(udpTimeouts: [Duration], tcpTimeout: Duration) {
        self.udpTimeouts = udpTimeouts
        self.tcpTimeout = tcpTimeout
    }

    /// djb's schedule: 1, 3, 11 and 45 seconds per UDP round, 10 seconds for TCP.
    public static let djb = DNSRetrySchedule(
        udpTimeouts: [.seconds(1), .seconds(3), .seconds(11), .seconds(45)],
        tcpTimeout: .seconds(10)
    )
}

/// Where queries go, found the way djb's dns_resolvconfip finds it. Pure parsing here; the
/// resolver reads the environment and the file.
public enum DNSConfiguration {
    /// The resolver configuration file unless `RESOLVCONF` names another.
    public static let defaultResolvConf = "/etc/resolv.conf"
    /// djb's library keeps at most 16 servers.
    public static let maximumServers = 16

    /// Environment variables read by `servers(environment:)`:
    /// - `DNSCACHEIP`: addresses of the servers, taking precedence over the file.
    /// - `RESOLVCONF`: another file to read instead of /etc/resolv.conf.
    /// - `BASTION_DNSPORT`: the servers' port instead of 53. For tests, which run their own
    ///   server on a loopback port; not a djb variable.
    public static let variables = ["DNSCACHEIP", "RESOLVCONF", "BASTION_DNSPORT"]

    /// The addresses in a `DNSCACHEIP` value. djb's library reads dotted IPv4 addresses one
    /// after another, separated by dots; any byte that cannot be part of an address
    /// (space, comma, semicolon, ...) separates as well here, and IPv6 literals are accepted.
    /// Reading stops at the first word that is not an address. At most 16.
    public static func parseServerList(_ text: String) -> [IPAddress] {
        var out: [IPAddress] = []
        let isAddressByte: (UInt8) -> Bool = { c in
            (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9")) || (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "f"))
                || (c >= UInt8(ascii: "A") && c <= UInt8(ascii: "F")) || c == UInt8(ascii: ":")
                || c == UInt8(ascii: ".")
        }
        for word in text.utf8.split(whereSeparator: { !isAddressByte($0) }) {
            guard out.count < maximumServers else { break }
            let text = String(decoding: word, as: UTF8.self)
            if let v6 = IPAddress(parsing: text, family: .v6) {
                out.append(v6)
                continue
            }
            // Dotted quads run together with dots, as djb allows: "1.2.3.4.5.6.7.8".
            let parts = word.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: true)
            guard parts.count % 4 == 0, !parts.isEmpty else { return out }
            for start in stride(from: 0, to: parts.count, by: 4) {
                let quad = parts[start..<(start + 4)].map { String(decoding: $0, as: UTF8.self) }.joined(separator: ".")
                guard let v4 = IPAddress(parsing: quad, family: .v4) else { return out }
                if out.count < maximumServers { out.append(v4) }
            }
        }
        return out
    }

    /// The `nameserver` addresses of a resolv.conf, in order (at most 16): lines starting
    /// with `nameserver` and a space or tab, then the address. 0.0.0.0 (and ::) mean this
    /// host and become 127.0.0.1 (::1), as in djb's library. Other lines are ignored.
    public static func parseResolvConf(_ contents: [UInt8]) -> [IPAddress] {
        var out: [IPAddress] = []
        let keyword = Array("nameserver".utf8)
        for line in contents.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: true) {
            guard out.count < maximumServers, line.starts(with: keyword) else { continue }
            var rest = line.dropFirst(keyword.count)
            guard let first = rest.first, first == UInt8(ascii: " ") || first == UInt8(ascii: "\t") else { continue }
            rest = rest.drop { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") }
            let word = rest.prefix { c in
                c != UInt8(ascii: " ") && c != UInt8(ascii: "\t") && c != UInt8(ascii: "\r")
                    && c != UInt8(ascii: "#") && c != UInt8(ascii: ";") && c != UInt8(ascii: "%")
            }
            guard let address = IPAddress(String(decoding: word, as: UTF8.self)) else { continue }
            if address == .anyV4 {
                out.append(.loopbackV4)
            } else if address == .anyV6 {
                out.append(.loopbackV6)
            } else {
                out.append(address)
            }
        }
        return out
    }

    /// The servers for the given variables and file contents: `DNSCACHEIP` if it names any,
    /// else the file's `nameserver` lines, else 127.0.0.1; all on `BASTION_DNSPORT` or 53.
    public static func servers(dnscacheip: String?, resolvConf: [UInt8]?, port: String?) -> [DNSServer] {
        var addresses = dnscacheip.map(parseServerList) ?? []
        if addresses.isEmpty, let resolvConf { addresses = parseResolvConf(resolvConf) }
        if addresses.isEmpty { addresses = [.loopbackV4] }
        let number = port.flatMap { UInt16($0) }.flatMap { $0 == 0 ? nil : $0 } ?? 53
        return addresses.map { DNSServer(address: $0, port: number) }
    }

    /// The servers for an environment (a lookup function such as `Environment.get`): reads
    /// `RESOLVCONF` or /etc/resolv.conf only when `DNSCACHEIP` names no server. A missing
    /// file is no error (the default 127.0.0.1 applies); an unreadable one is.
    public static func servers(environment: (String) -> String?) throws(DNSError) -> [DNSServer] {
        let dnscacheip = environment("DNSCACHEIP")
        let port = environment("BASTION_DNSPORT")
        if let dnscacheip, !parseServerList(dnscacheip).isEmpty {
            return servers(dnscacheip: dnscacheip, resolvConf: nil, port: port)
        }
        let path = environment("RESOLVCONF").flatMap { $0.isEmpty ? nil : $0 } ?? defaultResolvConf
        let contents = try readFile(path)
        return servers(dnscacheip: nil, resolvConf: contents, port: port)
    }

    /// The file's bytes (at most 64 KiB), nil when it does not exist.
    private static func readFile(_ path: String) throws(DNSError) -> [UInt8]? {
        do { return try FD.readWholeFile(path, limit: 65536) } catch {
            if error.errno == ENOENT { return nil }
            throw DNSError.unreadableConfiguration(path: path, error)
        }
    }
}

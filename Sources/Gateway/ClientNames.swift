import GatewayKit

/// Where a client's name comes from (tcpproxy's PROXY_CLIENTNAME): the client's name as the original's gethostbyaddr found
/// it with `hosts: files dns`, first /etc/hosts, then a PTR query, else the address.
///
/// Both sources are read when the configuration is loaded (at start and on SIGHUP, before
/// chroot and privilege drop, and only when some handler runs a program): the hosts file
/// into a table, DNSCACHEIP or resolv.conf into a server list. The query itself runs on the
/// session's event loop (`DNSQuery`) with djb's first two retry steps, 1 s then 3 s per
/// server, and never more than `limit` in all; no answer, no name or a failure in that time
/// gives the address.
public struct ClientNameSource: Sendable {
    /// Names from the hosts file, by address.
    public let hosts: [IPAddress: String]
    /// The DNS servers asked (for names by address here, and for the addresses of a name by
    /// ``SessionDriver``'s ``SessionAction/resolve(_:)`` and ``StreamDestination/host(_:port:from:)``).
    public let servers: [DNSServer]
    /// The hosts file's text, for the addresses of a name (`HostResolver.answerLocally`).
    public let hostsText: [UInt8]

    /// The waits of the rounds of UDP queries (djb's schedule cut after two steps).
    public static let timeouts: [Duration] = [.seconds(1), .seconds(3)]
    /// The longest a connection waits for its client's name.
    public static let limit: Duration = .seconds(4)

    public init(hosts: [IPAddress: String], servers: [DNSServer], hostsText: [UInt8] = []) {
        self.hosts = hosts
        self.servers = servers
        self.hostsText = hostsText
    }

    /// Reads the hosts file at `hostsPath` (none or unreadable: no names from it) and the DNS
    /// configuration from the process environment (see `DNSConfiguration`).
    public static func load(hostsPath: String = "/etc/hosts") throws(DNSError) -> ClientNameSource {
        let servers = try DNSConfiguration.servers(environment: Environment.get)
        let text = UserDatabase.readFile(hostsPath) ?? []
        return ClientNameSource(hosts: HostsFile.names(in: text), servers: servers, hostsText: text)
    }

    /// The question that asks for `address`'s name.
    public static func question(for address: IPAddress) -> DNSQuestion {
        DNSQuestion(name: DNSWire.reverseName(for: address.unmapped), type: .ptr)
    }

    /// The name a PTR response gives, as dns_name4 prints it; nil when it has none (an empty
    /// or unreadable one included).
    public static func name(in response: DNSResponse) -> String? {
        guard let wire = (try? response.firstPointerName()) ?? nil else { return nil }
        let name = DNSWire.formatName(wire)
        return name.isEmpty || name == "." ? nil : name
    }
}

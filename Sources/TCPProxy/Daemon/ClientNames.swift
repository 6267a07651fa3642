import GatewayKit
import Loop
import Relay

/// Where PROXY_CLIENTNAME comes from: the client's name as the original's gethostbyaddr found
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
    /// The DNS servers asked.
    public let servers: [DNSServer]

    /// The waits of the rounds of UDP queries (djb's schedule cut after two steps).
    public static let timeouts: [Duration] = [.seconds(1), .seconds(3)]
    /// The longest a connection waits for its client's name.
    public static let limit: Duration = .seconds(4)

    public init(hosts: [IPAddress: String], servers: [DNSServer]) {
        self.hosts = hosts
        self.servers = servers
    }

    /// Reads the hosts file at `hostsPath` (none or unreadable: no names from it) and the DNS
    /// configuration from the process environment (see `DNSConfiguration`).
    static func load(hostsPath: String = "/etc/hosts") throws(ProxyStartError) -> ClientNameSource {
        let servers: [DNSServer]
        do { servers = try DNSConfiguration.servers(environment: Environment.get) } catch {
            throw ProxyStartError("client names (PROXY_CLIENTNAME): \(error)")
        }
        let hosts = UserDatabase.readFile(hostsPath).map(HostsFile.names(in:)) ?? [:]
        return ClientNameSource(hosts: hosts, servers: servers)
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

extension ProxyHandler {
    /// The handler starts a program for a connection (an access control program or a
    /// handler program), so the connection needs the PROXY_ variables.
    public var runsProgram: Bool {
        if accessControlProgram != nil { return true }
        if case .exec = target { return true }
        return false
    }
}

extension ProxyConfiguration {
    /// Some handler starts a program (see `ProxyHandler.runsProgram`).
    public var runsPrograms: Bool { services.contains { $0.handlers.contains(where: \.runsProgram) } }
}

// MARK: - A session's lookup

extension ProxySession {
    /// Finds the client's name for PROXY_CLIENTNAME, then goes on with `checkAccess`: at once
    /// from the hosts table, else when the DNS query has ended.
    func lookUpClientName(_ source: ClientNameSource) {
        let address = peer.address.unmapped
        if let name = source.hosts[address] {
            clientName = name
            trace("client name from the hosts file: \(name)")
            return checkAccess()
        }
        nameQuery = DNSQuery.start(
            loop: worker.loop, question: ClientNameSource.question(for: address), servers: source.servers,
            timeouts: ClientNameSource.timeouts, limit: ClientNameSource.limit
        ) { [weak self] result in
            self?.clientNameFound(result)
        }
    }

    private func clientNameFound(_ result: Result<DNSResponse, DNSError>) {
        nameQuery = nil
        switch result {
        case .success(let response):
            clientName = ClientNameSource.name(in: response)
            trace(clientName.map { "client name from DNS: \($0)" } ?? "no name for the client in DNS")
        case .failure(let error):
            if tracing {
                trace("no name for the client: \(error)")
            } else {
                log.debug("\(who): no name for the client: \(error)")
            }
        }
        checkAccess()
    }
}

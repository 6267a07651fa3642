import GatewayKit

/// How much `tcpproxy -z` tells about the configuration.
public enum ConfigurationListingLevel: Sendable, Equatable {
    /// `-z`: the configured ports, one number per line, each once, in file order (for fuser(1)).
    case ports
    /// `-zz`: one line per handler: `PORT LOCAL TARGET uid UID gid GID [user NAME]`.
    case basic
}

extension ProxyConfiguration {
    /// The lines `tcpproxy -z` (``ConfigurationListingLevel/ports``) or `-zz` (``ConfigurationListingLevel/basic``)
    /// prints, without line ends.
    ///
    /// `-zz` lines, one per handler in file order (most specific first within a service):
    /// ```
    /// 25 192.168.1.1 server mailrelay.provider.com:25 uid - gid -
    /// 110 192.44.100.7 exec /usr/local/sbin/pop3.proxy mail.domain.com uid 65535 gid 65534
    /// 8080 * server [2001:db8::1]:80 uid - gid -
    /// 79 * server localhost:79 uid - gid - user nobody
    /// ```
    /// LOCAL is the handler's interface, else the service's listen address (`*` for any). The server port is the
    /// one connected to (the listening port when the file names none); IPv6 hosts are in brackets. `-` marks an
    /// id the file does not set (tcpproxy's default applies); `user NAME` follows when one is set.
    public func listing(_ level: ConfigurationListingLevel) -> [String] {
        switch level {
        case .ports:
            var seen = Set<UInt16>()
            return services.compactMap { seen.insert($0.port).inserted ? String($0.port) : nil }
        case .basic:
            return services.flatMap { service in
                service.handlers.map { handler in
                    let local = handler.interface?.description ?? service.listen.description
                    var line = "\(service.port) \(local) \(handler.target.summary(listeningPort: service.port))"
                    line += " uid " + (handler.uid.map { String($0) } ?? "-")
                    line += " gid " + (handler.gid.map { String($0) } ?? "-")
                    if let user = handler.user { line += " user \(user)" }
                    return line
                }
            }
        }
    }
}

extension ProxyTarget {
    /// `server HOST:PORT` (the listening port when the configuration names none; IPv6 hosts in brackets) or
    /// `exec PROGRAM ARGUMENTS`, as -zz lists a handler and the debug trace names it.
    func summary(listeningPort: UInt16) -> String {
        switch self {
        case .forward(let host, let port, _, _, _):
            let shownHost = host.contains(":") ? "[\(host)]" : host
            return "server \(shownHost):\(port ?? listeningPort)"
        case .exec(let argv):
            return (["exec"] + argv).joined(separator: " ")
        }
    }
}

import GatewayKit

// MARK: - Choosing the handler for a connection

extension ProxyService {
    /// The handler for a connection that this service accepted on `localAddress`: the one for exactly that
    /// interface if there is one, else the one for every address; nil when neither exists (the connection
    /// is refused). IPv4-mapped IPv6 addresses count as their IPv4 form.
    public func handler(forLocalAddress localAddress: IPAddress) -> ProxyHandler? {
        let local = localAddress.unmapped
        return handlers.first { $0.interface == local } ?? handlers.first { $0.interface == nil }
    }

    /// Whether this service's listen address covers `localAddress` (already unmapped): any address does, as does
    /// an unspecified one (`0.0.0.0`, `::`) of the same family, or the very address. A host name never does
    /// here: only the daemon knows what it resolved to.
    func listens(on local: IPAddress) -> (matches: Bool, exact: Bool) {
        switch listen {
        case .any:
            return (true, false)
        case .address(let address):
            if address == local { return (true, true) }
            let unspecified = address == .anyV4 || address == .anyV6
            return (unspecified && (address == .anyV6 || address.family == local.family), false)
        case .hostname:
            return (false, false)
        }
    }
}

extension ProxyConfiguration {
    /// The handler for a connection to `localAddress`:`port`, as tcpproxy chooses it (for example under inetd,
    /// where the daemon learns both from its socket).
    ///
    /// Among the services on `port` whose listen address covers `localAddress`, a handler for exactly that
    /// interface address wins; then one for any address of a service listening on exactly that address; then one
    /// for any address of a service listening on any address. Ties go to the first in the file. IPv4-mapped IPv6
    /// local addresses count as their IPv4 form. Services that listen on a host name are not considered: a daemon
    /// that resolved it asks that service with ``ProxyService/handler(forLocalAddress:)``.
    public func handler(forLocalAddress localAddress: IPAddress, port: UInt16) -> ProxyHandler? {
        let local = localAddress.unmapped
        var best: (handler: ProxyHandler, rank: Int)?
        for service in services where service.port == port {
            let (matches, exact) = service.listens(on: local)
            guard matches else { continue }
            for handler in service.handlers where handler.interface == nil || handler.interface == local {
                let rank = handler.interface != nil ? 2 : (exact ? 1 : 0)
                if rank > (best?.rank ?? -1) { best = (handler, rank) }
            }
        }
        return best?.handler
    }
}

import TLS

/// The TLS contexts of one pop3.proxy, made from its options' files: at start, and again at
/// each SIGHUP of the daemon (a session keeps the contexts it began with).
public struct POP3TLSContexts: Sendable {
    /// Toward clients: STLS and `--pop3s`.
    public var clients: TLSServerContext?
    /// Toward the server: `--server-tls`.
    public var servers: TLSClientContext?

    public init(clients: TLSServerContext? = nil, servers: TLSClientContext? = nil) {
        self.clients = clients
        self.servers = servers
    }

    /// The contexts `options` asks for; an unreadable or wrong file is an error naming it.
    public init(options: POP3ProxyOptions) throws(TLSError) {
        if let settings = options.clientTLSSettings { clients = try TLSServerContext(settings) }
        if let settings = options.serverTLSSettings { servers = try TLSClientContext(settings) }
    }

    /// Whether the options ask for any TLS file (what SIGHUP re-reads).
    public static func usesFiles(_ options: POP3ProxyOptions) -> Bool {
        options.clientTLSSettings != nil || options.serverTLSCA != nil
    }
}

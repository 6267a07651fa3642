import GatewayKit
import TLS

extension ChildEnvironment {
    /// A client's TLS for an access control or handler program: `PREFIX` + `TLS_VERSION`,
    /// `TLS_CIPHER`, `TLS_SNI` (the name the client asked for) and `TLS_CLIENT_SUBJECT` (its
    /// verified certificate, RFC 2253). What is not known, or no TLS at all, removes the
    /// variable, so the program never sees one inherited from the daemon's environment.
    public mutating func setTLS(_ facts: TLSFacts?, prefix: String) {
        set(prefix + "TLS_VERSION", facts?.version)
        set(prefix + "TLS_CIPHER", facts?.cipher)
        set(prefix + "TLS_SNI", facts?.serverName)
        set(prefix + "TLS_CLIENT_SUBJECT", facts?.peerSubject)
    }
}

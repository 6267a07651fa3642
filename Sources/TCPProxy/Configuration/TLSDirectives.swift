import TLS

/// The TLS settings of a handler as its configuration words them, in every form tcpproxy
/// reads: spreadspace's stanza lines (`tls-cert: FILE;`), Zekoll's directives (`tls-cert
/// FILE`) and the long options (`--tls-cert FILE`). One set of names and one set of checks,
/// whatever the form.
///
/// - `tls-cert FILE`, `tls-key FILE`: a certificate chain and its key, in PEM; repeatable,
///   in pairs, the first pair the default and the others chosen by SNI.
/// - `tls-ocsp FILE`: an OCSP response (DER, as `openssl ocsp -respout` writes it) stapled to
///   the handshakes of the `tls-cert` given last before it.
/// - `tls-client-ca FILE`: clients must show a certificate of this CA (mutual TLS).
/// - `tls-protocols LIST`, `tls-ciphers LIST`: the versions and ciphers (both directions).
/// - `remote-tls yes|insecure`: TLS toward the server, verified (the default whenever TLS
///   goes toward it) or, explicitly, not.
/// - `remote-tls-ca FILE`: the CA the server's certificate is verified against (else the
///   system's store); `remote-tls-name NAME`: the name checked and sent as SNI (else the
///   remote host as given); `remote-tls-cert FILE` and `remote-tls-key FILE`: the certificate
///   tcpproxy shows a server that asks for one. Each implies `remote-tls yes`.
public struct TLSDirectives: Equatable, Sendable {
    public enum Remote: Equatable, Sendable {
        case verified
        case insecure
    }

    /// `tls-cert`, `tls-key` and `tls-ocsp`.
    public var certificates = TLSCertificateList()
    public var clientCA: String?
    public var protocols: TLSProtocols?
    public var ciphers: TLSCiphers?
    public var remote: Remote?
    public var remoteCA: String?
    public var remoteName: String?
    public var remoteCertificate: String?
    public var remoteKey: String?

    public init() {}

    /// The directives' names, in the order the usage lists them.
    public static let names = [
        "tls-cert", "tls-key", "tls-ocsp", "tls-client-ca", "tls-protocols", "tls-ciphers", "remote-tls",
        "remote-tls-ca", "remote-tls-name", "remote-tls-cert", "remote-tls-key",
    ]

    /// What each takes, for usage messages.
    public static let arguments: [String: String] = [
        "tls-cert": "FILE", "tls-key": "FILE", "tls-ocsp": "FILE", "tls-client-ca": "FILE",
        "tls-protocols": "TLSv1.2,TLSv1.3", "tls-ciphers": "LIST", "remote-tls": "yes|insecure",
        "remote-tls-ca": "FILE", "remote-tls-name": "NAME", "remote-tls-cert": "FILE", "remote-tls-key": "FILE",
    ]

    /// Directives that may be given more than once (in pairs).
    public static let repeatable: Set<String> = ["tls-cert", "tls-key", "tls-ocsp"]

    public var isEmpty: Bool { self == TLSDirectives() }

    /// Sets directive `name` (one of ``names``) to `value`; a wrong value is an error saying
    /// what was expected.
    public mutating func set(_ name: String, _ value: String) throws(ConfigurationProblem) {
        switch name {
        case "tls-cert", "tls-key", "tls-ocsp":
            do { try certificates.add(name, value) } catch { throw .tls(error.description) }
        case "tls-client-ca": clientCA = value
        case "tls-protocols":
            do { protocols = try TLSProtocols(parsing: value) } catch { throw .tls("tls-protocols: \(error)") }
        case "tls-ciphers":
            do { ciphers = try TLSCiphers(parsing: value) } catch { throw .tls("tls-ciphers: \(error)") }
        case "remote-tls":
            switch value {
            case "yes": remote = .verified
            case "insecure": remote = .insecure
            default: throw .invalidValue(directive: "remote-tls", value: value, expected: "yes or insecure")
            }
        case "remote-tls-ca": remoteCA = value
        case "remote-tls-name": remoteName = value
        case "remote-tls-cert": remoteCertificate = value
        case "remote-tls-key": remoteKey = value
        default: preconditionFailure("not a TLS directive: \(name)")
        }
    }

    /// Where a setting of the outer section is the default of an inner one (Zekoll's
    /// sections): each directive the inner one leaves unset comes from `outer`.
    public func inheriting(_ outer: TLSDirectives) -> TLSDirectives {
        var merged = self
        if certificates.isEmpty { merged.certificates = outer.certificates }
        merged.clientCA = clientCA ?? outer.clientCA
        merged.protocols = protocols ?? outer.protocols
        merged.ciphers = ciphers ?? outer.ciphers
        merged.remote = remote ?? outer.remote
        merged.remoteCA = remoteCA ?? outer.remoteCA
        merged.remoteName = remoteName ?? outer.remoteName
        merged.remoteCertificate = remoteCertificate ?? outer.remoteCertificate
        merged.remoteKey = remoteKey ?? outer.remoteKey
        return merged
    }

    /// The settings the directives make, checked as a whole.
    public func settings() throws(ConfigurationProblem) -> (server: TLSServerSettings?, client: TLSClientSettings?) {
        let files: [TLSCertificateFiles]
        do { files = try certificates.files() } catch { throw .tls(error.description) }
        if clientCA != nil && certificates.isEmpty {
            throw .tls("tls-client-ca needs tls-cert and tls-key: it verifies the clients of a TLS listener")
        }
        if remote == .insecure && remoteCA != nil {
            throw .tls("remote-tls insecure turns verification off: it cannot go with remote-tls-ca")
        }
        guard (remoteCertificate == nil) == (remoteKey == nil) else {
            throw .tls(
                "remote-tls-cert and remote-tls-key go together: the certificate shown to the server and its key")
        }
        var server: TLSServerSettings?
        if !files.isEmpty {
            server = TLSServerSettings(
                certificates: files,
                clientCA: clientCA, protocols: protocols ?? .default, ciphers: ciphers ?? .intermediate)
        }
        var client: TLSClientSettings?
        if remote != nil || remoteCA != nil || remoteName != nil || remoteCertificate != nil {
            let shown = remoteCertificate.map { TLSCertificateFiles(certificate: $0, key: remoteKey ?? "") }
            client = TLSClientSettings(
                ca: remoteCA, verify: remote != .insecure, name: remoteName, certificate: shown,
                protocols: protocols ?? .default, ciphers: ciphers ?? .intermediate)
        }
        return (server, client)
    }

    /// The directives that make `server` and `client` (what -zzz writes back), as
    /// (name, value) pairs in the order of ``names``.
    public static func words(server: TLSServerSettings?, client: TLSClientSettings?) -> [(String, String)] {
        var out = TLSCertificateList.words(server?.certificates ?? [])
        if let ca = server?.clientCA { out.append(("tls-client-ca", ca)) }
        let protocols = server?.protocols ?? client?.protocols
        if let protocols, protocols != .default { out.append(("tls-protocols", protocols.description)) }
        let ciphers = server?.ciphers ?? client?.ciphers
        if let ciphers, ciphers != .intermediate {
            out.append(("tls-ciphers", ciphers.list + ":" + ciphers.suites))
        }
        if let client {
            out.append(("remote-tls", client.verify ? "yes" : "insecure"))
            if let ca = client.ca { out.append(("remote-tls-ca", ca)) }
            if let name = client.name { out.append(("remote-tls-name", name)) }
            if let shown = client.certificate {
                out.append(("remote-tls-cert", shown.certificate))
                out.append(("remote-tls-key", shown.key))
            }
        }
        return out
    }
}

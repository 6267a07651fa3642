// What a TLS context is made of, as values: protocols, ciphers, certificate files, what is
// verified. Pure (parsed and unit tested without OpenSSL); TLSContext turns it into one.

/// A TLS version Bastion can speak.
public enum TLSVersion: Int, Sendable, Comparable, CaseIterable, CustomStringConvertible {
    case tls1_0 = 0
    case tls1_1 = 1
    case tls1_2 = 2
    case tls1_3 = 3

    public static func < (a: TLSVersion, b: TLSVersion) -> Bool { a.rawValue < b.rawValue }

    /// OpenSSL's name, as `openssl s_client` and the logs print it.
    public var description: String { self == .tls1_0 ? "TLSv1" : "TLSv1.\(rawValue)" }

    /// `TLSv1.2`, `tlsv1.2`, `1.2`, `TLSv1` and `TLSv1.0` all name TLS 1.2 or 1.0.
    public init?(name: String) {
        var word = Substring(name.lowercased())
        if word.hasPrefix("tlsv") {
            word = word.dropFirst(4)
        } else if word.hasPrefix("tls") {
            word = word.dropFirst(3)
        }
        switch word {
        case "1", "1.0": self = .tls1_0
        case "1.1": self = .tls1_1
        case "1.2": self = .tls1_2
        case "1.3": self = .tls1_3
        default: return nil
        }
    }
}

/// The range of versions a context allows.
public struct TLSProtocols: Equatable, Sendable, CustomStringConvertible {
    public var minimum: TLSVersion
    public var maximum: TLSVersion

    /// TLS 1.2 and 1.3 only: what Mozilla's "intermediate" configuration allows.
    public static let `default` = TLSProtocols(minimum: .tls1_2, maximum: .tls1_3)

    public init(minimum: TLSVersion, maximum: TLSVersion) {
        self.minimum = minimum
        self.maximum = maximum
    }

    /// A list of versions (`TLSv1.2,TLSv1.3`, `TLSv1.3`; commas, colons or spaces between),
    /// which must be one run without gaps, since a TLS handshake negotiates within a range.
    public init(parsing text: String) throws(TLSError) {
        let words = text.split { $0 == "," || $0 == ":" || $0 == " " }.map(String.init)
        guard !words.isEmpty else { throw TLSError("no TLS version in \"\(text)\"") }
        var versions: [TLSVersion] = []
        for word in words {
            guard let version = TLSVersion(name: word) else {
                throw TLSError("unknown TLS version \"\(word)\" (TLSv1, TLSv1.1, TLSv1.2 or TLSv1.3)")
            }
            if !versions.contains(version) { versions.append(version) }
        }
        versions.sort()
        guard versions.last!.rawValue - versions.first!.rawValue == versions.count - 1 else {
            throw TLSError("the TLS versions \"\(text)\" have a gap: give a run such as TLSv1.2,TLSv1.3")
        }
        self.init(minimum: versions.first!, maximum: versions.last!)
    }

    public var description: String {
        TLSVersion.allCases.filter { $0 >= minimum && $0 <= maximum }.map(\.description).joined(separator: ",")
    }
}

/// The ciphers a context offers: OpenSSL's cipher list for TLS 1.2 and below, and its list of
/// TLS 1.3 suites.
public struct TLSCiphers: Equatable, Sendable {
    public var list: String
    public var suites: String

    /// Mozilla's "intermediate" recommendation (version 5.7): ECDHE with AES-GCM or
    /// ChaCha20-Poly1305, DHE only as the last resort, and every TLS 1.3 suite.
    public static let intermediate = TLSCiphers(
        list: [
            "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
            "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
            "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384", "DHE-RSA-CHACHA20-POLY1305",
        ].joined(separator: ":"),
        suites: "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256")

    public init(list: String, suites: String) {
        self.list = list
        self.suites = suites
    }

    /// `--tls-ciphers`: an OpenSSL cipher list, whose `TLS_` words are TLS 1.3 suites (they
    /// replace the default suites; without any the default suites stay).
    public init(parsing text: String) throws(TLSError) {
        let words = text.split { $0 == ":" || $0 == "," || $0 == " " }.map(String.init)
        guard !words.isEmpty else { throw TLSError("no cipher in \"\(text)\"") }
        let suites = words.filter { $0.hasPrefix("TLS_") }
        let list = words.filter { !$0.hasPrefix("TLS_") }
        self.init(
            list: list.isEmpty ? Self.intermediate.list : list.joined(separator: ":"),
            suites: suites.isEmpty ? Self.intermediate.suites : suites.joined(separator: ":"))
    }
}

/// A certificate chain and its key, in PEM files, and an OCSP response (DER) to staple.
public struct TLSCertificateFiles: Equatable, Sendable {
    public var certificate: String
    public var key: String
    public var ocspResponse: String?

    public init(certificate: String, key: String, ocspResponse: String? = nil) {
        self.certificate = certificate
        self.key = key
        self.ocspResponse = ocspResponse
    }
}

/// A listener's certificates as a command line or a configuration gives them, one word at a
/// time: `tls-cert FILE` and `tls-key FILE` in pairs (the first pair the default, the others
/// chosen by SNI), and `tls-ocsp FILE` for the certificate given last before it. What tcpproxy
/// and pop3.proxy both read, with the same checks and the same words in their errors.
public struct TLSCertificateList: Equatable, Sendable {
    public var certificates: [String] = []
    public var keys: [String] = []
    /// `tls-ocsp`, by the index of the certificate it follows.
    public var ocsp: [Int: String] = [:]

    public init() {}

    public var isEmpty: Bool { certificates.isEmpty && keys.isEmpty }

    /// Takes `tls-cert`, `tls-key` or `tls-ocsp` (the names without their dashes).
    public mutating func add(_ name: String, _ value: String) throws(TLSError) {
        switch name {
        case "tls-cert": certificates.append(value)
        case "tls-key": keys.append(value)
        case "tls-ocsp":
            guard let last = certificates.indices.last else {
                throw TLSError("tls-ocsp staples a response to the tls-cert before it: give tls-cert first")
            }
            guard ocsp[last] == nil else {
                throw TLSError("tls-ocsp given twice for the certificate \(certificates[last])")
            }
            ocsp[last] = value
        default: preconditionFailure("not a certificate word: \(name)")
        }
    }

    /// The pairs, checked: as many keys as certificates.
    public func files() throws(TLSError) -> [TLSCertificateFiles] {
        guard certificates.count == keys.count else {
            throw TLSError(
                "tls-cert and tls-key go in pairs: \(certificates.count) certificate\(certificates.count == 1 ? "" : "s"), "
                    + "\(keys.count) key\(keys.count == 1 ? "" : "s")")
        }
        return zip(certificates, keys).enumerated().map { index, pair in
            TLSCertificateFiles(certificate: pair.0, key: pair.1, ocspResponse: ocsp[index])
        }
    }

    /// The words that make `files` again, in order.
    public static func words(_ files: [TLSCertificateFiles]) -> [(String, String)] {
        var out: [(String, String)] = []
        for file in files {
            out.append(("tls-cert", file.certificate))
            out.append(("tls-key", file.key))
            if let response = file.ocspResponse { out.append(("tls-ocsp", response)) }
        }
        return out
    }
}

/// A listener's TLS: its certificates (chosen by SNI, the first the default), whose clients
/// must show a certificate of `clientCA` when it is given.
public struct TLSServerSettings: Equatable, Sendable {
    public var certificates: [TLSCertificateFiles]
    public var clientCA: String?
    public var protocols: TLSProtocols
    public var ciphers: TLSCiphers
    /// How often session ticket keys are replaced (the previous key decrypts one period more).
    public var ticketKeyLifetime: Duration

    public init(
        certificates: [TLSCertificateFiles], clientCA: String? = nil, protocols: TLSProtocols = .default,
        ciphers: TLSCiphers = .intermediate, ticketKeyLifetime: Duration = .seconds(12 * 3600)
    ) {
        self.certificates = certificates
        self.clientCA = clientCA
        self.protocols = protocols
        self.ciphers = ciphers
        self.ticketKeyLifetime = ticketKeyLifetime
    }
}

/// TLS toward a server: verified against `ca` (the system's store when nil) unless
/// `verify` is off, the name checked and sent as SNI being `name` (the host as given when nil).
public struct TLSClientSettings: Equatable, Sendable {
    public var ca: String?
    public var verify: Bool
    public var name: String?
    public var certificate: TLSCertificateFiles?
    public var protocols: TLSProtocols
    public var ciphers: TLSCiphers

    public init(
        ca: String? = nil, verify: Bool = true, name: String? = nil, certificate: TLSCertificateFiles? = nil,
        protocols: TLSProtocols = .default, ciphers: TLSCiphers = .intermediate
    ) {
        self.ca = ca
        self.verify = verify
        self.name = name
        self.certificate = certificate
        self.protocols = protocols
        self.ciphers = ciphers
    }
}

/// What went wrong with TLS, in words for a log line or an error message.
public struct TLSError: Error, Equatable, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Host names as certificates name them (RFC 6125): compared as bytes with ASCII letters
/// case-insensitive, a trailing dot ignored, and a wildcard only as the whole leftmost label,
/// standing for exactly one label. DNS names are ASCII (A-labels): other bytes match only
/// themselves, never by Unicode's case mapping or canonical equivalence (String's `==` would
/// let "K", the Kelvin sign, match "k", and a combining mark after a dot hide a label from
/// a wildcard).
public enum TLSNames {
    public static func matches(_ pattern: String, _ name: String) -> Bool {
        let pattern = normal(pattern)
        let name = normal(name)
        guard !pattern.isEmpty, !name.isEmpty else { return false }
        let dot = UInt8(ascii: ".")
        guard isWildcard(pattern) else { return pattern == name }
        // "*.rest": one label of at least a byte, then ".rest", where rest has a dot itself.
        let rest = pattern.dropFirst(2)
        guard rest.contains(dot), let first = name.firstIndex(of: dot), first > 0 else { return false }
        return name[(first + 1)...].elementsEqual(rest)
    }

    /// The certificate for a client's SNI `name`: the first that names it exactly, else the
    /// first whose wildcard covers it, else the first (the default).
    public static func select(_ name: String?, among certificates: [[String]]) -> Int {
        guard let name, !name.isEmpty else { return 0 }
        if let exact = certificates.firstIndex(where: {
            $0.contains { !isWildcard(Array($0.utf8)) && matches($0, name) }
        }) {
            return exact
        }
        return certificates.firstIndex { $0.contains { matches($0, name) } } ?? 0
    }

    private static func isWildcard(_ pattern: [UInt8]) -> Bool {
        pattern.starts(with: [UInt8(ascii: "*"), UInt8(ascii: ".")])
    }

    private static func normal(_ text: String) -> [UInt8] {
        var bytes = text.utf8.map { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") ? $0 | 0x20 : $0 }
        if bytes.last == UInt8(ascii: ".") { bytes.removeLast() }
        return bytes
    }
}

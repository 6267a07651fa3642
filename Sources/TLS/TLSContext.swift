#if canImport(Glibc)
import Glibc
#endif
import CTLS
import GatewayKit

/// The library's error queue as one line (and emptied), or `fallback` when it holds nothing.
func openSSLError(_ fallback: String) -> String {
    var text = [CChar](repeating: 0, count: 512)
    btls_error_text(&text, text.count)
    let line = String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return line.isEmpty ? fallback : line
}

/// What server and client contexts share: versions, ciphers, the defaults, a certificate.
enum ContextMaking {
    static func make(server: Bool, protocols: TLSProtocols, ciphers: TLSCiphers) throws(TLSError) -> OpaquePointer {
        btls_init()
        ERR_clear_error()
        guard let context = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method()) else {
            throw TLSError(openSSLError("cannot make a TLS context"))
        }
        btls_ctx_set_defaults(context, server ? 1 : 0)
        guard
            btls_ctx_set_protocols(
                context, btls_version_number(Int32(protocols.minimum.rawValue)),
                btls_version_number(Int32(protocols.maximum.rawValue))) == 1
        else {
            SSL_CTX_free(context)
            throw TLSError("the TLS versions \(protocols) are not available: \(openSSLError("refused"))")
        }
        if protocols.minimum <= .tls1_2 && SSL_CTX_set_cipher_list(context, ciphers.list) != 1 {
            SSL_CTX_free(context)
            throw TLSError("no cipher of \"\(ciphers.list)\" is available: \(openSSLError("refused"))")
        }
        if protocols.maximum == .tls1_3 && SSL_CTX_set_ciphersuites(context, ciphers.suites) != 1 {
            SSL_CTX_free(context)
            throw TLSError("no TLS 1.3 suite of \"\(ciphers.suites)\" is available: \(openSSLError("refused"))")
        }
        return context
    }

    /// A file OpenSSL is about to read, opened first so that a missing or unreadable one is
    /// named with the system's reason (OpenSSL's own words are "system library::...").
    static func readable(_ path: String, _ what: String) throws(TLSError) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw TLSError("cannot read the \(what) \(path): \(SystemError.current)") }
        Glibc.close(fd)
    }

    static func use(_ files: TLSCertificateFiles, in context: OpaquePointer) throws(TLSError) {
        try readable(files.certificate, "certificate")
        try readable(files.key, "key")
        ERR_clear_error()
        guard SSL_CTX_use_certificate_chain_file(context, files.certificate) == 1 else {
            throw TLSError("cannot use the certificate \(files.certificate): \(openSSLError("unreadable"))")
        }
        guard SSL_CTX_use_PrivateKey_file(context, files.key, SSL_FILETYPE_PEM) == 1 else {
            throw TLSError("cannot use the key \(files.key): \(openSSLError("unreadable"))")
        }
        guard SSL_CTX_check_private_key(context) == 1 else {
            throw TLSError("the key \(files.key) does not belong to the certificate \(files.certificate)")
        }
        if let path = files.ocspResponse {
            let bytes: [UInt8]
            do { bytes = try FD.readWholeFile(path, limit: 1 << 20) } catch {
                throw TLSError("cannot read the OCSP response \(path): \(error)")
            }
            guard !bytes.isEmpty, btls_ctx_set_ocsp_response(context, bytes, bytes.count) == 1 else {
                throw TLSError("cannot staple the OCSP response \(path): it is empty")
            }
        }
    }

    static func trust(_ ca: String, in context: OpaquePointer) throws(TLSError) {
        try readable(ca, "CA file")
        ERR_clear_error()
        guard SSL_CTX_load_verify_locations(context, ca, nil) == 1 else {
            throw TLSError("cannot use the CA file \(ca): \(openSSLError("unreadable"))")
        }
    }
}

/// A listener's TLS, made from ``TLSServerSettings``: one OpenSSL context per certificate,
/// the first the default, another chosen by the client's SNI. Immutable once made, shared by
/// every loop's connections (OpenSSL's contexts are safe for that); a reload makes a new one
/// and connections keep theirs.
public final class TLSServerContext: @unchecked Sendable, Equatable, CustomStringConvertible {
    public let settings: TLSServerSettings
    let contexts: [OpaquePointer]
    /// The DNS names of each certificate, for SNI.
    public let names: [[String]]

    public init(_ settings: TLSServerSettings) throws(TLSError) {
        guard !settings.certificates.isEmpty else { throw TLSError("TLS needs a certificate and its key") }
        self.settings = settings
        var made: [OpaquePointer] = []
        var names: [[String]] = []
        do throws(TLSError) {
            for files in settings.certificates {
                let context = try ContextMaking.make(
                    server: true, protocols: settings.protocols, ciphers: settings.ciphers)
                made.append(context)
                try ContextMaking.use(files, in: context)
                if let ca = settings.clientCA {
                    try ContextMaking.trust(ca, in: context)
                    guard let list = SSL_load_client_CA_file(ca) else {
                        throw TLSError("the CA file \(ca) holds no certificate")
                    }
                    SSL_CTX_set_client_CA_list(context, list)
                    SSL_CTX_set_verify(context, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nil)
                }
                // One set of ticket keys for the listener, whichever certificate SNI chose.
                let seconds = Int(settings.ticketKeyLifetime.components.seconds)
                if let first = made.first, first != context {
                    guard btls_ctx_share_ticket_keys(context, first) == 1 else {
                        throw TLSError("cannot share the session ticket keys")
                    }
                } else {
                    guard btls_ctx_rotate_ticket_keys(context, max(seconds, 1)) == 1 else {
                        throw TLSError("cannot make session ticket keys: \(openSSLError("no randomness"))")
                    }
                }
                names.append(Self.names(of: context))
            }
        } catch {
            made.forEach { SSL_CTX_free($0) }
            throw error
        }
        contexts = made
        self.names = names
        // Even with one certificate: a name the callback accepted is kept in the session, so a
        // resumed TLS 1.2 session still tells its SNI (without a callback OpenSSL keeps none).
        let me = Unmanaged.passUnretained(self).toOpaque()
        for context in made { btls_ctx_set_servername_callback(context, Self.serverName, me) }
    }

    deinit { contexts.forEach { SSL_CTX_free($0) } }

    public static func == (a: TLSServerContext, b: TLSServerContext) -> Bool { a === b }

    public var description: String { settings.certificates.map(\.certificate).joined(separator: ", ") }

    /// A server-side connection on `fd` (a connected socket), not yet shaken hands.
    public func connection(on fd: Int32) throws(TLSError) -> TLSConnection {
        try TLSConnection(context: contexts[0], owner: self, fd: fd, server: true, name: nil, verify: false)
    }

    private static let serverName: @convention(c) (OpaquePointer?, UnsafeMutableRawPointer?) -> Int32 = {
        ssl, me in
        guard let ssl, let me else { return 1 }
        let context = Unmanaged<TLSServerContext>.fromOpaque(me).takeUnretainedValue()
        let name = btls_servername(ssl).map { String(cString: $0) }
        let chosen = TLSNames.select(name, among: context.names)
        if chosen != 0 { SSL_set_SSL_CTX(ssl, context.contexts[chosen]) }
        return 1
    }

    private static func names(of context: OpaquePointer) -> [String] {
        var buffer = [CChar](repeating: 0, count: 16 * 1024)
        let used = btls_certificate_names(context, &buffer, buffer.count)
        guard used > 0 else { return [] }
        return buffer[..<Int(used)].split(separator: 0).map {
            String(decoding: $0.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
    }
}

/// TLS toward servers, made from ``TLSClientSettings``.
public final class TLSClientContext: @unchecked Sendable, Equatable, CustomStringConvertible {
    public let settings: TLSClientSettings
    let context: OpaquePointer

    public init(_ settings: TLSClientSettings) throws(TLSError) {
        self.settings = settings
        let context = try ContextMaking.make(server: false, protocols: settings.protocols, ciphers: settings.ciphers)
        do throws(TLSError) {
            if settings.verify {
                if let ca = settings.ca {
                    try ContextMaking.trust(ca, in: context)
                } else if SSL_CTX_set_default_verify_paths(context) != 1 {
                    throw TLSError("cannot use the system's certificate store: \(openSSLError("unreadable"))")
                }
                SSL_CTX_set_verify(context, SSL_VERIFY_PEER, nil)
            } else {
                SSL_CTX_set_verify(context, SSL_VERIFY_NONE, nil)
            }
            if let files = settings.certificate { try ContextMaking.use(files, in: context) }
        } catch {
            SSL_CTX_free(context)
            throw error
        }
        self.context = context
    }

    deinit { SSL_CTX_free(context) }

    public static func == (a: TLSClientContext, b: TLSClientContext) -> Bool { a === b }

    public var description: String { settings.ca ?? (settings.verify ? "the system's store" : "unverified") }

    /// A client-side connection toward `host` (the name checked and sent as SNI, unless the
    /// settings name another; an address is checked against the certificate's addresses and
    /// sent without SNI). `fd` may be given later (``TLSConnection/attach(_:)``).
    public func connection(on fd: Int32 = -1, host: String?) throws(TLSError) -> TLSConnection {
        try TLSConnection(
            context: context, owner: self, fd: fd, server: false, name: settings.name ?? host, verify: settings.verify)
    }
}

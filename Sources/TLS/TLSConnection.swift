#if canImport(Glibc)
import Glibc
#endif
import CTLS
import GatewayKit
import Relay

/// What a finished handshake settled, for the log, the access control program and the
/// PROXY header.
public struct TLSFacts: Equatable, Sendable {
    /// `TLSv1.3`.
    public var version: String
    /// `TLS_AES_256_GCM_SHA384`.
    public var cipher: String
    /// The name the client asked for (SNI), on the server's side.
    public var serverName: String?
    /// The peer's certificate's subject (RFC 2253), when it showed a verified one.
    public var peerSubject: String?
    /// A session resumed from a ticket or the cache.
    public var resumed: Bool

    public init(version: String, cipher: String, serverName: String?, peerSubject: String?, resumed: Bool) {
        self.version = version
        self.cipher = cipher
        self.serverName = serverName
        self.peerSubject = peerSubject
        self.resumed = resumed
    }

    /// `TLSv1.3 TLS_AES_256_GCM_SHA384`, with the SNI and the subject when there are.
    public var summary: String {
        var words = "\(version) \(cipher)"
        if resumed { words += " resumed" }
        if let serverName { words += " sni=\(serverName)" }
        if let peerSubject { words += " subject=\(peerSubject)" }
        return words
    }
}

/// One TLS connection over a non-blocking socket: the handshake in steps, then reads and
/// writes as the relay's ``RelayTransport`` (or a buffered stream's). The socket stays the
/// caller's: `close` frees the TLS state, not the descriptor. Used on one thread at a time.
public final class TLSConnection: RelayTransport {
    /// How far a handshake got.
    public enum Step: Equatable, Sendable {
        case done
        case wantRead
        case wantWrite
        case failed(TLSError)
    }

    private var ssl: OpaquePointer?
    public private(set) var fd: Int32
    private let owner: AnyObject  // the context, kept alive while its connection is
    private let server: Bool
    private let name: String?
    /// Bytes written in the clear before the handshake (a PROXY header toward a server).
    private var cleartext: [UInt8] = []
    private var cleartextSent = 0
    /// Why the connection failed, once it has.
    public private(set) var failure: TLSError?
    /// Called once, when a handshake made implicitly by the first read or write finishes.
    public var established: ((TLSConnection) -> Void)?
    private var reportedEstablished = false

    init(context: OpaquePointer, owner: AnyObject, fd: Int32, server: Bool, name: String?, verify: Bool)
        throws(TLSError)
    {
        ERR_clear_error()
        guard let ssl = SSL_new(context) else { throw TLSError(openSSLError("cannot make a TLS connection")) }
        self.ssl = ssl
        self.fd = fd
        self.owner = owner
        self.server = server
        self.name = name
        if server {
            SSL_set_accept_state(ssl)
        } else {
            SSL_set_connect_state(ssl)
            if let name, !name.isEmpty {
                if IPAddress(name) != nil {
                    // An address: checked against the certificate's IP names, no SNI (RFC 6066).
                    if verify { X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name) }
                } else {
                    btls_set_host_name(ssl, name)
                    if verify {
                        SSL_set_hostflags(ssl, UInt32(X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS))
                        SSL_set1_host(ssl, name)
                    }
                }
            }
        }
        if fd >= 0 { SSL_set_fd(ssl, fd) }
    }

    deinit { if let ssl { SSL_free(ssl) } }

    /// The socket, for a connection made before its connect (a client's).
    public func attach(_ fd: Int32) {
        self.fd = fd
        if let ssl { SSL_set_fd(ssl, fd) }
    }

    /// `bytes` go out in the clear before the handshake begins.
    public func sendFirstInTheClear(_ bytes: [UInt8]) { cleartext = bytes }

    public var isEstablished: Bool { ssl.map { SSL_is_init_finished($0) == 1 } ?? false }

    /// One step of the handshake: call again on the readiness it asks for.
    public func handshake() -> Step {
        guard let ssl else { return .failed(failure ?? TLSError("the connection is closed")) }
        switch flushCleartext() {
        case .some(true): break
        case .some(false): return .wantWrite
        case .none: return .failed(failure!)
        }
        ERR_clear_error()
        errno = 0
        let result = SSL_do_handshake(ssl)
        if result == 1 { return .done }
        switch SSL_get_error(ssl, result) {
        case SSL_ERROR_WANT_READ: return .wantRead
        case SSL_ERROR_WANT_WRITE: return .wantWrite
        default:
            fail(result, during: "the handshake")
            return .failed(failure!)
        }
    }

    /// What the handshake settled (after `.done`).
    public var facts: TLSFacts {
        guard let ssl else {
            return TLSFacts(version: "", cipher: "", serverName: nil, peerSubject: nil, resumed: false)
        }
        var subject: String?
        if btls_has_peer_certificate(ssl) == 1 && SSL_get_verify_result(ssl) == X509_V_OK {
            var text = [CChar](repeating: 0, count: 1024)
            btls_peer_subject(ssl, &text, text.count)
            subject = String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
        return TLSFacts(
            version: String(cString: SSL_get_version(ssl)),
            cipher: SSL_get_current_cipher(ssl).map { String(cString: SSL_CIPHER_get_name($0)) } ?? "",
            serverName: server ? btls_servername(ssl).map { String(cString: $0) } : name,
            peerSubject: subject, resumed: SSL_session_reused(ssl) == 1)
    }

    // MARK: - RelayTransport

    public func read(into buffer: UnsafeMutableRawPointer, count: Int) -> Int {
        transfer(during: "reading") { ssl, done in SSL_read_ex(ssl, buffer, count, &done) }
    }

    public func write(from buffer: UnsafeRawPointer, count: Int, more: Bool) -> Int {
        transfer(during: "writing") { ssl, done in SSL_write_ex(ssl, buffer, count, &done) }
    }

    /// One SSL_read_ex or SSL_write_ex, after the clear bytes: its count, or 0 or -1 as
    /// ``outcome(_:during:)`` says.
    private func transfer(during what: String, _ call: (OpaquePointer, inout Int) -> Int32) -> Int {
        guard let ssl else { return failed(EBADF) }
        switch flushCleartext() {
        case .some(true): break
        case .some(false): return failed(EAGAIN)
        case .none: return failed(EPROTO)
        }
        ERR_clear_error()
        errno = 0
        var done = 0
        if call(ssl, &done) == 1 {
            reportEstablished()
            return done
        }
        return outcome(SSL_get_error(ssl, 0), during: what)
    }

    /// close_notify, then the socket's write side: the peer reads the end of the stream.
    public func shutdownWrite() {
        if let ssl, isEstablished {
            ERR_clear_error()
            _ = SSL_shutdown(ssl)
        }
        if fd >= 0 { Glibc.shutdown(fd, Int32(SHUT_WR)) }
    }

    public func close() {
        if let ssl { SSL_free(ssl) }
        ssl = nil
    }

    // MARK: - Inside

    private func reportEstablished() {
        guard !reportedEstablished else { return }
        reportedEstablished = true
        established?(self)
    }

    /// True when the clear bytes are all out, false when the socket is full, nil on an error.
    private func flushCleartext() -> Bool? {
        while cleartextSent < cleartext.count {
            let sent = cleartext.withUnsafeBytes { raw in
                Glibc.send(fd, raw.baseAddress! + cleartextSent, raw.count - cleartextSent, Int32(MSG_NOSIGNAL))
            }
            if sent > 0 {
                cleartextSent += sent
            } else if errno == EAGAIN || errno == EINTR {
                return false
            } else {
                failure = TLSError("cannot send: \(SystemError(errno: errno))")
                return nil
            }
        }
        if !cleartext.isEmpty { cleartext = [] }
        return true
    }

    /// A read's or write's result that was not bytes: 0 for the end of the stream, else -1
    /// with errno (EAGAIN to wait; EPROTO, with `failure` saying why, or the socket's error).
    private func outcome(_ error: Int32, during what: String) -> Int {
        let saved = errno
        switch error {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
            return failed(EAGAIN)
        case SSL_ERROR_ZERO_RETURN:
            return 0  // close_notify
        case SSL_ERROR_SYSCALL where saved == 0:
            return 0  // the socket ended without close_notify: the end of the stream as TCP says it
        case SSL_ERROR_SYSCALL:
            failure = TLSError("\(what): \(SystemError(errno: saved))")
            return failed(saved)
        default:
            fail(0, during: what)
            return failed(EPROTO)
        }
    }

    private func fail(_ result: Int32, during what: String) {
        let saved = errno
        let verify = ssl.map { SSL_get_verify_result($0) } ?? Int(X509_V_OK)
        if verify != Int(X509_V_OK) {
            failure = TLSError(
                "certificate verify failed: \(String(cString: X509_verify_cert_error_string(verify)))")
        } else {
            let queued = openSSLError("")
            if !queued.isEmpty {
                failure = TLSError(queued)
            } else if saved != 0 {
                failure = TLSError("\(what): \(SystemError(errno: saved))")
            } else {
                failure = TLSError("the peer closed the connection during \(what)")
            }
        }
    }

    private func failed(_ code: Int32) -> Int {
        errno = code
        return -1
    }
}

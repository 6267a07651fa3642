#if canImport(Glibc)
import Glibc
#endif
import CTLSFuzz
import GatewayKit
import TLS

/// A TLS listener's side of a connection, as a hostile client sees it: the input is what the
/// client sends. The server is a ``TLSServerContext`` as tcpproxy makes one (two
/// certificates chosen by SNI, `localhost` the default with an OCSP response to staple and
/// `other.test` with `*.wild.test`; a client CA, so every client must show a certificate;
/// session tickets), made once from the certificates below. Each input gets a Unix socket
/// pair: the client's bytes go in at one end in pieces the input's header chooses (so a
/// record can arrive a byte at a time, or a header in one read and its body in the next),
/// and the server's ``TLSConnection`` steps its handshake (or, as a relay would, only reads)
/// after each piece; once established it reads and echoes what it read, a few times; then
/// the client half-closes, the server sends close_notify, and everything is closed.
///
/// Its random numbers are a fixed stream (CTLSFuzz), the same on every run, so a client
/// recorded once (Fuzz/make-seeds.py records Python's ssl against this harness) finishes
/// its handshake on every replay, and the fuzzer mutates whole conversations, tickets and
/// client certificates included, not only ClientHellos.
///
/// The input: one byte of flags (bits 0-2: how many cut positions follow, each two bytes,
/// big-endian, into the rest; bit 3: drive the handshake through reads only; bits 4-7: a
/// piece size of 1 to 15 bytes, 0 for whole pieces), the cuts, then the client's bytes.
///
/// Checked beyond "no crash, no leak": no byte of plaintext reaches the server before the
/// handshake is done, and no handshake is done without a verified client certificate (the
/// client CA demands one); no failure is the server's own (a client can make a handshake
/// fail, never make the server break: no internal error); a finished handshake says TLS 1.2
/// or 1.3 and a cipher, a failed one says why; a read never claims more than it was given;
/// `established` is told at most once; a closed connection reads nothing; and the connection
/// never closes or copies the socket (both ends close cleanly and no descriptor of the pair
/// survives).
///
/// BASTION_FUZZ_TLS_TRANSCRIPT=PATH makes the harness write what the server sent to PATH
/// after each input: how make-seeds.py records a client against this server.
enum TLSServerHarness {
    /// What happened to one input, for the tests that check the recorded seeds still finish
    /// their handshakes.
    struct Outcome {
        var established = false
        var resumed = false
        var serverName: String?
        var plaintext = 0
    }

    /// The context every input's connection is made from, made with the fixed random stream
    /// (its ticket keys are the same on every run: a recorded ticket resumes).
    static let context: TLSServerContext = {
        guard btlsfuzz_begin(1) == 1 else { fatalError("OpenSSL refused the fuzz harness's random method") }
        defer { btlsfuzz_end() }
        var template = Array("/tmp/bastion-fuzz-tls-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { fatalError("mkdtemp: \(SystemError.current)") }
        let directory = String(cString: made)
        var written: [String] = []
        func file(_ name: String, _ bytes: [UInt8]) -> String {
            let path = "\(directory)/\(name)"
            let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            guard fd >= 0, (try? FD.writeAll(fd, bytes)) != nil else { fatalError("cannot write \(path)") }
            close(fd)
            written.append(path)
            return path
        }
        defer {
            for path in written { unlink(path) }
            rmdir(directory)
        }
        let settings = TLSServerSettings(
            certificates: [
                TLSCertificateFiles(
                    certificate: file("localhost.pem", Array(localhostCertificate.utf8)),
                    key: file("localhost.key", Array(localhostKey.utf8)),
                    ocspResponse: file("localhost.ocsp", hexBytes(localhostOCSPResponse))),
                TLSCertificateFiles(
                    certificate: file("other.pem", Array(otherCertificate.utf8)),
                    key: file("other.key", Array(otherKey.utf8))),
            ],
            clientCA: file("ca.pem", Array(clientCA.utf8)),
            // Keys that outlive the recorded tickets: a seed's ticket stays good.
            ticketKeyLifetime: .seconds(50 * 365 * 86_400))
        do {
            return try TLSServerContext(settings)
        } catch {
            fatalError("the fuzz harness's TLS context: \(error)")
        }
    }()

    static let transcriptPath: String? = getenv("BASTION_FUZZ_TLS_TRANSCRIPT").map { String(cString: $0) }

    static func run(_ data: UnsafeRawBufferPointer) { _ = serve(data) }

    static func serve(_ data: UnsafeRawBufferPointer) -> Outcome {
        let context = context
        // The same stream for every input: the server answers a replayed client as it did
        // when the client was recorded.
        guard btlsfuzz_begin(2) == 1 else { fatalError("OpenSSL refused the fuzz harness's random method") }
        defer { btlsfuzz_end() }

        var header = FuzzReader(data)
        let flags = header.byte()
        let throughReads = flags & 8 != 0
        let pieceSize = Int(flags >> 4)
        var cuts: [Int] = []
        for _ in 0..<Int(flags & 7) { cuts.append(Int(header.byte()) << 8 | Int(header.byte())) }
        let client = UnsafeRawBufferPointer(rebasing: data[min(header.offset, data.count)...])
        var pieces: [Range<Int>] = []
        var start = 0
        for cut in cuts.map({ min($0, client.count) }).sorted() + [client.count] where cut > start {
            var from = start
            while from < cut {
                let end = pieceSize == 0 ? cut : min(from + pieceSize, cut)
                pieces.append(from..<end)
                from = end
            }
            start = cut
        }

        var fds: [Int32] = [-1, -1]
        let made = socketpair(
            AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0,
            &fds)
        precondition(made == 0, "socketpair: \(SystemError.current)")
        let inodes = fds.map { fd -> ino_t in
            var status = stat()
            fstat(fd, &status)
            return status.st_ino
        }
        guard let connection = try? context.connection(on: fds[0]) else {
            fds.forEach { close($0) }
            return Outcome()
        }
        var server = Server(connection: connection, peer: fds[1], throughReads: throughReads)
        for piece in pieces where !server.over {
            server.send(UnsafeRawBufferPointer(rebasing: client[piece]))
            server.advance()
        }
        // The client is done: its end of the stream, then the server's.
        shutdown(fds[1], Int32(SHUT_WR))
        server.advance()
        if connection.isEstablished && !server.over { connection.shutdownWrite() }
        server.drain()
        var outcome = server.outcome
        if outcome.established {
            let facts = connection.facts
            outcome.resumed = facts.resumed
            outcome.serverName = facts.serverName
        }
        connection.close()
        var byte: UInt8 = 0
        precondition(connection.read(into: &byte, count: 1) == -1, "a closed connection reads nothing")
        if case .failed = connection.handshake() {} else { preconditionFailure("a closed connection shakes no hands") }

        // The socket is the caller's: still open after close, closed once by us, and no copy left.
        for fd in fds { precondition(close(fd) == 0, "the TLS connection closed its socket: \(SystemError.current)") }
        precondition(!openDescriptors(on: inodes), "a descriptor of the socket pair survived its close")

        if let transcriptPath {
            let fd = open(transcriptPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            if fd >= 0 {
                try? FD.writeAll(fd, server.received)
                close(fd)
            }
        }
        return outcome
    }

    /// The server's side of one input: its connection, and the client's end of the pair.
    struct Server {
        let connection: TLSConnection
        let peer: Int32
        let throughReads: Bool
        var outcome = Outcome()
        /// Failed, or its stream ended: nothing more to do.
        var over = false
        /// What the server sent, as the client read it (kept only for a transcript).
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16 * 1024)
        let told = Counter()

        final class Counter {
            var count = 0
        }

        init(connection: TLSConnection, peer: Int32, throughReads: Bool) {
            self.connection = connection
            self.peer = peer
            self.throughReads = throughReads
            connection.established = { [told] _ in told.count += 1 }
        }

        /// The client's bytes into its end; when the pair is full, the server reads some first.
        mutating func send(_ bytes: UnsafeRawBufferPointer) {
            var sent = 0
            var stalls = 0
            while sent < bytes.count {
                let n = Glibc.send(peer, bytes.baseAddress! + sent, bytes.count - sent, Int32(MSG_NOSIGNAL))
                if n > 0 {
                    sent += n
                } else if errno == EINTR {
                    continue
                } else {
                    // The server no longer reads (it failed, or waits to write): the rest is lost.
                    guard errno == EAGAIN, stalls < 4, !over else { return }
                    stalls += 1
                    drain()
                    advance()
                }
            }
        }

        /// What the server sent, read at the client's end.
        mutating func drain() {
            while true {
                let n = buffer.withUnsafeMutableBytes { recv(peer, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
                guard n > 0 else { return }
                if TLSServerHarness.transcriptPath != nil { received += buffer[..<n] }
            }
        }

        /// The server's steps until it waits for the client, fails or ends.
        mutating func advance() {
            guard !over else { return }
            if !throughReads && !connection.isEstablished {
                for _ in 0..<16 {
                    switch connection.handshake() {
                    case .done:
                        established()
                        return exchange()
                    case .wantRead:
                        return
                    case .wantWrite:
                        drain()
                    case .failed(let error):
                        precondition(!error.description.isEmpty, "a failed handshake says why")
                        precondition(!ownFault(error), "the server failed on its own account: \(error)")
                        over = true
                        return
                    }
                }
                return
            }
            exchange()
        }

        mutating func established() {
            precondition(connection.isEstablished, "a handshake done is established")
            guard !outcome.established else { return }
            outcome.established = true
            let facts = connection.facts
            precondition(facts.version == "TLSv1.2" || facts.version == "TLSv1.3", "a version allowed: \(facts)")
            precondition(!facts.cipher.isEmpty, "a cipher: \(facts)")
            precondition(facts.peerSubject != nil, "established without the client certificate the CA demands")
        }

        /// Reads, each echoed back, until the server waits, fails or the stream ends (bounded).
        mutating func exchange() {
            for _ in 0..<32 {
                let count = buffer.count
                let n = buffer.withUnsafeMutableBytes { connection.read(into: $0.baseAddress!, count: count) }
                let error = errno
                precondition(told.count <= 1, "established told more than once")
                if n > 0 {
                    precondition(n <= count, "a read of \(n) bytes into \(count)")
                    precondition(connection.isEstablished, "plaintext before the handshake was done")
                    precondition(told.count == 1, "plaintext read, but established never told")
                    established()
                    outcome.plaintext += n
                    echo(n)
                    if over { return }
                } else if n == 0 {
                    over = true  // the end of the client's stream
                    return
                } else {
                    if connection.isEstablished { established() }
                    if error == EAGAIN { return }
                    precondition(error != EPROTO || connection.failure != nil, "EPROTO without a reason")
                    if let failure = connection.failure {
                        precondition(!ownFault(failure), "the server failed on its own account: \(failure)")
                    }
                    over = true
                    return
                }
            }
        }

        /// `count` bytes of the buffer written back, as far as the client's end takes them.
        mutating func echo(_ count: Int) {
            var written = 0
            for _ in 0..<8 where written < count {
                let n = buffer.withUnsafeBytes {
                    connection.write(from: $0.baseAddress! + written, count: count - written, more: false)
                }
                if n > 0 {
                    precondition(n <= count - written, "a write of \(n) bytes of \(count - written)")
                    written += n
                } else if errno == EAGAIN {
                    drain()
                } else {
                    over = true
                    return
                }
            }
        }
    }

    /// A failure no client should be able to cause: OpenSSL's words for a server that is
    /// configured wrong or broken (it sends an internal error alert), not for a client that
    /// misbehaves (whose alerts, an internal error among them, read "tlsv1 alert ...").
    static func ownFault(_ error: TLSError) -> Bool {
        error.description.split(separator: ";").contains { reason in
            !reason.contains("alert")
                && ["internal error", "uninitialized", "malloc failure", "passed a null parameter"].contains {
                    reason.contains($0)
                }
        }
    }

    /// Whether a descriptor of this process refers to one of the sockets `inodes` (a copy the
    /// code under test made and never closed).
    static func openDescriptors(on inodes: [ino_t]) -> Bool {
        guard let dir = opendir("/proc/self/fd") else { return false }
        defer { closedir(dir) }
        let own = dirfd(dir)
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            guard let fd = Int32(name), fd != own else { continue }
            var status = stat()
            if fstat(fd, &status) == 0 && (status.st_mode & S_IFMT) == S_IFSOCK && inodes.contains(status.st_ino) {
                return true
            }
        }
        return false
    }

    static func hexBytes(_ text: String) -> [UInt8] {
        let digits = text.utf8.compactMap { c -> UInt8? in
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
            default: nil
            }
        }
        return stride(from: 0, to: digits.count - 1, by: 2).map { digits[$0] << 4 | digits[$0 + 1] }
    }

    // MARK: - Certificates

    // Made once with the openssl command (EC P-256 keys, 100 years from 2026-12-04):
    //   a CA "Bastion fuzz CA"; localhost (DNS:localhost, IP:127.0.0.1) and other.test
    //   (DNS:other.test, DNS:*.wild.test) signed by it for serverAuth; an OCSP response
    //   ("good") for localhost from `openssl ocsp -index ... -rsigner ca.pem`. The client
    //   certificate that the recorded clients show (O=Bastion, CN=fuzz-client, clientAuth,
    //   by the same CA) is in Fuzz/make-seeds.py. Test keys, public on purpose.

    static let clientCA = """
        -----BEGIN CERTIFICATE-----
        MIIBmzCCAUGgAwIBAgIUMUkmd1+OEr7VerbFb7oc2TTED08wCgYIKoZIzj0EAwIw
        GjEYMBYGA1UEAwwPQmFzdGlvbiBmdXp6IENBMCAXDTI2MTIwNDE4MTEyMFoYDzIx
        MjYxMTEwMTgxMTIwWjAaMRgwFgYDVQQDDA9CYXN0aW9uIGZ1enogQ0EwWTATBgcq
        hkjOPQIBBggqhkjOPQMBBwNCAASilIESKmebnxTeGZsHGneAvF92a3l6ViGmiEYC
        Dx0+1pg3H2VRt19aXpSoMnbWrj+6GO4npUn7VXe2cTkPynsmo2MwYTAdBgNVHQ4E
        FgQU+6hau02FWijgHwZbAEdTVZeq4+gwHwYDVR0jBBgwFoAU+6hau02FWijgHwZb
        AEdTVZeq4+gwDwYDVR0TAQH/BAUwAwEB/zAOBgNVHQ8BAf8EBAMCAQYwCgYIKoZI
        zj0EAwIDSAAwRQIgSwgIYgSV/J3egkxXWmdkYslq1kI0EVOE8Ob6ilK0v4sCIQDr
        p8h1i6gLVyBpUpEdLTGBNG+xPv3g6o8kzldrmqA42g==
        -----END CERTIFICATE-----

        """

    static let localhostCertificate = """
        -----BEGIN CERTIFICATE-----
        MIIBsDCCAVagAwIBAgIUTYlVKQoScVW0kcSTAIqK6PCkbWAwCgYIKoZIzj0EAwIw
        GjEYMBYGA1UEAwwPQmFzdGlvbiBmdXp6IENBMCAXDTI2MTIwNDE4MTEyMFoYDzIx
        MjYxMTEwMTgxMTIwWjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIB
        BggqhkjOPQMBBwNCAASfVPFDidSZ7yi4ECMCsr8IIyjAwaFZFwC63/5JUQrHOQXk
        NHK9JKr2DwzK5xODJ40NLnIm9wCTIJ+EpjfHP7cXo34wfDAaBgNVHREEEzARggls
        b2NhbGhvc3SHBH8AAAEwCQYDVR0TBAIwADATBgNVHSUEDDAKBggrBgEFBQcDATAd
        BgNVHQ4EFgQU82aWqJJ94pHirNpmurKzh5fPFX0wHwYDVR0jBBgwFoAU+6hau02F
        WijgHwZbAEdTVZeq4+gwCgYIKoZIzj0EAwIDSAAwRQIhAM3ukQkAhgvTj+oaa/hc
        TAzzcQmLBKaQcAJtkapsdxxlAiAlCbshxyyACWLClONujvjAA6rohl0Cra4Yq5bz
        UtRXTw==
        -----END CERTIFICATE-----

        """

    static let localhostKey = """
        -----BEGIN PRIVATE KEY-----
        MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg5HnvlmaYV7ql3qx1
        19t9oRQnRJPowgvD3JluyXPwvb2hRANCAASfVPFDidSZ7yi4ECMCsr8IIyjAwaFZ
        FwC63/5JUQrHOQXkNHK9JKr2DwzK5xODJ40NLnIm9wCTIJ+EpjfHP7cX
        -----END PRIVATE KEY-----

        """

    static let otherCertificate = """
        -----BEGIN CERTIFICATE-----
        MIIBujCCAWGgAwIBAgIUTYlVKQoScVW0kcSTAIqK6PCkbWEwCgYIKoZIzj0EAwIw
        GjEYMBYGA1UEAwwPQmFzdGlvbiBmdXp6IENBMCAXDTI2MTIwNDE4MTEyMFoYDzIx
        MjYxMTEwMTgxMTIwWjAVMRMwEQYDVQQDDApvdGhlci50ZXN0MFkwEwYHKoZIzj0C
        AQYIKoZIzj0DAQcDQgAEF1sXqAHadaoq9SnFxsg34Rgd2AVeBwdEEBGsVuSb/qq9
        VO0sJKOrj7ePjJyDFcmH6bSIKIt3vgQmEhX1SUOXPaOBhzCBhDAiBgNVHREEGzAZ
        ggpvdGhlci50ZXN0ggsqLndpbGQudGVzdDAJBgNVHRMEAjAAMBMGA1UdJQQMMAoG
        CCsGAQUFBwMBMB0GA1UdDgQWBBRC4B8dBLxdO5o5fv/SSLMtG0w14TAfBgNVHSME
        GDAWgBT7qFq7TYVaKOAfBlsAR1NVl6rj6DAKBggqhkjOPQQDAgNHADBEAiAN8/Ix
        D7uAiHqy9gLffJU8okpjnb3nQ5KxutasnSTc4wIgdiGy7/poemjg111NB43AkYPF
        JNnyHCZ46VVUnhBalMo=
        -----END CERTIFICATE-----

        """

    static let otherKey = """
        -----BEGIN PRIVATE KEY-----
        MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg2yKYHRMBTfFdLNNC
        ShLedv1FumSK6LXcrMyvcNuAnrKhRANCAAQXWxeoAdp1qir1KcXGyDfhGB3YBV4H
        B0QQEaxW5Jv+qr1U7Swko6uPt4+MnIMVyYfptIgoi3e+BCYSFfVJQ5c9
        -----END PRIVATE KEY-----

        """

    /// DER, in hex.
    static let localhostOCSPResponse = """
        308202c60a0100a08202bf308202bb06092b0601050507300101048202ac308202a83081a8a11c301a31183016060355
        04030c0f42617374696f6e2066757a7a204341180f32303236313230343138313132315a30773075304d300906052b0e
        03021a05000414853728f1cf6777d933cdad1fb63806fd4412433c0414fba85abb4d855a28e01f065b0047535597aae3
        e802144d8955290a127155b491c493008a8ae8f0a46d608000180f32303236313230343138313132315aa011180f3231
        3236313131303138313132315a300a06082a8648ce3d0403020348003045022041915839bb75c76f911e55d0d3dcb0f7
        1360ea64e998095b09faf268b59393ca022100c4a603e0d7f0b445433363e3b50b10ade2db99cffa2f176ada60de7ef3
        0ecfbaa08201a33082019f3082019b30820141a0030201020214314926775f8e12bed57ab6c56fba1cd934c40f4f300a
        06082a8648ce3d040302301a3118301606035504030c0f42617374696f6e2066757a7a2043413020170d323631323034
        3138313132305a180f32313236313131303138313132305a301a3118301606035504030c0f42617374696f6e2066757a
        7a2043413059301306072a8648ce3d020106082a8648ce3d03010703420004a29481122a679b9f14de199b071a7780bc
        5f766b797a5621a68846020f1d3ed698371f6551b75f5a5e94a83276d6ae3fba18ee27a549fb5577b671390fca7b26a3
        633061301d0603551d0e04160414fba85abb4d855a28e01f065b0047535597aae3e8301f0603551d23041830168014fb
        a85abb4d855a28e01f065b0047535597aae3e8300f0603551d130101ff040530030101ff300e0603551d0f0101ff0404
        03020106300a06082a8648ce3d040302034800304502204b0808620495fc9dde824c575a676462c96ad64234115384f0
        e6fa8a52b4bf8b022100eba7c8758ba80b57206952911d2d3181346fb13efde0ea8f24ce576b9aa038da
        """
}

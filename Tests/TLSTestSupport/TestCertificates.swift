#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// Certificates for the unit tests of every module that speaks TLS, made once per test process with the openssl command in a
/// temporary directory: a CA, server certificates for `localhost` (with 127.0.0.1) and for
/// `other.test` and `*.wild.test`, a client certificate (CN=client1), and a certificate of
/// another CA that nobody trusts.
public enum TestCertificates {
    public static let directory: String = {
        var template = Array("/tmp/bastion-tls-tests-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { fatalError("mkdtemp failed") }
        let directory = String(cString: made)
        let script = """
            set -e
            cd '\(directory)'
            key() { openssl ecparam -name prime256v1 -genkey -noout -out "$1.key" 2>/dev/null; }
            ext() { printf 'subjectAltName=%s\\nbasicConstraints=CA:FALSE\\nextendedKeyUsage=%s\\n' "$1" "$2" > "$3.ext"; }
            sign() { openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -days 3650 -sha256 -extfile "$1.ext" -out "$1.pem" 2>/dev/null; }
            for ca in ca rogue; do
              key $ca
              openssl req -x509 -new -key $ca.key -days 3650 -sha256 -subj "/CN=Bastion test $ca" -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign -out $ca.pem
            done
            key server; openssl req -new -key server.key -subj /CN=localhost -out server.csr
            ext DNS:localhost,IP:127.0.0.1 serverAuth server; sign server ca
            key other; openssl req -new -key other.key -subj /CN=other.test -out other.csr
            ext DNS:other.test,DNS:*.wild.test serverAuth other; sign other ca
            key client; openssl req -new -key client.key -subj /O=Bastion/CN=client1 -out client.csr
            ext DNS:client1 clientAuth client; sign client ca
            key stranger; openssl req -new -key stranger.key -subj /CN=localhost -out stranger.csr
            ext DNS:localhost serverAuth stranger; sign stranger rogue
            """
        var pid: pid_t = 0
        let argv = ["/bin/sh", "-c", script]
        var cArgs = argv.map { strdup($0) } + [nil]
        defer { cArgs.forEach { free($0) } }
        guard posix_spawn(&pid, "/bin/sh", nil, nil, &cArgs, environ) == 0 else { fatalError("cannot run sh") }
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        precondition(status == 0, "openssl could not make the test certificates (status \(status))")
        return directory
    }()

    public static func path(_ name: String) -> String { "\(directory)/\(name)" }
}

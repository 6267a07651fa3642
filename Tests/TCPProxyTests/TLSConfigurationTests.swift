import Gateway
import GatewayKit
import TLS
import TLSTestSupport
import Testing

@testable import TCPProxy

@Suite("TLS in tcpproxy's configuration, command line and session")
struct TLSConfigurationTests {
    @Test("spreadspace's stanza lines: certificates in pairs, the client CA, TLS toward the remote")
    func spreadspace() throws {
        let handler = try onlyHandler(
            """
            listen 127.0.0.1 443 {
              remote: backend.example 80;
              tls-cert: /etc/ssl/a.pem; tls-key: /etc/ssl/a.key;
              tls-cert: /etc/ssl/b.pem; tls-key: /etc/ssl/b.key;
              tls-client-ca: /etc/ssl/clients.pem;
              remote-tls: yes;
              remote-tls-name: backend.internal;
              tls-protocols: TLSv1.3;
            };
            """)
        let server = try #require(handler.tls)
        #expect(server.certificates.map(\.certificate) == ["/etc/ssl/a.pem", "/etc/ssl/b.pem"])
        #expect(server.certificates.map(\.key) == ["/etc/ssl/a.key", "/etc/ssl/b.key"])
        #expect(server.clientCA == "/etc/ssl/clients.pem")
        #expect(server.protocols == TLSProtocols(minimum: .tls1_3, maximum: .tls1_3))
        let client = try #require(handler.remoteTLS)
        #expect(client.verify && client.ca == nil && client.name == "backend.internal")
        #expect(client.protocols == server.protocols)
    }

    @Test("TLS settings that do not fit are errors naming the stanza's line")
    func spreadspaceErrors() {
        #expect(
            failure("listen * 443 {\n remote: a 80;\n tls-cert: c.pem;\n};\n")
                == "/etc/tcpproxy.conf:1: tls-cert and tls-key go in pairs: 1 certificate, 0 keys")
        #expect(
            failure("listen * 443 {\n remote: a 80;\n remote-tls: maybe;\n};\n")
                == "/etc/tcpproxy.conf:3: invalid remote-tls \"maybe\" (expected yes or insecure)")
        #expect(
            failure("listen * 443 {\n remote: a 80;\n remote-tls: insecure; remote-tls-ca: ca.pem;\n};\n")
                == "/etc/tcpproxy.conf:1: remote-tls insecure turns verification off: it cannot go with remote-tls-ca")
        #expect(failure("listen * 443 {\n remote: a 80;\n tls-protocols: SSLv3;\n};\n")?.contains("SSLv3") == true)
        #expect(
            failure("listen * 443 {\n remote: a 80;\n remote-tls: yes; remote-tls: yes;\n};\n")?
                .contains("already set") == true)
        #expect(
            failure("listen * 443 {\n remote: a 80;\n tls-ocsp: r.der;\n};\n")
                == "/etc/tcpproxy.conf:3: tls-ocsp staples a response to the tls-cert before it: give tls-cert first")
    }

    @Test("Zekoll's directives are the handler's own: after port or interface, never inherited")
    func zekoll() throws {
        let configuration = try parse(
            """
            port 443
            server 10.0.0.1:80
            tls-cert /a.pem
            tls-key /a.key
            interface 127.0.0.2
            server 10.0.0.2:443
            remote-tls insecure
            """)
        let handlers = configuration.services[0].handlers
        let wide = try #require(handlers.first { $0.interface == nil })
        let inner = try #require(handlers.first { $0.interface != nil })
        #expect(wide.tls?.certificates == [TLSCertificateFiles(certificate: "/a.pem", key: "/a.key")])
        #expect(wide.remoteTLS == nil)
        #expect(inner.tls == nil, "not inherited from the port's section")
        #expect(inner.remoteTLS?.verify == false)
        #expect(failure("tls-cert /a.pem\nport 443\nserver a:80\n")?.contains("must follow a \"port\"") == true)
        #expect(
            failure("port 443\ntls-cert /a.pem\ntls-key /a.key\ninterface 127.0.0.2\nserver a:80\n")?
                .contains("TLS directives belong to one handler") == true)
    }

    @Test("-zzz writes TLS back, in both dialects, to the same model")
    func writtenBack() throws {
        for text in [
            "listen * 443 {\n remote: a 80;\n tls-cert: /a.pem; tls-key: /a.key; tls-client-ca: /ca.pem;\n"
                + " remote-tls: yes; remote-tls-ca: /rca.pem; tls-ciphers: HIGH:TLS_AES_256_GCM_SHA384;\n};\n",
            "listen * 443 {\n remote: a 80;\n tls-cert: /a.pem; tls-key: /a.key; tls-cert: /b.pem; tls-key: /b.key;\n"
                + " tls-ocsp: /b.der; remote-tls: yes;\n};\n",
            "port 443\nserver a:80\ntls-cert /a.pem\ntls-key /a.key\ntls-ocsp /a.der\ntls-protocols TLSv1.2\n"
                + "interface 127.0.0.3\nserver b:443\nremote-tls insecure\nremote-tls-name b.test\n"
                + "remote-tls-cert /c.pem\nremote-tls-key /c.key\n",
        ] {
            let (first, again, written) = try roundTrip(text)
            #expect(first.withoutSourcePositions == again.withoutSourcePositions, "\(written)")
            #expect(written.contains("tls-cert") && written.contains("remote-tls"))
            #expect(written.contains("tls-ocsp") == text.contains("tls-ocsp"))
        }
    }

    @Test("the long options, checked as the files are")
    func options() throws {
        let o = try TCPProxyOptions.parse([
            "-l", "127.0.0.1", "-p", "443", "-r", "a", "-o", "80", "--tls-cert", "c", "--tls-key", "k",
            "--remote-tls-insecure",
        ])
        let settings = try o.tls.settings()
        #expect(settings.server?.certificates == [TLSCertificateFiles(certificate: "c", key: "k")])
        #expect(settings.client?.verify == false)
        let stapled = try TCPProxyOptions.parse([
            "--tls-cert", "a", "--tls-key", "ak", "--tls-cert", "b", "--tls-ocsp", "b.der", "--tls-key", "bk", "x:1",
        ]).tls.settings().server
        #expect(
            stapled?.certificates == [
                TLSCertificateFiles(certificate: "a", key: "ak"),
                TLSCertificateFiles(certificate: "b", key: "bk", ocspResponse: "b.der"),
            ])
        #expect(throws: TCPProxyOptions.UsageError.self) { try TCPProxyOptions.parse(["--tls-ocsp", "r", "x:1"]) }
        #expect(throws: TCPProxyOptions.UsageError.self) {
            try TCPProxyOptions.parse([
                "--tls-cert", "a", "--tls-ocsp", "r", "--tls-ocsp", "s", "--tls-key", "k", "x:1",
            ])
        }
        #expect(throws: TCPProxyOptions.UsageError.self) { try TCPProxyOptions.parse(["--tls-cert", "c", "x:1"]) }
        #expect(throws: TCPProxyOptions.UsageError.self) {
            try TCPProxyOptions.parse(["--tls-client-ca", "ca", "x:1"])
        }
        #expect(throws: TCPProxyOptions.UsageError.self) {
            try TCPProxyOptions.parse(["--tls-protocols", "TLSv1.1,TLSv1.3", "x:1"])
        }
        #expect(try TCPProxyOptions.parse(["--remote-tls-ca", "ca", "x:1"]).tls.remote == nil)
        let shown = try TCPProxyOptions.parse(["--remote-tls-cert", "c.pem", "--remote-tls-key", "c.key", "x:1"])
        #expect(try shown.tls.settings().client?.certificate == TLSCertificateFiles(certificate: "c.pem", key: "c.key"))
        #expect(throws: TCPProxyOptions.UsageError.self) {
            try TCPProxyOptions.parse(["--remote-tls-cert", "c", "x:1"])
        }
        #expect(try TCPProxyOptions.parse(["--remote-tls-ca", "ca", "x:1"]).tls.settings().client?.ca == "ca")
    }

    @Test("the session shakes hands after the rules, then hands the acp the TLS facts")
    func session() throws {
        let context = try TLSServerContext(
            TLSServerSettings(certificates: [
                TLSCertificateFiles(
                    certificate: TestCertificates.path("server.pem"), key: TestCertificates.path("server.key"))
            ]))
        var run = try MachineRun(
            "port 8080\nacp /bin/acp\nserver 10.0.0.1:80\n", names: false,
            tls: [HandlerTLS(server: context, client: nil)])
        #expect(run.feed(.started) == [.startTLS(.client, .accept(context), timeout: .seconds(60))])
        let facts = TLSFacts(
            version: "TLSv1.3", cipher: "TLS_AES_128_GCM_SHA256", serverName: "a.test", peerSubject: "CN=c1,O=X",
            resumed: false)
        let environment = try #require(program(run.feed(.tlsEstablished(.client, facts)))).environment
        #expect(environment.contains("PROXY_TLS_VERSION=TLSv1.3"))
        #expect(environment.contains("PROXY_TLS_CIPHER=TLS_AES_128_GCM_SHA256"))
        #expect(environment.contains("PROXY_TLS_SNI=a.test"))
        #expect(environment.contains("PROXY_TLS_CLIENT_SUBJECT=CN=c1,O=X"))
        _ = run.feed(.programStarted(pid: 9))
        #expect(relayPlan(run.feed(.programExited(pid: 9, status: 0))) != nil)
        #expect(
            lines(run.feed(.connected(local: nil, recording: nil)))
                == ["\(who) to 10.0.0.1:80, TLS TLSv1.3 TLS_AES_128_GCM_SHA256 sni=a.test subject=CN=c1,O=X"])

        var failing = try MachineRun("port 8080\nserver 10.0.0.1:80\n", tls: [HandlerTLS(server: context, client: nil)])
        _ = failing.feed(.started)
        #expect(
            failing.feed(.tlsFailed(.client, TLSError("no shared cipher"))) == [
                .log(.notice, "\(who): TLS handshake failed: no shared cipher, closed"), .close,
            ])
    }

    @Test("TLS toward the server: the plan names the host, the log the result")
    func origination() throws {
        let client = try TLSClientContext(TLSClientSettings(verify: false))
        var run = try MachineRun(
            "port 8080\nserver backend.test:443\n",
            targets: [
                ResolvedTarget(host: "backend.test", port: 443, address: ip("10.0.0.5"), source: nil, rotate: nil)
            ],
            tls: [HandlerTLS(server: nil, client: client)])
        let plan = try #require(relayPlan(run.feed(.started)))
        #expect(plan.serverTLS?.context == client && plan.serverTLS?.host == "backend.test")
        _ = run.feed(.connected(local: nil, recording: nil))
        let facts = TLSFacts(
            version: "TLSv1.2", cipher: "ECDHE-RSA-AES128-GCM-SHA256", serverName: "backend.test", peerSubject: nil,
            resumed: false)
        #expect(
            lines(run.feed(.tlsEstablished(.server, facts))) == [
                "\(who) to 10.0.0.5:443: TLS with the server: TLSv1.2 ECDHE-RSA-AES128-GCM-SHA256 "
                    + "sni=backend.test (not verified)"
            ])
        #expect(
            lines(run.feed(.tlsFailed(.server, TLSError("certificate verify failed: hostname mismatch"))))
                .first?.hasSuffix("TLS with the server failed: certificate verify failed: hostname mismatch") == true)
    }

    @Test("PROXY v2 carries the client's TLS as HAProxy writes it")
    func proxyHeader() {
        let facts = TLSFacts(
            version: "TLSv1.3", cipher: "TLS_AES_128_GCM_SHA256", serverName: "a.test",
            peerSubject: "CN=client1,O=Bastion", resumed: false)
        let client = Endpoint(address: ip("192.0.2.1"), port: 5000)
        let server = Endpoint(address: ip("127.0.0.1"), port: 443)
        let plain = ProxyProtocolHeader.v2(client: client, server: server)
        let header = ProxyProtocolHeader.v2(client: client, server: server, tls: facts)
        let tlvs = Array(header[plain.count...])
        let ssl: [UInt8] =
            [0x03, 0, 0, 0, 0] + [0x21, 0, 7] + Array("TLSv1.3".utf8) + [0x22, 0, 7] + Array("client1".utf8)
            + [0x23, 0, 22] + Array("TLS_AES_128_GCM_SHA256".utf8)
        #expect(tlvs == [0x02, 0, 6] + Array("a.test".utf8) + [0x20, 0, UInt8(ssl.count)] + ssl)
        #expect(Int(header[14]) << 8 | Int(header[15]) == 12 + tlvs.count)
        #expect(ProxyProtocolHeader.commonName("O=X,CN=a\\,b") == "a\\,b")
        #expect(ProxyProtocolHeader.commonName("O=X") == nil)
    }
}

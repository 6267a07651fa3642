import Gateway
import GatewayKit
import POP3Proxy
import TLS
import TLSTestSupport
import Testing

// pop3.proxy's TLS as the pure session sees it: STLS and POP3S toward the client, STLS and
// POP3S toward the server. The handshakes themselves are the driver's (SessionTLSTests) and
// the end-to-end tests' (test_pop3proxy_tls.py); here they are events.

private let certificate = [
    "--tls-cert", TestCertificates.path("server.pem"), "--tls-key", TestCertificates.path("server.key"),
]

private func tlsRun(_ arguments: [String]) throws -> Run {
    let options = try POP3ProxyOptions.parse(arguments)
    return try Run(arguments, tls: POP3TLSContexts(options: options))
}

private let facts = TLSFacts(
    version: "TLSv1.3", cipher: "TLS_AES_128_GCM_SHA256", serverName: "localhost", peerSubject: nil, resumed: false)

private func startsTLS(_ actions: [SessionAction], _ peer: Peer) -> Bool {
    actions.contains { if case .startTLS(peer, _, _) = $0 { true } else { false } }
}

/// Once TLS is up: no STLS in CAPA, and a second STLS refused.
private func expectSecured(_ run: Run, sourceLocation: SourceLocation = #_sourceLocation) {
    run.actions = []
    run.client("CAPA\r\n")
    #expect(!run.sent(to: .client).contains("STLS"), sourceLocation: sourceLocation)
    run.actions = []
    run.client("STLS\r\n")
    #expect(run.sent(to: .client) == "-ERR TLS is already active\r\n", sourceLocation: sourceLocation)
}

@Suite("pop3.proxy's TLS")
struct POP3TLSTests {
    @Test func stlsIsOfferedAnsweredAndForgetsTheUserBefore() throws {
        let run = try tlsRun(certificate + ["mail.example"])
        run.feed(.started)
        run.client("CAPA\r\n")
        #expect(run.sent(to: .client).hasSuffix("PIPELINING\r\nSTLS\r\n.\r\n"))
        run.client("USER early\r\n")
        run.actions = []
        let upgrade = run.client("STLS\r\n")
        #expect(Run.sent(to: .client, in: upgrade) == "+OK begin TLS negotiation\r\n")
        #expect(startsTLS(upgrade, .client))
        #expect(run.feed(.tlsEstablished(.client, facts)).contains(.read(.client)))
        #expect(
            run.logLines.last
                == "session 3 from 192.0.2.7: TLS with the client: TLSv1.3 TLS_AES_128_GCM_SHA256 sni=localhost")
        // After TLS: no STLS in CAPA, a second STLS refused, the USER before it forgotten.
        expectSecured(run)
        run.actions = []
        run.client("PASS secret\r\n")
        #expect(run.sent(to: .client) == "-ERR USER first\r\n")
        run.client("USER bob\r\nPASS secret\r\n")
        #expect(run.actions.contains { if case .connect(.server, _, _) = $0 { true } else { false } })
    }

    @Test func withoutACertificateSTLSIsUnsupported() throws {
        let run = try Run(["mail.example"])
        run.feed(.started)
        run.client("CAPA\r\n")
        #expect(!run.sent(to: .client).contains("STLS"))
        run.actions = []
        #expect(!startsTLS(run.client("STLS\r\n"), .client))
        #expect(run.sent(to: .client) == "-ERR unsupported command\r\n")
    }

    @Test func requireTLSRefusesTheLoginInTheClear() throws {
        let run = try tlsRun(certificate + ["--require-tls", "mail.example"])
        run.feed(.started)
        run.actions = []
        run.client("CAPA\r\n")
        #expect(run.sent(to: .client) == "+OK capability list follows\r\nTOP\r\nUIDL\r\nPIPELINING\r\nSTLS\r\n.\r\n")
        run.actions = []
        run.client("USER bob\r\n")
        run.client("PASS secret\r\n")
        #expect(
            run.sent(to: .client)
                == String(
                    repeating: "-ERR [AUTH] plaintext login refused without TLS: send STLS first\r\n", count: 2))
        #expect(run.logLines.last == "session 3 from 192.0.2.7: command PASS refused: TLS required (--require-tls)")
        run.client("STLS\r\n")
        run.feed(.tlsEstablished(.client, facts))
        run.actions = []
        run.client("CAPA\r\n")
        #expect(run.sent(to: .client).contains("USER\r\n"))
        run.client("USER bob\r\nPASS secret\r\n")
        #expect(run.actions.contains { if case .connect(.server, _, _) = $0 { true } else { false } })
    }

    @Test func bytesAfterSTLSBeforeTheHandshakeEndTheSession() throws {
        let run = try tlsRun(certificate + ["mail.example"])
        run.feed(.started)
        let injected = run.client("STLS\r\nUSER evil\r\n")
        #expect(!startsTLS(injected, .client))
        #expect(run.closed)
        #expect(
            run.logLines.contains(
                "session 3 from 192.0.2.7: client sent more after STLS, before the TLS handshake: refused"))
    }

    @Test func stlsOnlyBeforeTheLogin() throws {
        let run = try tlsRun(certificate + ["mail.example"])
        run.loggedIn()
        run.client("STLS\r\n")
        #expect(run.sent(to: .server) == "")
        #expect(run.sent(to: .client) == "-ERR unsupported command\r\n")
    }

    @Test func aFailedHandshakeEndsTheSession() throws {
        let run = try tlsRun(certificate + ["mail.example"])
        run.feed(.started)
        run.client("STLS\r\n")
        run.feed(.tlsFailed(.client, TLSError("wrong version number")))
        #expect(run.closed)
        #expect(
            run.logLines.contains(
                "session 3 from 192.0.2.7: TLS handshake with the client failed: wrong version number"))
    }

    @Test func pop3sShakesHandsAfterTheRulesAndBeforeTheGreeting() throws {
        let run = try tlsRun(certificate + ["--pop3s", "--rules", "/etc/pop3.cdb", "mail.example"])
        let started = run.feed(.started)
        #expect(!startsTLS(started, .client))
        let allowed = run.feed(.rulesChecked(.noRule))
        #expect(startsTLS(allowed, .client))
        #expect(Run.sent(to: .client, in: allowed) == "")
        let established = run.feed(.tlsEstablished(.client, facts))
        #expect(Run.sent(to: .client, in: established) == "+OK pop3.proxy ready\r\n")
        expectSecured(run)
    }

    @Test func theAccessControlProgramSeesTheClientsTLS() throws {
        let run = try tlsRun(certificate + ["-a", "/bin/acp", "mail.example"])
        run.feed(.started)
        run.client("STLS\r\n")
        run.feed(.tlsEstablished(.client, facts))
        run.client("USER bob\r\nPASS secret\r\n")
        guard
            case .runCapturing(let program)? = run.actions.last(where: {
                if case .runCapturing = $0 { true } else { false }
            })
        else {
            Issue.record("no access control program: \(run.actions)")
            return
        }
        let environment = program.environment.map { String(decoding: $0, as: UTF8.self) }
        #expect(environment.contains("PROXY_TLS_VERSION=TLSv1.3"))
        #expect(environment.contains("PROXY_TLS_CIPHER=TLS_AES_128_GCM_SHA256"))
        #expect(environment.contains("PROXY_TLS_SNI=localhost"))
    }

    @Test func serverSTLSAfterTheGreetingThenTheLogin() throws {
        let run = try tlsRun([
            "--server-tls", "stls", "--server-tls-ca", TestCertificates.path("ca.pem"), "mail.example",
        ])
        run.feed(.started)
        run.client("USER bob\r\nPASS secret\r\n")
        #expect(
            run.actions.contains(
                .connect(.server, to: .host("mail.example", port: 110, from: nil), timeout: .seconds(600))))
        run.feed(.streamConnected(.server))
        #expect(Run.sent(to: .server, in: run.server("+OK hello\r\n")) == "STLS\r\n")
        let upgrade = run.server("+OK begin\r\n")
        guard case .startTLS(.server, .connect(_, let host), _)? = upgrade.first(where: { startsTLS([$0], .server) })
        else {
            Issue.record("no handshake: \(upgrade)")
            return
        }
        #expect(host == "mail.example")
        let established = run.feed(.tlsEstablished(.server, facts))
        #expect(Run.sent(to: .server, in: established) == "USER bob\r\n")
        #expect(established.contains(.read(.server)))
        #expect(Run.sent(to: .server, in: run.server("+OK\r\n")) == "PASS secret\r\n")
        #expect(Run.sent(to: .client, in: run.server("+OK logged in\r\n")) == "+OK logged in\r\n")
    }

    @Test func aServerRefusingSTLSOrInjectingIsAFailedLogin() throws {
        for (answer, reason) in [
            ("-ERR no TLS here\r\n", "the server refused STLS: -ERR no TLS here"),
            ("+OK begin\r\n+OK injected\r\n", "the server sent more after its +OK to STLS, before the TLS handshake"),
        ] {
            let run = try tlsRun(["--server-tls", "stls", "mail.example"])
            run.feed(.started)
            run.client("USER bob\r\nPASS secret\r\n")
            run.feed(.streamConnected(.server))
            run.server("+OK hello\r\n")
            run.actions = []
            run.server(answer)
            #expect(!startsTLS(run.actions, .server))
            #expect(run.actions.contains(.closeStream(.server)))
            #expect(run.sent(to: .server) == "")
            #expect(run.sent(to: .client).hasPrefix("-ERR user bob, server mail.example:110: \(reason)"))
        }
    }

    @Test func serverPOP3SShakesHandsFirstOnPort995() throws {
        let run = try tlsRun(["--server-tls", "pop3s", "mail.example"])
        run.feed(.started)
        run.client("USER bob\r\nPASS secret\r\n")
        #expect(
            run.actions.contains(
                .connect(.server, to: .host("mail.example", port: 995, from: nil), timeout: .seconds(600))))
        #expect(startsTLS(run.feed(.streamConnected(.server)), .server))
        run.feed(.tlsEstablished(.server, facts))
        #expect(
            run.logLines.last
                == "session 3 from 192.0.2.7: TLS with the server mail.example:995: TLSv1.3 TLS_AES_128_GCM_SHA256 sni=localhost"
        )
        #expect(Run.sent(to: .server, in: run.server("+OK hello\r\n")) == "USER bob\r\n")

        let failed = try tlsRun(["--server-tls", "pop3s", "mail.example"])
        failed.feed(.started)
        failed.client("USER bob\r\nPASS secret\r\n")
        failed.feed(.streamConnected(.server))
        failed.feed(.tlsFailed(.server, TLSError("certificate verify failed: hostname mismatch")))
        #expect(
            failed.sent(to: .client)
                == "+OK pop3.proxy ready\r\n+OK password required\r\n-ERR user bob, server mail.example:995: TLS with the server failed: certificate verify failed: hostname mismatch\r\n"
        )
    }

    @Test func theTLSOptionsAreCheckedAsAWhole() throws {
        let o = try POP3ProxyOptions.parse(certificate + ["--pop3s", "-D", "--server-tls", "pop3s", "m"])
        #expect(o.pop3s && o.server == POP3ProxyOptions.Server(host: "m", port: 995))
        #expect(o.clientTLSSettings?.certificates.count == 1)
        for (arguments, message) in [
            (["--pop3s", "m"], "--pop3s needs --tls-cert and --tls-key"),
            (["--require-tls", "m"], "--require-tls needs --tls-cert and --tls-key"),
            (["--tls-cert", "a.pem", "m"], "--tls-cert and tls-key go in pairs: 1 certificate, 0 keys"),
            (["--server-tls", "yes", "m"], "--server-tls takes none, stls or pop3s, not \"yes\""),
            (["--server-tls-ca", "ca.pem", "m"], "--server-tls-ca verifies the server's certificate"),
            (["--tls-protocols", "SSLv3", "m"], "--tls-protocols: unknown TLS version \"SSLv3\""),
            (["--tls-ocsp", "r.der", "m"], "--tls-ocsp staples a response to the tls-cert before it"),
        ] {
            #expect(throws: POP3ProxyOptions.UsageError.self) { try POP3ProxyOptions.parse(arguments) }
            do {
                _ = try POP3ProxyOptions.parse(arguments)
            } catch {
                #expect(error.description.hasPrefix(message), "\(arguments): \(error)")
            }
        }
    }
}

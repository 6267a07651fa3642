import GatewayKit
import TCPProxy
import Testing

@Suite("spreadspace's listen stanzas")
struct SpreadspaceTests {
    /// The manual page's template filled in, as laid out there (no ";" after resolv, as on the page).
    @Test func manualPageTemplate() throws {
        let configuration = try parse(
            """
            listen 192.0.2.1 8080
            {
              resolv: ipv4
              remote: www.example.com http;
              remote-resolv: ipv6;
              source: 2001:db8::5;
            };
            """)
        #expect(
            configuration
                == ProxyConfiguration(
                    path: "/etc/tcpproxy.conf", dialect: .spreadspace,
                    services: [
                        ProxyService(
                            listen: .address(ip("192.0.2.1")), port: 8080, resolv: .ipv4,
                            handlers: [
                                ProxyHandler(
                                    target: .forward(
                                        host: "www.example.com", port: 80, resolv: .ipv6, source: "2001:db8::5"),
                                    timeout: 0, line: 1)
                            ],
                            line: 1)
                    ]))
    }

    @Test func onlyRemote() throws {
        let configuration = try parse("listen * 2222 { remote: 192.168.0.10 22; };\n")
        #expect(
            configuration.services == [
                ProxyService(
                    listen: .any, port: 2222,
                    handlers: [ProxyHandler(target: .forward(host: "192.168.0.10", port: 22), timeout: 0, line: 1)],
                    line: 1)
            ])
        #expect(configuration.standalone == nil && configuration.logname == nil)
        let handler = configuration.services[0].handlers[0]
        #expect(handler.variablePrefix == "PROXY_" && handler.accessControlProgram == nil && !handler.debug)
    }

    @Test func severalStanzasFreeForm() throws {
        let configuration = try parse(
            """
            # rinetd-like forwards
            listen * http-alt {
                remote: localhost 80;   # the local web server
            };

            listen ::1 www{remote:[::1] 8000;};
            listen
              localhost
              2525
            {
              remote
                :
                mail.example.com
                smtp
                ;
              source : 10.1.2.3 ;
              remote-resolv:ipv4;
              resolv: ipv6;
            }
            ;
            listen [2001:db8::1] 443 { remote: 2001:db8::2 443; };
            """)
        #expect(configuration.services.map(\.port) == [8080, 80, 2525, 443])
        #expect(
            configuration.services.map(\.listen) == [
                .any, .address(ip("::1")), .hostname("localhost"), .address(ip("2001:db8::1")),
            ])
        #expect(configuration.services.map(\.line) == [2, 6, 7, 21])
        #expect(configuration.services.map(\.resolv) == [.any, .any, .ipv6, .any])
        #expect(
            configuration.services.flatMap(\.handlers).map(\.target) == [
                .forward(host: "localhost", port: 80),
                .forward(host: "::1", port: 8000),
                .forward(host: "mail.example.com", port: 25, resolv: .ipv4, source: "10.1.2.3"),
                .forward(host: "2001:db8::2", port: 443),
            ])
    }

    @Test func ourAdditions() throws {
        let handler = try onlyHandler(
            """
            listen * 8080 {
              remote: backend 80;
              rules: /etc/tcpproxy/web.cdb;
              proxy-protocol: v2;
            };
            """)
        #expect(handler.rules == "/etc/tcpproxy/web.cdb")
        #expect(handler.proxyProtocol == .v2)
        #expect(try onlyHandler("listen * 80 { remote: b 80; proxy-protocol: v1; };").proxyProtocol == .v1)
    }

    @Test(arguments: [
        ("resolv: ipv4;", AddressFamilyPreference.ipv4, AddressFamilyPreference.any),
        ("resolv: ipv6;", .ipv6, .any),
        ("remote-resolv: ipv4;", .any, .ipv4),
        ("remote-resolv: ipv6;", .any, .ipv6),
        ("resolv: 4; remote-resolv: 6;", .ipv4, .ipv6),
    ])
    func resolvPreferences(settings: String, listen: AddressFamilyPreference, remote: AddressFamilyPreference) throws {
        let configuration = try parse("listen localhost 8080 { remote: example.com 80; \(settings) };")
        #expect(configuration.services[0].resolv == listen)
        guard case .forward(_, _, let resolv, _, _) = configuration.services[0].handlers[0].target else {
            Issue.record("not a forward")
            return
        }
        #expect(resolv == remote)
    }

    @Test(arguments: [
        "remote: a 80;", "remote:a 80;", "remote : a 80;", "remote :a 80;", "remote\n:\na\n80\n;", "remote: a\t80 ;",
    ])
    func colonPlacement(setting: String) throws {
        #expect(try onlyHandler("listen * 8080 { \(setting) };").target == .forward(host: "a", port: 80))
    }

    @Test func ipv6Everywhere() throws {
        let handler = try onlyHandler(
            """
            listen [2001:db8::1] 8080 {
              resolv: ipv6;
              remote: 2001:db8::80 80;
              source: [2001:db8::2];
              remote-resolv: ipv6;
            };
            """)
        #expect(handler.target == .forward(host: "2001:db8::80", port: 80, resolv: .ipv6, source: "2001:db8::2"))
        let configuration = try parse("listen :: 8080 { remote: [::ffff:10.0.0.1] 80; source: 10.0.0.2; };")
        #expect(configuration.services[0].listen == .address(.anyV6))
        #expect(
            configuration.services[0].handlers[0].target
                == .forward(host: "::ffff:10.0.0.1", port: 80, source: "10.0.0.2"))
    }

    @Test func semicolonsMayBeLeftOutAtLineEnds() throws {
        let configuration = try parse(
            """
            listen * 8080 {
              remote: a 80
              source: 10.0.0.1
            }
            listen * 8081 { remote: b 81; }
            """)
        #expect(configuration.services.count == 2)
    }

    @Test func sameAddressDifferentPortsAndViceVersa() throws {
        let configuration = try parse(
            """
            listen * 80 { remote: a 80; };
            listen * 81 { remote: a 80; };
            listen 127.0.0.1 80 { remote: b 80; };
            listen ::1 80 { remote: c 80; };
            """)
        #expect(configuration.services.count == 4)
    }

    @Test func commentsAnywhere() throws {
        let configuration = try parse(
            """
            listen * 8080 # the web proxy
            { # open
              remote: a 80;# trailing
              # source: 10.0.0.1;
            };#done
            """)
        #expect(configuration.services[0].handlers[0].target == .forward(host: "a", port: 80))
    }
}

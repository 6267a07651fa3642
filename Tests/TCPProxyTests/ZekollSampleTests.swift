import GatewayKit
import TCPProxy
import Testing

/// The sample configuration of Zekoll's manual page, verbatim.
let zekollSample = """
    #
    # /etc/tcpproxy.conf - sample configuration
    #
    #
    # Define SMTP proxys ...
    #
    port 25
    # ... for outgoing ...
    #
    interface 192.168.1.1
    server mailrelay.provider.com
    # ... and incoming email.
    #
    interface 192.44.100.7
    server mail.domain.com
    #
    # There are also NNTP-Servers on the outside
    #
    port 119
    interface 192.168.1.1
    server nntp.provider.com
    interface 192.168.2.1
    server nntp.other-provider.com
    #
    # Users from the outside can access our internal
    # POP3 server ...
    #
    port 110
    interface 192.44.100.7
    # ... but only trough a real application gateway.
    #
    exec /usr/local/sbin/pop3.proxy mail.domain.com
    """

@Suite("Zekoll's sample configuration")
struct ZekollSampleTests {
    @Test func wholeModel() throws {
        let expected = ProxyConfiguration(
            path: "/etc/tcpproxy.conf",
            dialect: .zekoll,
            services: [
                ProxyService(
                    port: 25,
                    handlers: [
                        ProxyHandler(
                            interface: ip("192.168.1.1"),
                            target: .forward(host: "mailrelay.provider.com", port: nil), line: 10),
                        ProxyHandler(
                            interface: ip("192.44.100.7"),
                            target: .forward(host: "mail.domain.com", port: nil), line: 14),
                    ], line: 7),
                ProxyService(
                    port: 119,
                    handlers: [
                        ProxyHandler(
                            interface: ip("192.168.1.1"),
                            target: .forward(host: "nntp.provider.com", port: nil), line: 20),
                        ProxyHandler(
                            interface: ip("192.168.2.1"),
                            target: .forward(host: "nntp.other-provider.com", port: nil), line: 22),
                    ], line: 19),
                ProxyService(
                    port: 110,
                    handlers: [
                        ProxyHandler(
                            interface: ip("192.44.100.7"),
                            target: .exec(argv: ["/usr/local/sbin/pop3.proxy", "mail.domain.com"]), line: 29)
                    ], line: 28),
            ])
        #expect(try parse(zekollSample) == expected)
    }

    @Test func defaultsOfEveryHandler() throws {
        let configuration = try parse(zekollSample)
        #expect(configuration.standalone == nil)
        #expect(configuration.logname == nil)
        for handler in configuration.services.flatMap(\.handlers) {
            #expect(handler.timeout == 60)
            #expect(handler.variablePrefix == "PROXY_")
            #expect(handler.accessControlProgram == nil)
            #expect(handler.uid == nil && handler.gid == nil && handler.user == nil)
            #expect(handler.writefile == nil && handler.debug == false)
            #expect(handler.rules == nil && handler.proxyProtocol == nil)
        }
        #expect(configuration.services.allSatisfy { $0.listen == .any && $0.resolv == .any })
    }

    /// "tcpproxy -s ... bind itself to all the listed interfaces": the connections the example describes.
    @Test(
        arguments: [
            ("192.168.1.1", UInt16(25), "server mailrelay.provider.com"),
            ("192.44.100.7", 25, "server mail.domain.com"),
            ("192.168.1.2", 25, nil),
            ("192.168.1.1", 119, "server nntp.provider.com"),
            ("192.168.2.1", 119, "server nntp.other-provider.com"),
            ("192.44.100.7", 119, nil),
            ("192.44.100.7", 110, "exec /usr/local/sbin/pop3.proxy mail.domain.com"),
            ("::ffff:192.44.100.7", 110, "exec /usr/local/sbin/pop3.proxy mail.domain.com"),
            ("192.168.1.1", 110, nil),
            ("192.168.1.1", 79, nil),
        ] as [(String, UInt16, String?)])
    func connections(local: String, port: UInt16, expected: String?) throws {
        let handler = try parse(zekollSample).handler(forLocalAddress: ip(local), port: port)
        let shown: String? = handler.map {
            switch $0.target {
            case .forward(let host, _, _, _, _): return "server \(host)"
            case .exec(let argv): return "exec " + argv.joined(separator: " ")
            }
        }
        #expect(shown == expected)
    }

    @Test func listings() throws {
        let configuration = try parse(zekollSample)
        #expect(configuration.listing(.ports) == ["25", "119", "110"])
        #expect(
            configuration.listing(.basic) == [
                "25 192.168.1.1 server mailrelay.provider.com:25 uid - gid -",
                "25 192.44.100.7 server mail.domain.com:25 uid - gid -",
                "119 192.168.1.1 server nntp.provider.com:119 uid - gid -",
                "119 192.168.2.1 server nntp.other-provider.com:119 uid - gid -",
                "110 192.44.100.7 exec /usr/local/sbin/pop3.proxy mail.domain.com uid - gid -",
            ])
    }

    /// The same file with service names for its ports.
    @Test func serviceNames() throws {
        let named = zekollSample.replacing("port 25", with: "port smtp")
            .replacing("port 119", with: "port nntp").replacing("port 110", with: "port pop-3")
        #expect(try parse(named) == parse(zekollSample))
    }
}

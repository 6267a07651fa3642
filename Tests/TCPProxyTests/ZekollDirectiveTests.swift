import GatewayKit
import TCPProxy
import Testing

@Suite("Zekoll's directives")
struct ZekollDirectiveTests {
    // MARK: - One directive at a time

    @Test(
        arguments: [
            ("", nil),
            ("standalone\n", true),
            ("standalone yes\n", true),
            ("standalone no\n", false),
            ("standalone YES\n", true),
            ("port 25\nserver a\nstandalone no\n", false),
        ] as [(String, Bool?)])
    func standalone(prefix: String, expected: Bool?) throws {
        let text = prefix.contains("port") ? prefix : prefix + "port 25\nserver a\n"
        #expect(try parse(text).standalone == expected)
    }

    @Test(arguments: [
        ("port 25", UInt16(25)), ("port 1", 1), ("port 65535", 65535), ("port 0025", 25),
        ("port smtp", 25), ("port mail", 25), ("port http-alt", 8080), ("port webcache", 8080),
    ])
    func port(line: String, port: UInt16) throws {
        let configuration = try parse(line + "\nserver a\n")
        #expect(configuration.services.map(\.port) == [port])
        #expect(configuration.services[0].listen == .any)
    }

    @Test(
        arguments: [
            ("server mail.example.com", "mail.example.com", nil),
            ("server mail.example.com:25", "mail.example.com", 25),
            ("server mail.example.com:smtp", "mail.example.com", 25),
            ("server mail_1.example-2.com:2525", "mail_1.example-2.com", 2525),
            ("server localhost", "localhost", nil),
            ("server 10.0.0.1", "10.0.0.1", nil),
            ("server 10.0.0.1:119", "10.0.0.1", 119),
            ("server [2001:db8::1]:25", "2001:db8::1", 25),
            ("server [2001:db8::1]:http", "2001:db8::1", 80),
            ("server [2001:db8::1]", "2001:db8::1", nil),
            ("server [10.0.0.1]:25", "10.0.0.1", 25),
            ("server ::1", "::1", nil),
            ("server 2001:db8::25", "2001:db8::25", nil),
            ("server ::ffff:10.0.0.1", "::ffff:10.0.0.1", nil),
            ("server fe80::1%eth0", "fe80::1%eth0", nil),
            ("server [fe80::1%eth0]:25", "fe80::1%eth0", 25),
        ] as [(String, String, UInt16?)])
    func server(line: String, host: String, port: UInt16?) throws {
        let handler = try onlyHandler("port 25\n\(line)\n")
        #expect(handler.target == .forward(host: host, port: port))
    }

    @Test func exec() throws {
        #expect(try onlyHandler("port 79\nexec /bin/date\n").target == .exec(argv: ["/bin/date"]))
        #expect(
            try onlyHandler("port 79\nexec\t/usr/bin/finger  -l \t x#y   # comment\n").target
                == .exec(argv: ["/usr/bin/finger", "-l", "x#y"]))
    }

    @Test func rotate() throws {
        let v4 = try onlyHandler("port 25\nrotate 10.0.0.1 10.0.0.9\nserver mail\n")
        #expect(
            v4.target
                == .forward(
                    host: "mail", port: nil,
                    rotate: AddressRange(start: ip("10.0.0.1"), end: ip("10.0.0.9"))))
        let v6 = try onlyHandler("port 25\nserver [2001:db8::1]:25\nrotate 2001:db8::10 [2001:db8::20]\n")
        #expect(
            v6.target
                == .forward(
                    host: "2001:db8::1", port: 25,
                    rotate: AddressRange(start: ip("2001:db8::10"), end: ip("2001:db8::20"))))
        let one = try onlyHandler("port 25\nserver mail\nrotate 10.0.0.1 10.0.0.1\n")
        #expect(
            one.target
                == .forward(
                    host: "mail", port: nil,
                    rotate: AddressRange(start: ip("10.0.0.1"), end: ip("10.0.0.1"))))
        let mapped = try onlyHandler("port 25\nserver ::ffff:10.0.0.7\nrotate ::ffff:10.0.0.1 10.0.0.2\n")
        #expect(
            mapped.target
                == .forward(
                    host: "::ffff:10.0.0.7", port: nil,
                    rotate: AddressRange(start: ip("10.0.0.1"), end: ip("10.0.0.2"))))
    }

    @Test func everySetting() throws {
        let handler = try onlyHandler(
            """
            port 25
            server mail
            acp /usr/local/bin/acp -v --strict
            uid 1000
            gid 100
            user mailproxy
            logname smtp-proxy
            setenv SMTP_
            timeout 300
            writefile /var/log/smtp
            rules /etc/tcpproxy/smtp.cdb
            proxy-protocol v2
            """)
        #expect(
            handler
                == ProxyHandler(
                    target: .forward(host: "mail", port: nil),
                    accessControlProgram: ["/usr/local/bin/acp", "-v", "--strict"],
                    uid: 1000, gid: 100, user: "mailproxy", logname: "smtp-proxy", variablePrefix: "SMTP_",
                    timeout: 300, writefile: "/var/log/smtp", debug: false, rules: "/etc/tcpproxy/smtp.cdb",
                    proxyProtocol: .v2, line: 1))
    }

    @Test func debugIsWritefileWithDebugging() throws {
        let handler = try onlyHandler("port 25\nserver mail\ndebug /tmp/smtp\n")
        #expect(handler.writefile == "/tmp/smtp")
        #expect(handler.debug)
    }

    @Test(arguments: [
        ("timeout 0", 0), ("timeout 1", 1), ("timeout 86400", 86400), ("timeout 2147483647", 2_147_483_647),
    ])
    func timeout(line: String, seconds: Int) throws {
        #expect(try onlyHandler("port 25\nserver a\n\(line)\n").timeout == seconds)
    }

    @Test(arguments: [("proxy-protocol v1", ProxyProtocolVersion.v1), ("proxy-protocol v2", .v2)])
    func proxyProtocol(line: String, version: ProxyProtocolVersion) throws {
        #expect(try onlyHandler("port 25\nserver a\n\(line)\n").proxyProtocol == version)
    }

    // MARK: - Defaults and sections

    @Test func defaultsBeforeTheFirstPort() throws {
        let configuration = try parse(
            """
            acp /bin/acp default
            timeout 10
            setenv TP_
            uid 65535
            gid 65534
            user nobody
            logname tcpproxy-main
            debug /tmp/trace
            rules /etc/default.cdb
            proxy-protocol v1
            port 25
            server mail
            port 110
            exec /bin/pop3
            """)
        #expect(configuration.logname == "tcpproxy-main")
        for handler in configuration.services.flatMap(\.handlers) {
            #expect(handler.accessControlProgram == ["/bin/acp", "default"])
            #expect(handler.timeout == 10)
            #expect(handler.variablePrefix == "TP_")
            #expect(handler.uid == 65535 && handler.gid == 65534 && handler.user == "nobody")
            #expect(handler.logname == "tcpproxy-main")
            #expect(handler.writefile == "/tmp/trace" && handler.debug)
            #expect(handler.rules == "/etc/default.cdb")
            #expect(handler.proxyProtocol == .v1)
        }
    }

    /// Defaults, then the port's section for every address, then an interface section: the innermost wins.
    @Test func inheritance() throws {
        let configuration = try parse(
            """
            timeout 10
            acp /bin/acp
            debug /tmp/default
            port 25
            timeout 20
            rules /etc/smtp.cdb
            server relay
            interface 192.168.1.1
            timeout 30
            writefile /tmp/inside
            server inside-relay:2525
            interface 192.44.100.7
            acp /bin/strict-acp
            proxy-protocol v2
            server mail
            port 119
            interface 10.0.0.1
            server news
            """)
        let smtp = configuration.services[0].handlers
        #expect(smtp.map(\.interface) == [ip("192.168.1.1"), ip("192.44.100.7"), nil])
        #expect(smtp.map(\.timeout) == [30, 20, 20])
        #expect(smtp.map(\.accessControlProgram) == [["/bin/acp"], ["/bin/strict-acp"], ["/bin/acp"]])
        #expect(smtp.map(\.rules) == ["/etc/smtp.cdb", "/etc/smtp.cdb", "/etc/smtp.cdb"])
        #expect(smtp.map(\.writefile) == ["/tmp/inside", "/tmp/default", "/tmp/default"])
        #expect(smtp.map(\.debug) == [false, true, true])
        #expect(smtp.map(\.proxyProtocol) == [nil, .v2, nil])
        #expect(smtp.map(\.line) == [8, 12, 4])
        #expect(
            smtp.map(\.target) == [
                .forward(host: "inside-relay", port: 2525), .forward(host: "mail", port: nil),
                .forward(host: "relay", port: nil),
            ])
        let news = configuration.services[1].handlers
        #expect(news.count == 1)
        #expect(news[0].timeout == 10 && news[0].rules == nil && news[0].accessControlProgram == ["/bin/acp"])
    }

    /// Settings of a port's section without server or exec go to its interface sections only.
    @Test func portSettingsWithoutTarget() throws {
        let configuration = try parse(
            """
            port 25
            timeout 5
            uid 99
            interface 192.168.1.1
            server a
            interface ::1
            server b
            """)
        let handlers = configuration.services[0].handlers
        #expect(handlers.count == 2)
        #expect(handlers.map(\.interface) == [ip("192.168.1.1"), ip("::1")])
        #expect(handlers.allSatisfy { $0.timeout == 5 && $0.uid == 99 })
    }

    @Test func serverAndExecAreNotInherited() {
        #expect(
            failure("port 25\nserver a\ninterface 10.0.0.1\ntimeout 5\n")
                == "/etc/tcpproxy.conf:3: port 25 interface 10.0.0.1 needs a server or an exec directive")
    }

    @Test(arguments: [
        ("interface 10.0.0.1", "10.0.0.1"), ("interface 2001:db8::7", "2001:db8::7"),
        ("interface [2001:db8::7]", "2001:db8::7"), ("interface ::ffff:10.0.0.1", "10.0.0.1"),
        ("interface ::1", "::1"),
    ])
    func interface(line: String, address: String) throws {
        let handler = try onlyHandler("port 25\n\(line)\nserver a\n")
        #expect(handler.interface == ip(address))
        #expect(handler.interface?.family == ip(address).family)
    }

    @Test func ipv6Everywhere() throws {
        let configuration = try parse(
            """
            port 25
            server [2001:db8::25]:2525
            rotate 2001:db8::100 2001:db8::1ff
            interface 2001:db8::1
            server ::1
            interface [fe80::1]
            server [fe80::2%eth0]
            interface ::ffff:192.0.2.1
            server 192.0.2.25:smtp
            """)
        let handlers = configuration.services[0].handlers
        #expect(handlers.map(\.interface) == [ip("2001:db8::1"), ip("fe80::1"), ip("192.0.2.1"), nil])
        #expect(
            handlers.map(\.target) == [
                .forward(host: "::1", port: nil),
                .forward(host: "fe80::2%eth0", port: nil),
                .forward(host: "192.0.2.25", port: 25),
                .forward(
                    host: "2001:db8::25", port: 2525,
                    rotate: AddressRange(start: ip("2001:db8::100"), end: ip("2001:db8::1ff"))),
            ])
        #expect(configuration.handler(forLocalAddress: ip("::ffff:192.0.2.1"), port: 25) == handlers[2])
        #expect(configuration.handler(forLocalAddress: ip("2001:db8::2"), port: 25) == handlers[3])
    }

    // MARK: - Syntax

    @Test func commentsAndWhitespace() throws {
        let text = "  # leading comment\n\n\t\nport\t25   # the port\r\n   server   mail:25#not-a-comment\r\n#end"
        // `#` starts a comment only at the start of a word.
        #expect(
            failure(text)
                == "/etc/tcpproxy.conf:5: unknown service \"25#not-a-comment\" "
                + "(expected a port number 1-65535 or a tcp service in /etc/services)")
        let clean = "  # leading comment\n\n\t\nport\t25   # the port\r\n   server   mail:25 # comment\r\n#end"
        #expect(try onlyHandler(clean) == ProxyHandler(target: .forward(host: "mail", port: 25), line: 4))
    }

    @Test func manyServicesKeepFileOrder() throws {
        let text = (1...50).map { "port \(1000 + $0)\nserver host\($0)\n" }.joined()
        let configuration = try parse(text)
        #expect(configuration.services.map(\.port) == (1...50).map { UInt16(1000 + $0) })
        #expect(configuration.services.map(\.line) == (1...50).map { 2 * $0 - 1 })
    }

    @Test func bothDialectsShareTheModelTypes() throws {
        let configuration = try parse("port 8080\nserver [::1]:80\nrules /etc/web.cdb\nproxy-protocol v1\n")
        #expect(configuration.dialect == .zekoll)
        #expect(
            configuration.services == [
                ProxyService(
                    port: 8080,
                    handlers: [
                        ProxyHandler(
                            target: .forward(host: "::1", port: 80), rules: "/etc/web.cdb", proxyProtocol: .v1, line: 1)
                    ], line: 1)
            ])
    }
}

import GatewayKit
import TCPProxy
import Testing

@Suite("Handler selection")
struct HandlerSelectionTests {
    static let zekoll = """
        port 25
        server any-relay
        interface 192.168.1.1
        server inside-relay
        interface 2001:db8::25
        server v6-relay
        port 110
        interface 192.44.100.7
        exec /usr/local/sbin/pop3.proxy
        """

    static func target(_ handler: ProxyHandler?) -> String? {
        switch handler?.target {
        case .forward(let host, _, _, _, _)?: return host
        case .exec(let argv)?: return argv[0]
        case nil: return nil
        }
    }

    @Test(
        arguments: [
            ("192.168.1.1", UInt16(25), "inside-relay"),
            ("::ffff:192.168.1.1", 25, "inside-relay"),
            ("192.168.1.2", 25, "any-relay"),
            ("::ffff:192.168.1.2", 25, "any-relay"),
            ("2001:db8::25", 25, "v6-relay"),
            ("2001:db8::26", 25, "any-relay"),
            ("::1", 25, "any-relay"),
            ("192.44.100.7", 110, "/usr/local/sbin/pop3.proxy"),
            ("::ffff:192.44.100.7", 110, "/usr/local/sbin/pop3.proxy"),
            ("192.168.1.1", 110, nil),
            ("192.168.1.1", 119, nil),
        ] as [(String, UInt16, String?)])
    func zekollSections(local: String, port: UInt16, expected: String?) throws {
        let configuration = try parse(Self.zekoll)
        #expect(Self.target(configuration.handler(forLocalAddress: ip(local), port: port)) == expected)
        if let service = configuration.services.first(where: { $0.port == port }) {
            #expect(Self.target(service.handler(forLocalAddress: ip(local))) == expected)
        }
    }

    @Test func handlersAreMostSpecificFirst() throws {
        let handlers = try parse(Self.zekoll).services[0].handlers
        #expect(handlers.map(\.interface) == [ip("192.168.1.1"), ip("2001:db8::25"), nil])
    }

    static let spreadspace = """
        listen * 8080 { remote: any 80; };
        listen 127.0.0.1 8080 { remote: loopback 80; };
        listen ::1 8080 { remote: loopback6 80; };
        listen localhost 8081 { remote: named 80; };
        listen 0.0.0.0 8082 { remote: unspecified4 80; };
        listen :: 8083 { remote: unspecified6 80; };
        """

    @Test(
        arguments: [
            ("127.0.0.1", UInt16(8080), "loopback"),
            ("::ffff:127.0.0.1", 8080, "loopback"),
            ("::1", 8080, "loopback6"),
            ("10.0.0.1", 8080, "any"),
            ("2001:db8::1", 8080, "any"),
            ("127.0.0.1", 8081, nil),
            ("10.0.0.1", 8082, "unspecified4"),
            ("::ffff:10.0.0.1", 8082, "unspecified4"),
            ("2001:db8::1", 8082, nil),
            ("2001:db8::1", 8083, "unspecified6"),
            ("10.0.0.1", 8083, "unspecified6"),
            ("10.0.0.1", 9999, nil),
        ] as [(String, UInt16, String?)])
    func spreadspaceListeners(local: String, port: UInt16, expected: String?) throws {
        let configuration = try parse(Self.spreadspace)
        #expect(Self.target(configuration.handler(forLocalAddress: ip(local), port: port)) == expected)
    }

    /// A service listening on a host name answers for whatever address the daemon bound it to.
    @Test func hostNameServiceAskedDirectly() throws {
        let service = try parse(Self.spreadspace).services[3]
        #expect(service.listen == .hostname("localhost"))
        #expect(Self.target(service.handler(forLocalAddress: ip("127.0.0.1"))) == "named")
    }

    /// An interface handler of a service on any address beats a service on exactly that address.
    @Test func interfaceBeatsExactListenAddress() {
        let configuration = ProxyConfiguration(
            dialect: .zekoll,
            services: [
                ProxyService(
                    listen: .address(ip("10.0.0.1")), port: 80,
                    handlers: [
                        ProxyHandler(target: .forward(host: "exact-listener", port: nil))
                    ]),
                ProxyService(
                    listen: .any, port: 80,
                    handlers: [
                        ProxyHandler(interface: ip("10.0.0.1"), target: .forward(host: "interface", port: nil)),
                        ProxyHandler(target: .forward(host: "any", port: nil)),
                    ]),
            ])
        #expect(Self.target(configuration.handler(forLocalAddress: ip("10.0.0.1"), port: 80)) == "interface")
        #expect(Self.target(configuration.handler(forLocalAddress: ip("10.0.0.2"), port: 80)) == "any")
    }

    /// Equal candidates: the first in the file wins.
    @Test func firstInFileOnTies() {
        let configuration = ProxyConfiguration(
            dialect: .spreadspace,
            services: [
                ProxyService(
                    listen: .any, port: 80, handlers: [ProxyHandler(target: .forward(host: "first", port: 1))]),
                ProxyService(
                    listen: .any, port: 80, handlers: [ProxyHandler(target: .forward(host: "second", port: 1))]),
            ])
        #expect(Self.target(configuration.handler(forLocalAddress: ip("10.0.0.1"), port: 80)) == "first")
    }
}

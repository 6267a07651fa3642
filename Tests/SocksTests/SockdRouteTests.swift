import GatewayKit
import Socks
import Testing

@Suite("sockd.route")
struct SockdRouteTests {
    static let text = """
        # interface     destination      mask
        128.12.6.1      128.12.0.0       255.255.0.0
        192.168.1.1     .inside.example  0.0.0.0
        2001:db8::1     2001:db8::/32
        gw.example.     far.example.org  0.0.0.0
        10.0.0.1        0.0.0.0          0.0.0.0   # everything else

        """

    static func routes() throws -> SockdRoutes {
        try SockdRouteParser(path: "sockd.route").load(Array(text.utf8), mode: .strict).routes
    }

    @Test func parses() throws {
        let routes = try Self.routes().routes
        #expect(routes.map(\.line) == [2, 3, 4, 5, 6])
        #expect(routes[0].interface == .address(IPAddress("128.12.6.1")!))
        #expect(routes[1].destination == .domain(Array("inside.example".utf8)))
        #expect(routes[2].destination == .network(IPNetwork(address: IPAddress("2001:db8::")!, prefixLength: 32)!))
        #expect(routes[3].interface == .name(Array("gw.example".utf8)))
        #expect(routes[3].destination == .host(Array("far.example.org".utf8)))
    }

    @Test(
        arguments: [
            ("128.12.200.7", nil, 2),
            ("128.13.0.1", nil, 6),
            ("172.16.0.1", "db.INSIDE.example", 3),
            ("172.16.0.1", "inside.example", 3),
            ("2001:db8:5::1", nil, 4),
            ("203.0.113.9", "far.example.org.", 5),
            ("::ffff:128.12.1.1", nil, 2),
        ] as [(String, String?, Int)])
    func firstMatchWins(_ destination: String, _ name: String?, _ line: Int) throws {
        let route = try Self.routes().route(to: IPAddress(destination)!, name: name.map { Array($0.utf8) })
        #expect(route?.line == line)
    }

    @Test func noMatchIsNil() throws {
        let routes = try SockdRouteParser(path: "r").load(Array("10.0.0.1 10.0.0.0 255.0.0.0\n".utf8), mode: .strict)
        #expect(routes.routes.route(to: IPAddress("11.0.0.1")!) == nil)
        #expect(routes.routes.route(to: IPAddress("::1")!) == nil)
        #expect(SockdRoutes().route(to: IPAddress("10.0.0.1")!) == nil)
    }

    @Test(arguments: [
        ("10.0.0.1", #"missing destination address and mask"#),
        ("10.0.0.1 10.0.0.0", #"missing mask after "10.0.0.0""#),
        ("10.0.0.1 10.0.0.0 255.0.0.0 extra", #"unexpected "extra" (expected the end of the line)"#),
        ("10.0.0.1 10.0.0.0 ffff::", #"invalid mask "ffff::" (expected a dotted IPv4 mask such as 255.255.255.0)"#),
        (
            "1.2.3 10.0.0.0/8",
            #"invalid address "1.2.3" (expected an IPv4 or IPv6 address, address/prefix, a host name, .domain or ALL)"#
        ),
        ("10.0.0.1 10.0.0.0/40", #"invalid prefix length in "10.0.0.0/40" (expected 0-32 for IPv4, 0-128 for IPv6)"#),
    ])
    func badLinesSayWhy(_ line: String, _ message: String) {
        let (routes, errors) = SockdRouteParser(path: "sockd.route").parse(Array("# c\n\(line)\n".utf8))
        #expect(routes.routes.isEmpty)
        #expect(errors.map(\.description) == ["sockd.route:2: " + message])
    }

    @Test func lenientKeepsGoodLinesStrictRejects() throws {
        let text = Array("10.0.0.1 10.0.0.0/8\nbogus\n10.0.0.2 ALL x\n".utf8)
        let parser = SockdRouteParser(path: "sockd.route")
        let (routes, warnings) = try parser.load(text, mode: .lenient)
        #expect(routes.routes.map(\.line) == [1, 3])
        #expect(warnings.map(\.line) == [2])
        #expect(throws: SockdConfigRejection(path: "sockd.route", errors: warnings)) {
            try parser.load(text, mode: .strict)
        }
    }

    @Test func allWithATrailingDotIsAll() throws {
        let routes = try SockdRouteParser(path: "r").load(Array("10.0.0.1 All. x\n".utf8), mode: .strict).routes
        #expect(routes.routes.first?.destination == .all)
        #expect(routes.text == Array("10.0.0.1 ALL 0.0.0.0\n".utf8))
    }

    @Test func dumpParsesBack() throws {
        let routes = try Self.routes()
        let again = try SockdRouteParser(path: "r").load(routes.text, mode: .strict).routes
        #expect(again == routes)
        #expect(
            String(decoding: routes.text, as: UTF8.self) == """

                128.12.6.1 128.12.0.0 255.255.0.0
                192.168.1.1 .inside.example 0.0.0.0
                2001:db8::1 2001:db8::/32
                gw.example far.example.org 0.0.0.0
                10.0.0.1 0.0.0.0 0.0.0.0

                """)
    }
}

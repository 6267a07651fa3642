import GatewayKit
import Testing

@testable import TCPProxy

@Suite("tcpproxy plan: command line to configuration")
struct ProxyPlanTests {
    let names = ServiceNameSource.text(Array("http 80/tcp\nsmtp 25/tcp mail\n".utf8), name: "test-services")

    @Test func spreadspaceForward() throws {
        var o = try TCPProxyOptions.parse(["-l", "::1", "-p", "http", "-r", "backend", "-o", "8080", "-s", "::2"])
        o.timeout = nil
        let c = try ProxyPlan.configuration(o, serviceNames: names)
        #expect(c.services.count == 1)
        #expect(c.services[0].listen == .address(IPAddress("::1")!) && c.services[0].port == 80)
        #expect(c.services[0].handlers[0].target == .forward(host: "backend", port: 8080, resolv: .any, source: "::2"))
        #expect(c.services[0].handlers[0].timeout == 0)
    }

    @Test func bindWithServerAndHandler() throws {
        let a = try ProxyPlan.configuration(
            try TCPProxyOptions.parse(["--bind", "127.0.0.1:mail", "relay.example:2525"]), serviceNames: names)
        #expect(a.services[0].port == 25 && a.services[0].listen == .address(.loopbackV4))
        #expect(a.services[0].handlers[0].target == .forward(host: "relay.example", port: 2525))
        #expect(a.services[0].handlers[0].timeout == 60)
        let b = try ProxyPlan.configuration(
            try TCPProxyOptions.parse(["--bind", "79", "/bin/date", "-u"]), serviceNames: names)
        #expect(b.services[0].listen == .any && b.services[0].handlers[0].target == .exec(argv: ["/bin/date", "-u"]))
    }

    @Test func optionsAreDefaultsForHandlers() throws {
        let o = try TCPProxyOptions.parse([
            "-a", "/bin/acp", "-v", "X_", "--timeout", "5", "-w", "/tmp/rec", "--rules", "/r.cdb",
            "--proxy-protocol", "v1", "--logname", "px", "host:1",
        ])
        let c = try ProxyPlan.configuration(o, serviceNames: names)
        let h = c.services[0].handlers[0]
        #expect(h.accessControlProgram == ["/bin/acp"] && h.variablePrefix == "X_" && h.timeout == 5)
        #expect(h.writefile == "/tmp/rec" && h.rules == "/r.cdb" && h.proxyProtocol == .v1 && c.logname == "px")
    }

    @Test func debugTraceOptionTurnsTheTraceOnForEveryHandler() throws {
        let c = try ProxyPlan.configuration(try TCPProxyOptions.parse(["-d", "host:1"]), serviceNames: names)
        #expect(c.services[0].handlers[0].debug && c.services[0].handlers[0].writefile == nil)
        var configuration = try ProxyConfiguration(
            parsing: "port 25\nserver a\nport 26\nwritefile /tmp/w\nserver b\n", serviceNames: names)
        ProxyPlan.apply(try TCPProxyOptions.parse(["-d"]), to: &configuration)
        #expect(configuration.services.flatMap(\.handlers).map(\.debug) == [true, true])
        #expect(configuration.services.flatMap(\.handlers).map(\.writefile) == [nil, "/tmp/w"])
    }

    @Test func badPorts() throws {
        #expect(
            throws: ProxyPlan.Problem(
                "--local-port: \"nosuch\" is neither a port number (1-65535) nor a service in test-services")
        ) {
            try ProxyPlan.configuration(
                try TCPProxyOptions.parse(["-p", "nosuch", "-r", "h", "-o", "1"]), serviceNames: names)
        }
        #expect(throws: ProxyPlan.Problem.self) {
            try ProxyPlan.configuration(
                try TCPProxyOptions.parse(["-c", "/nonexistent/tcpproxy.conf"]), serviceNames: names)
        }
    }

    @Test func modes() throws {
        let plain = try TCPProxyOptions.parse([])
        #expect(ProxyPlan.mode(plain, stdinIsSocket: false) == .standalone)
        #expect(ProxyPlan.mode(plain, stdinIsSocket: true) == .inetd)
        #expect(ProxyPlan.mode(try TCPProxyOptions.parse(["--standalone"]), stdinIsSocket: true) == .standalone)
        #expect(ProxyPlan.mode(try TCPProxyOptions.parse(["--bind", "1", "h"]), stdinIsSocket: true) == .standalone)
        #expect(ProxyPlan.mode(try TCPProxyOptions.parse(["-zz"]), stdinIsSocket: true) == .list(2))
        #expect(ProxyPlan.mode(try TCPProxyOptions.parse(["host:1"]), stdinIsSocket: true) == .inetd)
    }
}

@Suite("rotate address arithmetic")
struct AddressArithmeticTests {
    @Test func ipv4RangeCycles() {
        let range = AddressRange(start: IPAddress("10.0.0.254")!, end: IPAddress("10.0.1.1")!)!
        #expect(AddressArithmetic.count(range) == 4)
        let seen = (0..<6).map { AddressArithmetic.address(in: range, at: UInt64($0)).description }
        #expect(seen == ["10.0.0.254", "10.0.0.255", "10.0.1.0", "10.0.1.1", "10.0.0.254", "10.0.0.255"])
    }

    @Test func ipv6RangeCarries() {
        let range = AddressRange(
            start: IPAddress("2001:db8::ffff:ffff:ffff:fffe")!, end: IPAddress("2001:db8:0:1::1")!)!
        #expect(AddressArithmetic.count(range) == 4)
        #expect(AddressArithmetic.address(in: range, at: 2).description == "2001:db8:0:1::")
    }

    @Test func singleAddress() {
        let range = AddressRange(start: .loopbackV4, end: .loopbackV4)!
        #expect(AddressArithmetic.address(in: range, at: 7) == .loopbackV4)
    }
}

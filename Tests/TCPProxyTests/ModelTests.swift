import GatewayKit
import TCPProxy
import Testing

@Suite("Model values")
struct ModelTests {
    @Test func addressRange() {
        #expect(AddressRange(start: ip("10.0.0.1"), end: ip("10.0.0.9")) != nil)
        #expect(AddressRange(start: ip("10.0.0.1"), end: ip("10.0.0.1")) != nil)
        #expect(AddressRange(start: ip("10.0.0.9"), end: ip("10.0.0.1")) == nil)
        #expect(AddressRange(start: ip("10.0.1.0"), end: ip("10.0.0.255")) == nil)
        #expect(AddressRange(start: ip("10.0.0.1"), end: ip("::1")) == nil)
        #expect(AddressRange(start: ip("2001:db8::1"), end: ip("2001:db8::1:0"))?.family == .v6)
        #expect(AddressRange(start: ip("10.0.0.1"), end: ip("10.0.0.9"))?.description == "10.0.0.1 10.0.0.9")
    }

    @Test(arguments: [
        ("ipv4", AddressFamilyPreference.ipv4), ("4", .ipv4), ("ipv6", .ipv6), ("6", .ipv6),
    ])
    func familyPreference(text: String, preference: AddressFamilyPreference) {
        #expect(AddressFamilyPreference(text) == preference)
        #expect(AddressFamilyPreference(preference.description) == preference)
    }

    @Test(arguments: ["", "any", "IPv4", "ipv5", "46"])
    func familyPreferenceRejects(text: String) {
        #expect(AddressFamilyPreference(text) == nil)
    }

    @Test func descriptions() {
        #expect(ListenAddress.any.description == "*")
        #expect(ListenAddress.address(ip("::1")).description == "::1")
        #expect(ListenAddress.hostname("localhost").description == "localhost")
        #expect(ProxyProtocolVersion.v1.description == "v1")
        #expect(ProxyProtocolVersion.v2.description == "v2")
        #expect(AddressFamilyPreference.any.description == "any")
    }

    @Test func handlerDefaults() {
        let handler = ProxyHandler(target: .exec(argv: ["/bin/true"]))
        #expect(handler.variablePrefix == "PROXY_")
        #expect(handler.timeout == 60)
        #expect(handler.interface == nil && handler.accessControlProgram == nil && handler.debug == false)
        #expect(
            ProxyTarget.forward(host: "a", port: nil)
                == .forward(
                    host: "a", port: nil, resolv: .any,
                    source: nil, rotate: nil))
    }

    @Test(
        arguments: [
            ("mail", "mail", nil), ("mail:25", "mail", "25"), ("mail:smtp", "mail", "smtp"),
            ("[::1]:25", "::1", "25"), ("[::1]", "::1", nil), ("::1", "::1", nil), ("1.2.3.4:5", "1.2.3.4", "5"),
        ] as [(String, String, String?)])
    func splitServer(text: String, host: String, port: String?) throws {
        let split = try ProxyTarget.splitServer(text)
        #expect(split.host == host)
        #expect(split.port == port)
    }

    @Test func serverTarget() throws {
        #expect(try ProxyTarget.server("mail:smtp", serviceNames: fakeServices) == .forward(host: "mail", port: 25))
        #expect(throws: ConfigurationProblem.serverIsProgram("/bin/date")) {
            try ProxyTarget.server("/bin/date", serviceNames: fakeServices)
        }
    }

    @Test func serviceNameSource() {
        #expect(ServiceNameSource.system == .file("/etc/services"))
        #expect(ServiceNameSource.system.name == "/etc/services")
        #expect(fakeServices.port(of: "pop-3") == 110)
        #expect(fakeServices.port(of: "syslog") == nil)
        #expect(ServiceNameSource.file("/nonexistent").port(of: "smtp") == nil)
    }
}

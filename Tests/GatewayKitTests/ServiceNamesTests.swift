import GatewayKit
import Testing

@Suite("Service names")
struct ServiceNamesTests {
    static let text = Array(
        """
        # comment line
        ftp\t\t21/tcp
        smtp\t\t25/tcp\t\tmail
        domain\t\t53/tcp\t\t\t# Domain Name Server
        domain\t\t53/udp
        syslog\t\t514/udp
        pop3\t\t110/tcp\t\tpop-3\t# POP version 3

        broken
        """.utf8)

    @Test(arguments: [
        ("smtp", "tcp", UInt16(25)), ("mail", "tcp", 25), ("domain", "udp", 53), ("pop-3", "tcp", 110),
        ("ftp", "tcp", 21),
    ])
    func finds(name: String, proto: String, port: UInt16) {
        #expect(ServiceNames.port(of: name, proto: proto, in: Self.text) == port)
    }

    @Test(arguments: [("syslog", "tcp"), ("nosuch", "tcp"), ("comment", "tcp"), ("broken", "tcp"), ("Server", "tcp")])
    func missing(name: String, proto: String) {
        #expect(ServiceNames.port(of: name, proto: proto, in: Self.text) == nil)
    }

    @Test func missingFile() {
        #expect(ServiceNames.port(of: "smtp", path: "/nonexistent/services") == nil)
    }
}

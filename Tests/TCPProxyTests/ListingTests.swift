import GatewayKit
import TCPProxy
import Testing

@Suite("Listings for -z and -zz")
struct ListingTests {
    @Test func zekoll() throws {
        let configuration = try parse(
            """
            uid 65535
            gid 65534
            port 25
            user mail
            server [2001:db8::1]
            interface 10.0.0.1
            uid 8
            server relay:2525
            interface 2001:db8::7
            gid 12
            exec /usr/bin/x -v
            port finger
            server localhost
            """)
        #expect(configuration.listing(.ports) == ["25", "79"])
        #expect(
            configuration.listing(.basic) == [
                "25 10.0.0.1 server relay:2525 uid 8 gid 65534 user mail",
                "25 2001:db8::7 exec /usr/bin/x -v uid 65535 gid 12 user mail",
                "25 * server [2001:db8::1]:25 uid 65535 gid 65534 user mail",
                "79 * server localhost:79 uid 65535 gid 65534",
            ])
    }

    @Test func spreadspace() throws {
        let configuration = try parse(
            """
            listen * 8080 { remote: ::1 80; };
            listen 127.0.0.1 http-alt { remote: backend http; };
            listen localhost 8081 { remote: 10.0.0.1 81; };
            listen ::1 8081 { remote: 10.0.0.1 81; };
            """)
        #expect(configuration.listing(.ports) == ["8080", "8081"])
        #expect(
            configuration.listing(.basic) == [
                "8080 * server [::1]:80 uid - gid -",
                "8080 127.0.0.1 server backend:80 uid - gid -",
                "8081 localhost server 10.0.0.1:81 uid - gid -",
                "8081 ::1 server 10.0.0.1:81 uid - gid -",
            ])
    }

    @Test func empty() {
        let configuration = ProxyConfiguration(dialect: .zekoll, services: [])
        #expect(configuration.listing(.ports).isEmpty)
        #expect(configuration.listing(.basic).isEmpty)
    }
}

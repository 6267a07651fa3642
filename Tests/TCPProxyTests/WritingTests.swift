import GatewayKit
import Testing

@testable import TCPProxy

// The configuration written back as a file (-zzz): exact text for both dialects, and every
// written file reads back to the same services.

/// `text` parsed, written, and parsed again: both and the written text.
func roundTrip(_ text: String) throws -> (ProxyConfiguration, ProxyConfiguration, String) {
    let first = try parse(text)
    let written = first.text
    let again = try parse(written)
    return (first, again, written)
}

@Suite("The configuration written back")
struct WritingTests {
    @Test func zekollSampleIsWrittenSectionBySection() throws {
        let sample = """
            port 25
            interface 192.168.1.1
            server mailrelay.provider.com
            interface 192.44.100.7
            server mail.domain.com
            port pop3
            interface 192.44.100.7
            exec /usr/local/sbin/pop3.proxy mail.domain.com
            """
        let (first, again, written) = try roundTrip(sample)
        #expect(
            written == """

                port 25
                interface 192.168.1.1
                server mailrelay.provider.com
                interface 192.44.100.7
                server mail.domain.com

                port 110
                interface 192.44.100.7
                exec /usr/local/sbin/pop3.proxy mail.domain.com

                """)
        #expect(again.withoutSourcePositions == first.withoutSourcePositions)
    }

    @Test func inheritedSettingsAreWrittenWhereTheyApply() throws {
        let text = """
            standalone no
            logname proxy
            timeout 120
            acp /bin/acp -v
            port 8080
            uid 7
            server [2001:db8::1]:80
            rotate 2001:db8::10 2001:db8::1f
            interface 127.0.0.2
            timeout 0
            debug trace
            setenv TCP_
            exec /bin/cat -u
            interface ::1
            acp /bin/other
            logname inner
            server 10.0.0.1
            proxy-protocol v2
            rules /etc/r.cdb
            writefile rec
            """
        let (first, again, written) = try roundTrip(text)
        #expect(
            written == """
                standalone no
                logname proxy

                port 8080
                server [2001:db8::1]:80
                rotate 2001:db8::10 2001:db8::1f
                acp /bin/acp -v
                uid 7
                timeout 120
                interface 127.0.0.2
                exec /bin/cat -u
                setenv TCP_
                timeout 0
                debug trace
                interface ::1
                server 10.0.0.1
                acp /bin/other
                logname inner
                writefile rec
                rules /etc/r.cdb
                proxy-protocol v2

                """)
        #expect(again.withoutSourcePositions == first.withoutSourcePositions)
    }

    @Test func portSettingsWithoutAHandlerForEveryAddressGoToEachInterface() throws {
        let (first, again, written) = try roundTrip(
            "user mail\nport 25\ntimeout 5\ninterface 127.0.0.1\nserver a\ninterface 127.0.0.2\nserver b:26\n")
        #expect(
            written == """

                port 25
                interface 127.0.0.1
                server a
                user mail
                timeout 5
                interface 127.0.0.2
                server b:26
                user mail
                timeout 5

                """)
        #expect(again.withoutSourcePositions == first.withoutSourcePositions)
    }

    @Test func spreadspaceStanzasKeepEverySetting() throws {
        let text = """
            listen * smtp { remote: mail.example.com 25; };
            listen ::1 8080 { resolv: ipv6; remote: web 80; remote-resolv: ipv4; source: 10.0.0.2;
              rules: /etc/r.cdb; proxy-protocol: v1; };
            listen localhost http-alt { resolv: ipv4
              remote: 127.0.0.1 http; };
            """
        let (first, again, written) = try roundTrip(text)
        #expect(
            written == """
                listen * 25
                {
                  remote: mail.example.com 25;
                };
                listen ::1 8080
                {
                  resolv: ipv6;
                  remote: web 80;
                  remote-resolv: ipv4;
                  source: 10.0.0.2;
                  rules: /etc/r.cdb;
                  proxy-protocol: v1;
                };
                listen localhost 8080
                {
                  resolv: ipv4;
                  remote: 127.0.0.1 80;
                };

                """)
        #expect(again.withoutSourcePositions == first.withoutSourcePositions)
        #expect(again.dialect == .spreadspace)
    }
}

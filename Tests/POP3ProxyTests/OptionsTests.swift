import GatewayKit
import POP3Proxy
import Testing

// pop3.proxy's command line: every letter of the manual, the long options, the operands.

func options(_ words: String) throws -> POP3ProxyOptions {
    try POP3ProxyOptions.parse(words.split(separator: " ").map(String.init))
}

@Suite("pop3.proxy's command line")
struct POP3ProxyOptionsTests {
    @Test func theManualsDefaults() throws {
        let o = try options("pop.example.org")
        #expect(o.server == .init(host: "pop.example.org", port: 110))
        #expect(o.timeout == 600 && o.user == "nobody" && o.variablePrefix == "PROXY_")
        #expect(o.delimiters == [UInt8(ascii: "@")] && !o.serverSelection && !o.scan && o.daemon == 0)
        #expect(o.clamd == .tcp(.init(host: "127.0.0.1", port: 3310)) && o.scanHeader)
    }

    @Test func everyLetter() throws {
        let o = try options(
            "-a /usr/local/bin/acp -c @% -e -l /var/run/pop3 -m -q 192.0.2.9 -s *.example.org,pop -t 60 -u mail "
                + "-v POP_ -z -d [2001:db8::1]:1110")
        #expect(o.accessControlProgram == "/usr/local/bin/acp" && o.delimiters == Array("@%".utf8))
        #expect(o.serverSelection && o.clientLogDirectory == "/var/run/pop3" && o.quiet)
        #expect(o.sourceAddress == IPAddress("192.0.2.9") && o.serverList == ServerList("*.example.org,pop"))
        #expect(o.timeout == 60 && o.user == "mail" && o.variablePrefix == "POP_" && o.scan && o.debug)
        #expect(o.server == .init(host: "2001:db8::1", port: 1110))
    }

    @Test func lettersClusterAndTakeJoinedArguments() throws {
        let o = try options("-emt30 -u nobody pop")
        #expect(o.serverSelection && o.quiet && o.timeout == 30)
    }

    @Test func theManualsTcpproxyExampleNeedsNoServerWithE() throws {
        #expect(try options("-e").server == nil)
        #expect(try options("-e -").server == nil)
    }

    @Test(arguments: [
        ("-D pop", 1, nil as POP3ProxyOptions.Listen?),
        ("-D -D 1110 pop", 2, .init(interface: nil, port: 1110)),
        ("-DD 127.0.0.1:1110 pop", 2, .init(interface: "127.0.0.1", port: 1110)),
        ("-DD [::1]:1110 pop", 2, .init(interface: "::1", port: 1110)),
        ("-d -D pop", 1, nil),
    ])
    func daemonModes(words: String, daemon: Int, listen: POP3ProxyOptions.Listen?) throws {
        let o = try options(words)
        #expect(o.daemon == daemon && o.listen == listen && o.server?.host == "pop")
    }

    @Test func longOptions() throws {
        let o = try options(
            "--clamd /run/clamav/clamd.ctl --rules /etc/pop3.cdb --pid-file /run/pop3.pid --log stderr:5 "
                + "--no-scan-header --scan-limit 1048576 --scan-limit-pass pop")
        #expect(o.clamd == .unix("/run/clamav/clamd.ctl") && o.rules == "/etc/pop3.cdb" && o.pidFile == "/run/pop3.pid")
        #expect(o.logTargets == [LogTarget(kind: .stderr, level: .debug)])
        #expect(!o.scanHeader && o.scanLimit == 1_048_576 && o.scanLimitPass)
        #expect(try options("--clamd=localhost:3311 pop").clamd == .tcp(.init(host: "localhost", port: 3311)))
        #expect(try options("--help").help)
    }

    @Test(arguments: [
        ("", "no server given (pop3.proxy [options] server, or - with -e)"),
        ("-x pop", "unknown option -x (see pop3.proxy --help)"),
        ("--frobnicate pop", "unknown option --frobnicate (see pop3.proxy --help)"),
        ("-t", "option -t needs an argument"),
        ("-t x pop", "-t needs a number of seconds (0 for none), not \"x\""),
        ("-q pop.example.org pop", "-q needs an IP address to connect from, not \"pop.example.org\""),
        ("-v PRO-XY pop", "-v needs a variable prefix of letters, digits and _, not \"PRO-XY\""),
        ("-s a,b pop", "-s lists the servers a client may select: it needs -e"),
        ("-DD", "-D -D needs the address to listen on: pop3.proxy -DD [interface:]port server"),
        ("-DD x:y pop", "-D -D: \"x:y\": the port must be a number from 1 to 65535"),
        ("pop:0", "server: \"pop:0\": the port must be a number from 1 to 65535"),
        ("pop:pop3", "server: \"pop:pop3\": the port must be a number from 1 to 65535"),
        ("a:b:c:d", "server: \"a:b:c:d\" is not host[:port] (IPv6 as [address]:port)"),
        ("pop extra", "unexpected argument \"extra\" after the server"),
        ("-", "server - (none) needs -e: without it no client can name one"),
        ("--clamd localhost pop", "--clamd: \"localhost\" needs a port (host:port)"),
        ("--scan-limit-pass pop", "--scan-limit-pass needs --scan-limit"),
        ("--scan-limit 0 pop", "--scan-limit needs a size in bytes, not \"0\""),
        ("--help=yes", "option --help takes no argument"),
    ])
    func mistakesAreNamed(words: String, message: String) {
        #expect(throws: UsageError(message)) { try options(words) }
    }
}

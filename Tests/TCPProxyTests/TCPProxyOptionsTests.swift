import GatewayKit
import Testing

@testable import TCPProxy

@Suite("tcpproxy command line")
struct TCPProxyOptionsTests {
    @Test func spreadspaceShortOptions() throws {
        let o = try TCPProxyOptions.parse([
            "-D", "-u", "nobody", "-g", "nogroup", "-C", "/var/empty", "-P", "/run/p.pid", "-L", "stderr:4",
            "-l", "::1", "-t", "6", "-p", "8080", "-r", "example.org", "-R", "ipv4", "-o", "80", "-s", "10.0.0.1",
            "-b", "4096", "-c", "/etc/x.conf",
        ])
        #expect(!o.daemonize && o.username == "nobody" && o.groupname == "nogroup" && o.chroot == "/var/empty")
        #expect(o.pidFile == "/run/p.pid" && o.logTargets == [LogTarget(kind: .stderr, level: .info)])
        #expect(o.localAddress == "::1" && o.localResolv == .ipv6 && o.localPort == "8080")
        #expect(o.remoteAddress == "example.org" && o.remoteResolv == .ipv4 && o.remotePort == "80")
        #expect(o.sourceAddress == "10.0.0.1" && o.bufferSize == 4096 && o.configPath == "/etc/x.conf")
    }

    @Test func spreadspaceLongOptions() throws {
        let o = try TCPProxyOptions.parse([
            "--nodaemonize", "--local-port=8080", "--remote-addr", "127.0.0.1", "--remote-port", "80",
            "--log", "syslog:3,px,local1", "--log=file:5,/tmp/l", "--buffer-size", "20480",
        ])
        #expect(!o.daemonize && o.localPort == "8080" && o.remoteAddress == "127.0.0.1" && o.bufferSize == 20480)
        #expect(o.logTargets.count == 2)
    }

    @Test func debugImpliesForegroundAndStdout() throws {
        let o = try TCPProxyOptions.parse(["-U"])
        #expect(!o.daemonize && o.debug && o.logTargets == [LogTarget(kind: .stdout, level: .debug)])
    }

    @Test func debugTraceIsZekollsDebugOption() throws {
        let o = try TCPProxyOptions.parse(["-d", "-c", "/etc/x.conf"])
        #expect(o.debugTrace && o.daemonize && o.logTargets.isEmpty && !o.debug)
        #expect(try TCPProxyOptions.parse(["--debug-trace"]).debugTrace)
        #expect(try TCPProxyOptions.parse(["-Dd"]).debugTrace)
        #expect(try !TCPProxyOptions.parse(["-U"]).debugTrace)
    }

    @Test func zekollOptions() throws {
        let o = try TCPProxyOptions.parse([
            "-a", "/usr/local/bin/acp", "-f", "/etc/z.conf", "-v", "X_", "-w", "/tmp/rec", "-y", "-zz",
            "--logname", "proxy", "--timeout", "0", "--standalone",
        ])
        #expect(o.accessControlProgram == "/usr/local/bin/acp" && o.configPath == "/etc/z.conf")
        #expect(o.variablePrefix == "X_" && o.writefile == "/tmp/rec" && o.clearEnvironment && o.list == 2)
        #expect(o.logname == "proxy" && o.timeout == 0 && o.standalone)
    }

    @Test func bindWithServerOrHandler() throws {
        let a = try TCPProxyOptions.parse(["--bind", "192.44.100.7:79", "/bin/date", "-u"])
        #expect(a.bind?.interface == "192.44.100.7" && a.bind?.port == "79" && a.standalone)
        #expect(a.server == "/bin/date" && a.serverArguments == ["-u"])
        let b = try TCPProxyOptions.parse(["--bind=8080", "backend:80"])
        #expect(b.bind?.interface == nil && b.bind?.port == "8080" && b.server == "backend:80")
        let c = try TCPProxyOptions.parse(["--bind", "[::1]:8080", "backend"])
        #expect(c.bind?.interface == "::1" && c.bind?.port == "8080")
    }

    @Test func ourAdditions() throws {
        let o = try TCPProxyOptions.parse(["--rules", "/etc/p.cdb", "--proxy-protocol", "v2", "host:1"])
        #expect(o.rules == "/etc/p.cdb" && o.proxyProtocol == .v2 && o.server == "host:1")
        #expect(o.clientNames)
        let quiet = try TCPProxyOptions.parse(["--no-client-names", "/bin/date"])
        #expect(!quiet.clientNames && quiet.server == "/bin/date" && quiet != o)
    }

    @Test(arguments: [
        (["-x"], "unknown option -x (see tcpproxy --help)"),
        (["--frobnicate"], "unknown option --frobnicate (see tcpproxy --help)"),
        (["-p"], "option -p needs an argument"),
        (["--log"], "option --log needs an argument"),
        (["--nodaemonize=yes"], "option --nodaemonize takes no argument"),
        (["--no-client-names=no"], "option --no-client-names takes no argument"),
        (["-t", "7"], "--local-resolv takes ipv4, 4, ipv6 or 6, not \"7\""),
        (["-b", "0"], "--buffer-size needs a size in bytes from 1 to 1073741824, not \"0\""),
        (["-L", "pager:3"], "unknown log target \"pager\" (expected syslog, file, stdout or stderr)"),
        (["--timeout", "-1"], "--timeout needs seconds (0 for none), not \"-1\""),
        (["--proxy-protocol", "v3"], "--proxy-protocol takes v1 or v2, not \"v3\""),
        (["--bind", "80"], "--bind needs a server: tcpproxy --bind [interface:]port host[:port]|/path/to/handler"),
        (["-p", "80", "-r", "x"], "-p/--local-port needs -r/--remote-addr and -o/--remote-port"),
        (["host:1", "extra"], "unexpected argument \"extra\" after the server host:1"),
        (
            ["-p", "1", "-r", "h", "-o", "2", "srv"],
            "give either -p/--local-port with -r and -o, or a server argument, not both"
        ),
    ])
    func errors(words: [String], message: String) {
        #expect(throws: TCPProxyOptions.UsageError(message)) { try TCPProxyOptions.parse(words) }
    }
}

import GatewayKit
import Socks
import Testing

@Suite("sockd's command line")
struct SockdOptionsTests {
    static func parse(_ line: String) throws -> SockdOptions {
        try SockdOptions.parse(line.split(separator: " ").map(String.init))
    }

    @Test func theDefaultsAreTheManuals() throws {
        let o = try Self.parse("")
        #expect(o == SockdOptions())
        #expect(o.identCheck == .off && !o.version && o.listen.isEmpty && !o.foreground)
        #expect(o.pidFile == "/run/sockd.pid" && o.identTimeout == 15 && o.passwd == nil && o.user == nil)
    }

    @Test func theManualsOptions() throws {
        #expect(try Self.parse("-ver").version)
        #expect(try Self.parse("-I").identCheck == .strict)
        #expect(try Self.parse("-i").identCheck == .lenient)
    }

    @Test func theLongOptions() throws {
        let o = try Self.parse(
            "--config /tmp/s.conf --route=/tmp/s.route --listen 127.0.0.1:1081 --listen [::1]:1082 --listen 1083 "
                + "--listen :1084 --listen localhost:1085 --foreground --pid-file /tmp/s.pid --log stderr:5 "
                + "--user nobody --passwd /etc/sockd.passwd --ident-timeout 3 -I")
        #expect(o.config == "/tmp/s.conf" && o.route == "/tmp/s.route")
        #expect(
            o.listen == [
                .init(host: "127.0.0.1", port: 1081), .init(host: "::1", port: 1082), .init(host: nil, port: 1083),
                .init(host: nil, port: 1084), .init(host: "localhost", port: 1085),
            ])
        #expect(o.foreground && o.pidFile == "/tmp/s.pid" && o.logTargets.count == 1)
        #expect(o.user == "nobody" && o.passwd == "/etc/sockd.passwd" && o.identTimeout == 3)
        #expect(o.identCheck == .strict)
        #expect(try Self.parse("--help").help)
    }

    @Test(
        arguments: [
            ("-ver -I", "-ver and -I: -ver, -I and -i may only be used one at a time"),
            ("-I -i", "-I and -i: -ver, -I and -i may only be used one at a time"),
            ("-x", "unknown option -x (see sockd --help)"),
            ("-v", "unknown option -v (see sockd --help)"),
            ("--listen", "option --listen needs an argument"),
            ("--listen ::1", "--listen: \"::1\" is not [ADDRESS]:PORT (IPv6 as [address]:port)"),
            ("--listen 127.0.0.1:0", "--listen: \"127.0.0.1:0\": the port must be a number from 1 to 65535"),
            ("--listen 127.0.0.1:65536", "--listen: \"127.0.0.1:65536\": the port must be a number from 1 to 65535"),
            ("--listen :", "--listen: \":\" is not [ADDRESS]:PORT (IPv6 as [address]:port)"),
            ("--ident-timeout 0", "--ident-timeout needs a number of seconds from 1 to 3600, not \"0\""),
            ("--ident-timeout x", "--ident-timeout needs a number of seconds from 1 to 3600, not \"x\""),
            ("--config=", "--config needs a path"),
            ("--foreground=yes", "option --foreground takes no argument"),
            ("--log nowhere:x", nil),
            ("extra", "unexpected argument \"extra\" (sockd takes options only; see sockd --help)"),
        ] as [(String, String?)])
    func refusedCommandLines(line: String, message: String?) {
        #expect {
            _ = try Self.parse(line)
        } throws: { error in
            guard let error = error as? UsageError else { return false }
            return message == nil ? !error.message.isEmpty : error.message == message
        }
    }

    @Test func theFilesAreChosenAsTheManualSays() {
        let none = SockdOptions()
        #expect(none.configPath { _ in false } == "/etc/sockd.conf")
        #expect(none.configPath { $0 == "/etc/sockd.fc" } == "/etc/sockd.fc")
        #expect(none.routePath { _ in false } == nil)
        #expect(none.routePath { $0 == "/etc/sockd.route" } == "/etc/sockd.route")
        #expect(none.routePath { _ in true } == "/etc/sockd.fr")
        var given = SockdOptions()
        given.config = "/tmp/c"
        given.route = "/tmp/r"
        #expect(given.configPath { _ in true } == "/tmp/c")
        #expect(given.routePath { _ in false } == "/tmp/r")
    }

    @Test func versionSaysWhatTheManualAsks() {
        let single = SockdOptions.versionText(route: nil)
        for fact in [
            "sockd (Bastion) ", "SOCKS protocol versions 4, 4a and 5", "not SOCKSified", "stand-alone or from inetd",
            "supports RBIND (BIND) and UDP ASSOCIATE", "no route file in use",
        ] {
            #expect(single.contains(fact), "\(fact)")
        }
        #expect(SockdOptions.versionText(route: "/etc/sockd.route").contains("route file /etc/sockd.route in use"))
    }
}

import GatewayKit
import TCPProxy
import Testing

/// Every error, with its exact message. Each file is /etc/tcpproxy.conf, services come from the fake services.
@Suite("Configuration errors")
struct ConfigurationErrorTests {
    static let directives =
        "port, interface, server, exec, rotate, acp, timeout, setenv, uid, gid, user, logname, "
        + "writefile, debug, rules, proxy-protocol, standalone, tls-cert, tls-key, tls-ocsp, tls-client-ca, tls-protocols, tls-ciphers, remote-tls, remote-tls-ca, remote-tls-name, remote-tls-cert, remote-tls-key"
    static let defaults = "acp, timeout, setenv, uid, gid, user, logname, writefile, debug, rules, proxy-protocol"
    static let portExpected = "(expected a port number 1-65535 or a service name)"
    static let serviceExpected = "(expected a port number 1-65535 or a tcp service in /etc/services)"
    static let serverExpected = "(expected HOST, HOST:PORT, [IPV6-ADDRESS]:PORT or an IPv6 address)"
    static let settings =
        "remote, resolv, remote-resolv, source, rules, proxy-protocol, tls-cert, tls-key, tls-ocsp, tls-client-ca, tls-protocols, tls-ciphers, remote-tls, remote-tls-ca, remote-tls-name, remote-tls-cert, remote-tls-key"

    // MARK: - Zekoll's dialect

    static let zekoll: [(String, String)] = [
        // Directives and arguments.
        ("port 25\nsevrer mail\n", "2: unknown directive \"sevrer\" (expected one of: \(directives))"),
        ("Port 25\nserver mail\n", "1: unknown directive \"Port\" (expected one of: \(directives))"),
        ("port\n", "1: missing argument to port (usage: port PORT|SERVICE)"),
        ("port 25 26\nserver a\n", "1: too many arguments to port: \"26\" (usage: port PORT|SERVICE)"),
        ("port 25\nserver a b c\n", "2: too many arguments to server: \"b c\" (usage: server HOST[:PORT])"),
        ("port 25\nserver\n", "2: missing argument to server (usage: server HOST[:PORT])"),
        ("port 25\nexec\n", "2: missing argument to exec (usage: exec COMMAND [ARGUMENT...])"),
        ("acp\n", "1: missing argument to acp (usage: acp PROGRAM [ARGUMENT...])"),
        ("port 25\ninterface\n", "2: missing argument to interface (usage: interface ADDRESS)"),
        (
            "port 25\nserver a\nrotate 10.0.0.1\n",
            "3: missing argument to rotate (usage: rotate FIRST-ADDRESS LAST-ADDRESS)"
        ),
        (
            "port 25\nserver a\nrotate 10.0.0.1 10.0.0.2 10.0.0.3\n",
            "3: too many arguments to rotate: \"10.0.0.3\" (usage: rotate FIRST-ADDRESS LAST-ADDRESS)"
        ),
        ("user\n", "1: missing argument to user (usage: user NAME)"),
        ("logname a b\n", "1: too many arguments to logname: \"b\" (usage: logname NAME)"),
        ("setenv\n", "1: missing argument to setenv (usage: setenv PREFIX)"),
        ("timeout\n", "1: missing argument to timeout (usage: timeout SECONDS)"),
        ("uid\n", "1: missing argument to uid (usage: uid NUMBER)"),
        ("gid 1 2\n", "1: too many arguments to gid: \"2\" (usage: gid NUMBER)"),
        ("writefile\n", "1: missing argument to writefile (usage: writefile BASENAME)"),
        ("debug\n", "1: missing argument to debug (usage: debug BASENAME)"),
        ("rules\n", "1: missing argument to rules (usage: rules FILE.cdb)"),
        ("rules a.cdb b.cdb\n", "1: too many arguments to rules: \"b.cdb\" (usage: rules FILE.cdb)"),
        ("proxy-protocol\n", "1: missing argument to proxy-protocol (usage: proxy-protocol v1|v2)"),
        ("standalone yes no\n", "1: too many arguments to standalone: \"no\" (usage: standalone [yes|no])"),

        // Values.
        ("port 0\n", "1: invalid port \"0\" \(portExpected)"),
        ("port 65536\n", "1: invalid port \"65536\" \(portExpected)"),
        ("port 99999999999999999999\n", "1: invalid port \"99999999999999999999\" \(portExpected)"),
        ("port smtpx\n", "1: unknown service \"smtpx\" \(serviceExpected)"),
        ("port syslog\n", "1: unknown service \"syslog\" \(serviceExpected)"),
        ("port -1\n", "1: unknown service \"-1\" \(serviceExpected)"),
        ("standalone maybe\n", "1: invalid standalone \"maybe\" (expected yes or no)"),
        ("uid nobody\n", "1: invalid uid \"nobody\" (expected a numeric user id)"),
        ("uid -1\n", "1: invalid uid \"-1\" (expected a numeric user id)"),
        ("uid 4294967296\n", "1: invalid uid \"4294967296\" (expected a numeric user id)"),
        ("gid staff\n", "1: invalid gid \"staff\" (expected a numeric group id)"),
        ("setenv MY-PROXY_\n", "1: invalid setenv \"MY-PROXY_\" (expected a variable prefix of letters, digits and _)"),
        ("timeout soon\n", "1: invalid timeout \"soon\" (expected a number of seconds, 0 for none)"),
        ("timeout -5\n", "1: invalid timeout \"-5\" (expected a number of seconds, 0 for none)"),
        ("timeout 1.5\n", "1: invalid timeout \"1.5\" (expected a number of seconds, 0 for none)"),
        ("timeout 2147483648\n", "1: invalid timeout \"2147483648\" (expected a number of seconds, 0 for none)"),
        ("proxy-protocol v3\n", "1: invalid proxy-protocol \"v3\" (expected v1 or v2)"),
        ("proxy-protocol V1\n", "1: invalid proxy-protocol \"V1\" (expected v1 or v2)"),
        ("port 25\ninterface eth0\n", "2: invalid interface \"eth0\" (expected an IPv4 or IPv6 address)"),
        (
            "port 25\ninterface 192.168.1.256\n",
            "2: invalid interface \"192.168.1.256\" (expected an IPv4 or IPv6 address)"
        ),
        (
            "port 25\ninterface 0.0.0.0\n",
            "2: interface 0.0.0.0 is the wildcard address "
                + "(settings for every local address go after port, before its first interface)"
        ),
        (
            "port 25\ninterface [::]\n",
            "2: interface [::] is the wildcard address "
                + "(settings for every local address go after port, before its first interface)"
        ),

        // server's forms.
        ("port 25\nserver [::1\n", "2: invalid server \"[::1\" \(serverExpected)"),
        ("port 25\nserver [::1]x\n", "2: invalid server \"[::1]x\" \(serverExpected)"),
        ("port 25\nserver [::1]:\n", "2: invalid server \"[::1]:\" \(serverExpected)"),
        ("port 25\nserver [mail]:25\n", "2: invalid server \"[mail]:25\" \(serverExpected)"),
        ("port 25\nserver mail:\n", "2: invalid server \"mail:\" \(serverExpected)"),
        ("port 25\nserver :25\n", "2: invalid server \":25\" \(serverExpected)"),
        ("port 25\nserver 300.1.1.1\n", "2: invalid server \"300.1.1.1\" \(serverExpected)"),
        ("port 25\nserver fe80::1::2\n", "2: invalid server \"fe80::1::2\" \(serverExpected)"),
        ("port 25\nserver mail!relay\n", "2: invalid server \"mail!relay\" \(serverExpected)"),
        ("port 25\nserver -mail\n", "2: invalid server \"-mail\" \(serverExpected)"),
        ("port 25\nserver mail:0\n", "2: invalid server port \"0\" \(portExpected)"),
        ("port 25\nserver [::1]:70000\n", "2: invalid server port \"70000\" \(portExpected)"),
        ("port 25\nserver mail:nosuch\n", "2: unknown service \"nosuch\" \(serviceExpected)"),
        (
            "port 79\nserver /bin/date\n",
            "2: server \"/bin/date\" is a program, not a host (use \"exec /bin/date\" to run a program)"
        ),
        (
            "port 79\nserver ./date\n",
            "2: server \"./date\" is a program, not a host (use \"exec ./date\" to run a program)"
        ),

        // rotate.
        ("port 25\nserver a\nrotate 10.0.0.1 2001:db8::1\n", "3: rotate needs two addresses of the same family"),
        (
            "port 25\nserver a\nrotate 10.0.0.9 10.0.0.1\n",
            "3: rotate range 10.0.0.9 10.0.0.1 is reversed (the first address must not be above the last)"
        ),
        ("port 25\nserver a\nrotate 10.0.0.1 host\n", "3: invalid rotate \"host\" (expected an IPv4 or IPv6 address)"),
        (
            "port 25\nexec /bin/x\nrotate 10.0.0.1 10.0.0.2\n",
            "3: rotate needs a server in the same section "
                + "(it picks the source address of connections to the server)"
        ),
        (
            "port 25\nrotate 10.0.0.1 10.0.0.2\ninterface 10.1.1.1\nserver a\n",
            "2: rotate needs a server in the same "
                + "section (it picks the source address of connections to the server)"
        ),
        (
            "port 25\nserver [2001:db8::1]:25\nrotate 10.0.0.1 10.0.0.2\n",
            "3: rotate addresses are IPv4 but server 2001:db8::1 is IPv6"
        ),
        (
            "port 25\nrotate 2001:db8::1 2001:db8::2\nserver 10.0.0.1\n",
            "2: rotate addresses are IPv6 but server 10.0.0.1 is IPv4"
        ),

        // Sections.
        (
            "server mail\n",
            "1: server must follow a \"port\" directive "
                + "(before the first port only defaults may be set: \(defaults))"
        ),
        (
            "exec /bin/date\n",
            "1: exec must follow a \"port\" directive "
                + "(before the first port only defaults may be set: \(defaults))"
        ),
        (
            "rotate 10.0.0.1 10.0.0.2\n",
            "1: rotate must follow a \"port\" directive "
                + "(before the first port only defaults may be set: \(defaults))"
        ),
        (
            "timeout 5\ninterface 10.0.0.1\n",
            "2: interface must follow a \"port\" directive "
                + "(before the first port only defaults may be set: \(defaults))"
        ),
        ("port 25\n", "1: port 25 needs a server or an exec directive"),
        ("port 25\ntimeout 5\nport 26\nserver a\n", "1: port 25 needs a server or an exec directive"),
        (
            "port 25\ninterface 10.0.0.1\nport 26\nserver a\n",
            "2: port 25 interface 10.0.0.1 needs a server or an exec directive"
        ),
        (
            "port 25\ninterface 10.0.0.1\nserver a\ninterface 2001:db8::1\n",
            "4: port 25 interface 2001:db8::1 needs a server or an exec directive"
        ),
        ("port 25\nserver a\nport smtp\nserver b\n", "3: port 25 is already defined at line 1"),
        (
            "port 25\ninterface 10.0.0.1\nserver a\ninterface 10.0.0.1\nserver b\n",
            "4: interface 10.0.0.1 is already defined for port 25 at line 2"
        ),
        (
            "port 25\ninterface 10.0.0.1\nserver a\ninterface ::ffff:10.0.0.1\nserver b\n",
            "4: interface 10.0.0.1 is already defined for port 25 at line 2"
        ),
        (
            "port 25\ninterface 2001:db8::1\nserver a\ninterface 2001:DB8:0::1\nserver b\n",
            "4: interface 2001:db8::1 is already defined for port 25 at line 2"
        ),

        // Dialects.
        (
            "port 25\nserver a\nlisten * 80 { remote: a 80; };\n",
            "3: \"listen\" starts a stanza of spreadspace's "
                + "dialect, which needs braces (listen HOST PORT { remote: HOST PORT; };) and must come first in its "
                + "file; this file is read in Zekoll's dialect"
        ),
        (
            "listen * 80\nremote a 80\n",
            "1: \"listen\" starts a stanza of spreadspace's dialect, which needs braces "
                + "(listen HOST PORT { remote: HOST PORT; };) and must come first in its file; this file is read in "
                + "Zekoll's dialect"
        ),
    ]

    @Test(arguments: zekoll)
    func zekollDialect(text: String, message: String) {
        #expect(failure(text) == "/etc/tcpproxy.conf:" + message)
    }

    @Test(arguments: ["", "\n\n", "# only a comment\n", "timeout 5\nacp /bin/x\nstandalone yes\n"])
    func noServices(text: String) {
        #expect(
            failure(text) == "/etc/tcpproxy.conf: no services defined "
                + "(expected \"port PORT\" followed by \"server HOST[:PORT]\" or \"exec COMMAND\")")
        #expect(parseError(text)?.line == nil)
    }

    // MARK: - spreadspace's dialect

    static let spreadspace: [(String, String)] = [
        ("listen * 8080 {\n  source: 10.0.0.1;\n};\n", "3: \"remote\" is missing in listen * 8080 (started at line 1)"),
        ("listen * 8080 { };", "1: \"remote\" is missing in listen * 8080 (started at line 1)"),
        (
            "listen * 8080 {\n  remote: a 80;\n",
            "2: listen * 8080 (started at line 1) is not closed "
                + "(expected \"};\" before the end of the file)"
        ),
        ("listen * 80 { remot: a 80; };", "1: unknown setting \"remot\" in listen * 80 (expected one of: \(settings))"),
        (
            "listen * 80 { remote: a 80; timeout: 5; };",
            "1: unknown setting \"timeout\" in listen * 80 (expected one of: \(settings))"
        ),
        ("listen * 80 {\n remote: a 80;\n remote: b 80;\n};", "3: remote is already set at line 2 in listen * 80"),
        (
            "listen * 80 { remote: a 80; resolv: ipv4; resolv: ipv4; };",
            "1: resolv is already set at line 1 in listen * 80"
        ),
        (
            "listen * 80 { remote: a 80; };\nlisten * 80 { remote: b 80; };\n",
            "2: listen * 80 is already defined at line 1"
        ),
        // The same listener written otherwise (the fuzzer's find: -zzz wrote both as 443).
        (
            "listen * 443 { remote: a 80; };\nlisten * 0443 { remote: b 80; };\n",
            "2: listen * 0443 is already defined at line 1"
        ),
        (
            "listen ::1 80 { remote: a 80; };\nlisten 0::1 http { remote: b 80; };\n",
            "2: listen 0::1 http is already defined at line 1"
        ),
        (
            "listen Gate.example 80 { remote: a 80; };\nlisten gate.example 80 { remote: b 80; };\n",
            "2: listen gate.example 80 is already defined at line 1"
        ),
        (
            "listen * 80 remote: a 80; };\nlisten * 81 { remote: a 81; };",
            "1: expected \"{\" after listen * 80, found \"remote:\""
        ),
        ("listen * 80 { remote: a 80; };\nlisten * 81", "2: expected \"{\" after listen * 81, found end of file"),
        ("listen * { remote: a 80; };", "1: expected a port or service name after \"listen *\", found \"{\""),
        (
            "listen { remote: a 80; };",
            "1: expected a listen address (*, an address or a host name) after "
                + "\"listen\", found \"{\""
        ),
        ("listen * 80 { remote a 80; };", "1: expected \":\" after \"remote\", found \"a\""),
        ("listen * 80 { remote ::1 80; };", "1: expected \":\" after \"remote\", found \"::1\""),
        ("listen * 80 { remote::1 80; };", "1: expected a space after \"remote:\", found \"remote::1\""),
        ("listen * 80 { remote: a; };", "1: missing argument to remote (usage: remote: HOST PORT;)"),
        ("listen * 80 {\n remote: a\n source: b;\n};", "2: missing argument to remote (usage: remote: HOST PORT;)"),
        ("listen * 80 { remote: a 80; source: ; };", "1: missing argument to source (usage: source: HOST;)"),
        ("listen * 80 { remote: a 80 b; };", "1: expected \";\" after remote: a 80, found \"b\""),
        ("listen * 80 { remote: a 80 };", "1: expected \";\" after remote: a 80, found \"}\""),
        (
            "listen * 80 { remote: a 80; } listen * 81 { remote: a 81; };",
            "1: expected \";\" after \"}\", found \"listen\""
        ),
        ("listen * 80 { { remote: a 80; };", "1: expected a setting or \"}\" in listen * 80, found \"{\""),
        ("listen * 80 { remote: a 80; ; };", "1: expected a setting or \"}\" in listen * 80, found \";\""),
        ("listen * 80 { remote: a 80; resolv: ipv5; };", "1: invalid resolv \"ipv5\" (expected ipv4 or ipv6)"),
        (
            "listen * 80 { remote: a 80; remote-resolv: any; };",
            "1: invalid remote-resolv \"any\" (expected ipv4 or ipv6)"
        ),
        ("listen * 80 { remote: a 80; proxy-protocol: v3; };", "1: invalid proxy-protocol \"v3\" (expected v1 or v2)"),
        (
            "listen 300.1.2.3 80 { remote: a 80; };",
            "1: invalid listen address \"300.1.2.3\" (expected *, an address or a host name)"
        ),
        (
            "listen fe80::1::2 80 { remote: a 80; };",
            "1: invalid listen address \"fe80::1::2\" (expected *, an address or a host name)"
        ),
        ("listen * 0 { remote: a 80; };", "1: invalid listen port \"0\" \(portExpected)"),
        ("listen * nosuch { remote: a 80; };", "1: unknown service \"nosuch\" \(serviceExpected)"),
        ("listen * 80 { remote: a 65536; };", "1: invalid remote port \"65536\" \(portExpected)"),
        ("listen * 80 { remote: a nosuch; };", "1: unknown service \"nosuch\" \(serviceExpected)"),
        (
            "listen * 80 { remote: bad!host 80; };",
            "1: invalid remote \"bad!host\" (expected an address or a host name)"
        ),
        (
            "listen * 80 { remote: a 80; source: [10.0.0.1; };",
            "1: invalid source \"[10.0.0.1\" (expected an address or a host name)"
        ),
        (
            "listen 10.0.0.1 80 { remote: a 80; resolv: ipv6; };",
            "1: resolv ipv6 contradicts the listen address 10.0.0.1, which is IPv4"
        ),
        (
            "listen * 80 { remote: ::1 80; remote-resolv: ipv4; };",
            "1: remote-resolv ipv4 contradicts remote ::1, which is IPv6"
        ),
        (
            "listen * 80 { remote: a 80; source: 10.0.0.1; remote-resolv: ipv6; };",
            "1: remote-resolv ipv6 contradicts source 10.0.0.1, which is IPv4"
        ),
        (
            "listen * 80 { remote: [::1] 80; source: 10.0.0.1; };",
            "1: source 10.0.0.1 is IPv4 but remote ::1 is IPv6 (both must be of the same family)"
        ),
        (
            "listen * 80 { remote: a 80; };\nport 25\nserver b\n",
            "2: expected \"listen\", found \"port\" (this file is in spreadspace's dialect because it starts "
                + "with a listen stanza; Zekoll's directives cannot follow)"
        ),
        ("listen * 80 { remote: a 80; };\n}\n", "2: expected \"listen\", found \"}\""),
        (
            "listen * 80 { remote: a 80; };\nlisten\n",
            "2: expected a listen address (*, an address or a host name) "
                + "after \"listen\", found end of file"
        ),
    ]

    @Test(arguments: spreadspace)
    func spreadspaceDialect(text: String, message: String) {
        #expect(failure(text) == "/etc/tcpproxy.conf:" + message)
    }

    // MARK: - Positions

    @Test(arguments: [
        ("port 25\n  sevrer mail\n", 2, 3),
        ("port 25\nserver a\ntimeout\tsoon\n", 3, 9),
        ("port 25 26\n", 1, 9),
        ("port 25\nserver a\n\n  port 25\n", 4, 8),
        ("port 25\n", 1, 1),
        ("listen * 80 {\n   remot: a 80; };", 2, 4),
        ("listen * 80 { remote: a nosuch; };", 1, 25),
        ("listen * 80 { remote:a nosuch; };", 1, 24),
        ("listen * 80 { remote:a 80; source :[10.0.0.1; };", 1, 36),
    ])
    func columns(text: String, line: Int, column: Int) {
        let error = parseError(text)
        #expect(error?.line == line)
        #expect(error?.column == column)
    }

    /// The brief's examples, word for word.
    @Test func examplesFromTheIssue() {
        #expect(
            failure("port 25\n" + String(repeating: "#\n", count: 9) + "\nsevrer mail\n")?.hasPrefix(
                "/etc/tcpproxy.conf:12: unknown directive \"sevrer\" (expected one of: port, interface, server, ")
                == true)
        #expect(
            failure("listen * 8080 {\n  source: 10.0.0.1;\n};\n")
                == "/etc/tcpproxy.conf:3: \"remote\" is missing in listen * 8080 (started at line 1)")
        #expect(
            failure("port 25\nserver a\nrotate 10.0.0.1 ::1\n")?.hasSuffix(
                ": rotate needs two addresses of the same family") == true)
    }

    @Test func errorValues() {
        let error = parseError("port 25\nserver a\nport 25\nserver b\n")
        #expect(
            error
                == ConfigurationError(
                    path: "/etc/tcpproxy.conf", line: 3, column: 6,
                    problem: .duplicatePort("25", line: 1)))
    }
}

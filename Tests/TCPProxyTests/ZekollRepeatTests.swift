import GatewayKit
import Testing

@testable import TCPProxy

/// Zekoll's tcpproxy let a later line of a section overwrite an earlier one; so do we, with a warning.
@Suite("Zekoll's dialect: repeated settings")
struct ZekollRepeatTests {
    /// Every setting with two different values. `standalone` is per file and tested on its own.
    static let settings: [(directive: String, first: String, second: String)] = [
        ("acp", "/bin/acp-one", "/bin/acp-two -v"),
        ("timeout", "5", "600"),
        ("setenv", "ONE_", "TWO_"),
        ("uid", "1000", "1001"),
        ("gid", "100", "101"),
        ("user", "alice", "bob"),
        ("logname", "one", "two"),
        ("writefile", "/tmp/one", "/tmp/two"),
        ("debug", "/tmp/one", "/tmp/two"),
        ("rules", "/etc/one.cdb", "/etc/two.cdb"),
        ("proxy-protocol", "v1", "v2"),
    ]

    /// What only a handler has: they may not come before the first port.
    static let targets: [(directive: String, first: String, second: String)] = [
        ("server", "one.example:25", "two.example:2525"),
        ("exec", "/bin/one", "/bin/two -x"),
        ("rotate", "10.0.0.1 10.0.0.2", "10.0.1.1 10.0.1.9"),
    ]

    /// Where a section starts, and the lines before the repeated directive. `TARGET` is replaced by a
    /// target line unless the directive under test is one (then its own lines make the handler).
    static let places: [(name: String, before: String, after: String)] = [
        ("defaults", "", "port 25\nTARGET"),
        ("port", "port 25\nTARGET", ""),
        ("interface", "port 25\ninterface 10.0.0.1\nTARGET", ""),
    ]

    /// `text` with TARGET lines resolved for `directive`.
    static func resolve(_ text: String, for directive: String) -> String {
        text.replacing("TARGET", with: directive == "server" || directive == "exec" ? "" : "server relay\n")
    }

    /// The repeated file and the one that says only the last value, with the same line numbers.
    static func files(
        _ directive: String, _ first: String, _ second: String, before: String, after: String
    ) -> (repeated: String, single: String, firstLine: Int) {
        let head = resolve(before, for: directive)
        let tail = resolve(after, for: directive)
        let firstLine = head.filter { $0 == "\n" }.count + 1
        let repeated = head + "\(directive) \(first)\n\(directive) \(second)\n" + tail
        let single = head + "\n\(directive) \(second)\n" + tail
        return (repeated, single, firstLine)
    }

    @Test(arguments: settings.map { ($0.directive, $0.first, $0.second) }, places.map(\.name))
    func lastSettingWins(setting: (String, String, String), place: String) throws {
        try expectLastWins(setting, place: place)
    }

    @Test(arguments: targets.map { ($0.directive, $0.first, $0.second) }, ["port", "interface"])
    func lastTargetWins(target: (String, String, String), place: String) throws {
        try expectLastWins(target, place: place)
    }

    func expectLastWins(_ setting: (String, String, String), place: String) throws {
        let (directive, first, second) = setting
        let section = try #require(Self.places.first { $0.name == place })
        let (repeated, single, line) = Self.files(
            directive, first, second, before: section.before, after: section.after)
        let got = try parse(repeated)
        let expected = try parse(single)
        #expect(expected.warnings.isEmpty)
        #expect(got.services == expected.services, "\(repeated)")
        #expect(got.logname == expected.logname)
        #expect(
            got.warnings.map(\.description) == [
                "/etc/tcpproxy.conf:\(line + 1): \(directive) repeated in this section; it replaces line \(line)"
            ])
        #expect(
            got.warnings
                == [
                    ConfigurationWarning(
                        path: "/etc/tcpproxy.conf", line: line + 1, column: 1,
                        kind: .repeated(directive: directive, line: line, scope: .section))
                ])
    }

    /// The brief's example, word for word.
    @Test func messageOfTheExample() throws {
        let text = "port 25\nserver mail\n" + String(repeating: "#\n", count: 6) + "timeout 30\n\n\ntimeout 90\n"
        let configuration = try parse(text)
        #expect(
            configuration.warnings.map(\.description) == [
                "/etc/tcpproxy.conf:12: timeout repeated in this section; it replaces line 9"
            ])
        #expect(configuration.services[0].handlers[0].timeout == 90)
    }

    @Test func eachRepeatNamesTheLineItReplaces() throws {
        let configuration = try parse("port 25\nserver a\ntimeout 1\ntimeout 2\n  timeout 3\n")
        #expect(configuration.services[0].handlers[0].timeout == 3)
        #expect(
            configuration.warnings.map(\.description) == [
                "/etc/tcpproxy.conf:4: timeout repeated in this section; it replaces line 3",
                "/etc/tcpproxy.conf:5: timeout repeated in this section; it replaces line 4",
            ])
        #expect(configuration.warnings.map(\.column) == [1, 3])
    }

    // MARK: - Directives that share a setting

    /// `server` and `exec` make one target, `writefile` and `debug` one recording: whichever comes later wins.
    static let replacements: [(text: String, message: String)] = [
        (
            "port 25\nserver a\nexec /bin/x -y\n",
            "3: exec replaces server at line 2 in this section (a handler uses either server or exec)"
        ),
        (
            "port 25\ninterface 10.0.0.1\nexec /bin/x\nserver b:26\n",
            "4: server replaces exec at line 3 in this section (a handler uses either server or exec)"
        ),
        (
            "port 25\nserver a\nwritefile /tmp/a\ndebug /tmp/b\n",
            "4: debug replaces writefile at line 3 in this section (debug is writefile with the debug trace on)"
        ),
        (
            "debug /tmp/b\nwritefile /tmp/a\nport 25\nserver a\n",
            "2: writefile replaces debug at line 1 in this section "
                + "(the debug trace that debug turned on is off again)"
        ),
    ]

    @Test(arguments: replacements)
    func sharedSettingReplaced(text: String, message: String) throws {
        #expect(try parse(text).warnings.map(\.description) == ["/etc/tcpproxy.conf:" + message])
    }

    @Test func theLaterOfTwoSharingDirectivesIsInEffect() throws {
        #expect(try onlyHandler(Self.replacements[0].text).target == .exec(argv: ["/bin/x", "-y"]))
        #expect(
            try parse(Self.replacements[0].text).warnings[0].kind
                == .replaces(directive: "exec", previous: "server", line: 2))
        #expect(try onlyHandler(Self.replacements[1].text).target == .forward(host: "b", port: 26))
        let debug = try onlyHandler(Self.replacements[2].text)
        #expect(debug.writefile == "/tmp/b" && debug.debug)
        let writefile = try onlyHandler(Self.replacements[3].text)
        #expect(writefile.writefile == "/tmp/a" && !writefile.debug)
    }

    @Test func standaloneRepeatedAnywhereInTheFile() throws {
        let configuration = try parse("standalone\nport 25\nserver a\nstandalone no\n")
        #expect(configuration.standalone == false)
        #expect(
            configuration.warnings
                == [
                    ConfigurationWarning(
                        path: "/etc/tcpproxy.conf", line: 4, column: 1,
                        kind: .repeated(directive: "standalone", line: 1, scope: .file))
                ])
        #expect(
            configuration.warnings.map(\.description) == [
                "/etc/tcpproxy.conf:4: standalone repeated in this file; it replaces line 1"
            ])
    }

    // MARK: - What is not a repeat, and what stays an error

    @Test func theSameSettingInOtherSectionsIsInheritanceNotARepeat() throws {
        let configuration = try parse(
            """
            timeout 10
            port 25
            timeout 20
            server a
            interface 10.0.0.1
            timeout 30
            server b
            port 26
            timeout 40
            server c
            """)
        #expect(configuration.warnings.isEmpty)
        #expect(configuration.services.flatMap(\.handlers).map(\.timeout) == [30, 20, 40])
    }

    @Test func warningsInFileOrderAcrossSections() throws {
        let configuration = try parse(
            "acp /a\nacp /b\nport 25\nserver a\nserver b\ninterface 10.0.0.1\nserver c\nrules x\nrules y\n")
        #expect(configuration.warnings.map(\.line) == [2, 5, 9])
    }

    /// A repeated line is read like any other: a wrong value is still an error, not a warning.
    @Test(arguments: [
        (
            "port 25\nserver a\ntimeout 5\ntimeout soon\n",
            "4: invalid timeout \"soon\" (expected a number of seconds, 0 for none)"
        ),
        (
            "port 25\nserver a\nserver /bin/x\n",
            "3: server \"/bin/x\" is a program, not a host (use \"exec /bin/x\" to run a program)"
        ),
        (
            "port 25\nserver a\nrotate 10.0.0.1 10.0.0.2\nexec /bin/x\n",
            "3: rotate needs a server in the same section "
                + "(it picks the source address of connections to the server)"
        ),
        ("port 25\nserver a\nport 25\nserver b\n", "3: port 25 is already defined at line 1"),
    ])
    func stillErrors(text: String, message: String) {
        #expect(failure(text) == "/etc/tcpproxy.conf:" + message)
    }

    /// spreadspace's dialect has no such tradition: a setting twice in a stanza stays an error.
    @Test func spreadspaceRepeatsStayErrors() {
        #expect(
            failure("listen * 80 {\n remote: a 80;\n remote: b 80;\n};")
                == "/etc/tcpproxy.conf:3: remote is already set at line 2 in listen * 80")
    }

    @Test func configurationsWithoutRepeatsHaveNoWarnings() throws {
        #expect(try parse("port 25\nserver a\ntimeout 5\n").warnings.isEmpty)
        #expect(try parse("listen * 80 { remote: a 80; };").warnings.isEmpty)
    }
}

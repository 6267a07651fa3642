import Testing
import UCSPI

@Suite("tcpserver command line")
struct TCPServerOptionsTests {
    func parse(_ words: [String], env: [String: String] = [:]) throws -> TCPServerOptions {
        try TCPServerOptions.parse(words, environment: { env[$0] })
    }

    @Test func defaultsAreDjbs() throws {
        let o = try parse(["0", "25", "qmail-smtpd", "-x"])
        #expect(o.verbosity == 1)
        #expect(o.limit == 40)
        #expect(o.backlog == 20)
        #expect(o.identTimeout == 26)
        #expect(o.remoteInfo && o.remoteHost && o.killIPOptions && o.delay)
        #expect(!o.paranoid && !o.printPort && !o.allowMissingRules && !o.ipv4Only && !o.forceIPv6)
        #expect(o.rules == nil && o.localHost == nil && o.banner == [])
        #expect(o.host == "0" && o.port == "25")
        // Options end at the first word that is not one: "-x" belongs to the program.
        #expect(o.program == [Array("qmail-smtpd".utf8), Array("-x".utf8)])
    }

    @Test func everyOption() throws {
        let o = try parse([
            "-1", "-X", "-p", "-h", "-r", "-o", "-D", "-v", "-4", "-6", "-c", "100", "-x", "r.cdb", "-B", "hi",
            "-g", "7", "-u", "8", "-b", "64", "-l", "lname", "-t", "3", "-I", "eth0", "127.0.0.1", "smtp", "prog",
            "arg",
        ])
        #expect(o.printPort && o.allowMissingRules && o.paranoid && o.remoteHost && o.remoteInfo)
        #expect(!o.killIPOptions && !o.delay && o.verbosity == 2 && o.ipv4Only && o.forceIPv6)
        #expect(o.limit == 100 && o.rules == Array("r.cdb".utf8) && o.banner == Array("hi".utf8))
        #expect(o.gid == 7 && o.uid == 8 && o.backlog == 64 && o.localHost == Array("lname".utf8))
        #expect(o.identTimeout == 3 && o.interface == "eth0")
        #expect(o.host == "127.0.0.1" && o.port == "smtp" && o.program == [Array("prog".utf8), Array("arg".utf8)])
    }

    @Test func clusteredFlagsAndAttachedArguments() throws {
        let o = try parse(["-vHRc5", "-xrules.cdb", "-qQ", "-PpP", "0", "0", "cat"])
        #expect(o.verbosity == 1 && !o.remoteHost && !o.remoteInfo && o.limit == 5)
        #expect(o.rules == Array("rules.cdb".utf8) && !o.paranoid)
    }

    @Test func laterFlagWins() throws {
        #expect(try parse(["-H", "-h", "0", "0", "cat"]).remoteHost)
        #expect(try !parse(["-r", "-R", "0", "0", "cat"]).remoteInfo)
        #expect(try parse(["-v", "-q", "0", "0", "cat"]).verbosity == 0)
        #expect(try parse(["-D", "-d", "0", "0", "cat"]).delay)
        #expect(try parse(["-o", "-O", "0", "0", "cat"]).killIPOptions)
    }

    @Test func doubleDashEndsOptions() throws {
        let o = try parse(["-v", "--", "-host", "1", "prog"])
        #expect(o.host == "-host" && o.port == "1" && o.program == [Array("prog".utf8)])
    }

    @Test func uidAndGidFromEnvironment() throws {
        let o = try parse(["-U", "0", "0", "cat"], env: ["UID": "1002", "GID": "1003x"])
        #expect(o.uid == 1002 && o.gid == 1003)
        let none = try parse(["-U", "0", "0", "cat"])
        #expect(none.uid == 0 && none.gid == 0)
    }

    @Test(arguments: [("10x", UInt64(10)), ("x", 0), ("", 0), ("007", 7), ("18446744073709551617", 1)])
    func numbersScanLikeScanUlong(text: String, value: UInt64) throws {
        #expect(try parse(["-c", text, "0", "0", "cat"]).limit == value)
    }

    @Test(arguments: [
        (["-Z", "0", "0", "cat"], ["tcpserver: illegal option -- Z", TCPServerOptions.usage]),
        (["-c"], ["tcpserver: option requires an argument -- c", TCPServerOptions.usage]),
        (["-vx"], ["tcpserver: option requires an argument -- x", TCPServerOptions.usage]),
        ([], [TCPServerOptions.usage]),
        (["0"], [TCPServerOptions.usage]),
        (["0", "25"], [TCPServerOptions.usage]),
        (["-v", "0", "25"], [TCPServerOptions.usage]),
        // -q is in force once the options are read: it silences the missing-operand usage.
        (["-q"], []),
        (["-q", "0", "0"], []),
        (["-qZ"], ["tcpserver: illegal option -- Z", TCPServerOptions.usage]),
    ])
    func usageErrors(words: [String], lines: [String]) {
        #expect(throws: TCPServerOptions.UsageError(lines: lines)) { try TCPServerOptions.parse(words) }
    }

    @Test func argumentsKeepTheirBytes() throws {
        let o = try TCPServerOptions.parse([
            Array("-B".utf8), [0xFF, 13, 10], Array("-l".utf8), [0xE9], Array("-x".utf8), [0x72, 0xE9],
            Array("0".utf8), Array("0".utf8), [0x2E, 0x2F, 0xE9], [0x61, 0xFF],
        ])
        #expect(o.banner == [0xFF, 13, 10] && o.localHost == [0xE9] && o.rules == [0x72, 0xE9])
        #expect(o.program == [[0x2E, 0x2F, 0xE9], [0x61, 0xFF]])
    }

    @Test func usageLineIsTheIPv6Variants() {
        #expect(
            TCPServerOptions.usage
                == "tcpserver: usage: tcpserver [ -461UXpPhHrRoOdDqQv ] [ -c limit ] [ -x rules.cdb ] [ -B banner ] [ -g gid ] [ -u uid ] [ -b backlog ] [ -l localname ] [ -t timeout ] [ -I interface ] host port program"
        )
    }
}

@Suite("tcprulescheck output")
struct TCPRulesCheckReportTests {
    func text(_ rule: MatchedRuleInput?) -> String {
        String(decoding: TCPRulesCheckCommand.report(rule?.matched), as: UTF8.self)
    }

    @Test func defaultWhenNoRule() {
        #expect(text(nil) == "default:\nallow connection\n")
    }

    @Test func variablesThenAllow() {
        let rule = MatchedRuleInput(key: "127.", data: Array("+A=x\0+B=\0".utf8))
        #expect(
            text(rule) == "rule 127.:\nset environment variable A=x\nset environment variable B=\nallow connection\n")
    }

    @Test func denyStopsTheListing() {
        let rule = MatchedRuleInput(key: "", data: Array("+A=x\0D\0+B=y\0".utf8))
        #expect(text(rule) == "rule :\nset environment variable A=x\ndeny connection\n")
    }

    @Test func unterminatedAndUnknownItemsAreIgnored() {
        let rule = MatchedRuleInput(key: "=h", data: Array("Xjunk\0+A=1\0+B=2".utf8))
        #expect(text(rule) == "rule =h:\nset environment variable A=1\nallow connection\n")
    }
}

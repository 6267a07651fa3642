import GatewayKit
import Glibc
import Testing

@Suite("Log targets")
struct LogTargetTests {
    @Test(arguments: [
        ("syslog:3,tcpproxy,daemon", LogTarget(kind: .syslog(name: "tcpproxy", facility: LOG_DAEMON), level: .notice)),
        ("syslog:5", LogTarget(kind: .syslog(name: "dflt", facility: LOG_DAEMON), level: .debug)),
        ("syslog:1,,local3", LogTarget(kind: .syslog(name: "dflt", facility: LOG_LOCAL3), level: .error)),
        ("file:4,/var/log/p.log", LogTarget(kind: .file(path: "/var/log/p.log"), level: .info)),
        ("stdout:5", LogTarget(kind: .stdout, level: .debug)),
        ("stderr:0", LogTarget(kind: .stderr, level: .off)),
    ])
    func parses(text: String, target: LogTarget) throws {
        #expect(try LogTarget.parse(text, defaultName: "dflt") == target)
    }

    @Test(arguments: [
        ("syslog", "log target \"syslog\" needs a level: target:level[,params]"),
        ("syslog:9", "log target \"syslog:9\": the level must be a number from 0 to 5"),
        ("syslog:x", "log target \"syslog:x\": the level must be a number from 0 to 5"),
        ("syslog:3,n,nosuch", "log target \"syslog:3,n,nosuch\": unknown syslog facility \"nosuch\""),
        ("file:3", "log target \"file:3\": file needs a path: file:level,/path"),
        ("stdout:3,x", "log target \"stdout:3,x\": too many parameters for stdout"),
        ("pager:3", "unknown log target \"pager\" (expected syslog, file, stdout or stderr)"),
    ])
    func rejects(text: String, message: String) {
        #expect(throws: LogTarget.ParseError(description: message)) { try LogTarget.parse(text, defaultName: "d") }
    }

    @Test func controlCharactersNeverBreakALine() {
        #expect(LogFormat.printable("plain text\twith a tab") == "plain text\twith a tab")
        #expect(LogFormat.printable("a\nb\rc\u{7f}d\u{1b}[31m") == "a\\012b\\015c\\177d\\033[31m")
        var stamp: String? = "2026-12-02 10:00:00"
        let file = LogTarget(kind: .stderr, level: .debug).line(.notice, "denied by rule \"x\ny\"", stamp: &stamp)
        #expect(String(decoding: file, as: UTF8.self) == "2026-12-02 10:00:00 [NOTICE] denied by rule \"x\\012y\"\n")
        let syslog = LogTarget(kind: .syslog(name: "t", facility: 0), level: .debug).line(
            .notice, "a\nb", stamp: &stamp)
        #expect(String(decoding: syslog, as: UTF8.self).hasSuffix("]: a\\012b"))
    }

    @Test func syslogDatagramIsRFC3164() {
        let bytes = LogFormat.syslogDatagram(priority: 30, name: "tcpproxy", pid: 42, message: "hello", seconds: 0)
        let text = String(decoding: bytes, as: UTF8.self)
        #expect(text.hasPrefix("<30>"))
        #expect(text.hasSuffix(" tcpproxy[42]: hello"))
        // "<30>Mmm dd hh:mm:ss " is 4 + 16 characters.
        #expect(text.count == 4 + 16 + " tcpproxy[42]: hello".count - 1)
    }

    @Test func fileTargetGetsLinesAtOrBelowItsLevel() throws {
        let path = "/tmp/bastion-log-test-\(getpid()).log"
        defer { unlink(path) }
        let logger = Logger(targets: [LogTarget(kind: .file(path: path), level: .notice)])
        logger.log(.notice, "kept")
        logger.log(.info, "dropped")
        logger.log(.error, "also kept")
        let text = String(decoding: UserDatabase.readFile(path) ?? [], as: UTF8.self)
        let lines = text.split(separator: "\n")
        #expect(lines.count == 2)
        #expect(lines[0].hasSuffix("[NOTICE] kept"))
        #expect(lines[1].hasSuffix("[ERROR] also kept"))
    }
}

@Suite("Users, groups and pid files")
struct DaemonTests {
    static let passwd = Array(
        "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n#c\nbad\n".utf8)
    static let group = Array("root:x:0:\nnogroup:x:65534:\nmail:x:8:\n".utf8)

    @Test func users() {
        #expect(
            UserDatabase.user("nobody", in: Self.passwd)
                == UserEntry(name: "nobody", uid: 65534, gid: 65534, home: "/nonexistent"))
        #expect(UserDatabase.user("0", in: Self.passwd)?.name == "root")
        #expect(UserDatabase.user("nosuch", in: Self.passwd) == nil)
        #expect(UserDatabase.user("bad", in: Self.passwd) == nil)
    }

    @Test func groups() {
        #expect(UserDatabase.group("mail", in: Self.group) == 8)
        #expect(UserDatabase.group("65534", in: Self.group) == 65534)
        #expect(UserDatabase.group("123", in: Self.group) == 123)
        #expect(UserDatabase.group("nosuch", in: Self.group) == nil)
    }

    @Test func pidFile() throws {
        let path = "/tmp/bastion-pid-test-\(getpid()).pid"
        try Daemon.writePidFile(path)
        #expect(UserDatabase.readFile(path) == Array("\(getpid())\n".utf8))
        Daemon.removePidFile(path)
        #expect(access(path, F_OK) != 0)
        try Daemon.writePidFile(path, pid: 1)
        Daemon.removePidFile(path)  // not ours: stays
        #expect(access(path, F_OK) == 0)
        unlink(path)
    }
}

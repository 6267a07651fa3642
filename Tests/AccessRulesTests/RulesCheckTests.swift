#if canImport(Glibc)
import Glibc
#endif
import AccessRules
import Testing

/// RulesCheck: the one way a tcprules database is applied to a client, by every program.
@Suite("Applying a rules database to a client")
struct RulesCheckTests {
    /// Writes `bytes` to a new file and returns its path.
    func file(_ bytes: [UInt8]) throws -> String {
        var template = Array("/tmp/bastion-rules-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        try #require(fd >= 0)
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        try #require(written == bytes.count)
        return String(cString: template.map { UInt8(bitPattern: $0) } + [])
    }

    @Test func outcomesOfEachKind() throws {
        let path = try file(try compile("10.0.0.1:deny\n10.0.:allow,GREETING=\"hi\",SET=\"x\"\n=host.example:deny\n"))
        defer { unlink(path) }
        #expect(RulesCheck.check(RuleClient(ip: "10.0.0.1"), in: path) == .denied(rule: bytes("10.0.0.1")))
        #expect(
            RulesCheck.check(RuleClient(ip: "10.0.0.2"), in: path)
                == .allowed(
                    rule: bytes("10.0."),
                    variables: [
                        .init(name: bytes("GREETING"), value: bytes("hi")),
                        .init(name: bytes("SET"), value: bytes("x")),
                    ]))
        #expect(RulesCheck.check(RuleClient(ip: "192.0.2.1"), in: path) == .noRule)
        #expect(
            RulesCheck.check(RuleClient(ip: "192.0.2.1", host: "host.example"), in: path)
                == .denied(rule: bytes("=host.example")))
    }

    @Test func missingEmptyAndDamagedFiles() throws {
        #expect(RulesCheck.check(RuleClient(ip: "10.0.0.1"), in: "/nonexistent/rules.cdb") == .missing)
        let empty = try file([])
        defer { unlink(empty) }
        #expect(RulesCheck.check(RuleClient(ip: "10.0.0.1"), in: empty) == .unreadable(errno: EINVAL))
        // A table pointer far beyond the end of the file.
        var damaged = try compile("10.0.0.1:deny\n")
        for i in 0..<2048 { damaged[i] = 0xFF }
        let bad = try file(damaged)
        defer { unlink(bad) }
        #expect(RulesCheck.check(RuleClient(ip: "10.0.0.1"), in: bad) == .unreadable(errno: EPROTO))
    }
}

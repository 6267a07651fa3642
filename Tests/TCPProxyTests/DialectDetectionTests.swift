import TCPProxy
import Testing

@Suite("Dialect detection")
struct DialectDetectionTests {
    @Test(arguments: [
        ("listen * 8080 { remote: a 80; };", ConfigurationDialect.spreadspace),
        ("listen * 8080\n{\n remote: a 80;\n};\n", .spreadspace),
        ("# spreadspace\n\n  listen localhost http-alt{remote:a 80;};", .spreadspace),
        ("listen * 8080 # {\n", .zekoll),
        ("listen * 8080\n", .zekoll),
        ("port 25\nserver a\n", .zekoll),
        ("port 25\nserver a\nlisten * 80 { remote: a 80; };\n", .zekoll),
        ("timeout 5\nlisten * 80 { remote: a 80; };\n", .zekoll),
        ("listener * 80 { remote: a 80; };\n", .zekoll),
        ("", .zekoll),
        ("# nothing\n\n", .zekoll),
    ])
    func detect(text: String, dialect: ConfigurationDialect) throws {
        #expect(ConfigurationDialect.detect(in: Array(text.utf8)) == dialect)
    }

    @Test func parsedConfigurationsSayWhichDialect() throws {
        #expect(try parse("listen * 8080 { remote: a 80; };").dialect == .spreadspace)
        #expect(try parse("port 25\nserver a\n").dialect == .zekoll)
    }

    @Test func descriptions() {
        #expect(ConfigurationDialect.zekoll.description == "Zekoll's dialect")
        #expect(ConfigurationDialect.spreadspace.description == "spreadspace's dialect")
    }
}

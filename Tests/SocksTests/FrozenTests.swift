#if canImport(Glibc)
import Glibc
#endif
import GatewayKit
@testable import Socks
import Testing

@Suite("Frozen files: sockd.fc and sockd.fr")
struct FrozenTests {
    static let richText =
        CSTCExampleTests.text + """
            # gap

            permit ?=I *=ann,/etc/socks/staff 2001:db8::/32 .Example.COM. whatever neq smtp : echo %u
            deny ?=n host.example 1.2.3.4 10.0.0.0 255.0.0.255 ge 1024
            permit ?=i ::1 ::ffff:ffff:0:0 ALL x lt 1
            permit *=/etc/socks/empty,/etc/socks/staff eq 0.0.0.0 gt 65535
            """

    static func configuration() throws -> SockdConfiguration { try Fixture.configuration(richText) }

    static func routes() throws -> SockdRoutes {
        try SockdRouteParser(path: "r").load(Array(SockdRouteTests.text.utf8), mode: .strict).routes
    }

    /// A valid container around `body` (to build damaged bodies with a correct checksum).
    static func container(_ body: [UInt8], kind: FrozenFormat.Kind = .configuration, version: UInt16 = 1) -> [UInt8] {
        var bytes = FrozenFormat.container(kind, body: body)
        bytes[8] = UInt8(version >> 8)
        bytes[9] = UInt8(version & 0xff)
        return bytes
    }

    @Test func crc32IsZlibs() {
        #expect(CRC32.checksum(Array("123456789".utf8)) == 0xCBF4_3926)
        #expect(CRC32.checksum([]) == 0)
    }

    @Test func theLayoutIsFixedBigEndianBytes() {
        let configuration = SockdConfiguration(rules: [
            SockdRule(
                line: 258, action: .permit,
                source: .network(IPNetwork(address: IPAddress("10.0.0.0")!, prefixLength: 8)!))
        ])
        let body: [UInt8] =
            [0, 0, 0, 0]  // no user file
            + [0, 0, 0, 1]  // one rule
            + [0, 0, 1, 2, 1, 0, 0]  // line 258, permit, no ?=, no *=
            + [1, 4, 10, 0, 0, 0, 255, 0, 0, 0, 8]  // 10.0.0.0/8
            + [0, 0, 0]  // no destination, no port, no command
            + [0, 0]  // no #NO_IDENTD:, no #BAD_ID:
        let crc = CRC32.checksum(body)
        let header: [UInt8] =
            [0x89] + Array("SOCKDFC".utf8) + [0, 1, 0, 0, 0, 0, 0, UInt8(body.count)]
            + [UInt8(crc >> 24), UInt8((crc >> 16) & 0xff), UInt8((crc >> 8) & 0xff), UInt8(crc & 0xff)]
        #expect(configuration.frozen == header + body)
        #expect(Array(SockdRoutes().frozen.prefix(8)) == [0x89] + Array("SOCKDFR".utf8))
    }

    /// Rules naming the same user list share it, after a parse and after a thaw, and a user
    /// file is stored once however many rules name it.
    @Test func userFilesAreStoredOnce() throws {
        let text = (1...50).map { "permit *=/etc/socks/staff,x 10.0.\($0).0/24" }.joined(separator: "\n")
        let configuration = try Fixture.configuration(text)
        let frozen = configuration.frozen
        let staff = Array("bonnie".utf8)
        let occurrences = (0..<(frozen.count - staff.count)).filter {
            frozen[$0..<$0 + staff.count].elementsEqual(staff)
        }
        #expect(occurrences.count == 1)
        let thawed = try SockdConfiguration(frozen: frozen)
        #expect(thawed == configuration)
        #expect(thawed.match(Fixture.query("bonnie", "10.0.37.1", to: "1.1.1.1", port: 1))?.line == 37)
    }

    @Test func configurationRoundTrips() throws {
        let configuration = try Self.configuration()
        let frozen = configuration.frozen
        let thawed = try SockdConfiguration(frozen: frozen)
        #expect(thawed == configuration)
        #expect(thawed.frozen == frozen)
        // dump_sockdfc's text freezes back to the same bytes.
        let again = try Fixture.parser.load(thawed.text, mode: .strict).configuration
        #expect(again.frozen == frozen)
        #expect(try SockdConfiguration(frozen: SockdConfiguration().frozen) == SockdConfiguration())
    }

    @Test func routesRoundTrip() throws {
        let routes = try Self.routes()
        let frozen = routes.frozen
        let thawed = try SockdRoutes(frozen: frozen)
        #expect(thawed == routes)
        #expect(try SockdRouteParser(path: "r").load(thawed.text, mode: .strict).routes.frozen == frozen)
    }

    @Test func everyTruncationIsAnError() throws {
        for frozen in [try Self.configuration().frozen, try Self.routes().frozen] {
            for length in 0..<frozen.count {
                let cut = Array(frozen.prefix(length))
                #expect(throws: FrozenError.self) { try SockdConfiguration(frozen: cut) }
                #expect(throws: FrozenError.self) { try SockdRoutes(frozen: cut) }
            }
        }
    }

    @Test func everyFlippedByteIsAnError() throws {
        let frozen = try Self.configuration().frozen
        for index in frozen.indices {
            for flip: UInt8 in [0x01, 0x80, 0xff] {
                var damaged = frozen
                damaged[index] ^= flip
                #expect(throws: FrozenError.self, "byte \(index) ^ \(flip)") { try SockdConfiguration(frozen: damaged) }
            }
        }
    }

    @Test func clearErrorsForForeignAndFutureFiles() throws {
        let text = Array(CSTCExampleTests.text.utf8)
        #expect(throws: FrozenError.notFrozen(.configuration)) { try SockdConfiguration(frozen: text) }
        #expect(throws: FrozenError.notFrozen(.routes)) { try SockdRoutes(frozen: []) }
        #expect(throws: FrozenError.wrongKind(expected: .configuration, found: .routes)) {
            try SockdConfiguration(frozen: SockdRoutes().frozen)
        }
        #expect(throws: FrozenError.unsupportedVersion(2)) {
            try SockdConfiguration(frozen: Self.container([0, 0, 0, 0, 0, 0], version: 2))
        }
        var long = SockdConfiguration().frozen
        long.append(0)
        #expect(throws: FrozenError.trailingBytes(1)) { try SockdConfiguration(frozen: long) }
        var damaged = try Self.configuration().frozen
        damaged[damaged.count - 3] ^= 0x20
        #expect(throws: FrozenError.checksum) { try SockdConfiguration(frozen: damaged) }
        #expect(
            FrozenError.unsupportedVersion(2).description
                == "frozen format version 2 is not supported (this program reads version 1; freeze the text file again)"
        )
        #expect(
            FrozenError.notFrozen(.configuration).description
                == "not a frozen configuration (sockd.fc): no magic number (a text file? make_sockdfc freezes one)")
    }

    /// Bodies with a correct checksum that no text could give: each a clear error, and a
    /// count from the file never makes the decoder allocate for it.
    @Test(
        arguments: [
            ([0xff, 0xff, 0xff, 0xff], "4294967295 rules cannot fit in what is left"),
            ([0, 0, 0, 0, 0, 0, 0], "bytes after the last field"),
            ([0, 0, 0, 0, 2, 0], "flag 2 (expected 0 or 1)"),
            ([0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0], "line number 0"),
            ([0, 0, 0, 1, 0, 0, 0, 1, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0], "action 7 (expected 0 or 1)"),
            ([0, 0, 0, 1, 0, 0, 0, 1, 1, 9, 0, 0, 0, 0, 0, 0, 0, 0], "identd option 9 (expected 0-3)"),
            ([0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0, 5, 0, 0, 0, 0, 0, 0], "pattern kind 5 (expected 0-3)"),
            (
                [0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0, 2, 0, 0, 0, 1, 0x41, 0, 0, 0, 0, 0],
                "a name no configuration line can hold"
            ),
            (
                [0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0, 2, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0],
                "a host name runs past the end"
            ),
            (
                [0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0, 1, 4, 10, 0, 0, 0, 255, 0, 0, 0, 9, 0, 0, 0, 0, 0],
                "prefix length 9 that does not fit the mask"
            ),
            (
                [0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0, 1, 5, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                "address length 5 (expected 4 or 16)"
            ),
            ([0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], "an empty user list"),
            (
                [0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0x20, 0, 0],
                "a command no configuration line can hold"
            ),
            ([0, 0, 0, 2, 0, 0, 0, 5, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0, 0, 0], "line 4 after line 5"),
            ([0, 0, 0, 1, 0, 0, 0, 5, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 5, 0, 0, 0, 1, 0x78, 0], "line 5 given twice"),
        ] as [([UInt8], String)])
    func impossibleBodiesAreRejected(_ rulesAndSpecials: [UInt8], _ reason: String) {
        // After an empty user file table.
        Self.rejects([0, 0, 0, 0] + rulesAndSpecials, reason)
    }

    /// The user file table: each file once, named by the rules in table order, every file named.
    @Test(
        arguments: [
            ([0, 0, 0, 1, 0, 0, 0, 1, 0x78, 0, 0, 0, 0], "a user file name no list can hold"),
            ([0, 0, 0, 2, 0, 0, 0, 1, 0x2f, 0, 0, 0, 0, 0, 0, 0, 1, 0x2f, 0, 0, 0, 0], "user file given twice"),
            ([0, 0, 0, 1, 0, 0, 0, 1, 0x2f, 0, 0, 0, 1, 0, 0, 0, 1, 0x2c], "a user name no file can hold"),
            ([0, 0, 0, 1, 0, 0, 0, 1, 0x2f, 0, 0, 0, 0] + [0, 0, 0, 0, 0, 0], "user file 0 is named by no rule"),
            (
                [0, 0, 0, 1, 0, 0, 0, 1, 0x2f, 0, 0, 0, 0]
                    + [0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 1, 0, 0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0],
                "user file 1 does not exist"
            ),
            (
                [0, 0, 0, 2, 0, 0, 0, 1, 0x2f, 0, 0, 0, 0, 0, 0, 0, 2, 0x2f, 0x2f, 0, 0, 0, 0]
                    + [0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 1, 0, 0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0],
                "user file 1 named before user file 0"
            ),
        ] as [([UInt8], String)])
    func impossibleFileTablesAreRejected(_ body: [UInt8], _ reason: String) {
        Self.rejects(body, reason)
    }

    static func rejects(_ body: [UInt8], _ reason: String) {
        do {
            _ = try SockdConfiguration(frozen: Self.container(body))
            Issue.record("decoded")
        } catch {
            guard case .malformed(_, let what) = error else {
                Issue.record("\(error)")
                return
            }
            #expect(what == reason)
        }
    }

    @Test func theLoaderTellsFrozenFromTextByContent() throws {
        let configuration = try Self.configuration()
        let fromFrozen = try SockdConfigurationFile.load(
            configuration.frozen, path: "x", mode: .strict, readUserFile: Fixture.parser.readUserFile,
            servicePort: Fixture.parser.servicePort)
        #expect(fromFrozen.frozen && fromFrozen.configuration == configuration)
        let fromText = try SockdConfigurationFile.load(
            Array(Self.richText.utf8), path: "x", mode: .strict, readUserFile: Fixture.parser.readUserFile,
            servicePort: Fixture.parser.servicePort)
        #expect(!fromText.frozen && fromText.configuration == configuration)
        #expect(throws: FrozenError.wrongKind(expected: .configuration, found: .routes)) {
            try SockdConfigurationFile.load(
                SockdRoutes().frozen, path: "x", mode: .strict, readUserFile: Fixture.parser.readUserFile,
                servicePort: Fixture.parser.servicePort)
        }
        let routes = try Self.routes()
        #expect(try SockdConfigurationFile.loadRoutes(routes.frozen, path: "r", mode: .strict).routes == routes)
        #expect(
            try SockdConfigurationFile.loadRoutes(Array(SockdRouteTests.text.utf8), path: "r", mode: .lenient).frozen
                == false)
    }
}

@Suite("make_sockdfc, dump_sockdfc, make_sockdfr, dump_sockdfr")
struct FrozenToolTests {
    /// A fresh directory for one test.
    static func directory() throws -> String {
        var template = Array("/tmp/sockd-frozen-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        try #require(made != nil)
        return String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func write(_ path: String, _ text: String) throws {
        try FD.replaceFile(path, contents: Array(text.utf8))
    }

    static func make(_ arguments: [String]) -> FrozenTools.Outcome {
        FrozenTools.make(
            .configuration, arguments: arguments.map { Array($0.utf8) }, readUserFile: Fixture.parser.readUserFile,
            servicePort: { Fixture.parser.servicePort })
    }

    @Test func makeThenDump() throws {
        let dir = try Self.directory()
        defer { removeDirectory(dir) }
        try Self.write("\(dir)/sockd.conf", FrozenTests.richText)
        let made = Self.make(["\(dir)/sockd.conf", "\(dir)/sockd.fc"])
        #expect(made == FrozenTools.Outcome(status: 0))
        let frozen = try FD.readWholeFile("\(dir)/sockd.fc")
        #expect(frozen == (try FrozenTests.configuration().frozen))
        let dumped = FrozenTools.dump(.configuration, arguments: [Array("\(dir)/sockd.fc".utf8)])
        #expect(dumped.status == 0 && dumped.errors.isEmpty)
        #expect(dumped.output == (try FrozenTests.configuration().text))
        // The dump, frozen again, is the same file.
        try FD.replaceFile("\(dir)/dumped.conf", contents: dumped.output)
        #expect(Self.make(["\(dir)/dumped.conf", "\(dir)/again.fc"]).status == 0)
        #expect(try FD.readWholeFile("\(dir)/again.fc") == frozen)
        // Nothing is left beside the frozen file.
        #expect(Set(try directoryEntries(dir)) == ["sockd.conf", "sockd.fc", "dumped.conf", "again.fc"])
    }

    @Test func badLinesAreNamedAndNothingIsWritten() throws {
        let dir = try Self.directory()
        defer { removeDirectory(dir) }
        try Self.write("\(dir)/sockd.conf", "permit ALL x\npermit 10.0.0.0\n# fine\nallow ALL x\n")
        try Self.write("\(dir)/sockd.fc", "old")
        let made = Self.make(["\(dir)/sockd.conf", "\(dir)/sockd.fc"])
        #expect(made.status == 1)
        #expect(
            made.errors == [
                "make_sockdfc: \(dir)/sockd.conf:2: missing mask after \"10.0.0.0\"",
                "make_sockdfc: \(dir)/sockd.conf:4: unknown action \"allow\" (expected permit or deny)",
                "make_sockdfc: fatal: 2 bad lines in \(dir)/sockd.conf, \(dir)/sockd.fc not written",
            ])
        #expect(try FD.readWholeFile("\(dir)/sockd.fc") == Array("old".utf8))
    }

    @Test func routesMakeAndDump() throws {
        let dir = try Self.directory()
        defer { removeDirectory(dir) }
        try Self.write("\(dir)/sockd.route", SockdRouteTests.text)
        let made = FrozenTools.make(
            .routes, arguments: [Array("\(dir)/sockd.route".utf8), Array("\(dir)/sockd.fr".utf8)])
        #expect(made.status == 0)
        let dumped = FrozenTools.dump(.routes, arguments: [Array("\(dir)/sockd.fr".utf8)])
        #expect(dumped.output == (try FrozenTests.routes().text))
        try Self.write("\(dir)/bad.route", "10.0.0.1\n")
        let bad = FrozenTools.make(.routes, arguments: [Array("\(dir)/bad.route".utf8), Array("\(dir)/bad.fr".utf8)])
        #expect(bad.status == 1)
        #expect(bad.errors.first == "make_sockdfr: \(dir)/bad.route:1: missing destination address and mask")
    }

    @Test func dumpRefusesWhatIsNotFrozen() throws {
        let dir = try Self.directory()
        defer { removeDirectory(dir) }
        try Self.write("\(dir)/sockd.conf", "permit ALL x\n")
        let text = FrozenTools.dump(.configuration, arguments: [Array("\(dir)/sockd.conf".utf8)])
        #expect(text.status == 1 && text.output.isEmpty)
        #expect(
            text.errors == [
                "dump_sockdfc: fatal: \(dir)/sockd.conf: not a frozen configuration (sockd.fc): no magic number "
                    + "(a text file? make_sockdfc freezes one)"
            ])
        var damaged = SockdConfiguration(rules: [SockdRule(line: 1, action: .deny, source: .all)]).frozen
        damaged[damaged.count - 1] ^= 1
        try FD.replaceFile("\(dir)/damaged.fc", contents: damaged)
        let broken = FrozenTools.dump(.configuration, arguments: [Array("\(dir)/damaged.fc".utf8)])
        #expect(broken.errors == ["dump_sockdfc: fatal: \(dir)/damaged.fc: damaged: checksum mismatch"])
        let missing = FrozenTools.dump(.routes, arguments: [Array("\(dir)/none.fr".utf8)])
        #expect(missing.errors == ["dump_sockdfr: fatal: unable to read \(dir)/none.fr: file does not exist"])
        #expect(Self.make(["\(dir)/damaged.fc", "\(dir)/x.fc"]).errors.first?.contains("is already frozen") == true)
        #expect(Self.make(["a", "b", "c"]).status == 1)
        #expect(FrozenTools.dump(.routes, arguments: [Array("-x".utf8)]).status == 1)
        #expect(FrozenTools.dump(.routes, arguments: [Array("--help".utf8)]).status == 0)
    }
}

/// The names in a directory, without . and ..
func directoryEntries(_ path: String) throws -> [String] {
    guard let dir = opendir(path) else { throw SystemError.current }
    defer { closedir(dir) }
    var names: [String] = []
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
        if name != "." && name != ".." { names.append(name) }
    }
    return names
}

/// Removes a test's directory and the files in it.
func removeDirectory(_ path: String) {
    for name in (try? directoryEntries(path)) ?? [] { unlink("\(path)/\(name)") }
    rmdir(path)
}

import MultiCall
import Testing

@Suite("One executable, many names")
struct MultiCallTests {
    func argv(_ words: String...) -> [[UInt8]] { words.map { Array($0.utf8) } }

    @Test func theNameItWasStartedAsChoosesTheTool() {
        for (index, tool) in MultiCall.tools.enumerated() {
            #expect(MultiCall.choose(argv(tool.name, "-x")) == .run(index, argv(tool.name, "-x")))
            let path = "/usr/local/\(tool.directory)/\(tool.name)"
            #expect(MultiCall.choose(argv(path)) == .run(index, argv(path)), "a path's last component")
        }
    }

    @Test func bastionToolRunsItWithItsOwnNameFirst() {
        let sockd = MultiCall.tools.firstIndex { $0.name == "sockd" }!
        #expect(MultiCall.choose(argv("bastion", "sockd", "-ver")) == .run(sockd, argv("sockd", "-ver")))
        #expect(MultiCall.choose(argv("/opt/bin/bastion", "pop3.proxy")) != .unknown(Array("pop3.proxy".utf8)))
    }

    @Test func bastionsOwnWordsAndUnknownNames() {
        #expect(MultiCall.choose(argv("bastion")) == .help)
        #expect(MultiCall.choose(argv("bastion", "--help")) == .help)
        #expect(MultiCall.choose(argv("bastion", "--list")) == .list)
        #expect(MultiCall.choose(argv("bastion", "--version")) == .version)
        #expect(MultiCall.choose(argv("bastion", "nc")) == .unknown(Array("nc".utf8)))
        #expect(MultiCall.choose(argv("tcpproxy2")) == .unknown(Array("tcpproxy2".utf8)))
        // A tool's name only counts whole: bastion TOOL takes no path.
        #expect(MultiCall.choose(argv("bastion", "/bin/sockd")) == .unknown(Array("/bin/sockd".utf8)))
    }

    @Test func theListNamesEveryToolOnceWhereTheOriginalsLive() {
        let names = MultiCall.listText.split(separator: "\n").map(String.init)
        #expect(
            names == [
                "tcprules", "tcprulescheck", "tcpserver", "tcpproxy", "pop3.proxy", "sockd", "make_sockdfc",
                "dump_sockdfc", "make_sockdfr", "dump_sockdfr",
            ])
        let sbin = Set(MultiCall.tools.filter { $0.directory == "sbin" }.map(\.name))
        #expect(sbin == ["tcpproxy", "pop3.proxy", "sockd"])
        #expect(MultiCall.tools.allSatisfy { $0.directory == "bin" || $0.directory == "sbin" })
        for tool in MultiCall.tools { #expect(MultiCall.helpText.contains(tool.name)) }
    }
}

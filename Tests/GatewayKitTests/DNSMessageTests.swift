import Testing
@testable import GatewayKit

/// Bytes of a wire-format name from its labels.
private func wire(_ labels: String...) -> [UInt8] {
    labels.flatMap { [UInt8($0.utf8.count)] + Array($0.utf8) } + [0]
}

/// A reproducible byte generator for the garbage tests (xorshift64*).
private struct Scrambler {
    var state: UInt64
    mutating func next() -> UInt64 {
        state ^= state >> 12
        state ^= state << 25
        state ^= state >> 27
        return state &* 2_685_821_657_736_338_717
    }
    mutating func byte() -> UInt8 { UInt8(truncatingIfNeeded: next() >> 32) }
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
}

@Suite("DNS names")
struct DNSNameTests {
    @Test func encodesDottedNames() throws {
        #expect(try DNSWire.encodeName("www.example.com") == wire("www", "example", "com"))
        #expect(try DNSWire.encodeName("www.example.com.") == wire("www", "example", "com"))
        #expect(try DNSWire.encodeName("a..b") == wire("a", "b"))
        #expect(try DNSWire.encodeName(".a") == wire("a"))
        #expect(try DNSWire.encodeName("") == [0])
        #expect(try DNSWire.encodeName(".") == [0])
        #expect(try DNSWire.encodeName("Mixed.Case") == wire("Mixed", "Case"))
    }

    @Test func encodesEscapes() throws {
        #expect(try DNSWire.encodeName("a\\.b.c") == wire("a.b", "c"))
        #expect(try DNSWire.encodeName("\\101bc") == wire("Abc"))
        #expect(try DNSWire.encodeName("\\0") == [1, 0, 0])
        #expect(try DNSWire.encodeName("\\12x") == [2, 10, UInt8(ascii: "x"), 0])
        #expect(try DNSWire.encodeName("\\1234") == [2, 83, UInt8(ascii: "4"), 0])
        #expect(try DNSWire.encodeName("\\\\") == [1, UInt8(ascii: "\\"), 0])
        #expect(try DNSWire.encodeName("\\x") == wire("x"))
        // A lone trailing backslash is dropped, as in dns_domain_fromdot.
        #expect(try DNSWire.encodeName("ab\\") == wire("ab"))
    }

    @Test func enforcesLimits() throws {
        let label63 = String(repeating: "a", count: 63)
        #expect(try DNSWire.encodeName(label63).count == 65)
        #expect(throws: DNSError.invalidName(label63 + "a")) { try DNSWire.encodeName(label63 + "a") }
        // 3 labels of 63 and one of 61: 3*64 + 62 + 1 = 255 bytes, the maximum.
        let longest = [label63, label63, label63, String(repeating: "b", count: 61)].joined(separator: ".")
        #expect(try DNSWire.encodeName(longest).count == 255)
        #expect(throws: DNSError.self) { try DNSWire.encodeName(longest + "b") }
        #expect(throws: DNSError.self) { try DNSWire.encodeName(longest + ".c") }
    }

    @Test func formatsLikeDomainTodot() {
        #expect(DNSWire.formatName(wire("WWW", "Example", "COM")) == "www.example.com")
        #expect(DNSWire.formatName(wire("a-b_c", "0")) == "a-b_c.0")
        #expect(DNSWire.formatName(wire("a.b", "c")) == "a\\056b.c")
        #expect(DNSWire.formatName(wire("a b")) == "a\\040b")
        #expect(DNSWire.formatName([2, 0xff, 0x00, 0]) == "\\377\\000")
        #expect(DNSWire.formatName([1, UInt8(ascii: "\\"), 0]) == "\\134")
        #expect(DNSWire.formatName([0]) == ".")
        #expect(DNSWire.formatName([]) == ".")
    }

    @Test func formatsWhatItEncodes() throws {
        for text in ["host.example.org", "a\\056b.c", "x\\040y", "\\377"] {
            #expect(DNSWire.formatName(try DNSWire.encodeName(text)) == text)
        }
    }

    @Test func reverseNames() throws {
        #expect(DNSWire.formatName(DNSWire.reverseName(for: IPAddress(v4: 1, 2, 3, 4))) == "4.3.2.1.in-addr.arpa")
        #expect(
            DNSWire.reverseName(for: IPAddress(v4: 10, 0, 0, 255))
                == wire("255", "0", "0", "10", "in-addr", "arpa"))
        let v6 = try #require(IPAddress("2001:db8::567:89ab"))
        #expect(
            DNSWire.formatName(DNSWire.reverseName(for: v6))
                == "b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa")
        #expect(DNSWire.reverseName(for: v6).count == 32 * 2 + 10)
    }

    @Test func namesCompareIgnoringCase() {
        #expect(DNSWire.namesEqual(wire("WwW", "Example"), wire("www", "EXAMPLE")))
        #expect(!DNSWire.namesEqual(wire("www", "example"), wire("www", "exampla")))
        #expect(!DNSWire.namesEqual(wire("ab"), wire("a", "b")))
    }

    @Test func encodesQueries() throws {
        let question = DNSQuestion(name: wire("a", "bc"), type: .aaaa)
        #expect(
            DNSWire.query(id: 0x1234, question: question) == [
                0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0,
                1, 97, 2, 98, 99, 0,
                0, 28, 0, 1,
            ])
        #expect(DNSWire.query(id: 1, question: question, recursionDesired: false)[2] == 0)
    }
}

@Suite("DNS responses")
struct DNSResponseTests {
    let ptrQuestion = DNSQuestion(name: wire("4", "3", "2", "1", "in-addr", "arpa"), type: .ptr)

    func query(_ question: DNSQuestion, id: UInt16 = 0xbeef) -> [UInt8] {
        DNSWire.query(id: id, question: question)
    }

    @Test func readsPointerAnswer() throws {
        // The target uses a compression pointer into the question ("arpa", at offset 28).
        let target: [UInt8] = [4] + Array("Host".utf8) + [3] + Array("EXA".utf8) + [0xc0, 12 + 16]
        let packet = TestDNS.reply(to: query(ptrQuestion), answers: [(.ptr, target)])
        let response = try DNSResponse(parsing: packet)
        #expect(response.isResponse)
        #expect(!response.isTruncated)
        #expect(response.rcode == 0)
        #expect(response.answerCount == 1)
        #expect(response.answers(ptrQuestion, id: 0xbeef))
        let name = try #require(try response.firstPointerName())
        #expect(DNSWire.formatName(name) == "host.exa.arpa")
    }

    @Test func firstPointerWinsAndOtherTypesAreSkipped() throws {
        let packet = TestDNS.reply(
            to: query(ptrQuestion),
            answers: [
                (.cname, wire("alias", "example")),
                (.ptr, wire("first", "example")),
                (.ptr, wire("second", "example")),
            ])
        let name = try DNSResponse(parsing: packet).firstPointerName()
        #expect(name.map(DNSWire.formatName) == "first.example")
    }

    @Test func pointerAfterDamageIsStillFound() throws {
        // dns_name_packet stops at the first PTR; garbage after it does not matter.
        var packet = TestDNS.reply(to: query(ptrQuestion), answers: [(.ptr, wire("ok"))])
        packet[7] = 5
        #expect(try DNSResponse(parsing: packet).firstPointerName() == wire("ok"))
        #expect(throws: DNSError.malformedResponse) { try DNSResponse(parsing: packet).addresses(of: .a) }
    }

    @Test func readsAddressesInOrder() throws {
        let question = DNSQuestion(name: wire("www", "example"), type: .a)
        let packet = TestDNS.reply(
            to: query(question),
            answers: [
                (.cname, wire("real", "example")),
                (.a, [192, 0, 2, 1]),
                (.a, [1, 2, 3]),
                (.aaaa, [UInt8](repeating: 1, count: 16)),
                (.a, [192, 0, 2, 2]),
            ])
        let response = try DNSResponse(parsing: packet)
        #expect(try response.addresses(of: .a) == [IPAddress(v4: 192, 0, 2, 1), IPAddress(v4: 192, 0, 2, 2)])
        #expect(try response.addresses(of: .aaaa) == [IPAddress(bytes: [UInt8](repeating: 1, count: 16))!])
        #expect(try response.firstPointerName() == nil)
    }

    @Test func emptyAnswers() throws {
        let question = DNSQuestion(name: wire("nx", "example"), type: .a)
        let response = try DNSResponse(parsing: TestDNS.reply(to: query(question), rcode: 3))
        #expect(response.rcode == 3)
        #expect(!response.isServerFailure)
        #expect(try response.addresses(of: .a).isEmpty)
        #expect(try response.firstPointerName() == nil)
    }

    @Test func flags() throws {
        let question = DNSQuestion(name: wire("x"), type: .a)
        #expect(try DNSResponse(parsing: TestDNS.reply(to: query(question), truncated: true)).isTruncated)
        for rcode: UInt8 in [1, 2, 4, 5, 9] {
            #expect(try DNSResponse(parsing: TestDNS.reply(to: query(question), rcode: rcode)).isServerFailure)
        }
    }

    @Test func relevance() throws {
        let question = DNSQuestion(name: wire("www", "example"), type: .a)
        let packet = TestDNS.reply(to: query(question, id: 7))
        let response = try DNSResponse(parsing: packet)
        #expect(response.answers(question, id: 7))
        #expect(!response.answers(question, id: 8))
        #expect(response.answers(DNSQuestion(name: wire("WWW", "Example"), type: .a), id: 7))
        #expect(!response.answers(DNSQuestion(name: wire("www", "example"), type: .aaaa), id: 7))
        #expect(!response.answers(DNSQuestion(name: wire("www", "example", "com"), type: .a), id: 7))
        #expect(!response.answers(DNSQuestion(name: wire("www", "example"), type: .a, dnsClass: 3), id: 7))
        var noQuestion = packet
        noQuestion[5] = 0
        #expect(!(try DNSResponse(parsing: noQuestion)).answers(question, id: 7))
    }

    @Test func rejectsBrokenNames() throws {
        let header: [UInt8] = [0, 1, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0]
        // A pointer to itself, a pointer past the end, a 64-byte label type, a truncated label.
        let broken: [[UInt8]] = [
            [0xc0, 12, 0, 1, 0, 1], [0xc0, 200, 0, 1, 0, 1], [0x40, 0, 0, 1, 0, 1], [5, 97, 98],
        ]
        for question in broken {
            #expect(throws: DNSError.malformedResponse) { try DNSResponse(parsing: header + question) }
        }
        // Two pointers pointing at each other.
        var loop = header + [0xc0, 14, 0xc0, 12, 0, 1, 0, 1]
        #expect(throws: DNSError.malformedResponse) { try DNSResponse(parsing: loop) }
        // A name longer than 255 bytes built from a label repeated by pointers.
        loop = header + [63] + [UInt8](repeating: 97, count: 63) + [0xc0, 12]
        #expect(throws: DNSError.malformedResponse) { try DNSResponse(parsing: loop) }
        #expect(throws: DNSError.malformedResponse) { try DNSResponse(parsing: Array(header.prefix(11))) }
    }

    @Test func everyPrefixOfAReplyIsHandled() throws {
        let packet = TestDNS.reply(
            to: query(ptrQuestion),
            answers: [
                (.a, [1, 2, 3, 4]), (.ptr, [4] + Array("name".utf8) + [0xc0, 12 + 16]),
            ])
        for length in 0..<packet.count {
            let prefix = Array(packet.prefix(length))
            if let response = try? DNSResponse(parsing: prefix) {
                _ = try? response.firstPointerName()
                _ = try? response.addresses(of: .a)
            }
        }
        #expect(try DNSResponse(parsing: packet).firstPointerName() != nil)
    }

    @Test func garbageNeverCrashes() {
        var scrambler = Scrambler(state: 0x9e37_79b9_7f4a_7c15)
        let base = TestDNS.reply(
            to: query(ptrQuestion),
            answers: [
                (.ptr, wire("a", "b")), (.a, [1, 2, 3, 4]), (.aaaa, [UInt8](repeating: 0, count: 16)),
            ])
        var parsed = 0
        for round in 0..<20_000 {
            var packet: [UInt8]
            if round % 2 == 0 {
                packet = base
                for _ in 0...scrambler.below(6) { packet[scrambler.below(packet.count)] = scrambler.byte() }
                packet = Array(packet.prefix(scrambler.below(packet.count + 1)))
            } else {
                packet = (0..<scrambler.below(80)).map { _ in scrambler.byte() }
                if packet.count > 12 && round % 4 == 1 { packet[12] = 0xc0 | (packet[12] & 1) }
            }
            if let response = try? DNSResponse(parsing: packet) {
                parsed += 1
                _ = try? response.firstPointerName()
                _ = try? response.addresses(of: .a)
                _ = try? response.addresses(of: .aaaa)
                _ = response.answers(ptrQuestion, id: 0xbeef)
            }
            _ = DNSWire.formatName(packet)
        }
        #expect(parsed > 0)
    }
}

@Suite("DNS attempts and replies")
struct DNSAttemptTests {
    @Test func eachRoundAsksEveryServerInTurn() {
        var attempts = DNSAttempts(servers: 3, timeouts: [.seconds(1), .seconds(3)])
        var seen: [DNSAttempts.Attempt] = []
        while let attempt = attempts.next() { seen.append(attempt) }
        #expect(seen.map(\.server) == [0, 1, 2, 0, 1, 2])
        #expect(seen.map(\.timeout) == [.seconds(1), .seconds(1), .seconds(1), .seconds(3), .seconds(3), .seconds(3)])
        #expect(attempts.next() == nil)
    }

    @Test func nothingToAsk() {
        var none = DNSAttempts(servers: 0, timeouts: [.seconds(1)])
        #expect(none.next() == nil)
        var noRounds = DNSAttempts(servers: 2, timeouts: [])
        #expect(noRounds.next() == nil)
    }

    let question = DNSQuestion(name: wire("4", "3", "2", "1", "in-addr", "arpa"), type: .ptr)

    func judge(_ packet: [UInt8], id: UInt16 = 7) -> String {
        switch DNSReply(datagram: packet, question: question, id: id) {
        case .ignored: return "ignored"
        case .answer(let response): return "answer \(response.answerCount)"
        case .truncated: return "truncated"
        case .serverFailure(let rcode): return "failure \(rcode)"
        }
    }

    @Test func judgesDatagramsAsDnsTransmit() {
        let query = DNSWire.query(id: 7, question: question)
        #expect(judge(TestDNS.reply(to: query, answers: [(.ptr, wire("host"))])) == "answer 1")
        #expect(judge(TestDNS.reply(to: query, rcode: 3)) == "answer 0", "NXDOMAIN is an answer")
        #expect(judge(TestDNS.reply(to: query, truncated: true)) == "truncated")
        #expect(judge(TestDNS.reply(to: query, rcode: 2)) == "failure 2")
        #expect(judge(TestDNS.reply(to: query, rcode: 5)) == "failure 5")
        #expect(judge(TestDNS.reply(to: query, idOffset: 1)) == "ignored", "another id")
        let other = DNSWire.query(id: 7, question: DNSQuestion(name: wire("x"), type: .ptr))
        #expect(judge(TestDNS.reply(to: other)) == "ignored", "another question")
        #expect(judge([1, 2, 3]) == "ignored")
        #expect(judge([]) == "ignored")
        // Over 512 bytes: djb's library drops it even when it would answer.
        var big = TestDNS.reply(to: query, answers: [(.ptr, wire("host"))])
        big += [UInt8](repeating: 0, count: 513 - big.count)
        #expect(judge(big) == "ignored")
        #expect(judge(Array(big[0..<512])) == "answer 1")
    }
}

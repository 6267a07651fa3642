#if canImport(Glibc)
import Glibc
#endif
import Testing
@testable import GatewayKit

/// A small zone served by the loopback test server.
private func zone(_ query: [UInt8], _ transport: TestDNSServer.Transport) -> [[UInt8]] {
    guard let question = TestDNS.question(of: query) else { return [] }
    let name = DNSWire.formatName(question.name)
    let v6host = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
    func encoded(_ text: String) -> [UInt8] { (try? DNSWire.encodeName(text)) ?? [0] }
    switch (name, question.type) {
    case ("4.3.2.1.in-addr.arpa", .ptr):
        return [TestDNS.reply(to: query, answers: [(.ptr, encoded("Host.Example.COM."))])]
    case (v6host, .ptr):
        return [TestDNS.reply(to: query, answers: [(.ptr, encoded("v6host.example"))])]
    case ("odd.in-addr.arpa", .ptr), ("5.3.2.1.in-addr.arpa", .ptr):
        return [TestDNS.reply(to: query, answers: [(.ptr, [3, 97, 32, 98, 0])])]
    case ("www.example", .a):
        return [TestDNS.reply(to: query, answers: [(.a, [192, 0, 2, 1]), (.a, [192, 0, 2, 2])])]
    case ("www.example", .aaaa):
        return [TestDNS.reply(to: query, answers: [(.aaaa, IPAddress("2001:db8::80")!.bytes)])]
    case ("v4only.example", .a):
        return [TestDNS.reply(to: query, answers: [(.a, [192, 0, 2, 3])])]
    case ("v4only.example", .aaaa), ("servfail.example", _), ("1.1.1.1.in-addr.arpa", .ptr):
        return [TestDNS.reply(to: query, rcode: 2)]
    case ("refused.example", _):
        return [TestDNS.reply(to: query, rcode: 5)]
    case ("big.example", .a):
        if transport == .udp { return [TestDNS.reply(to: query, truncated: true)] }
        return [TestDNS.reply(to: query, answers: (1...40).map { (.a, [198, 51, 100, UInt8($0)]) })]
    case ("decoys.example", .a):
        // Wrong id, wrong question, then the real answer: only the last counts.
        var otherQuestion = TestDNS.reply(to: query, answers: [(.a, [6, 6, 6, 6])])
        otherQuestion[13] ^= 0x01
        return [
            TestDNS.reply(to: query, idOffset: 1, answers: [(.a, [6, 6, 6, 6])]),
            otherQuestion,
            TestDNS.reply(to: query, answers: [(.a, [192, 0, 2, 9])]),
        ]
    case ("shouting.example", .a):
        // The question comes back in capitals; dns_domain_equal ignores case.
        var reply = TestDNS.reply(to: query, answers: [(.a, [192, 0, 2, 10])])
        for i in 12..<(12 + question.name.count) where reply[i] >= 97 && reply[i] <= 122 { reply[i] -= 32 }
        return [reply]
    case ("onlydecoys.example", .a):
        return [TestDNS.reply(to: query, idOffset: 7, answers: [(.a, [6, 6, 6, 6])])]
    default:
        return [TestDNS.reply(to: query, rcode: 3)]
    }
}

@Suite("DNS resolver over loopback")
struct DNSResolverTests {
    func withServer<T>(
        _ answer: @escaping @Sendable ([UInt8], TestDNSServer.Transport) -> [[UInt8]] = zone,
        _ body: (DNSResolver, TestDNSServer) throws -> T
    ) throws -> T {
        let server = TestDNSServer(answer: answer)
        defer { server.stop() }
        return try body(DNSResolver(servers: [server.server], schedule: testSchedule), server)
    }

    @Test func pointerLookupIPv4() throws {
        try withServer { resolver, server throws in
            #expect(try resolver.name(for: IPAddress(v4: 1, 2, 3, 4)) == "host.example.com")
            let queries = server.stop()
            try #require(queries.count == 1)
            #expect(TestDNS.questionName(of: queries[0]) == "4.3.2.1.in-addr.arpa")
            #expect(TestDNS.question(of: queries[0])?.type == .ptr)
            #expect(queries[0][2] & 1 == 1, "recursion desired")
            #expect(server.log.transports == ["udp"])
        }
    }

    @Test func pointerLookupMappedAsksIPv4Name() throws {
        try withServer { resolver, server throws in
            #expect(try resolver.name(for: IPAddress("::ffff:1.2.3.4")!) == "host.example.com")
            #expect(server.stop().map { TestDNS.questionName(of: $0) } == ["4.3.2.1.in-addr.arpa"])
        }
    }

    @Test func pointerLookupIPv6() throws {
        try withServer { resolver, _ throws in
            #expect(try resolver.name(for: IPAddress("2001:db8::1")!) == "v6host.example")
        }
    }

    @Test func pointerNamesAreEscaped() throws {
        try withServer { resolver, _ throws in
            #expect(try resolver.name(for: IPAddress(v4: 1, 2, 3, 5)) == "a\\040b")
        }
    }

    @Test func noPointerIsNil() throws {
        try withServer { resolver, _ throws in
            #expect(try resolver.name(for: IPAddress(v4: 9, 9, 9, 9)) == nil)
        }
    }

    @Test func addressLookups() throws {
        try withServer { resolver, _ throws in
            #expect(
                try resolver.addresses(of: "www.example", family: .ipv4)
                    == [IPAddress(v4: 192, 0, 2, 1), IPAddress(v4: 192, 0, 2, 2)])
            #expect(try resolver.addresses(of: "WWW.Example.", family: .ipv6) == [IPAddress("2001:db8::80")!])
            #expect(
                try resolver.addresses(of: "www.example", family: .any)
                    == [IPAddress("2001:db8::80")!, IPAddress(v4: 192, 0, 2, 1), IPAddress(v4: 192, 0, 2, 2)])
            #expect(try resolver.addresses(of: "nx.example", family: .ipv4) == [])
            #expect(try resolver.addresses(of: "nx.example", family: .any) == [])
            // AAAA fails, A works: .any keeps the A answer.
            #expect(try resolver.addresses(of: "v4only.example", family: .any) == [IPAddress(v4: 192, 0, 2, 3)])
        }
    }

    @Test func repliesMustMatchIdAndQuestion() throws {
        try withServer { resolver, _ throws in
            #expect(try resolver.addresses(of: "decoys.example", family: .ipv4) == [IPAddress(v4: 192, 0, 2, 9)])
            #expect(try resolver.addresses(of: "shouting.example", family: .ipv4) == [IPAddress(v4: 192, 0, 2, 10)])
        }
    }

    @Test func irrelevantRepliesTimeOut() throws {
        try withServer { resolver, server throws in
            let start = Deadline.now
            #expect(throws: DNSError.timedOut) { try resolver.addresses(of: "onlydecoys.example", family: .ipv4) }
            #expect(elapsedMilliseconds(since: start) >= 390)
            #expect(server.stop().count == 2)
        }
    }

    @Test func serverFailures() throws {
        try withServer { resolver, server throws in
            let start = Deadline.now
            #expect(throws: DNSError.serverFailure(rcode: 2)) { try resolver.name(for: IPAddress(v4: 1, 1, 1, 1)) }
            #expect(throws: DNSError.serverFailure(rcode: 2)) {
                try resolver.addresses(of: "servfail.example", family: .ipv4)
            }
            #expect(throws: DNSError.serverFailure(rcode: 5)) {
                try resolver.addresses(of: "refused.example", family: .any)
            }
            // A failing server is not waited for: every round moves on at once.
            #expect(elapsedMilliseconds(since: start) < 1000)
            _ = server
        }
    }

    @Test func silentServerTimesOutWithinSchedule() throws {
        try withServer({ _, _ in [] }) { resolver, server throws in
            let start = Deadline.now
            #expect(throws: DNSError.timedOut) { try resolver.addresses(of: "www.example", family: .ipv4) }
            let elapsed = elapsedMilliseconds(since: start)
            #expect(elapsed >= 390 && elapsed < 1500, "took \(elapsed) ms")
            // One query per round: 150 ms, then 250 ms.
            #expect(server.stop().count == 2)
        }
    }

    @Test func truncatedAnswerGoesToTCP() throws {
        try withServer { resolver, server throws in
            let addresses = try resolver.addresses(of: "big.example", family: .ipv4)
            #expect(addresses.count == 40)
            #expect(addresses.first == IPAddress(v4: 198, 51, 100, 1))
            server.stop()
            #expect(server.log.transports == ["udp", "tcp"])
        }
    }

    @Test func nextServerAfterSilentOne() throws {
        let silent = TestDNSServer(answer: { _, _ in [] })
        let good = TestDNSServer(answer: zone)
        defer {
            silent.stop()
            good.stop()
        }
        let resolver = DNSResolver(servers: [silent.server, good.server], schedule: testSchedule)
        let start = Deadline.now
        #expect(try resolver.name(for: IPAddress(v4: 1, 2, 3, 4)) == "host.example.com")
        #expect(elapsedMilliseconds(since: start) >= 140)
        #expect(silent.stop().count == 1)
        #expect(good.stop().count == 1)
    }

    @Test func refusedPortIsAnError() throws {
        let port = TestSocket.unusedPort(type: SOCK_DGRAM)
        let resolver = DNSResolver(servers: [DNSServer(address: .loopbackV4, port: port)], schedule: testSchedule)
        let start = Deadline.now
        #expect(throws: DNSError.system(SystemError(errno: ECONNREFUSED))) {
            try resolver.name(for: IPAddress(v4: 1, 2, 3, 4))
        }
        #expect(elapsedMilliseconds(since: start) < 1000)
    }

    @Test func literalsNeedNoQuery() throws {
        try withServer({ _, _ in [] }) { resolver, server throws in
            #expect(try resolver.addresses(of: "192.0.2.5", family: .ipv4) == [IPAddress(v4: 192, 0, 2, 5)])
            #expect(try resolver.addresses(of: "[192.0.2.5]", family: .any) == [IPAddress(v4: 192, 0, 2, 5)])
            #expect(try resolver.addresses(of: "192.0.2.5", family: .ipv6) == [IPAddress("::ffff:192.0.2.5")!])
            #expect(try resolver.addresses(of: "::ffff:192.0.2.5", family: .ipv4) == [IPAddress(v4: 192, 0, 2, 5)])
            #expect(try resolver.addresses(of: "[::1]", family: .ipv6) == [.loopbackV6])
            #expect(try resolver.addresses(of: "::1", family: .ipv4) == [])
            #expect(try resolver.addresses(of: "1.2.3", family: .ipv4) == [])
            // djb's dns_ip4: numbers are bytes, complete groups of four are addresses.
            #expect(try resolver.addresses(of: "127.0.0.5.9", family: .ipv4) == [IPAddress(v4: 127, 0, 0, 5)])
            #expect(
                try resolver.addresses(of: "1.2.3.4.5.6.7.8", family: .ipv4)
                    == [IPAddress(v4: 1, 2, 3, 4), IPAddress(v4: 5, 6, 7, 8)])
            #expect(try resolver.addresses(of: "1.2.3.260.", family: .ipv4) == [IPAddress(v4: 1, 2, 3, 4)])
            #expect(throws: DNSError.self) {
                try resolver.addresses(of: String(repeating: "x", count: 64) + ".example", family: .ipv4)
            }
            #expect(server.stop().isEmpty)
        }
    }

    @Test(.enabled(if: TestSocket.hasIPv6Loopback, "no IPv6 loopback"))
    func serverOnIPv6Loopback() throws {
        let server = TestDNSServer(address: .loopbackV6, answer: zone)
        defer { server.stop() }
        let resolver = try DNSResolver(
            environment: ["DNSCACHEIP": "::1", "BASTION_DNSPORT": String(server.port)],
            schedule: testSchedule
        )
        #expect(resolver.servers == [server.server])
        #expect(try resolver.name(for: IPAddress("2001:db8::1")!) == "v6host.example")
        #expect(try resolver.addresses(of: "big.example", family: .ipv4).count == 40)
        server.stop()
        #expect(server.log.transports == ["udp", "udp", "tcp"])
    }

    @Test func configuredFromEnvironment() throws {
        let server = TestDNSServer(answer: zone)
        defer { server.stop() }
        let resolver = try DNSResolver(
            environment: ["DNSCACHEIP": "127.0.0.1", "BASTION_DNSPORT": String(server.port)],
            schedule: testSchedule
        )
        #expect(resolver.servers == [server.server])
        #expect(try resolver.addresses(of: "www.example", family: .ipv4).count == 2)
    }
}

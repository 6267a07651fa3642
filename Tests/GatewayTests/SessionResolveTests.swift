#if canImport(Glibc)
import Glibc
#endif
import Gateway
import GatewayKit
import Loop
import Testing

// Names resolved by the driver without blocking its loop: literals and the hosts file at once,
// other names from a scripted DNS server of the test's own on 127.0.0.1 (never the machine's
// configured resolver).

/// A UDP socket on 127.0.0.1 answering A and AAAA questions from a table, between turns of
/// the test's loop: a name it has no entry for gets NXDOMAIN.
final class ScriptedDNS {
    let fd: Int32
    let server: DNSServer
    /// Addresses by lowercased dotted name.
    let table: [String: [IPAddress]]
    /// The questions asked, as "name type".
    var asked: [String] = []

    init(_ table: [String: [IPAddress]]) throws {
        fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue | SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SystemError.current }
        try Socket.bind(fd, to: .loopbackV4, port: 0)
        server = DNSServer(address: .loopbackV4, port: try Socket.localEndpoint(fd).port)
        self.table = table
    }

    deinit { close(fd) }

    /// Answers every query that has arrived.
    func serve() {
        var buffer = [UInt8](repeating: 0, count: 1024)
        var peer = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        while true {
            let n = buffer.withUnsafeMutableBytes { b in
                withUnsafeMutablePointer(to: &peer) { p in
                    p.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        recvfrom(fd, b.baseAddress, b.count, 0, $0, &length)
                    }
                }
            }
            guard n > 12 else { return }
            let reply = answer(Array(buffer[0..<n]))
            _ = reply.withUnsafeBytes { b in
                withUnsafePointer(to: &peer) { p in
                    p.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        sendto(fd, b.baseAddress, b.count, 0, $0, length)
                    }
                }
            }
        }
    }

    private func answer(_ query: [UInt8]) -> [UInt8] {
        // The question: labels from offset 12, then its type.
        var labels: [String] = []
        var position = 12
        while position < query.count, query[position] != 0 {
            let size = Int(query[position])
            labels.append(String(decoding: query[(position + 1)..<(position + 1 + size)], as: UTF8.self))
            position += 1 + size
        }
        let type = UInt16(query[position + 1]) << 8 | UInt16(query[position + 2])
        let name = labels.joined(separator: ".").lowercased()
        asked.append("\(name) \(type == 1 ? "A" : type == 28 ? "AAAA" : "\(type)")")
        var reply = Array(query[0..<(position + 5)])
        reply[2] |= 0x80  // QR
        reply[3] |= 0x80  // RA
        guard let addresses = table[name] else {
            reply[3] |= 3  // NXDOMAIN
            return reply
        }
        let records = addresses.filter { ($0.family == .v4 ? 1 : 28) == type }
        reply[7] = UInt8(records.count)
        for address in records {
            let data = address.bytes
            reply += [0xc0, 0x0c, UInt8(type >> 8), UInt8(type & 0xff), 0, 1, 0, 0, 0, 60, 0, UInt8(data.count)]
            reply += data
        }
        return reply
    }
}

@Suite("The session driver resolves names on its loop")
struct SessionResolveTests {
    static let hostsText = UserDatabase.readFile("/etc/hosts") ?? []

    @Test func literalsHostsFileDNSAndFailures() throws {
        let fixture = try Fixture()
        defer { withExtendedLifetime(fixture) {} }
        let dns = try ScriptedDNS([
            "www.example.test": [IPAddress("192.0.2.10")!, IPAddress("2001:db8::10")!],
            "v4only.example.test": [IPAddress("192.0.2.11")!],
            "empty.example.test": [],
        ])
        let names = ClientNameSource(hosts: [:], servers: [dns.server], hostsText: Self.hostsText)
        let script = Script()
        let asked = [
            "192.0.2.7", "[2001:db8::7]", "localhost", "www.example.test", "V4ONLY.example.test",
            "missing.example.test", "empty.example.test", String(repeating: "a", count: 64) + ".test",
        ]
        let machine = ScriptedMachine(script: script) { event, _ in
            switch event {
            case .started: return asked.map { .resolve($0) } + [.log(.info, "asked")]
            default: return []
            }
        }
        let driver = SessionDriver(
            host: fixture.host, machine: machine, client: fixture.accepted, peer: fixture.peer, id: 1, names: names)
        driver.start()
        // What is known at once came after the batch, one event at a time, without a query.
        #expect(fixture.host.lines == ["asked"])
        #expect(script.deepest == 1)
        let localhost = HostsFile.addresses(of: "localhost", in: Self.hostsText)
        #expect(localhost.contains(.loopbackV4))
        #expect(
            Array(script.events.prefix(5)) == [
                .started,
                .resolved(name: "192.0.2.7", addresses: [IPAddress("192.0.2.7")!]),
                .resolved(name: "[2001:db8::7]", addresses: [IPAddress("2001:db8::7")!]),
                .resolved(name: "localhost", addresses: localhost),
                .resolveFailed(
                    name: String(repeating: "a", count: 64) + ".test",
                    reason: "\(DNSError.invalidName(String(repeating: "a", count: 64) + ".test"))"),
            ])
        #expect(dns.asked.isEmpty)
        #expect(
            run(fixture.loop) {
                dns.serve()
                return script.events.count == 1 + asked.count
            })
        let later = Set(script.events.dropFirst(5).map { "\($0)" })
        #expect(
            later == [
                "\(SessionEvent.resolved(name: "www.example.test", addresses: [IPAddress("2001:db8::10")!, IPAddress("192.0.2.10")!]))",
                "\(SessionEvent.resolved(name: "V4ONLY.example.test", addresses: [IPAddress("192.0.2.11")!]))",
                "\(SessionEvent.resolveFailed(name: "missing.example.test", reason: "no such name"))",
                "\(SessionEvent.resolveFailed(name: "empty.example.test", reason: "no address"))",
            ])
        // A and AAAA for each DNS name, nothing else.
        #expect(
            dns.asked.sorted() == [
                "empty.example.test A", "empty.example.test AAAA", "missing.example.test A",
                "missing.example.test AAAA", "v4only.example.test A", "v4only.example.test AAAA",
                "www.example.test A", "www.example.test AAAA",
            ])
        #expect(script.deepest == 1)
    }

    @Test func aServerThatIsNotThereFailsTheName() throws {
        let fixture = try Fixture()
        defer { withExtendedLifetime(fixture) {} }
        // A port nothing listens on: every attempt is refused at once.
        let (unused, port) = try {
            let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
            try Socket.bind(fd, to: .loopbackV4, port: 0)
            return (fd, try Socket.localEndpoint(fd).port)
        }()
        close(unused)
        let names = ClientNameSource(hosts: [:], servers: [DNSServer(address: .loopbackV4, port: port)])
        let script = Script()
        let machine = ScriptedMachine(script: script) { event, _ in
            event == .started ? [.resolve("www.example.test")] : []
        }
        let driver = SessionDriver(
            host: fixture.host, machine: machine, client: fixture.accepted, peer: fixture.peer, id: 1, names: names)
        defer { withExtendedLifetime(driver) {} }
        driver.start()
        #expect(run(fixture.loop) { script.events.count == 2 })
        guard case .resolveFailed(let name, let reason) = script.events.last else {
            Issue.record("\(script.events)")
            return
        }
        #expect(name == "www.example.test")
        #expect(reason == "\(SystemError(errno: ECONNREFUSED))")
    }

    @Test func closeCancelsTheQueries() throws {
        let fixture = try Fixture()
        defer { withExtendedLifetime(fixture) {} }
        let dns = try ScriptedDNS(["www.example.test": [IPAddress("192.0.2.10")!]])
        let names = ClientNameSource(hosts: [:], servers: [dns.server])
        let script = Script()
        let machine = ScriptedMachine(script: script) { event, _ in
            switch event {
            case .started:
                return [.resolve("www.example.test"), .resolve("two.example.test"), .setTimer(.milliseconds(1))]
            case .timerFired: return [.close]
            default: return []
            }
        }
        let driver = SessionDriver(
            host: fixture.host, machine: machine, client: fixture.accepted, peer: fixture.peer, id: 6, names: names)
        defer { withExtendedLifetime(driver) {} }
        let handlers = fixture.loop.statistics.handlers
        driver.start()
        #expect(run(fixture.loop) { fixture.host.ended == [6] })
        // Nothing was answered yet: the four DNS questions were out, and are gone with the session.
        #expect(fixture.loop.statistics.handlers == handlers)
        let deadline = Deadline.after(.milliseconds(200))
        while !deadline.hasPassed {
            dns.serve()
            fixture.loop.runOnce(timeout: .milliseconds(10))
        }
        #expect(script.events == [.started, .timerFired])
    }

    @Test func connectToAHostNameAsksDNSOnTheLoop() throws {
        let fixture = try Fixture()
        defer { withExtendedLifetime(fixture) {} }
        let (server, serverEndpoint) = try loopbackServer()
        defer { close(server) }
        let dns = try ScriptedDNS(["server.example.test": [.loopbackV4]])
        let names = ClientNameSource(hosts: [:], servers: [dns.server], hostsText: Self.hostsText)
        let script = Script()
        let machine = ScriptedMachine(script: script) { event, _ in
            switch event {
            case .started:
                return [
                    .connect(
                        .server, to: .host("server.example.test", port: serverEndpoint.port, from: nil),
                        timeout: .seconds(5)),
                    .connect(.scanner, to: .host("missing.example.test", port: 1, from: nil), timeout: .seconds(5)),
                ]
            case .hostUnknown:
                // The hosts file answers at once, and a source address picks the family.
                return [
                    .connect(
                        .scanner, to: .host("localhost", port: serverEndpoint.port, from: .loopbackV4),
                        timeout: .seconds(5))
                ]
            default: return []
            }
        }
        let driver = SessionDriver(
            host: fixture.host, machine: machine, client: fixture.accepted, peer: fixture.peer, id: 1, names: names)
        defer { withExtendedLifetime(driver) {} }
        driver.start()
        #expect(script.events == [.started], "nothing is known before the loop turns")
        #expect(
            run(fixture.loop) {
                dns.serve()
                return script.events.count == 4
            })
        #expect(script.events.contains(.hostUnknown(.scanner, reason: "no such name")))
        #expect(script.events.contains(.streamConnected(.server)))
        #expect(script.events.last == .streamConnected(.scanner) || script.events.last == .streamConnected(.server))
        #expect(script.events.contains(.streamConnected(.scanner)))
        // Only the name that was no literal and not in the hosts file was asked, both types.
        #expect(
            Set(dns.asked) == [
                "server.example.test A", "server.example.test AAAA", "missing.example.test A",
                "missing.example.test AAAA",
            ])
        // Both connections reached the server.
        close(try Socket.accept(server).0)
        close(try Socket.accept(server).0)
    }
}

import Gateway
import GatewayKit
import Testing

@testable import TCPProxy

/// PROXY_CLIENTNAME's pure parts: which connections need a name, what a PTR reply gives.
/// The lookups themselves are tested end to end (tests/e2e/test_tcpproxy_client_names.py).
@Suite("Client names")
struct ClientNameTests {
    @Test func onlyProgramsNeedNames() throws {
        let forward = try parse("port 25\nserver 127.0.0.1\n")
        #expect(!forward.services[0].handlers[0].runsProgram && !forward.runsPrograms)
        let exec = try parse("port 25\nexec /bin/date\n")
        #expect(exec.services[0].handlers[0].runsProgram && exec.runsPrograms)
        let acp = try parse("port 25\nacp /bin/true\nserver 127.0.0.1\n")
        #expect(acp.services[0].handlers[0].runsProgram)
        let mixed = try parse("port 25\nserver 127.0.0.1\nport 79\nexec /bin/date\n")
        #expect(mixed.runsPrograms && !mixed.services[0].handlers[0].runsProgram)
    }

    /// The table carries a name source only when a program runs and names are on.
    @Test func tablesLoadNamesOnlyWhenNeeded() throws {
        let builder = TableBuilder(bufferSize: 1024)
        #expect(try builder.resolvedOnly(parse("port 25\nserver 127.0.0.1\n")).clientNames == nil)
        let exec = try parse("port 79\nexec /bin/date\n")
        #expect(try builder.resolvedOnly(exec).clientNames?.servers.isEmpty == false)
        #expect(try TableBuilder(bufferSize: 1024, clientNames: false).resolvedOnly(exec).clientNames == nil)
    }

    @Test func questionIsTheReverseName() {
        let v4 = ClientNameSource.question(for: ip("192.0.2.7"))
        #expect(v4.type == .ptr && DNSWire.formatName(v4.name) == "7.2.0.192.in-addr.arpa")
        let mapped = ClientNameSource.question(for: ip("::ffff:192.0.2.7"))
        #expect(mapped.name == v4.name)
        let v6 = ClientNameSource.question(for: ip("2001:db8::1"))
        #expect(DNSWire.formatName(v6.name).hasSuffix(".8.b.d.0.1.0.0.2.ip6.arpa"))
    }

    /// A response to the PTR query for 192.0.2.7 with `rdata` records and `rcode`.
    func response(_ rdata: [[UInt8]], rcode: UInt8 = 0) throws -> DNSResponse {
        let question = ClientNameSource.question(for: ip("192.0.2.7"))
        var packet = DNSWire.query(id: 1, question: question)
        packet[2] |= 0x80
        packet[3] |= rcode
        packet[7] = UInt8(rdata.count)
        for data in rdata {
            packet += [0xc0, 0x0c, 0, 12, 0, 1, 0, 0, 0, 60, 0, UInt8(data.count)] + data
        }
        return try DNSResponse(parsing: packet)
    }

    @Test func nameFromPointerRecord() throws {
        let host: [UInt8] = [6] + Array("Client".utf8) + [7] + Array("Example".utf8) + [0]
        #expect(ClientNameSource.name(in: try response([host])) == "client.example")
        let odd: [UInt8] = [3, 97, 32, 98, 0]
        #expect(ClientNameSource.name(in: try response([odd])) == "a\\040b")
    }

    @Test func noNameGivesNil() throws {
        #expect(ClientNameSource.name(in: try response([], rcode: 3)) == nil)
        #expect(ClientNameSource.name(in: try response([])) == nil)
        #expect(ClientNameSource.name(in: try response([[0]])) == nil, "the root is no name")
        #expect(ClientNameSource.name(in: try response([[5, 1]])) == nil, "a broken record")
    }
}

#if canImport(Glibc)
import Glibc
#endif
import AccessRules
import CDB
import Gateway
import GatewayKit
import TCPProxy
import UCSPI

/// The fuzz harnesses: each takes one input (arbitrary bytes) and hands it to the same entry
/// point the tools call, the way the tools would. A harness never exits and never prints;
/// what it checks beyond "does not crash or hang" (an invariant, a round trip, a bound) it
/// checks with `precondition`, which libFuzzer reports as a crash.
///
/// The same functions run in three places: `bastion-fuzz NAME` (libFuzzer, built with
/// scripts/fuzz), the unit tests' replay of every committed corpus and regression input
/// (Tests/FuzzReplayTests), and the scaling tests.
public enum Harnesses {
    /// A harness: a name (the corpus folder and the dictionary are named after it) and its
    /// entry point.
    public struct Harness: Sendable {
        public let name: String
        public let summary: String
        public let run: @Sendable (UnsafeRawBufferPointer) -> Void
    }

    /// Every harness, by name.
    public static let all: [Harness] = [
        Harness(name: "tcprules-line", summary: "tcprules' line parser (RuleParser.parse)", run: ruleLine),
        Harness(
            name: "tcprules-compile", summary: "the whole compile, rules text fed in chunks to cdb bytes",
            run: rulesCompile),
        Harness(
            name: "cdb-lookup", summary: "the cdb reader and tcpserver's lookup order on arbitrary database bytes",
            run: cdbLookup),
        Harness(name: "tcpserver-args", summary: "tcpserver's command line (arbitrary argv)", run: tcpserverArguments),
        Harness(name: "tcpproxy-args", summary: "tcpproxy's command lines (arbitrary argv)", run: tcpproxyArguments),
        Harness(
            name: "tcpproxy-config",
            summary: "both configuration dialects, a text parsed then another on top (reload), listings, written back",
            run: tcpproxyConfiguration),
        Harness(name: "dns-message", summary: "the DNS message decoder and the PTR name", run: dnsMessage),
        Harness(name: "ident-reply", summary: "the ident reply reader, byte by byte", run: identReply),
        Harness(
            name: "system-files",
            summary: "/etc/hosts, /etc/services, /etc/passwd, /etc/group and resolv.conf readers", run: systemFiles),
        Harness(name: "log-target", summary: "the -L log target syntax", run: logTarget),
        Harness(
            name: "tcpproxy-session",
            summary: "tcpproxy's session machine driven with the network's and the system's answers",
            run: SessionHarness.run),
        Harness(
            name: "proxy-header", summary: "the PROXY protocol v1 and v2 headers, read back by a decoder of their own",
            run: ProxyHeaderHarness.run),
        Harness(
            name: "tcprules-differential",
            summary: "our tcprules and tcprulescheck against ucspi-tcp's (BASTION_FUZZ_REFERENCE)",
            run: DifferentialHarness.run),
        Harness(
            name: "relay",
            summary: "the relay engine between peers that send, stall, half-close and reset as the input says",
            run: RelayHarness.run),
        Harness(name: "pop3-command", summary: "pop3.proxy's client lines and commands", run: POP3Harnesses.commands),
        Harness(
            name: "pop3-answer", summary: "pop3.proxy's server status lines and multi-line answers in pieces",
            run: POP3Harnesses.answers),
        Harness(
            name: "pop3-login", summary: "pop3.proxy's USER/PASS splitting and the -s server list",
            run: POP3Harnesses.logins),
        Harness(
            name: "pop3proxy-args", summary: "pop3.proxy's command line (arbitrary argv)", run: POP3Harnesses.arguments),
        Harness(
            name: "pop3-session", summary: "pop3.proxy's whole session, both sides' bytes and every answer",
            run: POP3SessionHarness.run),
        Harness(name: "clamd-reply", summary: "clamd's INSTREAM and VERSION replies", run: POP3Harnesses.clamdReply),
        Harness(
            name: "scan-notice", summary: "pop3.proxy's virus notification for any message",
            run: POP3Harnesses.scanNotice),
        Harness(name: "sockd-args", summary: "sockd's command line (arbitrary argv)", run: SockdOptionsHarness.run),
        Harness(
            name: "bastion-args", summary: "the multi-call executable's choice of tool (arbitrary argv)",
            run: MultiCallHarness.run),
        Harness(name: "sockd-passwd", summary: "sockd's --passwd user:hash file", run: SockdPasswordHarness.run),
        Harness(
            name: "sockd-session", summary: "sockd's whole session, the client's bytes and every answer of the driver",
            run: SockdSessionHarness.run),
        Harness(
            name: "socks-request",
            summary: "sockd's SOCKS4/4a/5 negotiation, fed whole, a byte at a time and in pieces",
            run: SocksHarnesses.request),
        Harness(
            name: "socks-udp", summary: "the SOCKS5 UDP datagram header, read and rebuilt", run: SocksHarnesses.udp),
        Harness(
            name: "sockd-conf",
            summary: "sockd.conf in both modes, listed and parsed back, frozen and thawed, the matcher on each rule",
            run: SockdHarnesses.configuration),
        Harness(
            name: "sockd-route", summary: "sockd.route in both modes, listed and parsed back, frozen, matched",
            run: SockdHarnesses.routes),
        Harness(
            name: "sockd-frozen",
            summary:
                "frozen sockd.fc and sockd.fr bytes: decoded, re-encoded to the same bytes, dumped and parsed back",
            run: SockdHarnesses.frozen),
        Harness(
            name: "tls-server",
            summary: "a TLS listener (SNI, client CA, tickets, OCSP) reading a hostile client's bytes in pieces",
            run: TLSServerHarness.run),
        Harness(
            name: "tls-words",
            summary: "TLS versions, cipher lists and RFC 6125 name matching with SNI selection, on text",
            run: TLSWordsHarness.run),
    ]

    /// tcprules-differential against the ucspi-tcp binaries in the folder `reference`, whatever
    /// BASTION_FUZZ_REFERENCE says (the unit tests' replay finds them in peers/).
    public static func tcprulesDifferential(_ data: UnsafeRawBufferPointer, reference: String) {
        DifferentialHarness.compare(data, reference: reference)
    }

    /// What tls-server made of `data`: whether the handshake finished (resumed or not), the
    /// SNI, how many bytes of plaintext the server read. The tests check that the recorded
    /// conversations still finish their handshakes (the harness's random numbers are fixed).
    public static func tlsServer(_ data: UnsafeRawBufferPointer) -> (
        established: Bool, resumed: Bool, serverName: String?, plaintext: Int
    ) {
        let outcome = TLSServerHarness.serve(data)
        return (outcome.established, outcome.resumed, outcome.serverName, outcome.plaintext)
    }

    /// The harness named `name`.
    public static func named(_ name: String) -> Harness? { all.first { $0.name == name } }

    // MARK: - Helpers

    /// The input split at NUL bytes into arguments (as a kernel hands argv over).
    static func arguments(_ data: UnsafeRawBufferPointer) -> [[UInt8]] {
        data.split(separator: 0, omittingEmptySubsequences: false).map(Array.init)
    }

    /// The input cut in two at its first byte's position (both halves used).
    static func halves(_ data: UnsafeRawBufferPointer) -> (UnsafeRawBufferPointer, UnsafeRawBufferPointer) {
        guard let first = data.first else { return (data, data) }
        let cut = min(Int(first) * max(data.count, 1) / 256 + 1, data.count)
        return (UnsafeRawBufferPointer(rebasing: data[1..<max(cut, 1)]), UnsafeRawBufferPointer(rebasing: data[cut...]))
    }

    // MARK: - ucspi-tcp

    static func ruleLine(_ data: UnsafeRawBufferPointer) {
        let bytes = data.bindMemory(to: UInt8.self)
        if let line = try? RuleParser.parse(bytes) {
            // What parsed must expand and encode without trouble.
            _ = line
        }
    }

    static func rulesCompile(_ data: UnsafeRawBufferPointer) {
        guard let writer = try? CDBWriter(sink: CDBMemorySink()) else { return }
        var compiler = RulesCompiler(writer: writer)
        // Fed in chunks whose size the first byte picks: a line split anywhere parses the same.
        let chunk = Int(data.first ?? 0) % 61 + 1
        var offset = 0
        do {
            while offset < data.count {
                let end = min(offset + chunk, data.count)
                try compiler.feed(UnsafeRawBufferPointer(rebasing: data[offset..<end]))
                offset = end
            }
            try compiler.finish()
        } catch { return }
        // What tcprules writes, tcpserver reads.
        let database = compiler.writer.sink.bytes
        database.withUnsafeBytes { raw in
            let reader = CDBReader(bytes: raw)
            precondition((try? reader.records()) != nil, "a compiled database must read back")
            _ = try? RuleLookup.find(RuleClient(ip: "10.0.0.1", host: "host.example", info: "user"), in: reader)
        }
    }

    static func cdbLookup(_ data: UnsafeRawBufferPointer) {
        let (keyPart, database) = halves(data)
        let reader = CDBReader(bytes: database)
        _ = try? reader.records()
        _ = try? reader.findAll(keyPart)
        // As tcpserver asks: an address of at most 39 characters, a host name from DNS (at most
        // 255 bytes), an ident answer of at most 257. (tcpserver's lookup order tries a key per
        // dot of the host name, each a probe of the table: a host without that bound would make
        // the lookup quadratic, which no client can cause.)
        let ip = Array(keyPart.prefix(39))
        let host = Array(keyPart.dropFirst(39).prefix(255))
        let info = Array(keyPart.dropFirst(39 + 255).prefix(257))
        let client = RuleClient(ip: ip, host: host, info: info)
        _ = try? RuleLookup.find(client, in: reader)
        // Probe count: however damaged the tables, a search reads at most one slot per 8 bytes
        // of the file (a count read from the file must not bound the loop alone).
        for key in RuleLookup.keys(for: client) {
            key.withUnsafeBytes { k in
                var search = CDBReader.Search(key: k)
                while case .success(.some) = Result(catching: { () throws(CDBReadError) in try reader.next(&search) }) {
                }
                precondition(search.probes <= UInt32(database.count / 8 + 1), "a search read \(search.probes) slots")
            }
        }
    }

    static func tcpserverArguments(_ data: UnsafeRawBufferPointer) {
        _ = try? TCPServerOptions.parse(arguments(data))
    }

    static func tcpproxyArguments(_ data: UnsafeRawBufferPointer) {
        let args = arguments(data).map { String(decoding: $0, as: UTF8.self) }
        guard let options = try? TCPProxyOptions.parse(args) else { return }
        _ = ProxyPlan.mode(options, stdinIsSocket: false)
    }

    /// The fake services file the configuration harness resolves names with.
    static let services = ServiceNameSource.text(
        Array("smtp 25/tcp mail\npop3 110/tcp pop-3\nhttp 80/tcp www\nhttp-alt 8080/tcp\n".utf8), name: "/etc/services")

    static func tcpproxyConfiguration(_ data: UnsafeRawBufferPointer) {
        let (first, second) = halves(data)
        for text in [first, second] {
            let string = String(decoding: text, as: UTF8.self)
            guard
                let configuration = try? ProxyConfiguration(parsing: string, path: "fuzz.conf", serviceNames: services)
            else { continue }
            _ = configuration.listing(.ports)
            _ = configuration.listing(.basic)
            // Written back (-zzz), it reads as the same configuration.
            let written = configuration.text
            let again = try? ProxyConfiguration(parsing: written, path: "fuzz.conf", serviceNames: services)
            precondition(
                again?.withoutSourcePositions == configuration.withoutSourcePositions,
                "the configuration written back reads differently:\n\(written)")
            for service in configuration.services {
                for address in ["127.0.0.1", "::1", "192.0.2.7"] {
                    _ = service.handler(forLocalAddress: IPAddress(address)!)
                }
            }
        }
    }

    // MARK: - GatewayKit

    static func dnsMessage(_ data: UnsafeRawBufferPointer) {
        guard let response = try? DNSResponse(parsing: Array(data)) else { return }
        _ = ClientNameSource.name(in: response)
        _ = try? response.addresses(of: .a)
        _ = try? response.addresses(of: .aaaa)
    }

    static func identReply(_ data: UnsafeRawBufferPointer) {
        var reader = IdentReplyReader()
        for byte in data where reader.consume(byte) == .finished { break }
        // remoteinfo stops once it keeps more than 256 bytes: 257 at most.
        precondition(reader.collected.count <= IdentReplyReader.maximumLength + 1, "the reply is bounded")
        let whole = IdentReplyReader.interpret(UnsafeRawBufferPointer(data))
        precondition(whole == nil || whole == reader.collected, "byte by byte and whole agree")
    }

    static func systemFiles(_ data: UnsafeRawBufferPointer) {
        let text = Array(data)
        _ = HostsFile.names(in: text)
        _ = HostsFile.addresses(of: "localhost", in: text)
        _ = ServiceNames.port(of: "pop3", proto: "tcp", in: text)
        _ = UserDatabase.user("nobody", in: text)
        _ = UserDatabase.group("nogroup", in: text)
        _ = DNSConfiguration.parseResolvConf(text)
    }

    static func logTarget(_ data: UnsafeRawBufferPointer) {
        _ = try? LogTarget.parse(String(decoding: data, as: UTF8.self), defaultName: "fuzz")
    }
}

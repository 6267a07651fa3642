#if canImport(Glibc)
import Glibc
#endif
import AccessRules
import Gateway
import GatewayKit
import Relay
import TCPProxy
import TLS

/// The bytes of a fuzz input read as a stream of small decisions; past the end every read
/// is 0, so every input is a complete script.
struct FuzzReader {
    let data: UnsafeRawBufferPointer
    var offset = 0

    init(_ data: UnsafeRawBufferPointer) { self.data = data }

    var isAtEnd: Bool { offset >= data.count }

    mutating func byte() -> UInt8 {
        guard offset < data.count else { return 0 }
        defer { offset += 1 }
        return data[offset]
    }

    /// A number below `bound` (bound > 0).
    mutating func below(_ bound: Int) -> Int { Int(byte()) % bound }

    mutating func bool() -> Bool { byte() & 1 == 1 }

    mutating func uint32() -> UInt32 {
        var value: UInt32 = 0
        for _ in 0..<4 { value = value << 8 | UInt32(byte()) }
        return value
    }

    /// Up to `limit` bytes, their count given by the next byte.
    mutating func bytes(upTo limit: Int) -> [UInt8] {
        let count = min(below(256), limit, data.count - min(offset, data.count))
        defer { offset += count }
        return Array(data[offset..<(offset + count)])
    }
}

/// The tcpproxy session machine (``ProxySessionMachine``) driven as the session driver would
/// drive it, with the network's and the system's answers chosen by the input: rules
/// outcomes, client names from arbitrary DNS messages (through the real decoder), programs
/// that fail, talk and exit with any status, connects that fail for any errno (descriptor
/// shortages included), relays that end in every way, timers, and a local address that
/// cannot be read.
///
/// Checked beyond "no crash": every request is answered in a driver's order and the machine
/// asks nothing after `.close`; a late event after the end does nothing; every log line is
/// written as one line (no injection, whatever a DNS server or a damaged rules file says); the session ends within a bounded number of events; the PROXY
/// header a plan carries is the one the handler's version makes.
enum SessionHarness {
    /// The configurations the sessions are made from: every kind of handler and step.
    static let configurations: [(text: String, chosen: Int?)] = [
        ("port 8080\nserver 10.0.0.1:80\n", 0),
        ("port 8080\nrules /etc/r.cdb\nacp /bin/acp -x\nserver 10.0.0.1\n", 0),
        ("port 8080\ndebug rec\nproxy-protocol v1\nserver [2001:db8::1]:80\n", 0),
        ("port 8080\nproxy-protocol v2\nwritefile rec\nserver 10.0.0.1:80\nrotate 10.1.0.1 10.1.0.9\n", 0),
        ("port 8080\nexec /bin/cat -u\nacp /bin/acp\nrules /etc/r.cdb\nsetenv TCP_\n", 0),
        (
            "port 8080\ninterface 127.0.0.1\nserver 10.0.0.1:80\ninterface ::1\ndebug x\nacp /bin/acp\n"
                + "exec /bin/cat\n", nil
        ),
        ("port 8080\ninterface 127.0.0.2\ndebug y\nserver 10.0.0.1:80\n", nil),
        ("listen * 8080 { remote: 10.0.0.1 80; source: 10.0.0.2; rules: /etc/r.cdb; proxy-protocol: v1; };\n", 0),
    ]

    static let setups: [(ProxyService, Int?)] = configurations.map { item in
        let configuration = try! ProxyConfiguration(parsing: item.text, path: "fuzz.conf")
        return (configuration.services[0], item.chosen)
    }

    static let locals = [
        Endpoint(address: IPAddress("127.0.0.1")!, port: 8080), Endpoint(address: IPAddress("::1")!, port: 8080),
        Endpoint(address: IPAddress("::ffff:127.0.0.2")!, port: 8080),
        Endpoint(address: IPAddress("192.0.2.9")!, port: 1),
    ]
    static let peers = [
        Endpoint(address: IPAddress("192.0.2.1")!, port: 5000), Endpoint(address: IPAddress("2001:db8::7")!, port: 1),
        Endpoint(address: IPAddress("::ffff:10.9.8.7")!, port: 65535),
    ]
    static let errnos: [Int32] = [ECONNREFUSED, EMFILE, ENFILE, ENOBUFS, ENOMEM, ENETUNREACH, EACCES, ENOENT, 0, 9999]

    static let logTarget = LogTarget(kind: .stderr, level: .debug)

    final class Context: SessionContext {
        var now = Deadline(nanoseconds: 1_000_000_000)
        var local: Result<Endpoint, SystemError>
        init(local: Result<Endpoint, SystemError>) { self.local = local }
        func localEndpoint() throws(SystemError) -> Endpoint { try local.get() }
    }

    /// What the driver owes the machine: the answers to the requests it made.
    enum Owed {
        case rules, name, programStart, program(pid: Int32), handOver, relay, relaying, timer, tls
    }

    static func run(_ data: UnsafeRawBufferPointer) {
        var input = FuzzReader(data)
        let (service, chosen) = setups[input.below(setups.count)]
        let levels: [LogLevel] = [.error, .notice, .debug]
        let level = levels[input.below(levels.count)]
        let targets = service.handlers.map { handler -> ResolvedTarget? in
            guard case .forward(let host, let port, _, _, let rotate) = handler.target else { return nil }
            return ResolvedTarget(
                host: host, port: port, address: IPAddress(host)!, source: nil, rotate: rotate)
        }
        var rotations: UInt64 = 0
        let setup = ProxySessionSetup(
            configurationPath: "fuzz.conf", service: service, chosenHandler: chosen, targets: targets,
            logLevel: level, baseEnvironment: [Array("PATH=/bin".utf8)], namesAvailable: input.bool(),
            relayBufferSize: 4096,
            nextSource: { _, range in
                defer { rotations += 1 }
                return AddressArithmetic.address(in: range, at: rotations)
            })
        let localChoice = input.below(locals.count + 1)
        let context = Context(
            local: localChoice < locals.count ? .success(locals[localChoice]) : .failure(SystemError(errno: ENOTCONN)))
        let peer = peers[input.below(peers.count)]
        let machine = ProxySessionMachine(setup, id: UInt64(input.uint32()), peer: peer)

        var owed: [Owed] = []
        var closed = false
        // A driver reports each relay direction's end once, and a program says a bounded
        // number of lines before the input runs out.
        var finished: Set<RelayDirection> = []
        var said = 0
        var events = 0
        var actions: [SessionAction] = []

        func feed(_ event: SessionEvent) {
            events += 1
            precondition(events < 1000, "a session must end within a bounded number of events")
            actions.removeAll(keepingCapacity: true)
            machine.handle(event, context: context, into: &actions)
            for action in actions {
                precondition(!closed, "no action after close: \(action)")
                switch action {
                case .log(let level, let line):
                    // Written as the log writes it: one line, whatever a name or a file said.
                    var stamp: String? = ""
                    let written = logTarget.line(level, line, stamp: &stamp)
                    precondition(
                        written.last == 10 && !written.dropLast().contains(10) && !written.contains(13),
                        "a log line breaks: \(line.debugDescription)")
                case .checkRules: owed.append(.rules)
                case .lookUpName: owed.append(.name)
                case .run: owed.append(.programStart)
                case .handOver: owed.append(.handOver)
                case .relay(let plan):
                    if plan.preamble.first == UInt8(ascii: "P") {
                        precondition(plan.preamble.count <= 107 && plan.preamble.suffix(2) == [13, 10], "a v1 header")
                    }
                    owed.append(.relay)
                case .waitForDescriptors, .setTimer: owed.append(.timer)
                case .close: closed = true
                case .startTLS(let peer, _, _):
                    precondition(peer == .client, "tcpproxy shakes hands with its client only")
                    owed.append(.tls)
                case .read, .pause, .send, .shutdownWrite, .closeStream, .connect, .runCapturing, .killProgram,
                    .replaceFile, .spoolBegin, .spoolWrite, .sendSpool, .spoolEnd, .resolve, .askIdent,
                    .checkPassword, .relayStreams, .runDetached, .listen, .openDatagram, .sendDatagram, .closeDatagram:
                    preconditionFailure("tcpproxy's session uses no stream and asks none of this: \(action)")
                }
            }
            _ = machine.statusLine(bytesFromClient: 1, bytesToClient: 2, now: context.now)
        }

        feed(.started)
        while !closed, !owed.isEmpty {
            context.now = Deadline(nanoseconds: context.now.nanoseconds + UInt64(input.byte()) * 10_000_000)
            let next = owed.removeFirst()
            switch next {
            case .rules: feed(.rulesChecked(rulesOutcome(&input)))
            case .tls:
                if input.bool() {
                    feed(.tlsFailed(.client, TLSError(String(decoding: input.bytes(upTo: 80), as: UTF8.self))))
                } else {
                    let name = input.bool() ? String(decoding: input.bytes(upTo: 40), as: UTF8.self) : nil
                    feed(
                        .tlsEstablished(
                            .client,
                            TLSFacts(
                                version: "TLSv1.3", cipher: "TLS_AES_128_GCM_SHA256", serverName: name,
                                peerSubject: input.bool() ? "CN=client1,O=Bastion" : nil, resumed: input.bool())))
                }
            case .name: feed(.nameFound(nameAnswer(&input)))
            case .programStart:
                if input.below(4) == 0 {
                    feed(.programFailed(SystemError(errno: errnos[input.below(errnos.count)])))
                } else {
                    let pid = Int32(input.below(200) + 2)
                    owed.insert(.program(pid: pid), at: 0)
                    feed(.programStarted(pid: pid))
                }
            case .program(let pid):
                if !input.isAtEnd, said < 16, input.below(3) == 0 {
                    said += 1
                    owed.insert(next, at: 0)
                    let line = input.bytes(upTo: 300).filter { $0 != 10 }
                    feed(.programSaid(String(decoding: line, as: UTF8.self)))
                } else {
                    // Exit codes 0 and 1 mostly, sometimes a signal or anything.
                    let status = input.bool() ? Int32(input.below(2)) << 8 : Int32(bitPattern: input.uint32())
                    feed(.programExited(pid: pid, status: status))
                }
            case .handOver:
                if input.below(4) == 0 {
                    feed(.handOverFailed(SystemError(errno: errnos[input.below(errnos.count)])))
                } else {
                    feed(.handedOver(pid: Int32(input.below(200) + 2)))
                }
            case .relay:
                // (Choice 0, all an exhausted input reads, ends the session soonest.)
                switch input.below(3) {
                case 0: feed(.relayEnded(summary(&input, context)))
                case 1: feed(.relayFailed(SystemError(errno: errnos[input.below(errnos.count)])))
                default:
                    owed.insert(.relaying, at: 0)
                    let recording =
                        input.bool()
                        ? nil : RecordingOutcome(path: "rec-1", error: input.bool() ? nil : SystemError(errno: EACCES))
                    feed(
                        .connected(local: input.bool() ? locals[input.below(locals.count)] : nil, recording: recording))
                }
            case .relaying:
                let direction: RelayDirection = input.bool() ? .clientToServer : .serverToClient
                if !input.isAtEnd, !finished.contains(direction), input.below(3) == 0 {
                    finished.insert(direction)
                    owed.insert(.relaying, at: 0)
                    feed(.finished(direction, bytes: UInt64(input.uint32())))
                } else {
                    feed(.relayEnded(summary(&input, context)))
                }
            case .timer: feed(.timerFired)
            }
        }
        precondition(closed, "a session whose every request was answered ends with close")
        // A late report (a timer or relay end after the close) changes nothing.
        actions.removeAll()
        machine.handle(.timerFired, context: context, into: &actions)
        machine.handle(.relayEnded(summary(&input, context)), context: context, into: &actions)
        precondition(actions.isEmpty, "a closed session stays closed")
    }

    static func rulesOutcome(_ input: inout FuzzReader) -> RulesCheck.Outcome {
        switch input.below(5) {
        case 0: return .missing
        case 1: return .noRule
        case 2:
            var variables: [RuleDecision.Variable] = []
            for _ in 0..<input.below(4) {
                variables.append(RuleDecision.Variable(name: input.bytes(upTo: 20), value: input.bytes(upTo: 40)))
            }
            return .allowed(rule: input.bytes(upTo: 60), variables: variables)
        case 3: return .denied(rule: input.bytes(upTo: 60))
        default: return .unreadable(errno: errnos[input.below(errnos.count)])
        }
    }

    static func nameAnswer(_ input: inout FuzzReader) -> ClientNameAnswer {
        switch input.below(3) {
        case 0:
            // /etc/hosts names are words of the file: no blanks or line breaks.
            let name = input.bytes(upTo: 80).filter { $0 > 32 && $0 != 127 }
            return .hosts(String(decoding: name, as: UTF8.self))
        case 1:
            // Whatever a DNS server sends, through the decoder tcpproxy uses.
            let message = input.bytes(upTo: 255)
            let response = try? DNSResponse(parsing: message)
            return .dns(response.flatMap { ClientNameSource.name(in: $0) })
        default:
            let errors: [DNSError] = [
                .timedOut, .serverFailure(rcode: 2), .malformedResponse, .system(SystemError(errno: ENOBUFS)),
            ]
            return .failed(errors[input.below(errors.count)])
        }
    }

    static func summary(_ input: inout FuzzReader, _ context: Context) -> RelaySummary {
        let ends: [RelayEnd] = [
            .completed, .idleTimeout, .failed(.client, SystemError(errno: ECONNRESET)),
            .failed(.server, SystemError(errno: EPIPE)), .cancelled, .connectFailed(SystemError(errno: ECONNREFUSED)),
        ]
        return RelaySummary(
            bytesClientToServer: UInt64(input.uint32()), bytesServerToClient: UInt64(input.uint32()),
            started: Deadline(nanoseconds: 0), ended: context.now, end: ends[input.below(ends.count)])
    }
}

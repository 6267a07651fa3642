#if canImport(Glibc)
import Glibc
#endif
import AccessRules
import Gateway
import GatewayKit
import Relay
@testable import TCPProxy
import Testing

// The tcpproxy session as a pure state machine, driven event by event with a manual clock and
// no socket: the log lines, the order of the actions, and when the local address is read.

/// The machine's surroundings in a test: a clock the test moves, and a local address whose
/// reads are counted (a plain forward with quiet logging must never ask).
final class ManualContext: SessionContext {
    var now = Deadline(nanoseconds: 1_000_000_000)
    var local: Result<Endpoint, SystemError> = .success(Endpoint(address: ip("127.0.0.1"), port: 8080))
    var localReads = 0

    func localEndpoint() throws(SystemError) -> Endpoint {
        localReads += 1
        return try local.get()
    }

    func advance(milliseconds: UInt64) { now = Deadline(nanoseconds: now.nanoseconds + milliseconds * 1_000_000) }
}

/// A machine for the first service of `configuration` and its context.
struct MachineRun {
    var machine: ProxySessionMachine
    let context = ManualContext()

    init(
        _ configuration: String, handler: Int? = 0, level: LogLevel = .notice, names: Bool = false,
        targets: [ResolvedTarget?]? = nil, environment: [[UInt8]] = [Array("PATH=/bin".utf8)],
        tls: [HandlerTLS] = []
    ) throws {
        let parsed = try parse(configuration)
        let service = parsed.services[0]
        let resolved =
            targets
            ?? service.handlers.map { handler -> ResolvedTarget? in
                guard case .forward(let host, let port, _, _, _) = handler.target else { return nil }
                return ResolvedTarget(host: host, port: port, address: ip(host), source: nil, rotate: nil)
            }
        var next: UInt64 = 0
        machine = ProxySessionMachine(
            ProxySessionSetup(
                configurationPath: "/etc/tcpproxy.conf", service: service, chosenHandler: handler, targets: resolved,
                tls: tls, logLevel: level, baseEnvironment: environment, namesAvailable: names, relayBufferSize: 10240,
                nextSource: { _, range in
                    defer { next += 1 }
                    return AddressArithmetic.address(in: range, at: next)
                }),
            id: 7, peer: Endpoint(address: ip("192.0.2.1"), port: 5000))
    }

    /// Feeds one event; the actions it asks for.
    mutating func feed(_ event: SessionEvent) -> [SessionAction] {
        var actions: [SessionAction] = []
        machine.handle(event, context: context, into: &actions)
        return actions
    }
}

/// The log lines among `actions`.
func lines(_ actions: [SessionAction]) -> [String] {
    actions.compactMap {
        if case .log(_, let line) = $0 { return line }
        return nil
    }
}

/// The relay plan among `actions`.
func relayPlan(_ actions: [SessionAction]) -> RelayPlan? {
    for action in actions { if case .relay(let plan) = action { return plan } }
    return nil
}

/// The program of a `.run` among `actions`, with its environment as text.
func program(_ actions: [SessionAction]) -> (argv: [String], environment: [String])? {
    for action in actions {
        switch action {
        case .run(let p, _), .handOver(let p, _):
            return (p.argv, p.environment.map { String(decoding: $0, as: UTF8.self) })
        default: continue
        }
    }
    return nil
}

let who = "connection 7 from 192.0.2.1:5000 on 127.0.0.1:8080"
let summary = RelaySummary(
    bytesClientToServer: 12, bytesServerToClient: 345, started: Deadline(nanoseconds: 0),
    ended: Deadline(nanoseconds: 0), end: .completed)

@Suite("tcpproxy's session machine")
struct ProxySessionMachineTests {
    @Test func quietPlainForwardNeverReadsTheLocalAddress() throws {
        var run = try MachineRun("port 8080\nserver 10.0.0.1:80\n", level: .error)
        let actions = run.feed(.started)
        #expect(actions.count == 1)
        let plan = try #require(relayPlan(actions))
        #expect(plan.destination == Endpoint(address: ip("10.0.0.1"), port: 80))
        #expect(plan.preamble.isEmpty && plan.recording == nil && !plan.traced && plan.source == nil)
        #expect(plan.configuration.bufferSize == 10240 && plan.configuration.assumeNonBlocking)
        #expect(run.feed(.connected(local: nil, recording: nil)).isEmpty)
        #expect(run.feed(.relayEnded(summary)) == [.close])
        #expect(run.context.localReads == 0)
    }

    @Test func forwardAtNoticeLogsConnectAndCloseWithTheDuration() throws {
        var run = try MachineRun("port 8080\nserver 10.0.0.1:80\n")
        #expect(relayPlan(run.feed(.started)) != nil)
        #expect(run.context.localReads == 1)
        #expect(lines(run.feed(.connected(local: nil, recording: nil))) == ["\(who) to 10.0.0.1:80"])
        run.context.advance(milliseconds: 1250)
        #expect(
            run.feed(.relayEnded(summary)) == [
                .log(
                    .notice,
                    "\(who) to 10.0.0.1:80 closed: 12 bytes from client, 345 bytes to client, 1.250 s (completed)"),
                .close,
            ])
        #expect(run.context.localReads == 1)
    }

    @Test func theListeningPortIsTheServerPortWhenNoneIsGiven() throws {
        var run = try MachineRun("port 8080\nserver 10.0.0.1\n", level: .error)
        #expect(relayPlan(run.feed(.started))?.destination.port == 8080)
        #expect(run.context.localReads == 1)
    }

    @Test func statusLineWhileRelaying() throws {
        var run = try MachineRun("port 8080\nserver 10.0.0.1:80\n")
        #expect(run.machine.statusLine(bytesFromClient: 0, bytesToClient: 0, now: run.context.now) == nil)
        _ = run.feed(.started)
        run.context.advance(milliseconds: 2005)
        #expect(
            run.machine.statusLine(bytesFromClient: 1, bytesToClient: 2, now: run.context.now)
                == "\(who) to 10.0.0.1:80: 1 bytes from client, 2 bytes to client, open 2.005 s")
        _ = run.feed(.relayEnded(summary))
        #expect(run.machine.statusLine(bytesFromClient: 1, bytesToClient: 2, now: run.context.now) == nil)
    }

    @Test func connectFailureIsLoggedWithoutTheLocalAddressWhenNeverRead() throws {
        var run = try MachineRun("port 8080\nserver 10.0.0.1:80\n", level: .error)
        _ = run.feed(.started)
        let failed = RelaySummary(
            bytesClientToServer: 0, bytesServerToClient: 0, started: .now, ended: .now,
            end: .connectFailed(SystemError(errno: ECONNREFUSED)))
        #expect(
            run.feed(.relayEnded(failed)) == [
                .log(
                    .error,
                    "connection 7 from 192.0.2.1:5000: unable to connect to 10.0.0.1:80: connection refused, closed"),
                .close,
            ])
    }

    @Test func aRelayThatCannotStartIsLoggedWithTheLocalAddress() throws {
        var run = try MachineRun("port 8080\nserver 10.0.0.1:80\n", level: .error)
        _ = run.feed(.started)
        #expect(
            run.feed(.relayFailed(SystemError(errno: EADDRNOTAVAIL))) == [
                .log(.error, "\(who): unable to connect to 10.0.0.1:80: address not available, closed"),
                .close,
            ])
    }

    @Test func outOfDescriptorsWaitsAndTriesAgainUpToALimit() throws {
        var run = try MachineRun("port 8080\nserver 10.0.0.1:80\n", level: .error)
        _ = run.feed(.started)
        let shortage = SystemError(errno: EMFILE)
        for _ in 0..<ProxySessionMachine.descriptorWaitLimit {
            #expect(run.feed(.relayFailed(shortage)) == [.waitForDescriptors(shortage)])
            #expect(relayPlan(run.feed(.timerFired)) != nil)
        }
        #expect(
            lines(run.feed(.relayFailed(shortage))).first?.hasSuffix("process cannot open more files, closed") == true)
    }

    @Test func rulesDenyAllowAndUnreadable() throws {
        let config = "port 8080\nserver 10.0.0.1:80\nrules /etc/r.cdb\nacp /bin/acp\n"
        var run = try MachineRun(config)
        #expect(run.feed(.started) == [.checkRules(path: "/etc/r.cdb", client: RuleClient(ip: "192.0.2.1"))])
        #expect(
            run.feed(.rulesChecked(.denied(rule: Array("192.0.2.".utf8)))) == [
                .log(.notice, "\(who): denied by rule \"192.0.2.\" of /etc/r.cdb"), .close,
            ])

        run = try MachineRun(config)
        _ = run.feed(.started)
        #expect(
            run.feed(.rulesChecked(.unreadable(errno: EPROTO))) == [
                .log(.error, "\(who): unable to read /etc/r.cdb: protocol error, closed"), .close,
            ])

        run = try MachineRun(config)
        _ = run.feed(.started)
        let variables = [RuleDecision.Variable(name: Array("GREETING".utf8), value: Array("hi".utf8))]
        let actions = run.feed(.rulesChecked(.allowed(rule: Array("192.0.2.".utf8), variables: variables)))
        let acp = try #require(program(actions))
        #expect(acp.argv == ["/bin/acp"])
        #expect(
            acp.environment == [
                "PATH=/bin", "PROXY_PORT=8080", "PROXY_INTERFACE=127.0.0.1", "PROXY_CLIENT=192.0.2.1",
                "PROXY_CLIENTNAME=192.0.2.1", "GREETING=hi",
            ])
    }

    @Test func accessControlProgramDecides() throws {
        let config = "port 8080\nserver 10.0.0.1:80\nacp /bin/acp -v\n"
        var run = try MachineRun(config)
        let start = run.feed(.started)
        #expect(start.count == 1)
        guard case .run(_, let stdout) = start[0] else { Issue.record("no program run: \(start)"); return }
        #expect(stdout)
        #expect(run.feed(.programStarted(pid: 42)).isEmpty)
        #expect(run.feed(.programSaid("checking")) == [.log(.notice, "\(who): /bin/acp: checking")])
        #expect(
            run.feed(.programExited(pid: 42, status: 1 << 8)) == [
                .log(.notice, "\(who): denied by access control program (exit 1)"), .close,
            ])

        run = try MachineRun(config)
        _ = run.feed(.started)
        #expect(relayPlan(run.feed(.programExited(pid: 42, status: 0))) != nil)

        run = try MachineRun(config)
        _ = run.feed(.started)
        #expect(
            run.feed(.programFailed(SystemError(errno: ENOENT))) == [
                .log(.error, "\(who): unable to run access control program /bin/acp: file does not exist, closed"),
                .close,
            ])
    }

    @Test func clientNameGoesIntoTheEnvironment() throws {
        var run = try MachineRun("port 8080\nexec /bin/cat\n", names: true)
        #expect(run.feed(.started) == [.lookUpName(ip("192.0.2.1"))])
        let actions = run.feed(.nameFound(.hosts("client.example")))
        let handler = try #require(program(actions))
        #expect(handler.environment.contains("PROXY_CLIENTNAME=client.example"))
        guard case .handOver(_, let endLine) = actions.last else { Issue.record("no hand-over: \(actions)"); return }
        #expect(endLine == "\(who) to /bin/cat ended")
        #expect(
            run.feed(.handedOver(pid: 9)) == [.log(.notice, "\(who) to /bin/cat"), .close])
    }

    @Test func aFailedNameLookupIsADebugLineAndTheAddressIsUsed() throws {
        var run = try MachineRun("port 8080\nexec /bin/cat\n", level: .debug, names: true)
        _ = run.feed(.started)
        let actions = run.feed(.nameFound(.failed(.timedOut)))
        #expect(lines(actions).first?.hasPrefix("\(who): no name for the client: ") == true)
        #expect(program(actions)?.environment.contains("PROXY_CLIENTNAME=192.0.2.1") == true)
        #expect(
            run.feed(.handOverFailed(SystemError(errno: EACCES))) == [
                .log(.error, "\(who): unable to run /bin/cat: access denied, closed"), .close,
            ])
    }

    @Test func inetdModeChoosesTheHandlerByLocalAddress() throws {
        let config = "port 8080\nserver 10.0.0.1:80\ninterface 127.0.0.2\nserver 10.0.0.2:80\n"
        var run = try MachineRun(config, handler: nil, level: .error)
        run.context.local = .success(Endpoint(address: ip("127.0.0.2"), port: 8080))
        #expect(relayPlan(run.feed(.started))?.destination.address == ip("10.0.0.2"))

        run = try MachineRun(config, handler: nil, level: .error)
        run.context.local = .success(Endpoint(address: ip("::ffff:127.0.0.9"), port: 8080))
        #expect(relayPlan(run.feed(.started))?.destination.address == ip("10.0.0.1"))

        run = try MachineRun(config, handler: nil)
        run.context.local = .failure(SystemError(errno: ENOTSOCK))
        #expect(
            run.feed(.started) == [
                .log(.warning, "connection 7 from 192.0.2.1:5000: unable to get local address: not a socket"),
                .close,
            ])
    }

    @Test func noHandlerForTheAddress() throws {
        var run = try MachineRun("port 8080\ninterface 127.0.0.2\nserver 10.0.0.2:80\n", handler: nil)
        #expect(run.feed(.started) == [.log(.notice, "\(who): no service for this address, closed"), .close])
    }

    @Test func proxyHeaderRotateAndRecording() throws {
        let config = "port 8080\nserver 10.0.0.1:80\nproxy-protocol v1\nwritefile /tmp/rec\n"
        let target = ResolvedTarget(
            host: "10.0.0.1", port: 80, address: ip("10.0.0.1"), source: nil,
            rotate: AddressRange(start: ip("127.0.0.10"), end: ip("127.0.0.11"))!)
        var run = try MachineRun(config, level: .error, targets: [target])
        let first = try #require(relayPlan(run.feed(.started)))
        #expect(first.source == ip("127.0.0.10"))
        #expect(String(decoding: first.preamble, as: UTF8.self) == "PROXY TCP4 192.0.2.1 127.0.0.1 5000 8080\r\n")
        #expect(first.recording == RecordingRequest(basename: "/tmp/rec", server: "10.0.0.1:80"))
        var again = try MachineRun(config, level: .error, targets: [target])
        _ = again.feed(.started)
        // Each machine has its own counter here; the table's is shared (see ServiceTable).
        #expect(relayPlan(again.feed(.relayFailed(SystemError(errno: EMFILE)))) == nil)
        #expect(relayPlan(again.feed(.timerFired))?.source == ip("127.0.0.11"))
    }

    @Test func theDebugTraceNamesEveryStep() throws {
        let config = "port 8080\nserver 10.0.0.1:80\ndebug /tmp/trace\nproxy-protocol v2\n"
        var run = try MachineRun(config, level: .notice)
        let start = run.feed(.started)
        #expect(
            lines(start) == [
                "\(who): trace: handler port 8080 (/etc/tcpproxy.conf line 1): server 10.0.0.1:80",
                "\(who): trace: connecting to 10.0.0.1:80 from an address the system picks",
            ])
        #expect(relayPlan(start)?.traced == true)
        let connected = run.feed(
            .connected(
                local: Endpoint(address: ip("10.0.0.9"), port: 40000),
                recording: RecordingOutcome(path: "/tmp/trace.99.log", error: nil)))
        #expect(
            lines(connected) == [
                "\(who): trace: connected to the server: local 10.0.0.9:40000, remote 10.0.0.1:80",
                "\(who): trace: PROXY header queued for the server: v2, 28 bytes",
                "\(who): trace: recording to /tmp/trace.99.log",
                "\(who) to 10.0.0.1:80",
            ])
        #expect(
            lines(run.feed(.finished(.clientToServer, bytes: 5))) == [
                "\(who): trace: client finished sending (5 bytes to the server); passed on to the server"
            ])
        run.context.advance(milliseconds: 40)
        let idle = RelaySummary(
            bytesClientToServer: 5, bytesServerToClient: 0, started: .now, ended: .now, end: .idleTimeout)
        #expect(
            lines(run.feed(.relayEnded(idle))) == [
                "\(who): trace: idle timeout: nothing moved for 60 s",
                "\(who) to 10.0.0.1:80 closed: 5 bytes from client, 0 bytes to client, 0.040 s (idle timeout)",
                "\(who): trace: end after 0.040 s",
            ])
    }

    @Test func lateReportsAfterTheEndAreIgnored() throws {
        var run = try MachineRun("port 8080\nserver 10.0.0.1:80\n")
        _ = run.feed(.started)
        _ = run.feed(.relayEnded(summary))
        for event: SessionEvent in [
            .programSaid("late"), .timerFired, .relayEnded(summary), .connected(local: nil, recording: nil),
            .started,
        ] {
            #expect(run.feed(event).isEmpty)
        }
    }
}

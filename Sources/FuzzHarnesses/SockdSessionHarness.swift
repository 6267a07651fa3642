#if canImport(Glibc)
import Glibc
#endif
import Gateway
import GatewayKit
import Relay
import Socks

/// sockd's whole session (``SocksSession``) driven as the driver would: the client's bytes in
/// pieces of any size, and every answer the driver can give (names resolved or not, client
/// names, identd's, the password check, connects, the relay's end, timers, UDP sockets and
/// datagrams from the client, strangers and destinations) chosen by the input, in any order,
/// under one of several configurations.
///
/// Invariants: nothing after `close`; the client gets at most one reply to its request (two for
/// BIND), and it
/// is a well-formed reply of the client's version; a connect only after a permitting line (the
/// CSTC rules: nothing reaches a denied destination, by stream or datagram); datagrams go out
/// only of sockets opened, to the client only at the client's address; no command line holds a
/// shell-special
/// byte that came from the input; log lines stay one line; the session ends within a bounded
/// number of events.
enum SockdSessionHarness {
    final class Context: SessionContext {
        var now = Deadline(nanoseconds: 1_000_000_000)
        func localEndpoint() throws(SystemError) -> Endpoint { Endpoint(address: .loopbackV4, port: 1080) }
        func endpoint(of peer: Peer, local: Bool) throws(SystemError) -> Endpoint {
            Endpoint(address: IPAddress(v4: 10, 0, 0, 1), port: 4000)
        }
    }

    static let configurations: [(String, IdentCheck, Bool)] = [
        (
            """
            deny   *=bonnie,clyde 128.12.6.0 255.255.255.0 : echo rejected %u %U %A %a %Z %z %S %s %c %p %%
            permit *=ylee 128.12.6.4 255.255.255.255 137.12.0.0 255.255.0.0
            deny   128.12.0.0 255.255.0.0 eq 23
            permit 128.12.0.0 255.255.0.0
            #NO_IDENTD: echo no identd on %A
            #BAD_ID: echo %U pretends to be %u on %A
            """, .off, false
        ),
        (
            "permit ?=I .example 0.0.0.0 : echo %A\npermit ?=i ALL 0.0.0.0 ::/0 ge 1024\ndeny ALL 0.0.0.0", .strict,
            false
        ),
        ("permit *=bob ALL 0.0.0.0\n#BAD_ID: echo %u", .lenient, true),
    ]

    static let parsed: [SockdConfiguration] = configurations.map { (text, _, _) in
        let parser = SockdConfParser(
            path: "sockd.conf", readUserFile: { _ throws(SystemError) in [] }, servicePort: { _ in nil })
        return parser.parse(Array(text.utf8)).configuration
    }

    static func run(_ data: UnsafeRawBufferPointer) {
        var input = FuzzReader(data)
        let which = input.below(configurations.count)
        let (_, identCheck, password) = configurations[which]
        let routed = input.below(3)
        let settings = SockdSessionSettings(
            configuration: parsed[which],
            route: { _, _ in routed == 0 ? .system : routed == 1 ? .from(IPAddress(v4: 10, 9, 9, 9), line: 1) : .none },
            identCheck: identCheck, identTimeout: .seconds(15), passwordRequired: password, pid: 42,
            serviceName: { $0 == 23 ? Array("telnet".utf8) : nil })
        let clients: [IPAddress] = [
            IPAddress(v4: 128, 12, 6, 4), IPAddress(v4: 128, 12, 6, 34), IPAddress(v4: 23, 2, 6, 127), .loopbackV6,
        ]
        let client = clients[input.below(clients.count)]
        let machine = SocksSession(settings: settings, client: Endpoint(address: client, port: 3000))
        let context = Context()
        var closed = false
        var events = 0
        var actions: [SessionAction] = []
        var toClient: [UInt8] = []
        var owed: [SessionEvent] = []
        var connected = false
        var relaying = false
        var datagramSockets: Set<UInt8> = []

        func feed(_ event: SessionEvent) {
            events += 1
            precondition(events < 5000, "a session ends within a bounded number of events")
            actions.removeAll(keepingCapacity: true)
            machine.handle(event, context: context, into: &actions)
            for action in actions {
                precondition(!closed, "no action after close: \(action)")
                switch action {
                case .log(let level, let line):
                    var stamp: String? = ""
                    let written = SessionHarness.logTarget.line(level, line, stamp: &stamp)
                    precondition(written.last == 10 && !written.dropLast().contains(10), "a log line breaks")
                case .send(.client, let bytes):
                    precondition(!relaying, "nothing sent once the relay has the client")
                    toClient += bytes
                case .runDetached(let program):
                    precondition(program.argv.count == 3 && program.argv[0] == "/bin/sh", "through /bin/sh")
                    // Only the configuration's own bytes may be shell-special; a value from the
                    // input is sanitised to [A-Za-z0-9._@:+-].
                    let line = program.argv[2]
                    precondition(
                        !line.contains("`") && !line.contains("$(") && !line.contains(";"), "sanitised: \(line)")
                case .connect(.server, _, _):
                    precondition(!connected, "one connection to the destination")
                    precondition(which != 0 || client != clients[2], "no CSTC line lets 23.2.6.127 through")
                    connected = true
                    owed.append(
                        input.bool()
                            ? .streamConnected(.server) : .connectFailed(.server, SystemError(errno: ECONNREFUSED)))
                case .listen(.server, _):
                    precondition(!connected, "one connection to the destination")
                    connected = true
                    owed.append(.listening(.server, Endpoint(address: .loopbackV4, port: 5000)))
                    owed.append(
                        input.bool()
                            ? .accepted(.server, from: Endpoint(address: IPAddress(v4: 137, 12, 4, 15), port: 20))
                            : .listenFailed(.server, SystemError(errno: EADDRINUSE)))
                case .relayStreams:
                    precondition(connected, "a relay only to a connected destination")
                    relaying = true
                case .resolve(let name):
                    owed.append(
                        input.bool()
                            ? .resolved(name: name, addresses: [input.bool() ? client : IPAddress(v4: 137, 12, 4, 15)])
                            : .resolveFailed(name: name, reason: "no such name"))
                case .lookUpName:
                    owed.append(.nameFound(input.bool() ? .dns("host.example") : .dns(nil)))
                case .askIdent:
                    let users = ["ylee", "bob", "clyde", ""]
                    owed.append(
                        input.bool()
                            ? .identAnswered(.success(Array(users[input.below(users.count)].utf8)))
                            : .identAnswered(.failure(.timedOut)))
                case .checkPassword:
                    owed.append(.passwordChecked(input.bool()))
                case .openDatagram(let id, _):
                    datagramSockets.insert(id.rawValue)
                    if id.rawValue == 0 {
                        owed.append(
                            input.below(8) == 0
                                ? .datagramFailed(id, SystemError(errno: EMFILE))
                                : .datagramOpened(id, Endpoint(address: .loopbackV4, port: 7000)))
                    } else if input.below(8) == 0 {
                        owed.append(.datagramFailed(id, SystemError(errno: EADDRNOTAVAIL)))
                    }
                case .sendDatagram(let id, let to, let prefix, let payload):
                    precondition(datagramSockets.contains(id.rawValue), "a datagram out of an open socket")
                    precondition(prefix.count + payload.count <= 65_536, "a datagram fits")
                    if id.rawValue == 0 {
                        precondition(to.address.unmapped == client.unmapped, "to the client only: \(to)")
                    } else {
                        precondition(which != 0 || client != clients[2], "no CSTC line lets 23.2.6.127 send")
                    }
                case .closeDatagram(let id):
                    datagramSockets.remove(id.rawValue)
                case .close: closed = true
                default: break
                }
            }
            _ = machine.statusLine(bytesFromClient: 0, bytesToClient: 0, now: context.now)
        }

        feed(.started)
        while !closed && !input.isAtEnd {
            context.now = Deadline(nanoseconds: context.now.nanoseconds + UInt64(input.byte()) * 1_000_000)
            switch input.below(10) {
            case 0, 1, 2, 3:
                feed(.received(.client, input.bytes(upTo: 64)[...]))
            case 4:
                if !owed.isEmpty { feed(owed.removeFirst()) }
            case 5:
                feed(input.bool() ? .endOfFile(.client) : .streamFailed(.client, SystemError(errno: ECONNRESET)))
            case 6:
                feed(.timerFired)
            case 7:
                // A datagram for the client's socket: from the client (any port) or a stranger.
                let from = input.below(4) == 0 ? IPAddress(v4: 10, 6, 6, 6) : client
                feed(
                    .datagram(
                        DatagramID(0), from: Endpoint(address: from, port: UInt16(input.below(3) + 4000)),
                        input.bytes(upTo: 300)[...]))
            case 8:
                // An answer on an outgoing socket, from a destination the client may have named.
                let id = DatagramID(UInt8(input.below(3) + 1))
                let sources = [IPAddress(v4: 137, 12, 4, 15), IPAddress(v4: 10, 0, 0, 1), client]
                feed(
                    .datagram(
                        id, from: Endpoint(address: sources[input.below(sources.count)], port: UInt16(input.below(3))),
                        input.bytes(upTo: 300)[...]))
            default:
                if relaying {
                    feed(
                        .relayEnded(
                            RelaySummary(
                                bytesClientToServer: 1, bytesServerToClient: 2, started: context.now,
                                ended: context.now, end: .completed)))
                }
            }
        }
        // The client got at most a method selection, an auth status and one reply.
        precondition(toClient.count <= 2 + 2 + 2 * 22, "at most one reply (two for BIND): \(toClient)")
    }
}

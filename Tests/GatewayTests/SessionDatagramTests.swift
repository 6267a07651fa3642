#if canImport(Glibc)
import Glibc
#endif
import Gateway
import GatewayKit
import Loop
import Testing

// The driver's UDP sockets (sockd's UDP ASSOCIATE), on a real loop with loopback sockets.

/// A plain UDP socket on 127.0.0.1 (blocking, with a receive timeout), standing in for the
/// client and for a destination.
final class UDPPeer {
    let fd: Int32
    let endpoint: Endpoint

    init(_ address: IPAddress = .loopbackV4) throws {
        fd = socket(address.family == .v4 ? AF_INET : AF_INET6, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { throw SystemError.current }
        try Socket.bind(fd, to: address, port: 0)
        endpoint = try Socket.localEndpoint(fd)
    }

    deinit { close(fd) }

    func send(_ bytes: [UInt8], to destination: Endpoint) {
        _ = destination.address.withSocketAddress(port: destination.port) { sa, len in
            bytes.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, 0, sa, len) }
        }
    }

    /// The next datagram, running `loop` meanwhile (for at most 10 s).
    func receive(running loop: EventLoop) -> [UInt8]? {
        var got: [UInt8]?
        run(loop) {
            got = receiveNow()
            return got != nil
        }
        return got
    }

    /// A datagram waiting now, or nil.
    func receiveNow() -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: 70_000)
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
        return n >= 0 ? Array(buffer[0..<n]) : nil
    }
}

/// What the machine of the datagram tests saw.
final class DatagramLog: @unchecked Sendable {
    var opened: [UInt8: Endpoint] = [:]
    var failed: [UInt8: SystemError] = [:]
    var received: [(UInt8, Endpoint, [UInt8])] = []
}

@Suite("The session driver's datagram sockets")
struct SessionDatagramTests {
    @Test func datagramsArriveWithTheirSenderAndGoOutWithAPrefix() throws {
        let fixture = try Fixture()
        defer { withExtendedLifetime(fixture) {} }
        let client = try UDPPeer()
        let destination = try UDPPeer()
        let log = DatagramLog()
        let inside = DatagramID(0)
        let outside = DatagramID(1)
        let machine = ScriptedMachine(script: Script()) { event, _ in
            switch event {
            case .started:
                // A send right after the open reaches the socket: it exists at once.
                return [
                    .read(.client), .openDatagram(inside, on: Endpoint(address: .loopbackV4, port: 0)),
                    .openDatagram(outside, on: Endpoint(address: .loopbackV4, port: 0)),
                    .sendDatagram(outside, to: destination.endpoint, prefix: Array("first:".utf8), payload: []),
                ]
            case .datagramOpened(let id, let local):
                log.opened[id.rawValue] = local
                return []
            case .datagram(let id, let from, let bytes):
                log.received.append((id.rawValue, from, Array(bytes)))
                if id == inside {
                    return [.sendDatagram(outside, to: destination.endpoint, prefix: Array("H:".utf8), payload: bytes)]
                }
                return [.sendDatagram(inside, to: client.endpoint, prefix: [], payload: bytes)]
            default: return []
            }
        }
        let driver = SessionDriver(
            host: fixture.host, machine: machine, client: fixture.accepted, peer: fixture.peer, id: 41, names: nil)
        driver.start()
        #expect(run(fixture.loop) { log.opened.count == 2 })
        let insideAt = try #require(log.opened[0])
        let outsideAt = try #require(log.opened[1])
        #expect(insideAt.address == .loopbackV4 && insideAt.port != 0 && outsideAt.port != insideAt.port)
        let first = destination.receive(running: fixture.loop)
        #expect(first.map(text) == "first:")

        // Client to destination, through the prefix; an empty datagram and a 60,000-byte one too.
        for payload in [Array("ping".utf8), [], [UInt8](repeating: 7, count: 60_000)] {
            client.send(payload, to: insideAt)
            let got = destination.receive(running: fixture.loop)
            #expect(got == Array("H:".utf8) + payload)
            #expect(log.received.last?.0 == 0 && log.received.last?.1 == client.endpoint)
            #expect(log.received.last?.2 == payload)
        }
        // And back.
        destination.send(Array("pong".utf8), to: outsideAt)
        let back = client.receive(running: fixture.loop)
        #expect(back.map(text) == "pong")
        #expect(log.received.last?.0 == 1 && log.received.last?.1 == destination.endpoint)
    }

    @Test func aBurstIsDeliveredWholeAndCloseFreesThePorts() throws {
        let fixture = try Fixture()
        defer { withExtendedLifetime(fixture) {} }
        let client = try UDPPeer()
        let log = DatagramLog()
        let machine = ScriptedMachine(script: Script()) { event, _ in
            switch event {
            case .started:
                return [.read(.client), .openDatagram(DatagramID(3), on: Endpoint(address: .loopbackV4, port: 0))]
            case .datagramOpened(let id, let local):
                log.opened[id.rawValue] = local
                return []
            case .datagram(let id, let from, let bytes):
                log.received.append((id.rawValue, from, Array(bytes)))
                return log.received.count == 200 ? [.close] : []
            default: return []
            }
        }
        let driver = SessionDriver(
            host: fixture.host, machine: machine, client: fixture.accepted, peer: fixture.peer, id: 42, names: nil)
        driver.start()
        #expect(run(fixture.loop) { log.opened[3] != nil })
        let at = try #require(log.opened[3])
        // More than one readiness's batch, sent before the loop reads any.
        for i in 0..<200 { client.send([UInt8(i)], to: at) }
        #expect(run(fixture.loop) { log.received.count == 200 })
        #expect(log.received.map { $0.2 } == (0..<200).map { [UInt8($0)] })
        #expect(run(fixture.loop) { fixture.host.ended == [42] })
        // Closed: the port can be bound again.
        let again = try Socket.udp(.v4)
        defer { close(again) }
        try Socket.bind(again, to: .loopbackV4, port: at.port, reuseAddress: false)
    }

    @Test func aSocketThatCannotBeBoundIsReportedAndSendsToItAreIgnored() throws {
        let fixture = try Fixture()
        defer { withExtendedLifetime(fixture) {} }
        let taken = try UDPPeer()
        let log = DatagramLog()
        let machine = ScriptedMachine(script: Script()) { event, _ in
            switch event {
            case .started:
                return [
                    .read(.client), .openDatagram(DatagramID(1), on: taken.endpoint),
                    .sendDatagram(DatagramID(1), to: taken.endpoint, prefix: [1], payload: []),
                    .sendDatagram(DatagramID(2), to: taken.endpoint, prefix: [2], payload: []),
                ]
            case .datagramFailed(let id, let error):
                log.failed[id.rawValue] = error
                return []
            default: return []
            }
        }
        let driver = SessionDriver(
            host: fixture.host, machine: machine, client: fixture.accepted, peer: fixture.peer, id: 43, names: nil)
        driver.start()
        #expect(run(fixture.loop) { log.failed[1] != nil })
        #expect(log.failed[1]?.errno == EADDRINUSE)
        fixture.loop.runOnce(timeout: .milliseconds(50))
        #expect(taken.receiveNow() == nil)
    }
}

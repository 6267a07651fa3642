#if canImport(Glibc)
import Glibc
#endif
import GatewayKit
import Loop

/// One UDP socket of a session (``SessionAction/openDatagram(_:on:)``): read on readiness
/// into the loop's ``DatagramBuffer``, each datagram handed to the driver as an event.
final class SessionDatagramSocket {
    let id: DatagramID
    let fd: Int32
    private var watch: DescriptorWatch?
    private unowned let driver: SessionDriver

    /// The most datagrams read at one readiness before other descriptors get their turn (the
    /// watch is level-triggered, so the rest wait for the next round).
    static let batch = 64

    /// A socket of `local`'s family bound to it, watched on `loop`.
    init(id: DatagramID, local: Endpoint, loop: EventLoop, driver: SessionDriver) throws(SystemError) {
        self.id = id
        self.driver = driver
        fd = try Socket.udp(local.address.family)
        do throws(SystemError) {
            try Socket.bind(fd, to: local.address, port: local.port, scopeID: local.scopeID, reuseAddress: false)
            watch = try DescriptorWatch(loop: loop, fd: fd) { [unowned self] _ in self.readable(loop) }
        } catch {
            Glibc.close(fd)
            throw error
        }
    }

    var localEndpoint: Endpoint? { try? Socket.localEndpoint(fd) }

    private func readable(_ loop: EventLoop) {
        let buffer = loop.resource(DatagramBuffer.self)
        for _ in 0..<Self.batch {
            guard watch != nil else { return }  // closed by the machine meanwhile
            let outcome = buffer.bytes.withUnsafeMutableBytes { raw in
                Result { () throws(SystemError) in try Socket.receiveDatagram(fd, into: raw) }
            }
            let received: (count: Int, from: Endpoint)
            switch outcome {
            case .success(nil): return
            case .success(let got?): received = got
            case .failure(let error):
                // An ICMP error reported on the socket (a port unreachable) is no reason to stop.
                if [ECONNREFUSED, EHOSTUNREACH, ENETUNREACH].contains(error.errno) { continue }
                return driver.datagramSocket(id, failed: error)
            }
            driver.datagramSocket(id, received: buffer.bytes[0..<received.count], from: received.from)
        }
    }

    /// Sends one datagram; a full buffer or a refusal drops it.
    func send(to destination: Endpoint, prefix: [UInt8], payload: ArraySlice<UInt8>) {
        prefix.withUnsafeBytes { head in
            payload.withUnsafeBytes { body in
                _ = try? Socket.sendDatagram(fd, to: destination, prefix: head, payload: body)
            }
        }
    }

    func close() {
        guard let watch else { return }
        watch.cancel()
        self.watch = nil
        Glibc.close(fd)
    }
}

/// The buffer a loop's datagram sockets receive into, one for all: the largest UDP payload.
final class DatagramBuffer: LoopResource {
    var bytes: [UInt8]

    init(loop: EventLoop) { bytes = [UInt8](repeating: 0, count: 65_536) }

    func loopDidClose() { bytes = [] }
}

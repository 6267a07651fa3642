#if canImport(Glibc)
import Glibc
#endif
import Gateway
import GatewayKit

/// clamd's version line, asked once at start-up (zVERSION): the scan header names it, and a
/// daemon that is to scan refuses to start without a clamd to scan with. Blocking, bounded
/// by `timeout` for the connection and the answer each.
enum ClamdVersion {
    static func ask(_ clamd: POP3ProxyOptions.Clamd, timeout: Int = 5) throws(StartError) -> String {
        let fd: Int32
        let name: String
        switch clamd {
        case .unix(let path):
            name = path
            do { fd = try Socket.connectUnix(path, type: Int32(SOCK_STREAM.rawValue)) } catch {
                throw StartError("clamd at \(path): \(error)")
            }
        case .tcp(let server):
            name = "\(server.host):\(server.port)"
            let address: IPAddress
            do {
                guard let first = try HostResolver.resolve(server.host).first else {
                    throw StartError("clamd at \(name): no address")
                }
                address = first
            } catch let error as StartError {
                throw error
            } catch { throw StartError("clamd at \(name): \(error)") }
            do { fd = try Socket.tcp(address.unmapped.family) } catch { throw StartError("clamd at \(name): \(error)") }
            setTimeouts(fd, timeout)
            let r = address.unmapped.withSocketAddress(port: server.port) { sa, length in connect(fd, sa, length) }
            if r != 0 {
                let error = SystemError.current
                close(fd)
                throw StartError("clamd at \(name): \(error)")
            }
        }
        defer { close(fd) }
        setTimeouts(fd, timeout)
        do { try FD.writeAll(fd, ClamdProtocol.version) } catch { throw StartError("clamd at \(name): \(error)") }
        var reply: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 512)
        while reply.count < 4096, !reply.contains(0) {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 { throw StartError("clamd at \(name): \(SystemError.current)") }
            if n == 0 { break }
            reply += chunk[0..<n]
        }
        guard let line = ClamdProtocol.versionLine(reply.prefix { $0 != 0 }) else {
            throw StartError("clamd at \(name) answered VERSION with \"\(printable(reply.prefix(80)))\"")
        }
        return line
    }

    private static func setTimeouts(_ fd: Int32, _ seconds: Int) {
        var limit = timeval(tv_sec: seconds, tv_usec: 0)
        let size = socklen_t(MemoryLayout<timeval>.size)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, size)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, size)
    }
}

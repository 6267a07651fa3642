#if canImport(Glibc)
import Glibc
#endif
import GatewayKit
import Loop
import Relay
import Testing

// Hand-run measurements, not timed tests: they only run with RELAY_BENCH set, and they print
// what they see. For meaningful numbers build optimised:
//
//     RELAY_BENCH=1 swift test -c release -Xswiftc -enable-testing \
//         --scratch-path .build-relay-release --filter RelayBenchmarks
//
// RELAY_BENCH_GIB sets the bulk size in GiB (default 1), RELAY_BENCH_PIPE the pipe size,
// RELAY_BENCH_SERVE runs a miniature proxy for external tools (see `serve`).
//
// Seen on the 2-core development machine (numbers vary by ±30% with the machine's load):
//   bulk, 1 GiB, 1 stream:  direct 24-32 Gbit/s; copy 7-8.5; splice 10-16; automatic 11-14
//   bulk, 1 GiB, 8 streams: direct 24-45 Gbit/s; copy 4.3-6.9; splice 11-18; automatic 11-17.7
//   ping-pong, 100 bytes:   relay at 40-80% of the direct round-trip rate
//   idle relays: 232-byte object, 230-260 bytes of resident memory each
//   iperf3 through RELAY_BENCH_SERVE (2 loops, automatic) vs HAProxy 2.6 (tcp mode, 2 threads):
//     1 stream 15.5 vs 12.5 Gbit/s (11.2 with splice-auto), 8 streams 20.5 vs 14.5 (13.5);
//     8000 idle proxied connections: 282 vs 3429 bytes of resident memory each

private let benchEnabled = getenv("RELAY_BENCH") != nil
/// RELAY_BENCH_PIPE: the relays' pipe size in bytes (default 64 KiB).
private let benchPipeSize = getenv("RELAY_BENCH_PIPE").flatMap { Int(String(cString: $0)) } ?? 64 << 10

@_silgen_name("malloc_usable_size")
private func malloc_usable_size(_ pointer: UnsafeMutableRawPointer?) -> Int

/// Starts a POSIX thread running `body`; join it with `pthread_join`.
private func spawn(_ body: @escaping @Sendable () -> Void) -> pthread_t {
    final class Box: Sendable {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }
    var thread = pthread_t()
    let context = Unmanaged.passRetained(Box(body)).toOpaque()
    let r = pthread_create(
        &thread, nil,
        { context in
            Unmanaged<Box>.fromOpaque(context!).takeRetainedValue().body()
            return nil
        }, context)
    precondition(r == 0)
    return thread
}

/// Resident memory of this process in bytes (/proc/self/statm, second field).
private func residentBytes() -> Int {
    let fd = open("/proc/self/statm", O_RDONLY)
    guard fd >= 0 else { return 0 }
    defer { close(fd) }
    var buffer = [UInt8](repeating: 0, count: 256)
    let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, 255) }
    guard n > 0 else { return 0 }
    let fields = buffer[0..<n].split(separator: 32)
    guard fields.count > 1, let pages = Int(String(decoding: fields[1], as: UTF8.self)) else { return 0 }
    return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
}

/// Sends `total` bytes on `fd` (blocking) and shuts down writing.
private func blast(_ fd: Int32, total: Int) {
    let chunk = UnsafeMutableRawPointer.allocate(byteCount: 128 << 10, alignment: 16)
    defer { chunk.deallocate() }
    memset(chunk, 0x5a, 128 << 10)
    var left = total
    while left > 0 {
        let n = send(fd, chunk, min(left, 128 << 10), Int32(MSG_NOSIGNAL))
        if n <= 0 {
            if n < 0 && errno == EINTR { continue }
            break
        }
        left -= n
    }
    shutdown(fd, Int32(SHUT_WR))
}

/// Reads `fd` (blocking) to end of file; returns the byte count.
private func drain(_ fd: Int32) -> Int {
    let chunk = UnsafeMutableRawPointer.allocate(byteCount: 128 << 10, alignment: 16)
    defer { chunk.deallocate() }
    var total = 0
    while true {
        let n = recv(fd, chunk, 128 << 10, 0)
        if n > 0 {
            total += n
            continue
        }
        if n < 0 && errno == EINTR { continue }
        return total
    }
}

/// `streams` connections through one relay loop (or straight, without a relay).
private final class Rig {
    let thread: EventLoopThread?
    let events = RelayEvents()
    var clients: [Int32] = []
    var servers: [Int32] = []

    init(streams: Int, transfer: RelayTransfer?) throws {
        thread = transfer == nil ? nil : try EventLoopThread.start()
        for _ in 0..<streams {
            if let transfer, let thread {
                let (client, relayClient) = try Loopback.pair(.v4)
                let (relayServer, server) = try Loopback.pair(.v4)
                clients.append(client)
                servers.append(server)
                let events = self.events
                thread.execute { loop in
                    RelayConnection(
                        loop: loop, client: relayClient, server: relayServer,
                        configuration: RelayConfiguration(transfer: transfer, pipeSize: benchPipeSize),
                        delegate: events
                    ).start()
                }
            } else {
                let (client, server) = try Loopback.pair(.v4)
                clients.append(client)
                servers.append(server)
            }
        }
    }

    deinit {
        thread?.stopAndJoin()
        (clients + servers).forEach { close($0) }
    }
}

private func name(_ transfer: RelayTransfer?) -> String {
    switch transfer {
    case nil: return "direct (no relay)"
    case .copy?: return "copy"
    case .splice?: return "splice"
    case .automatic?: return "automatic"
    }
}

@Suite("RelayBenchmarks", .enabled(if: benchEnabled, "set RELAY_BENCH=1 to run"), .serialized)
struct RelayBenchmarks {
    static let modes: [RelayTransfer?] = [nil, .copy, .splice, .automatic]

    @Test("bulk throughput over loopback, 1 and 8 streams")
    func throughput() throws {
        let gib = getenv("RELAY_BENCH_GIB").flatMap { Int(String(cString: $0)) } ?? 1
        let total = gib << 30
        for streams in [1, 8] {
            for transfer in RelayBenchmarks.modes {
                let rig = try Rig(streams: streams, transfer: transfer)
                let start = Deadline.now
                let received = Locked(0)
                var threads: [pthread_t] = []
                for i in 0..<streams {
                    let client = rig.clients[i]
                    let server = rig.servers[i]
                    threads.append(spawn { blast(client, total: total / streams) })
                    threads.append(
                        spawn {
                            let n = drain(server)
                            received.withLock { $0 += n }
                        })
                }
                for t in threads { pthread_join(t, nil) }
                let seconds = elapsed(since: start)
                let bytes = received.withLock { $0 }
                #expect(bytes == total)
                let gbits = Double(bytes) * 8 / seconds / 1e9
                let label = "bulk \(streams) stream(s) \(name(transfer))"
                print("\(label): \(bytes >> 20) MiB in \(seconds) s = \(gbits) Gbit/s")
            }
        }
    }

    @Test("request/response round trips on one connection (100-byte messages)")
    func pingPong() throws {
        for transfer in RelayBenchmarks.modes {
            let rig = try Rig(streams: 1, transfer: transfer)
            let client = rig.clients[0]
            let server = rig.servers[0]
            let rounds = 50_000
            let echo = spawn {
                var buffer = [UInt8](repeating: 0, count: 100)
                for _ in 0..<rounds {
                    var got = 0
                    while got < 100 {
                        let n = buffer.withUnsafeMutableBytes { recv(server, $0.baseAddress! + got, 100 - got, 0) }
                        if n <= 0 { return }
                        got += n
                    }
                    _ = buffer.withUnsafeBytes { send(server, $0.baseAddress, 100, Int32(MSG_NOSIGNAL)) }
                }
            }
            var buffer = [UInt8](repeating: 7, count: 100)
            let start = Deadline.now
            for _ in 0..<rounds {
                _ = buffer.withUnsafeBytes { send(client, $0.baseAddress, 100, Int32(MSG_NOSIGNAL)) }
                var got = 0
                while got < 100 {
                    let n = buffer.withUnsafeMutableBytes { recv(client, $0.baseAddress! + got, 100 - got, 0) }
                    if n <= 0 { break }
                    got += n
                }
            }
            let seconds = elapsed(since: start)
            pthread_join(echo, nil)
            print("ping-pong \(name(transfer)): \(Int(Double(rounds) / seconds)) round trips/s")
        }
    }

    @Test("short connections per second through accept, connect and relay (100-byte request and answer)")
    func connectionRate() throws {
        let connections = 4000
        for proxied in [false, true] {
            let (back, backPort) = try Loopback.listener(.v4, backlog: 1024)
            let (front, frontPort) = try Loopback.listener(.v4, backlog: 1024)
            defer {
                close(back)
                close(front)
            }
            let events = RelayEvents()
            let backend = Endpoint(address: .loopbackV4, port: backPort)
            let proxy =
                proxied
                ? try EventLoopThread.start { loop in
                    let proxy = MiniProxy(
                        loop: loop, backend: backend, configuration: RelayConfiguration(), events: events
                    )
                    try? Acceptor(loop: loop, listener: front, delegate: proxy).start()
                } : nil
            let server = spawn {
                var buffer = [UInt8](repeating: 1, count: 100)
                for _ in 0..<connections {
                    guard let (fd, _) = try? Socket.accept(back) else { return }
                    _ = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, 100, Int32(MSG_WAITALL)) }
                    _ = buffer.withUnsafeBytes { send(fd, $0.baseAddress, 100, Int32(MSG_NOSIGNAL)) }
                    close(fd)
                }
            }
            let port = proxied ? frontPort : backPort
            var buffer = [UInt8](repeating: 2, count: 100)
            let start = Deadline.now
            for _ in 0..<connections {
                let fd = try Loopback.connect(.v4, port: port)
                _ = buffer.withUnsafeBytes { send(fd, $0.baseAddress, 100, Int32(MSG_NOSIGNAL)) }
                while buffer.withUnsafeMutableBytes({ recv(fd, $0.baseAddress, 100, 0) }) > 0 {}
                close(fd)
            }
            let seconds = elapsed(since: start)
            pthread_join(server, nil)
            if proxied { _ = events.wait(count: connections, seconds: 5) }
            proxy?.stopAndJoin()
            let label = proxied ? "through the relay" : "direct"
            print("connections \(label): \(Int(Double(connections) / seconds))/s (\(connections) sequential)")
        }
    }

    /// RELAY_BENCH_SERVE=listenPort:backendPort:seconds[:loops[:transfer]] runs a miniature
    /// tcpproxy on 127.0.0.1:listenPort to 127.0.0.1:backendPort for that long, with one loop
    /// per SO_REUSEPORT listener, so external tools (iperf3, wrk) can compare it with HAProxy
    /// and friends.
    @Test("serve a miniature proxy for external load generators")
    func serve() throws {
        guard let spec = getenv("RELAY_BENCH_SERVE").map({ String(cString: $0) }) else { return }
        let parts = spec.split(separator: ":").map(String.init)
        guard parts.count >= 3, let listenPort = UInt16(parts[0]), let backendPort = UInt16(parts[1]),
            let seconds = Int(parts[2])
        else { return }
        let loops = parts.count > 3 ? Int(parts[3]) ?? 1 : 1
        let mode = parts.count > 4 ? parts[4] : "automatic"
        let transfer: RelayTransfer = mode == "copy" ? .copy : mode == "splice" ? .splice : .automatic
        let backend = Endpoint(address: .loopbackV4, port: backendPort)
        var threads: [EventLoopThread] = []
        var listeners: [Int32] = []
        for _ in 0..<loops {
            let fd = try Socket.tcp(.v4)
            var one: Int32 = 1
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, socklen_t(MemoryLayout<Int32>.size))
            try Socket.bind(fd, to: .loopbackV4, port: listenPort)
            try Socket.listen(fd, backlog: 1024)
            listeners.append(fd)
            let events = RelayEvents()
            threads.append(
                try EventLoopThread.start { loop in
                    let proxy = MiniProxy(
                        loop: loop, backend: backend, configuration: RelayConfiguration(transfer: transfer),
                        events: events
                    )
                    try? Acceptor(loop: loop, listener: fd, delegate: proxy).start()
                })
        }
        print("serving 127.0.0.1:\(listenPort) -> :\(backendPort) with \(loops) loop(s) for \(seconds) s")
        sleep(UInt32(seconds))
        for thread in threads { thread.stopAndJoin() }
        listeners.forEach { close($0) }
    }

    @Test("memory of idle relays")
    func idleMemory() throws {
        let count = 4000
        let thread = try EventLoopThread.start()
        defer { thread.stopAndJoin() }
        let events = RelayEvents()
        var pairs: [(Int32, Int32, Int32, Int32)] = []
        for _ in 0..<count {
            let (client, relayClient) = try Loopback.pair(.v4)
            let (relayServer, server) = try Loopback.pair(.v4)
            pairs.append((client, relayClient, relayServer, server))
        }
        defer {
            for p in pairs {
                close(p.0)
                close(p.3)
            }
        }
        let objectSize = Locked(0)
        // Warm up the loop's tables, then measure.
        let before = thread.sync { loop -> Int in
            let (a, b) = try! Loopback.pair(.v4)
            let (c, d) = try! Loopback.pair(.v4)
            let relay = RelayConnection(loop: loop, client: b, server: c, delegate: events)
            relay.start()
            relay.cancel()
            close(a)
            close(d)
            return residentBytes()
        }
        let slice = pairs
        let after = thread.sync { loop -> Int in
            for p in slice {
                let relay = RelayConnection(
                    loop: loop, client: p.1, server: p.2,
                    configuration: RelayConfiguration(transfer: .automatic, idleTimeout: .seconds(300)),
                    delegate: events
                )
                relay.start()
                objectSize.withLock { $0 = malloc_usable_size(Unmanaged.passUnretained(relay).toOpaque()) }
            }
            return residentBytes()
        }
        let stats = thread.sync { $0.relayStatistics }
        print("idle relays: \(stats.relays), buffers in use \(stats.buffersInUse), pipes in use \(stats.pipesInUse)")
        print("relay object: \(objectSize.withLock { $0 }) bytes (malloc_usable_size)")
        print("resident growth: \((after - before) / count) bytes per idle relay (\(count) relays)")
    }
}

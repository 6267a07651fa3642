#if canImport(Glibc)
import Glibc
#endif
import GatewayKit
import Loop

/// inetd mode, for every daemon: the one connection on standard input, as inetd, tcpserver,
/// tcpproxy's `exec` or a systemd socket unit with `Accept=yes` hand it over.
public enum Inetd {
    /// True when standard input is a connected stream socket.
    public static func stdinIsSocket() -> Bool {
        var type: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(0, SOL_SOCKET, SO_TYPE, &type, &length) == 0, type == Int32(SOCK_STREAM.rawValue) else {
            return false
        }
        return (try? Socket.remoteEndpoint(0)) != nil
    }

    /// The client's and the local address of the connection on standard input.
    public static func endpoints() throws(StartError) -> (peer: Endpoint, local: Endpoint) {
        do {
            let local = try Socket.localEndpoint(0)
            return (try Socket.remoteEndpoint(0), local)
        } catch { throw StartError("standard input is not a connected socket: \(error)") }
    }

    /// Takes the connection on standard input for a session: a duplicate, non-blocking with
    /// TCP_NODELAY, while standard input and output become /dev/null (so that a program the
    /// session starts, or a stray write, cannot reach the client behind its back).
    public static func takeClient() -> Int32 {
        let client = dup(0)
        let null = open("/dev/null", O_RDWR)
        if null >= 0 {
            dup2(null, 0)
            dup2(null, 1)
            if null > 1 { close(null) }
        }
        Socket.setNonBlocking(client, true)
        Socket.setNoDelay(client)
        return client
    }

    /// Runs `loop` until `idle` says the session (and any program it left) is done.
    public static func run(_ loop: EventLoop, until idle: () -> Bool) {
        while !idle() { loop.runOnce(timeout: .milliseconds(500)) }
    }
}

extension Inetd {
    /// The inetd mode's whole life, for every daemon: serve as `credential`, make a loop, take
    /// the client on standard input, run the session `machine` makes (given its number) with
    /// `factory`'s worker until it and any program it left are done, flush the log, exit 0.
    /// `fail` reports what stops it from starting (and exits).
    public static func serve<Factory: SessionFactory>(
        _ factory: Factory, peer: Endpoint, local: Endpoint, credential: Credential?, log: DaemonLog,
        names: ClientNameSource?, fail: (String) -> Never, machine: (UInt64) -> any SessionMachine
    ) -> Never {
        do { try Credential.become(credential, chroot: nil) } catch { fail(error.description) }
        let loop: EventLoop
        do { loop = try EventLoop() } catch { fail("unable to start an event loop: \(error)") }
        let client = takeClient()
        let worker = SessionWorker(loop: loop, log: log, factory: factory)
        let id = ConnectionNumbers.next()
        worker.serve(
            SessionDriver(
                host: worker, machine: machine(id), client: client, peer: peer, id: id, names: names, local: local))
        run(loop) { worker.isIdle }
        _ = log.flush(timeout: .seconds(2))
        exit(0)
    }
}

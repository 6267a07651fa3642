#if canImport(Glibc)
import Glibc
#endif
import AccessRules
import CDB
import GatewayKit

/// `tcpserver [options] host port program [arg ...]`: djb's superserver.
///
/// The parent only accepts and reaps: it polls the listening socket and a signalfd for
/// SIGCHLD and SIGTERM, forks a child per connection and stops accepting while `-c` children
/// run (or, on descriptor exhaustion, for a moment). Everything that may be slow (DNS, ident,
/// reading the rules) happens in the child, as in the original, so one slow client never
/// delays the others.
public enum TCPServerCommand {
    static let fatal = "tcpserver: fatal: "
    static let drop = "tcpserver: warning: dropping connection, "

    public static func main(_ arguments: [[UInt8]] = Arguments.raw) -> Never {
        if arguments.count == 2 && arguments[1] == Array("--help".utf8) {
            try? FD.writeAll(1, Help.tcpserver)
            exit(0)
        }
        let options: TCPServerOptions
        do {
            options = try TCPServerOptions.parse(Array(arguments.dropFirst()), environment: Environment.get)
        } catch {
            for line in error.lines { Stderr.line(line) }
            exit(100)
        }
        if options.verbosity == 0 { Stderr.enabled = false }
        TCPServer(options: options).run()
    }
}

/// The accepting parent.
final class TCPServer {
    let options: TCPServerOptions
    var children: UInt64 = 0
    let inherited = Environment.current()

    init(options: TCPServerOptions) {
        self.options = options
    }

    func status() {
        guard options.verbosity >= 2 else { return }
        Stderr.line("tcpserver: status: \(children)/\(options.limit)")
    }

    func port() -> UInt16 {
        let p = options.port
        let scanned = TCPServerOptions.scanNumber(p)
        if scanned.digits == p.utf8.count { return UInt16(truncatingIfNeeded: scanned.value) }
        guard let port = ServiceNames.port(of: p) else {
            Stderr.die(111, TCPServerCommand.fatal + "unable to figure out port number for \(p)")
        }
        return port
    }

    /// The address to listen on: `0` or empty is every address (IPv6 and IPv4, or IPv4 only
    /// with -4); a literal is used as is; a name is looked up in DNS as djb's dns_ip4/dns_ip6.
    func address() -> IPAddress {
        let host = options.host
        if host.isEmpty || host == "0" { return options.ipv4Only ? .anyV4 : .anyV6 }
        if let literal = IPAddress(host) { return literal.v4FromMapped ?? literal }
        let found: [IPAddress]
        do {
            found = try DNSResolver().addresses(of: host, family: options.ipv4Only ? .ipv4 : .any)
        } catch {
            Stderr.die(
                111, TCPServerCommand.fatal + "temporarily unable to figure out IP address for \(host): \(error)")
        }
        guard let first = found.first else { Stderr.die(111, TCPServerCommand.fatal + "no IP address for \(host)") }
        return first.v4FromMapped ?? first
    }

    func listen() -> Int32 {
        let fatal = TCPServerCommand.fatal
        var address = address()
        let localPort = port()
        var scope: UInt32 = 0
        if let name = options.interface { scope = Socket.interfaceIndex(name) }
        var fd: Int32
        do {
            fd = try Socket.tcp(address.family)
        } catch {
            // No IPv6 on this host: serve IPv4 as the IPv6 variant does.
            guard address == .anyV6, error.errno == EAFNOSUPPORT || error.errno == EINVAL,
                let v4 = try? Socket.tcp(.v4)
            else { Stderr.die(111, fatal + "unable to create socket: \(error)") }
            fd = v4
            address = .anyV4
        }
        do { try Socket.bind(fd, to: address, port: localPort, scopeID: scope) } catch {
            Stderr.die(111, fatal + "unable to bind: \(error)")
        }
        do { try Socket.listen(fd, backlog: Int32(clamping: options.backlog)) } catch {
            Stderr.die(111, fatal + "unable to listen: \(error)")
        }
        return fd
    }

    func run() -> Never {
        let fatal = TCPServerCommand.fatal
        signal(SIGPIPE, SIG_IGN)
        let signals: SignalQueue
        do { signals = try SignalQueue([SIGCHLD, SIGTERM]) } catch {
            Stderr.die(111, fatal + "unable to catch signals: \(error)")
        }
        let listener = listen()
        let local: Endpoint
        do { local = try Socket.localEndpoint(listener) } catch {
            Stderr.die(111, fatal + "unable to get local address: \(error)")
        }
        if options.gid != 0 {
            do { try Privileges.setGroup(UInt32(truncatingIfNeeded: options.gid)) } catch {
                Stderr.die(111, fatal + "unable to set gid: \(error)")
            }
        }
        if options.uid != 0 {
            do { try Privileges.setUser(UInt32(truncatingIfNeeded: options.uid)) } catch {
                Stderr.die(111, fatal + "unable to set uid: \(error)")
            }
        }
        if options.printPort { try? FD.writeAll(1, "\(local.port)\n") }
        // The original closes stdin and stdout; /dev/null keeps 0 and 1 from being reused.
        let null = open("/dev/null", O_RDWR)
        if null >= 0 {
            dup2(null, 0)
            dup2(null, 1)
            if null > 1 { close(null) }
        }
        Socket.setNonBlocking(listener, true)
        status()

        var pausedUntil: Deadline?
        var fds = [pollfd](repeating: pollfd(), count: 2)
        while true {
            if let p = pausedUntil, p.hasPassed { pausedUntil = nil }
            let accepting = children < options.limit && pausedUntil == nil
            fds[0] = pollfd(fd: signals.fd, events: Int16(POLLIN), revents: 0)
            fds[1] = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
            var timeout: Int32 = -1
            if let p = pausedUntil {
                timeout = Int32(clamping: max(1, p.remaining.components.attoseconds / 1_000_000_000_000_000 + 1))
            }
            let n = poll(&fds, accepting ? 2 : 1, timeout)
            if n < 0 { continue }
            if fds[0].revents != 0 {
                for s in signals.drain() {
                    if s == SIGTERM { exit(0) }
                    reap()
                }
            }
            if accepting && fds[1].revents != 0 {
                pausedUntil = acceptAll(listener, signals: signals)
            }
        }
    }

    /// Reaps every finished child, logging `end PID status WSTAT`.
    func reap() {
        var status: Int32 = 0
        while true {
            let pid = waitpid(-1, &status, WNOHANG)
            if pid <= 0 { return }
            if options.verbosity >= 2 { Stderr.line("tcpserver: end \(pid) status \(status)") }
            if children > 0 { children -= 1 }
            self.status()
        }
    }

    // MARK: - Out of descriptors

    /// When the next "accepting paused" warning may go out, and the pauses not reported since
    /// the last one. The original says nothing (and retries accept at once, using a whole
    /// core): clients waiting in the listen queue would be the only sign.
    var nextPauseReport: Deadline?
    var pausesNotReported = 0

    /// At most one warning every 10 s however long the shortage lasts, as tcpproxy's workers.
    func reportPause(_ error: SystemError) {
        if let next = nextPauseReport, !next.hasPassed {
            pausesNotReported += 1
            return
        }
        let more = pausesNotReported > 0 ? " (\(pausesNotReported) more pauses since the last report)" : ""
        Stderr.line("tcpserver: warning: accepting paused for a moment: \(error)\(more)")
        nextPauseReport = .after(.seconds(10))
        pausesNotReported = 0
    }

    /// Accepts while connections wait and the limit allows. Returns a deadline to pause
    /// accepting until when descriptors or memory ran out.
    func acceptAll(_ listener: Int32, signals: SignalQueue) -> Deadline? {
        let fastSpawn = TCPServerConnection.canSpawnFromParent(options)
        while children < options.limit {
            let t: Int32
            let peer: Endpoint
            do {
                (t, peer) = try Socket.accept(listener)
            } catch {
                // EAGAIN, or a connection that failed before we took it: nothing to wait for.
                guard error.isDescriptorShortage else { return nil }
                reportPause(error)
                return .after(.milliseconds(100))
            }
            children += 1
            status()
            let connection = TCPServerConnection(options: options, socket: t, peer: peer, inherited: inherited)
            var banner = TCPServerConnection.Banner.notSent
            if fastSpawn, connection.spawnFromParent(banner: &banner, signals: [SIGCHLD, SIGTERM]) != nil {
                close(t)
                continue
            }
            let pid = fork()
            if pid == 0 {
                close(listener)
                signals.resetForChild()
                signal(SIGPIPE, SIG_IGN)  // until the exec (serve)
                connection.serve(banner: banner)
            }
            if pid < 0 {
                Stderr.line(TCPServerCommand.drop + "unable to fork: \(SystemError.current)")
                children -= 1
                status()
            }
            close(t)
        }
        return nil
    }
}

#if canImport(Glibc)
import Glibc
#endif
import AccessRules
import GatewayKit

/// What tcpserver's child does for one connection, in the original's order: log, banner,
/// local and remote names, ident, rules, log, then exec the program on the socket.
struct TCPServerConnection {
    let options: TCPServerOptions
    let socket: Int32
    let peer: Endpoint
    /// The environment the program inherits, read once by the parent.
    let inherited: [[UInt8]]

    func die(_ message: String) -> Never {
        Stderr.die(111, TCPServerCommand.drop + message)
    }

    func die(_ parts: [UInt8]...) -> Never {
        Stderr.die(111, Array(TCPServerCommand.drop.utf8) + parts.joined())
    }

    /// Why the setup stopped: the message the child prints before exiting 111.
    struct Failure: Error {
        let message: [UInt8]
    }

    /// How the setup runs: in the forked child (as the original: it may block on DNS and
    /// ident, and dies with the original's messages), or in the parent for the fast path,
    /// which needs no lookups and gives up (to the child path) on anything unusual.
    enum Place {
        case child
        case parent
    }

    /// What the parent's fast path did with the banner before it left the connection to the
    /// child path: the child must neither send it twice nor try again after a failure (a
    /// second write to a reset connection says "broken pipe" where the original, which writes
    /// once, says "connection reset").
    enum Banner {
        case notSent
        case sent
        case failed(Failure)

        var isSent: Bool {
            if case .sent = self { return true }
            return false
        }
    }

    /// Everything the program gets, and what the `ok`/`deny` line says.
    struct Prepared {
        var environment: ChildEnvironment
        var deny: Bool
        var v4: Bool
        var localHost: [UInt8]?
        var localIP: String
        var localPort: String
        var remoteHost: [UInt8]?
        var remoteIP: String
        var remoteInfo: [UInt8]?
        var remotePort: String
    }

    /// The client's address as tcpserver shows it: IPv4 clients (native or mapped) get exactly
    /// the IPv4 tcpserver's view; IPv6 clients the IPv6 variant's (PROTO=TCP6, TCP6*).
    func shown(_ address: IPAddress) -> (address: IPAddress, v4: Bool) {
        var a = address
        if options.forceIPv6 { a = a.family == .v4 ? a.v4Mapped : a }
        let v4 = !options.forceIPv6 && (a.family == .v4 || a.isV4Mapped)
        return (v4 ? a.unmapped : a, v4)
    }

    /// The original's steps from socket options to the rules, without the logging and exec.
    func prepare(_ place: Place, bannerSent: Bool) throws(Failure) -> Prepared {
        let (remote, v4) = shown(peer.address)
        let remoteIP = remote.description
        if options.killIPOptions && peer.address.family == .v4 { Socket.killIPOptions(socket) }
        if !options.delay { Socket.setNoDelay(socket) }
        if !options.banner.isEmpty && !bannerSent {
            do { try FD.writeAll(socket, options.banner) } catch {
                throw Failure(message: Array("unable to print banner: \(error)".utf8))
            }
        }
        let localEnd: Endpoint
        do { localEnd = try Socket.localEndpoint(socket) } catch {
            throw Failure(message: Array("unable to get local address: \(error)".utf8))
        }
        let local = shown(localEnd.address).address
        let localIP = local.description
        let localPort = String(localEnd.port)
        let remotePort = String(peer.port)

        var resolver: DNSResolver? = nil
        func dns() -> DNSResolver? {
            if place == .child && resolver == nil { resolver = try? DNSResolver() }
            return resolver
        }
        let localHost: [UInt8]? = options.localHost ?? lookupName(local, dns())

        var env = ChildEnvironment(base: inherited)
        env.set("PROTO", v4 ? "TCP" : "TCP6")
        env.set("TCPLOCALIP", localIP)
        env.set("TCPLOCALPORT", localPort)
        env.set(Array("TCPLOCALHOST".utf8), localHost)
        if !v4 {
            env.set("TCP6LOCALIP", localIP)
            env.set("TCP6LOCALPORT", localPort)
            env.set(Array("TCP6LOCALHOST".utf8), localHost)
            if localEnd.scopeID != 0, let name = Socket.interfaceName(localEnd.scopeID) {
                env.set("TCP6INTERFACE", name)
            }
        }
        env.set("TCPREMOTEIP", remoteIP)
        env.set("TCPREMOTEPORT", remotePort)

        var remoteHost: [UInt8]? = nil
        if options.remoteHost, let name = lookupName(remote, dns()), !name.isEmpty {
            if !options.paranoid || confirms(name: name, address: remote, dns()) { remoteHost = name }
        }
        env.set(Array("TCPREMOTEHOST".utf8), remoteHost)
        if !v4 {
            env.set("TCP6REMOTEIP", remoteIP)
            env.set("TCP6REMOTEPORT", remotePort)
            env.set(Array("TCP6REMOTEHOST".utf8), remoteHost)
        }

        var remoteInfo: [UInt8]? = nil
        // -t 0 leaves no time for an answer: the original's outcome then depends on a race
        // (an identd on the same host may just make it); ours is always "no answer".
        if options.remoteInfo && options.identTimeout > 0 && place == .child {
            // The original keeps the answer in a C string: it ends at a NUL byte.
            remoteInfo = try? IdentClient.remoteInfoBytes(
                remote: peer.address.unmapped, remotePort: peer.port, local: localEnd.address.unmapped,
                localPort: localEnd.port, timeout: .seconds(Int64(clamping: options.identTimeout)),
                scopeID: peer.scopeID
            ).prefix { $0 != 0 }.map { $0 }
        }
        env.set(Array("TCPREMOTEINFO".utf8), remoteInfo)
        if !v4 { env.set(Array("TCP6REMOTEINFO".utf8), remoteInfo) }

        var deny = false
        if let path = options.rules {
            func unreadable(_ e: Int32) -> Failure {
                Failure(message: Array("unable to read ".utf8) + path + Array(": \(SystemError.message(e))".utf8))
            }
            let client = RuleClient(ip: Array(remoteIP.utf8), host: remoteHost, info: remoteInfo)
            switch RulesCheck.check(client, in: path) {
            case .missing:
                if !options.allowMissingRules { throw unreadable(ENOENT) }
            case .noRule:
                break
            case .denied:
                deny = true
            case .allowed(_, let variables):
                for variable in variables { env.set(variable.name, variable.value) }
            case .unreadable(let e):
                throw unreadable(e)
            }
        }
        return Prepared(
            environment: env, deny: deny, v4: v4, localHost: localHost, localIP: localIP, localPort: localPort,
            remoteHost: remoteHost, remoteIP: remoteIP, remoteInfo: remoteInfo, remotePort: remotePort)
    }

    /// `tcpserver: pid N from IP`.
    func logStart(pid: Int32) {
        if options.verbosity >= 2 { Stderr.line("tcpserver: pid \(pid) from \(shown(peer.address).address)") }
    }

    /// `tcpserver: ok|deny PID localhost:localip:localport remotehost:remoteip:remoteinfo:remoteport`.
    func logDecision(_ p: Prepared, pid: Int32) {
        guard options.verbosity >= 2 && Stderr.enabled else { return }
        let c = UInt8(ascii: ":")
        let sp = UInt8(ascii: " ")
        let v4 = p.v4
        var line = Array("tcpserver: ".utf8)
        line += safe(p.deny ? "deny" : "ok", v4) + [sp] + safe(String(pid), v4) + [sp]
        line += (p.localHost.map { safe($0, v4) } ?? []) + [c] + safe(p.localIP, v4) + [c] + safe(p.localPort, v4)
        line += [sp] + (p.remoteHost.map { safe($0, v4) } ?? []) + [c] + safe(p.remoteIP, v4) + [c]
        line += (p.remoteInfo.map { safe($0, v4) } ?? []) + [c] + safe(p.remotePort, v4) + [10]
        try? FD.writeAll(2, line)
    }

    /// The child: the original's whole sequence, ending in exec or exit. SIGPIPE stays
    /// ignored until the exec, as in the original: a banner to a client that has gone, or a
    /// log line to a closed standard error, is an error to report, not a silent death.
    func serve(banner: Banner = .notSent) -> Never {
        let pid = getpid()
        logStart(pid: pid)
        let prepared: Prepared
        if case .failed(let failure) = banner { die(failure.message) }
        do { prepared = try prepare(.child, bannerSent: banner.isSent) } catch { die(error.message) }
        logDecision(prepared, pid: pid)
        if prepared.deny { exit(100) }
        if socket != 0 && dup2(socket, 0) < 0 { die("unable to set up descriptors: \(SystemError.current)") }
        if dup2(0, 1) < 0 { die("unable to set up descriptors: \(SystemError.current)") }
        if socket > 1 { close(socket) }
        signal(SIGPIPE, SIG_DFL)
        let failure = ProgramExec.exec(options.program, environment: prepared.environment.bytes)
        die(Array("unable to run ".utf8), options.program[0], Array(": \(failure)".utf8))
    }

    /// Whether the parent may start the program itself: nothing to look up over the network
    /// (-H, -R and -l name), so nothing can block the accept loop.
    static func canSpawnFromParent(_ options: TCPServerOptions) -> Bool {
        !options.remoteHost && !options.remoteInfo && options.localHost != nil
    }

    /// The fast path: prepare in the parent and fork a child that only execs what was
    /// prepared (`ProgramSpawn`). Returns the program's pid, or nil with `banner` saying what
    /// became of the banner, when the child path must take over (deny, unreadable rules, a
    /// banner that could not be sent): that path reproduces the original's messages and exit
    /// codes exactly.
    func spawnFromParent(banner: inout Banner, signals: [Int32]) -> Int32? {
        let prepared: Prepared
        do { prepared = try prepare(.parent, bannerSent: false) } catch {
            let bannerFailed = error.message.starts(with: Array("unable to print banner".utf8))
            banner = bannerFailed ? .failed(error) : options.banner.isEmpty ? .notSent : .sent
            return nil
        }
        banner = options.banner.isEmpty ? .notSent : .sent
        if prepared.deny { return nil }
        guard ProgramExec.canRun(options.program[0]),
            let pid = ProgramSpawn.spawn(
                options.program, environment: prepared.environment.bytes, stdinAndStdout: socket,
                resetSignals: signals)
        else { return nil }
        logStart(pid: pid)
        logDecision(prepared, pid: pid)
        return pid
    }

    /// The PTR name of an address, nil when there is none or DNS fails.
    func lookupName(_ address: IPAddress, _ resolver: DNSResolver?) -> [UInt8]? {
        guard let resolver, let name = try? resolver.name(for: address) else { return nil }
        return Array(name.utf8)
    }

    /// -p: the name's own addresses must include the client's.
    func confirms(name: [UInt8], address: IPAddress, _ resolver: DNSResolver?) -> Bool {
        guard let resolver,
            let found = try? resolver.addresses(
                of: String(decoding: name, as: UTF8.self), family: address.family == .v4 ? .ipv4 : .ipv6)
        else { return false }
        return found.contains { $0.unmapped == address.unmapped }
    }

    /// djb's safecats: at most 100 bytes, then `...`; bytes outside `!`..`~`, and `%`, become
    /// `?`; so does `:` for IPv4 clients (the IPv6 variant keeps colons, which its addresses need).
    func safe(_ text: String, _ v4: Bool) -> [UInt8] { safe(Array(text.utf8), v4) }

    func safe(_ bytes: [UInt8], _ v4: Bool) -> [UInt8] {
        var out: [UInt8] = []
        for b in bytes.prefix(100) {
            let odd = b < 33 || b > 126 || b == UInt8(ascii: "%") || (v4 && b == UInt8(ascii: ":"))
            out.append(odd ? UInt8(ascii: "?") : b)
        }
        return bytes.count >= 100 ? out + Array("...".utf8) : out
    }
}

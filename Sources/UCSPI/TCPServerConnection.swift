#if canImport(Glibc)
import Glibc
#endif
import AccessRules
import CDB
import GatewayKit

/// What tcpserver's child does for one connection, in the original's order: log, banner,
/// local and remote names, ident, rules, log, then exec the program on the socket.
struct TCPServerConnection {
    let options: TCPServerOptions
    let socket: Int32
    let peer: Endpoint

    func die(_ message: String) -> Never {
        Stderr.die(111, TCPServerCommand.drop + message)
    }

    func die(_ parts: [UInt8]...) -> Never {
        Stderr.die(111, Array(TCPServerCommand.drop.utf8) + parts.joined())
    }

    func serve() -> Never {
        // IPv4 clients (native or mapped) get exactly the IPv4 tcpserver's view; IPv6 clients
        // the IPv6 variant's (PROTO=TCP6 and the TCP6* variables).
        var remote = peer.address
        if options.forceIPv6 { remote = remote.family == .v4 ? remote.v4Mapped : remote }
        let v4 = !options.forceIPv6 && (remote.family == .v4 || remote.isV4Mapped)
        if v4 { remote = remote.unmapped }
        let remoteIP = remote.description
        let pid = getpid()
        if options.verbosity >= 2 { Stderr.line("tcpserver: pid \(pid) from \(remoteIP)") }

        if options.killIPOptions && peer.address.family == .v4 { Socket.killIPOptions(socket) }
        if !options.delay { Socket.setNoDelay(socket) }
        if !options.banner.isEmpty {
            do { try FD.writeAll(socket, options.banner) } catch { die("unable to print banner: \(error)") }
        }
        let localEnd: Endpoint
        do { localEnd = try Socket.localEndpoint(socket) } catch { die("unable to get local address: \(error)") }
        var local = localEnd.address
        if options.forceIPv6 { local = local.family == .v4 ? local.v4Mapped : local }
        if v4 { local = local.unmapped }
        let localIP = local.description
        let localPort = String(localEnd.port)
        let remotePort = String(peer.port)

        var resolver: DNSResolver? = nil
        func dns() -> DNSResolver? {
            if resolver == nil { resolver = try? DNSResolver() }
            return resolver
        }
        let localHost: [UInt8]? = options.localHost ?? lookupName(local, dns())

        var env = ChildEnvironment()
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
        if options.remoteInfo {
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
            do {
                let file = try CDBFile(path: path)
                let client = RuleClient(ip: Array(remoteIP.utf8), host: remoteHost, info: remoteInfo)
                do {
                    if let rule = try RuleLookup.find(client, in: file.reader) {
                        let decision = rule.decision
                        deny = decision.deny
                        for variable in decision.environment { env.set(variable.name, variable.value) }
                    }
                } catch {
                    let e = SystemError.message(error == .empty ? EINVAL : EPROTO)
                    die(Array("unable to read ".utf8), path, Array(": \(e)".utf8))
                }
            } catch {
                if error.errno != ENOENT || !options.allowMissingRules {
                    die(Array("unable to read ".utf8), path, Array(": \(SystemError.message(error.errno))".utf8))
                }
            }
        }

        if options.verbosity >= 2 {
            let c = UInt8(ascii: ":")
            let sp = UInt8(ascii: " ")
            var line = Array("tcpserver: ".utf8)
            line += safe(deny ? "deny" : "ok", v4) + [sp] + safe(String(pid), v4) + [sp]
            line += (localHost.map { safe($0, v4) } ?? []) + [c] + safe(localIP, v4) + [c] + safe(localPort, v4) + [sp]
            line += (remoteHost.map { safe($0, v4) } ?? []) + [c] + safe(remoteIP, v4) + [c]
            line += (remoteInfo.map { safe($0, v4) } ?? []) + [c] + safe(remotePort, v4) + [10]
            if Stderr.enabled { try? FD.writeAll(2, line) }
        }
        if deny { exit(100) }

        if socket != 0 && dup2(socket, 0) < 0 { die("unable to set up descriptors: \(SystemError.current)") }
        if dup2(0, 1) < 0 { die("unable to set up descriptors: \(SystemError.current)") }
        if socket > 1 { close(socket) }
        let failure = ProgramExec.exec(options.program, environment: env.bytes)
        die(Array("unable to run ".utf8), options.program[0], Array(": \(failure)".utf8))
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

#if canImport(Glibc)
import Glibc
#endif
import GatewayKit

/// A user and group to serve as.
public struct Credential: Hashable, Sendable, CustomStringConvertible {
    public let uid: UInt32
    public let gid: UInt32
    public var description: String { "uid \(uid) gid \(gid)" }

    /// The daemon's default when nothing is named (Zekoll's -1/-2).
    public static let nobody = Credential(uid: 65534, gid: 65534)
}

/// Whom tcpproxy serves as, decided once the configuration is known.
enum CredentialPlan {
    /// Not root: keep our ids (and just chroot if asked).
    case unchanged
    /// -u/-g: the whole daemon becomes this user (spreadspace's way).
    case single(Credential)
    /// Root without -u: listeners grouped by the user their handler names (65534 by default),
    /// one worker process each; root keeps only the listeners, so it can still remove the pid
    /// file and bind new privileged ports on reload.
    case perCredential([Credential: [Int32]])

    /// -u/-g win; otherwise each handler's `uid`, `gid`, `user` (65534 when none is named).
    static func make(
        _ options: TCPProxyOptions, _ configuration: ProxyConfiguration, listeners: [ProxyListener], isRoot: Bool
    ) throws(ProxyStartError) -> CredentialPlan {
        guard isRoot else { return .unchanged }
        if let name = options.username {
            guard let user = UserDatabase.user(name) else { throw ProxyStartError("unknown user \(name)") }
            var gid = user.gid
            if let group = options.groupname {
                guard let g = UserDatabase.group(group) else { throw ProxyStartError("unknown group \(group)") }
                gid = g
            }
            return .single(Credential(uid: user.uid, gid: gid))
        }
        var groups: [Credential: [Int32]] = [:]
        for listener in listeners {
            let handler = configuration.services[listener.service].handlers[listener.handler]
            groups[try credential(of: handler, configuration.path), default: []].append(listener.fd)
        }
        return .perCredential(groups)
    }

    static func credential(of handler: ProxyHandler, _ path: String) throws(ProxyStartError) -> Credential {
        var entry: UserEntry?
        if let name = handler.user {
            guard let user = UserDatabase.user(name) else {
                throw ProxyStartError("\(path):\(handler.line): unknown user \(name)")
            }
            entry = user
        }
        return Credential(uid: handler.uid ?? entry?.uid ?? 65534, gid: handler.gid ?? entry?.gid ?? 65534)
    }

    /// chroot (if asked) and switch to `credential` for good.
    static func become(_ credential: Credential?, chroot root: String?) throws(ProxyStartError) {
        if let root {
            do { try Daemon.chroot(root) } catch { throw ProxyStartError("unable to chroot to \(root): \(error)") }
        }
        guard let credential else { return }
        do { try Privileges.setGroup(credential.gid) } catch {
            throw ProxyStartError("unable to set gid \(credential.gid): \(error)")
        }
        do { try Privileges.setUser(credential.uid) } catch {
            throw ProxyStartError("unable to set uid \(credential.uid): \(error)")
        }
    }
}

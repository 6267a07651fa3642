#if canImport(Glibc)
import Glibc
#endif
import Gateway
import GatewayKit

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
    ) throws(StartError) -> CredentialPlan {
        guard isRoot else { return .unchanged }
        if let name = options.username {
            guard let user = UserDatabase.user(name) else { throw StartError("unknown user \(name)") }
            var gid = user.gid
            if let group = options.groupname {
                guard let g = UserDatabase.group(group) else { throw StartError("unknown group \(group)") }
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

    static func credential(of handler: ProxyHandler, _ path: String) throws(StartError) -> Credential {
        var entry: UserEntry?
        if let name = handler.user {
            guard let user = UserDatabase.user(name) else {
                throw StartError("\(path):\(handler.line): unknown user \(name)")
            }
            entry = user
        }
        return Credential(uid: handler.uid ?? entry?.uid ?? 65534, gid: handler.gid ?? entry?.gid ?? 65534)
    }
}

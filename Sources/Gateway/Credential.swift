#if canImport(Glibc)
import Glibc
#endif
import GatewayKit

/// A user and group to serve as.
public struct Credential: Hashable, Sendable, CustomStringConvertible {
    public let uid: UInt32
    public let gid: UInt32
    public var description: String { "uid \(uid) gid \(gid)" }

    public init(uid: UInt32, gid: UInt32) {
        self.uid = uid
        self.gid = gid
    }

    /// The default when nothing is named (Zekoll's -1/-2).
    public static let nobody = Credential(uid: 65534, gid: 65534)

    /// chroot (if asked) and switch to `credential` for good: groups to just its gid, then
    /// gid, then uid (djb's prot_gid and prot_uid).
    public static func become(_ credential: Credential?, chroot root: String?) throws(StartError) {
        if let root {
            do { try Daemon.chroot(root) } catch { throw StartError("unable to chroot to \(root): \(error)") }
        }
        guard let credential else { return }
        do { try Privileges.setGroup(credential.gid) } catch {
            throw StartError("unable to set gid \(credential.gid): \(error)")
        }
        do { try Privileges.setUser(credential.uid) } catch {
            throw StartError("unable to set uid \(credential.uid): \(error)")
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif

/// A user from /etc/passwd.
public struct UserEntry: Equatable, Sendable {
    public var name: String
    public var uid: UInt32
    public var gid: UInt32
    public var home: String

    public init(name: String, uid: UInt32, gid: UInt32, home: String) {
        self.name = name
        self.uid = uid
        self.gid = gid
        self.home = home
    }
}

/// Users and groups read from /etc/passwd and /etc/group directly: the tools are static
/// binaries, where glibc's getpwnam would need its name-service modules.
public enum UserDatabase {
    /// Reads a whole small file; nil when it cannot be read.
    public static func readFile(_ path: String) -> [UInt8]? { try? FD.readWholeFile(path) }

    static func records(_ text: [UInt8]) -> [[String]] {
        text.split(separator: UInt8(ascii: "\n")).compactMap { line in
            guard line.first != UInt8(ascii: "#") else { return nil }
            return line.split(separator: UInt8(ascii: ":"), omittingEmptySubsequences: false)
                .map { String(decoding: $0, as: UTF8.self) }
        }
    }

    /// The user named `name` (or with that numeric uid) in passwd-format text.
    public static func user(_ name: String, in passwd: [UInt8]) -> UserEntry? {
        for f in records(passwd) where f.count >= 7 {
            guard f[0] == name || f[2] == name, let uid = UInt32(f[2]), let gid = UInt32(f[3]) else { continue }
            return UserEntry(name: f[0], uid: uid, gid: gid, home: f[5])
        }
        return nil
    }

    /// The gid of the group named `name` (or that number) in group-format text.
    public static func group(_ name: String, in groups: [UInt8]) -> UInt32? {
        for f in records(groups) where f.count >= 3 {
            if f[0] == name || f[2] == name, let gid = UInt32(f[2]) { return gid }
        }
        return UInt32(name)
    }

    public static func user(_ name: String, passwdPath: String = "/etc/passwd") -> UserEntry? {
        readFile(passwdPath).flatMap { user(name, in: $0) }
    }

    public static func group(_ name: String, groupPath: String = "/etc/group") -> UInt32? {
        guard let text = readFile(groupPath) else { return UInt32(name) }
        return group(name, in: text)
    }
}

/// Daemon chores: pid files, detaching, chroot.
public enum Daemon {
    /// Writes `pid\n` to `path` (replacing it).
    public static func writePidFile(_ path: String, pid: Int32 = getpid()) throws(SystemError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        if fd < 0 { throw SystemError.current }
        defer { close(fd) }
        try FD.writeAll(fd, "\(pid)\n")
    }

    /// Removes the pid file if it still holds our pid.
    public static func removePidFile(_ path: String) {
        guard let text = UserDatabase.readFile(path),
            Int32(String(decoding: text.prefix { $0 != 10 }, as: UTF8.self)) == getpid()
        else { return }
        unlink(path)
    }

    /// Detaches from the terminal: fork (the parent exits 0), setsid, chdir /, and standard
    /// input, output and error to /dev/null. Lines already logged are written first (for at
    /// most a second): the parent leaves with `_exit`, and the child does not write its
    /// parent's queued lines.
    public static func detach() throws(SystemError) {
        DaemonLog.flushAll(timeout: .seconds(1))
        let pid = fork()
        if pid < 0 { throw SystemError.current }
        if pid > 0 { _exit(0) }
        setsid()
        _ = chdir("/")
        let null = open("/dev/null", O_RDWR)
        if null >= 0 {
            dup2(null, 0)
            dup2(null, 1)
            dup2(null, 2)
            if null > 2 { close(null) }
        }
    }

    /// chroot to `path` and chdir to its root.
    public static func chroot(_ path: String) throws(SystemError) {
        if Glibc.chroot(path) != 0 { throw SystemError.current }
        if chdir("/") != 0 { throw SystemError.current }
    }
}

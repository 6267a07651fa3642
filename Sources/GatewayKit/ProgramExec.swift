#if canImport(Glibc)
import Glibc
#endif

/// Runs a program in place of the current process, as djb's pathexec: a name without `/` is
/// searched in $PATH (default `/bin:/usr/bin`), and the most telling errno is kept (the
/// first one that is not ENOENT).
public enum ProgramExec {
    /// Replaces the process image; returns only on failure, with the errno to report.
    public static func exec(_ argv: [String], environment: [[UInt8]], path: String? = Environment.get("PATH"))
        -> SystemError
    {
        guard let program = argv.first else { return SystemError(errno: ENOENT) }
        let candidates: [String]
        if program.contains("/") {
            candidates = [program]
        } else {
            let dirs = (path ?? "/bin:/usr/bin").split(separator: ":", omittingEmptySubsequences: false)
            candidates = dirs.map { $0.isEmpty ? program : "\($0)/\(program)" }
        }
        let cArgs = argv.map { strdup($0) } + [nil]
        let cEnv = environment.map { entry -> UnsafeMutablePointer<CChar>? in
            let p = UnsafeMutablePointer<CChar>.allocate(capacity: entry.count + 1)
            entry.withUnsafeBytes { UnsafeMutableRawPointer(p).copyMemory(from: $0.baseAddress!, byteCount: entry.count) }
            p[entry.count] = 0
            return p
        } + [nil]
        var saved: Int32 = ENOENT
        for candidate in candidates {
            execve(candidate, cArgs, cEnv)
            let e = errno
            if e != ENOENT && saved == ENOENT { saved = e }
        }
        return SystemError(errno: saved)
    }
}

/// Privilege changes as djb's prot_gid and prot_uid.
public enum Privileges {
    /// setgroups to just `gid`, then setgid.
    public static func setGroup(_ gid: UInt32) throws(SystemError) {
        var g = gid_t(gid)
        if setgroups(1, &g) != 0 { throw SystemError.current }
        if setgid(gid_t(gid)) != 0 { throw SystemError.current }
    }

    /// setuid.
    public static func setUser(_ uid: UInt32) throws(SystemError) {
        if setuid(uid_t(uid)) != 0 { throw SystemError.current }
    }
}

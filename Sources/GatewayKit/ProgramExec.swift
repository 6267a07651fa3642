#if canImport(Glibc)
import Glibc
#endif

/// Runs a program in place of the current process, as djb's pathexec: a name without `/` is
/// searched in $PATH (default `/bin:/usr/bin`), and the most telling errno is kept (the
/// first one that is not ENOENT).
public enum ProgramExec {
    /// Replaces the process image; returns only on failure, with the errno to report.
    public static func exec(
        _ argv: [[UInt8]], environment: [[UInt8]], path: [UInt8]? = Environment.bytes("PATH")
    ) -> SystemError {
        guard let program = argv.first else { return SystemError(errno: ENOENT) }
        let candidates: [[UInt8]]
        if program.contains(UInt8(ascii: "/")) {
            candidates = [program]
        } else {
            let dirs = (path ?? Array("/bin:/usr/bin".utf8)).split(
                separator: UInt8(ascii: ":"), omittingEmptySubsequences: false)
            candidates = dirs.map { $0.isEmpty ? program : Array($0) + [UInt8(ascii: "/")] + program }
        }
        let cArgs = argv.map(cString) + [nil]
        let cEnv = environment.map(cString) + [nil]
        var saved: Int32 = ENOENT
        for candidate in candidates {
            candidate.withCString { _ = execve($0, cArgs, cEnv) }
            let e = errno
            if e != ENOENT && saved == ENOENT { saved = e }
        }
        return SystemError(errno: saved)
    }

    /// A heap copy of `bytes` with a NUL, for execve (never freed: exec replaces us or we exit).
    static func cString(_ bytes: [UInt8]) -> UnsafeMutablePointer<CChar>? {
        let p = UnsafeMutablePointer<CChar>.allocate(capacity: bytes.count + 1)
        bytes.withUnsafeBytes { raw in
            if let base = raw.baseAddress { UnsafeMutableRawPointer(p).copyMemory(from: base, byteCount: raw.count) }
        }
        p[bytes.count] = 0
        return p
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

/// Starts a program as a new process without forking this one: posix_spawn, which glibc
/// implements with vfork semantics (no copy of our page tables, nothing of ours runs in the
/// child). For a daemon that starts a program per connection this is several times cheaper
/// than fork + exec from a large process.
public enum ProgramSpawn {
    /// Runs `argv` (PATH searched as by execvp) with `environment`, the socket as standard
    /// input and output, standard error inherited, every signal unblocked and `resetSignals`
    /// (and SIGPIPE) back to their defaults. Returns the pid, or nil when it could not start.
    public static func spawn(
        _ argv: [[UInt8]], environment: [[UInt8]], stdinAndStdout socket: Int32, resetSignals: [Int32]
    ) -> Int32? {
        guard let program = argv.first else { return nil }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, socket, 0)
        posix_spawn_file_actions_adddup2(&actions, socket, 1)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for s in resetSignals + [SIGPIPE] { sigaddset(&defaults, s) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let cArgs = argv.map(ProgramExec.cString) + [nil]
        let cEnv = environment.map(ProgramExec.cString) + [nil]
        defer {
            for p in cArgs { p?.deallocate() }
            for p in cEnv { p?.deallocate() }
        }
        var pid: pid_t = 0
        let r = program.withCString { posix_spawnp(&pid, $0, &actions, &attributes, cArgs, cEnv) }
        return r == 0 ? pid : nil
    }
}

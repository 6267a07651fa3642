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
        let cArgs = argv.map(cString) + [nil]
        let cEnv = environment.map(cString) + [nil]
        var errors = PathErrors()
        for candidate in candidates(for: program, path: path) {
            candidate.withCString { _ = execve($0, cArgs, cEnv) }
            errors.note(errno)
        }
        return errors.error
    }

    /// The files pathexec tries for `program`, in order: the name itself when it has a `/`,
    /// else each directory of `path` (default `/bin:/usr/bin`; an empty entry is the current
    /// directory) with the name appended. Every way Bastion starts a program uses this list.
    public static func candidates(for program: [UInt8], path: [UInt8]? = Environment.bytes("PATH")) -> [[UInt8]] {
        if program.contains(UInt8(ascii: "/")) { return [program] }
        return (path ?? Array("/bin:/usr/bin".utf8)).split(
            separator: UInt8(ascii: ":"), omittingEmptySubsequences: false
        ).map { $0.isEmpty ? program : Array($0) + [UInt8(ascii: "/")] + program }
    }

    /// pathexec's choice of the errno to report after every candidate failed: the first one
    /// that is not ENOENT (a program found but not executable says EACCES, not "file does not
    /// exist" from a later directory), else ENOENT.
    public struct PathErrors: Sendable {
        private var saved: Int32 = ENOENT
        public init() {}
        /// One candidate failed with `e`.
        public mutating func note(_ e: Int32) { if e != ENOENT && saved == ENOENT { saved = e } }
        /// The error to report.
        public var error: SystemError { SystemError(errno: saved) }
    }

    /// Whether `program` names an executable file (directly, or found in PATH), so that an
    /// exec is expected to work; a daemon checks this before its fast path, which cannot
    /// report exec failures the way the original does.
    public static func canRun(_ program: [UInt8], path: [UInt8]? = Environment.bytes("PATH")) -> Bool {
        candidates(for: program, path: path).contains { $0.withCString { access($0, X_OK) == 0 } }
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

/// Starts a program for a connection from a daemon's accept loop: everything the child needs
/// (argument and environment arrays, the PATH candidates) is built in the parent, so the
/// forked child only moves the socket to fds 0 and 1, restores signals and calls execve:
/// it runs none of the Swift runtime's lazily initialised paths, which a cold child would
/// otherwise pay for (page faults and metadata lookups) on every connection. fork rather
/// than posix_spawn, because vfork semantics would stall the accept loop until the exec.
public enum ProgramSpawn {
    /// Forks and execs `argv` (PATH searched as by djb's pathexec) with `environment`, the
    /// socket as standard input and output, standard error inherited, every signal unblocked
    /// and `resetSignals` (and SIGPIPE) back to their defaults. Returns the pid, or nil when the
    /// fork failed or the program could not be exec'd (the child then exits 111 at once).
    public static func spawn(
        _ argv: [[UInt8]], environment: [[UInt8]], stdinAndStdout socket: Int32, resetSignals: [Int32],
        path: [UInt8]? = Environment.bytes("PATH")
    ) -> Int32? {
        guard let program = argv.first else { return nil }
        let candidates = ProgramExec.candidates(for: program, path: path)
        let cArgs = argv.map(ProgramExec.cString) + [nil]
        let cEnv = environment.map(ProgramExec.cString) + [nil]
        let cCandidates = candidates.map(ProgramExec.cString)
        defer {
            for p in cArgs { p?.deallocate() }
            for p in cEnv { p?.deallocate() }
            for p in cCandidates { p?.deallocate() }
        }
        var empty = sigset_t()
        sigemptyset(&empty)
        let pid = cArgs.withUnsafeBufferPointer { args in
            cEnv.withUnsafeBufferPointer { env in
                cCandidates.withUnsafeBufferPointer { paths in
                    forkExec(args.baseAddress!, env.baseAddress!, paths, socket, resetSignals, &empty)
                }
            }
        }
        return pid > 0 ? pid : nil
    }

    /// The fork; the child touches only what was prepared (no allocation, no Swift runtime).
    private static func forkExec(
        _ args: UnsafePointer<UnsafeMutablePointer<CChar>?>, _ env: UnsafePointer<UnsafeMutablePointer<CChar>?>,
        _ paths: UnsafeBufferPointer<UnsafeMutablePointer<CChar>?>, _ socket: Int32, _ resetSignals: [Int32],
        _ empty: UnsafeMutablePointer<sigset_t>
    ) -> Int32 {
        resetSignals.withUnsafeBufferPointer { signals in
            let pid = fork()
            if pid != 0 { return pid }
            if dup2(socket, 0) < 0 || dup2(socket, 1) < 0 { _exit(111) }
            for s in signals { signal(s, SIG_DFL) }
            signal(SIGPIPE, SIG_DFL)
            sigprocmask(SIG_SETMASK, empty, nil)
            for candidate in paths { if let c = candidate { execve(c, args, env) } }
            _exit(111)
        }
    }
}

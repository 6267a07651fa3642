#if canImport(Glibc)
import Glibc
#endif
import CBastion
import GatewayKit

/// A program a daemon runs for a connection: an access control program (its standard output
/// goes to the client, its standard error to the log) or a request handler (the connection
/// is its standard input and output). Started with posix_spawn from an event loop thread and
/// waited for through a pidfd, so no signal handling is involved and no other thread reaps it.
/// Without pidfds (a kernel older than 5.3) a ``LoopTimer`` asks `waitpid(WNOHANG)` every
/// 100 ms instead: the loop never waits for a program.
///
/// `onExit` is called once, on the loop's thread, never before `init` returns. The watch on
/// the program's exit keeps this object alive until then, so an owner may let go of it early
/// and the program is still waited for (no zombie is left).
public final class ChildProgram {
    /// The program's process id.
    public let pid: Int32
    private var exitWatch: DescriptorWatch?
    private var exitPoll: LoopTimer?
    private var errorWatch: DescriptorWatch?
    private var errorPipe: Int32 = -1
    private var pending: [UInt8] = []

    /// Starts `argv` with `environment`. `stdin`/`stdout` become fds 0 and 1 (-1: /dev/null);
    /// when `logErrors` is set, fd 2 is a pipe whose lines go to `onErrorLine`; otherwise fd 2
    /// is the daemon's own, or /dev/null with `discardErrors`. A name without `/` is looked up
    /// in `path` (the daemon's PATH).
    public init(
        loop: EventLoop, argv: [String], environment: [[UInt8]], stdin: Int32, stdout: Int32,
        path: [UInt8]? = Environment.bytes("PATH"), discardErrors: Bool = false,
        onErrorLine: ((String) -> Void)?, onExit: @escaping (_ pid: Int32, _ status: Int32) -> Void
    ) throws(SystemError) {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if stdin >= 0 {
            posix_spawn_file_actions_adddup2(&actions, stdin, 0)
        } else {
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        }
        if stdout >= 0 {
            posix_spawn_file_actions_adddup2(&actions, stdout, 1)
        } else {
            posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        }
        var pipeEnds: [Int32] = [-1, -1]
        if onErrorLine != nil {
            if bastion_pipe_nonblocking(&pipeEnds) != 0 { throw SystemError.current }
            Socket.setNonBlocking(pipeEnds[1], false)  // the program's stderr blocks as usual
            posix_spawn_file_actions_adddup2(&actions, pipeEnds[1], 2)
        } else if discardErrors {
            posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        var defaults = sigset_t()
        sigfillset(&defaults)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        // pathexec's search and errno precedence, with posix_spawn per candidate (posix_spawnp
        // would report the last directory's error, not the most telling one).
        let cArgs = argv.map { strdup($0) } + [nil]
        let cEnv = environment.map { entry -> UnsafeMutablePointer<CChar>? in entry.withCString { strdup($0) } } + [nil]
        defer {
            for p in cArgs { free(p) }
            for p in cEnv { free(p) }
        }
        var child: pid_t = 0
        var errors = ProgramExec.PathErrors()
        var started = false
        for candidate in ProgramExec.candidates(for: Array((argv.first ?? "").utf8), path: path) {
            let r = candidate.withCString { posix_spawn(&child, $0, &actions, &attributes, cArgs, cEnv) }
            if r == 0 {
                started = true
                break
            }
            errors.note(r)
        }
        if pipeEnds[1] >= 0 { close(pipeEnds[1]) }
        if !started {
            if pipeEnds[0] >= 0 { close(pipeEnds[0]) }
            throw errors.error
        }
        pid = child
        errorPipe = pipeEnds[0]
        let pidfd = bastion_pidfd_open(child)
        if pidfd < 0 {
            // No pidfd: ask again every 100 ms (a handler holding the loop would stall every
            // connection on it for as long as the program runs).
            let poll = LoopTimer(loop: loop) {}
            poll.action = { [self, unowned poll] in
                var status: Int32 = 0
                guard waitpid(self.pid, &status, WNOHANG) == self.pid else {
                    return poll.setUnlessArmed(after: .milliseconds(100))
                }
                self.drainErrors(onErrorLine, final: true)
                self.exitPoll = nil
                onExit(self.pid, status)
            }
            exitPoll = poll
            poll.setUnlessArmed(after: .milliseconds(100))
        } else {
            exitWatch = try DescriptorWatch(loop: loop, fd: pidfd) { [self] _ in
                var status: Int32 = 0
                guard waitpid(self.pid, &status, WNOHANG) == self.pid else { return }
                self.drainErrors(onErrorLine, final: true)
                self.exitWatch?.cancel()
                self.exitWatch = nil
                close(pidfd)
                onExit(self.pid, status)
            }
        }
        if let onErrorLine, errorPipe >= 0 {
            errorWatch = try DescriptorWatch(loop: loop, fd: errorPipe) { [weak self] _ in
                self?.drainErrors(onErrorLine, final: false)
            }
        }
    }

    private func drainErrors(_ onLine: ((String) -> Void)?, final: Bool) {
        guard errorPipe >= 0, let onLine else { return }
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(errorPipe, $0.baseAddress, $0.count) }
            if n <= 0 {
                if n == 0 || final {
                    errorWatch?.cancel()
                    errorWatch = nil
                    close(errorPipe)
                    errorPipe = -1
                }
                break
            }
            pending += buffer[0..<n]
        }
        while let nl = pending.firstIndex(of: 10) {
            onLine(String(decoding: pending[..<nl], as: UTF8.self))
            pending.removeSubrange(...nl)
        }
        if errorPipe < 0 && !pending.isEmpty {
            onLine(String(decoding: pending, as: UTF8.self))
            pending = []
        }
    }
}

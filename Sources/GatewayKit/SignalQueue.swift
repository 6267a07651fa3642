#if canImport(Glibc)
import Glibc
#endif
import CBastion

/// Signals delivered as readable events on a descriptor (signalfd), so a daemon's loop can
/// poll for them with its sockets instead of running code in signal handlers.
public final class SignalQueue {
    public let fd: Int32
    private let signals: [Int32]

    /// Blocks `signals` for the process and opens a descriptor that reports them.
    public init(_ signals: [Int32]) throws(SystemError) {
        self.signals = signals
        var set = sigset_t()
        sigemptyset(&set)
        for s in signals { sigaddset(&set, s) }
        if sigprocmask(SIG_BLOCK, &set, nil) != 0 { throw SystemError.current }
        fd = signalfd(-1, &set, Int32(SFD_CLOEXEC) | Int32(SFD_NONBLOCK))
        if fd < 0 { throw SystemError.current }
    }

    /// Waits up to `milliseconds` (-1: forever) for signals and returns them (maybe none).
    public func wait(milliseconds: Int32 = -1) -> [Int32] {
        var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        _ = poll(&entry, 1, milliseconds)
        return drain()
    }

    /// The signals waiting now, in arrival order (each pending signal is reported once).
    public func drain() -> [Int32] {
        var out: [Int32] = []
        var info = signalfd_siginfo()
        while read(fd, &info, MemoryLayout<signalfd_siginfo>.size) == MemoryLayout<signalfd_siginfo>.size {
            out.append(Int32(info.ssi_signo))
        }
        return out
    }

    /// For a child about to exec: unblock the signals and restore default dispositions for
    /// these and the ignored SIGPIPE, so the program starts as if run by a shell.
    public func resetForChild() {
        close(fd)
        var set = sigset_t()
        sigemptyset(&set)
        for s in signals {
            sigaddset(&set, s)
            signal(s, SIG_DFL)
        }
        signal(SIGPIPE, SIG_DFL)
        sigprocmask(SIG_UNBLOCK, &set, nil)
    }
}

/// Exit status decoding for the raw wait status.
public enum WaitStatus {
    public static func exited(_ status: Int32) -> Int32? {
        bastion_wifexited(status) != 0 ? bastion_wexitstatus(status) : nil
    }

    public static func signaled(_ status: Int32) -> Int32? {
        bastion_wifsignaled(status) != 0 ? bastion_wtermsig(status) : nil
    }

    /// Exit status text for logs: `exit 0`, `signal 9`.
    public static func describe(_ status: Int32) -> String {
        if let code = exited(status) { return "exit \(code)" }
        if let signal = signaled(status) { return "signal \(signal)" }
        return "status \(status)"
    }
}

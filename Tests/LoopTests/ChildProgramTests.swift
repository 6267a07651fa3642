#if canImport(Glibc)
import Glibc
#endif
import GatewayKit
import Loop
import Testing

/// ChildProgram: a program started from a loop with pathexec's semantics, its standard error
/// read line by line and its exit seen on the loop.
@Suite("Child programs on a loop")
struct ChildProgramTests {
    /// Runs the loop until `done` or 10 s.
    func run(_ loop: EventLoop, until done: () -> Bool) {
        let deadline = Deadline.after(.seconds(10))
        while !done() && !deadline.hasPassed { loop.runOnce(timeout: .milliseconds(50)) }
    }

    @Test func errorLinesAndExitStatusArriveOnTheLoop() throws {
        let loop = try EventLoop()
        defer { loop.close() }
        var lines: [String] = []
        var status: Int32?
        var calledDuringInit = true
        let child = try ChildProgram(
            loop: loop, argv: ["sh", "-c", "echo one >&2; printf 'two\\nthree' >&2; exit 3"],
            environment: [Array("PATH=/bin:/usr/bin".utf8)], stdin: -1, stdout: -1, onErrorLine: { lines.append($0) },
            onExit: { _, s in status = s })
        calledDuringInit = status != nil
        #expect(!calledDuringInit)
        #expect(child.pid > 0)
        run(loop) { status != nil }
        #expect(lines == ["one", "two", "three"])
        #expect(status.flatMap(WaitStatus.exited) == 3)
    }

    @Test func thePathSearchKeepsTheMostTellingError() throws {
        let loop = try EventLoop()
        defer { loop.close() }
        // A PATH entry that is a file gives ENOTDIR; pathexec reports it rather than the
        // ENOENT of the next entry (posix_spawnp would say ENOENT).
        #expect(throws: SystemError(errno: ENOTDIR)) {
            _ = try ChildProgram(
                loop: loop, argv: ["bastion-no-such-program"], environment: [], stdin: -1, stdout: -1,
                path: Array("/etc/passwd:/nonexistent-bastion".utf8), onErrorLine: nil, onExit: { _, _ in })
        }
        #expect(throws: SystemError(errno: ENOENT)) {
            _ = try ChildProgram(
                loop: loop, argv: ["bastion-no-such-program"], environment: [], stdin: -1, stdout: -1,
                path: Array("/nonexistent-bastion:/also-not-there".utf8), onErrorLine: nil, onExit: { _, _ in })
        }
        // Found in a later directory after a miss: it runs.
        var status: Int32?
        _ = try ChildProgram(
            loop: loop, argv: ["true"], environment: [], stdin: -1, stdout: -1,
            path: Array("/nonexistent-bastion:/bin:/usr/bin".utf8), onErrorLine: nil,
            onExit: { _, s in status = s })
        run(loop) { status != nil }
        #expect(status.flatMap(WaitStatus.exited) == 0)
    }

    @Test func pathErrorsPreferTheFirstErrorThatIsNotENOENT() {
        var errors = ProgramExec.PathErrors()
        #expect(errors.error.errno == ENOENT)
        errors.note(ENOENT)
        errors.note(EACCES)
        errors.note(ENOTDIR)
        #expect(errors.error.errno == EACCES)
        #expect(
            ProgramExec.candidates(for: Array("x".utf8), path: Array(":/bin".utf8)) == [
                Array("x".utf8), Array("/bin/x".utf8),
            ])
        #expect(ProgramExec.candidates(for: Array("./x".utf8), path: Array("/bin".utf8)) == [Array("./x".utf8)])
    }
}

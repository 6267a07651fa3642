#if canImport(Glibc)
import Glibc
#endif
import AccessRules
import CDB
import GatewayKit

/// A cdb sink writing to a file descriptor; the header is written last with pwrite.
struct FileSink: CDBSink {
    let fd: Int32

    mutating func write(_ bytes: UnsafeRawBufferPointer) throws(CDBWriteError) {
        do { try FD.writeAll(fd, bytes) } catch { throw .system(error.errno) }
    }

    mutating func writeHeader(_ bytes: UnsafeRawBufferPointer) throws(CDBWriteError) {
        var off = 0
        while off < bytes.count {
            let n = pwrite(fd, bytes.baseAddress! + off, bytes.count - off, off_t(off))
            if n < 0 {
                if errno == EINTR { continue }
                throw .system(errno)
            }
            off += n
        }
    }
}

/// `tcprules rules.cdb rules.tmp`: compiles rules from standard input into rules.tmp, then
/// renames it over rules.cdb. Exit 100 for usage and parse errors, 111 for system errors;
/// the old rules.cdb is untouched on any error, and an unfinished rules.tmp is removed (one
/// that is complete but could not be renamed stays, as with djb's tcprules).
public enum TCPRulesCommand {
    static let fatal = "tcprules: fatal: "

    public static func main(_ arguments: [String]) -> Never {
        if arguments.count == 2 && arguments[1] == "--help" {
            try? FD.writeAll(1, Help.tcprules)
            exit(0)
        }
        guard arguments.count >= 3 else { Stderr.die(100, "tcprules: usage: tcprules rules.cdb rules.tmp") }
        let target = arguments[1]
        let temp = arguments[2]
        let fd = open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        if fd < 0 { Stderr.die(111, fatal + "unable to create \(temp): \(SystemError.current)") }

        func fail(_ code: Int32, _ message: String) -> Never {
            unlink(temp)
            Stderr.die(code, fatal + message)
        }
        func writeFailure(_ e: CDBWriteError) -> Never {
            switch e {
            case .tooLarge: fail(111, "unable to write to \(temp): \(e)")
            case .system(let n): fail(111, "unable to write to \(temp): \(SystemError.message(n))")
            }
        }

        var compiler: RulesCompiler<FileSink>
        do {
            compiler = RulesCompiler(writer: try CDBWriter(sink: FileSink(fd: fd)))
        } catch {
            writeFailure(error)
        }
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 8)
        defer { chunk.deallocate() }
        do {
            while true {
                let n: Int
                do { n = try FD.read(0, into: chunk) } catch { fail(111, "unable to read input: \(error)") }
                if n == 0 { break }
                try compiler.feed(UnsafeRawBufferPointer(rebasing: chunk[0..<n]))
            }
            try compiler.finish()
        } catch {
            switch error {
            case .parse(let e):
                unlink(temp)
                Stderr.die(100, Array(fatal.utf8) + e.message)
            case .write(let e): writeFailure(e)
            }
        }
        if fsync(fd) != 0 { fail(111, "unable to write to \(temp): \(SystemError.current)") }
        if close(fd) != 0 { fail(111, "unable to write to \(temp): \(SystemError.current)") }
        if rename(temp, target) != 0 {
            Stderr.die(111, fatal + "unable to move \(temp) to \(target): \(SystemError.current)")
        }
        exit(0)
    }
}

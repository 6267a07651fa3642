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

    /// `fatal` + the parts, raw bytes (file names are any bytes).
    static func message(_ parts: [UInt8]...) -> [UInt8] { Array(fatal.utf8) + parts.joined() }

    public static func main(_ arguments: [[UInt8]]) -> Never {
        if arguments.count == 2 && arguments[1] == Array("--help".utf8) {
            try? FD.writeAll(1, Help.tcprules)
            exit(0)
        }
        guard arguments.count >= 3 else { Stderr.die(100, "tcprules: usage: tcprules rules.cdb rules.tmp") }
        let target = arguments[1]
        let temp = arguments[2]
        let fd = temp.withCString { open($0, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644) }
        if fd < 0 {
            Stderr.die(111, message(Array("unable to create ".utf8), temp, Array(": \(SystemError.current)".utf8)))
        }

        func fail(_ code: Int32, _ text: [UInt8]) -> Never {
            _ = temp.withCString { unlink($0) }
            Stderr.die(code, text)
        }
        func writeFailure(_ e: CDBWriteError) -> Never {
            let reason: String
            switch e {
            case .tooLarge: reason = "\(e)"
            case .system(let n): reason = SystemError.message(n)
            }
            fail(111, message(Array("unable to write to ".utf8), temp, Array(": \(reason)".utf8)))
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
                do { n = try FD.read(0, into: chunk) } catch {
                    fail(111, message(Array("unable to read input: \(error)".utf8)))
                }
                if n == 0 { break }
                try compiler.feed(UnsafeRawBufferPointer(rebasing: chunk[0..<n]))
            }
            try compiler.finish()
        } catch {
            switch error {
            case .parse(let e): fail(100, message(e.message))
            case .write(let e): writeFailure(e)
            }
        }
        if fsync(fd) != 0 || close(fd) != 0 {
            fail(111, message(Array("unable to write to ".utf8), temp, Array(": \(SystemError.current)".utf8)))
        }
        if temp.withCString({ t in target.withCString { rename(t, $0) } }) != 0 {
            let reason = Array(": \(SystemError.current)".utf8)
            Stderr.die(111, message(Array("unable to move ".utf8), temp, Array(" to ".utf8), target, reason))
        }
        exit(0)
    }
}

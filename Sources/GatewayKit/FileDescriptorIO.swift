#if canImport(Glibc)
import Glibc
#endif

/// Small blocking I/O helpers over raw descriptors, retrying on EINTR.
public enum FD {
    /// Writes every byte or throws the errno.
    public static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) throws(SystemError) {
        var off = 0
        while off < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + off, bytes.count - off)
            if n < 0 {
                if errno == EINTR { continue }
                throw SystemError.current
            }
            off += n
        }
    }

    public static func writeAll(_ fd: Int32, _ bytes: [UInt8]) throws(SystemError) {
        try bytes.withUnsafeBytes { b in Result { () throws(SystemError) in try writeAll(fd, b) } }.get()
    }

    public static func writeAll(_ fd: Int32, _ text: String) throws(SystemError) {
        var t = text
        try t.withUTF8 { b in Result { () throws(SystemError) in try writeAll(fd, UnsafeRawBufferPointer(b)) } }.get()
    }

    /// Reads once into `buffer`; 0 at end of file.
    public static func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) -> Int {
        while true {
            let n = Glibc.read(fd, buffer.baseAddress, buffer.count)
            if n < 0 {
                if errno == EINTR { continue }
                throw SystemError.current
            }
            return n
        }
    }

    /// The contents of a (small) file, or the errno that stopped reading it.
    public static func readWholeFile(_ path: String, limit: Int = Int.max) throws(SystemError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SystemError.current }
        defer { Glibc.close(fd) }
        var text: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while text.count < limit {
            let count = try chunk.withUnsafeMutableBytes { buffer in
                Result { () throws(SystemError) -> Int in try read(fd, into: buffer) }
            }.get()
            if count == 0 { break }
            text += chunk[0..<count]
        }
        return text
    }

    /// Closes, ignoring EINTR.
    public static func close(_ fd: Int32) { _ = Glibc.close(fd) }

    /// Replaces the file at `path` with `contents` atomically: a new file beside it (mode
    /// `mode`), written whole, then renamed over it, so a reader sees the old file or the new
    /// one, never a part. The new file is removed when anything fails.
    public static func replaceFile(_ path: String, contents: [UInt8], mode: mode_t = 0o644) throws(SystemError) {
        let temporary = "\(path).new.\(getpid())"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode)
        guard fd >= 0 else { throw SystemError.current }
        do throws(SystemError) {
            try writeAll(fd, contents)
            if fchmod(fd, mode) != 0 { throw SystemError.current }
            if Glibc.close(fd) != 0 {
                let error = SystemError.current
                unlink(temporary)
                throw error
            }
        } catch {
            Glibc.close(fd)
            unlink(temporary)
            throw error
        }
        if rename(temporary, path) != 0 {
            let error = SystemError.current
            unlink(temporary)
            throw error
        }
    }
}

/// Diagnostics on standard error in djb's style: one `write` per line, so lines from
/// concurrent processes never interleave.
public enum Stderr {
    /// When false (tcpserver -q) nothing is written.
    nonisolated(unsafe) public static var enabled = true

    public static func line(_ text: String) {
        guard enabled else { return }
        try? FD.writeAll(2, text + "\n")
    }

    /// Writes `text` and exits with `code`, as strerr_die does.
    public static func die(_ code: Int32, _ text: String) -> Never {
        die(code, Array(text.utf8))
    }

    /// The same for a message that holds arbitrary bytes (quoted input, names from the network).
    public static func die(_ code: Int32, _ bytes: [UInt8]) -> Never {
        if enabled { try? FD.writeAll(2, bytes + [10]) }
        exit(code)
    }
}

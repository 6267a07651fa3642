/// Command-line words and paths as raw bytes. djb's tools take any bytes in arguments (a
/// banner, a file name in Latin-1); `CommandLine.arguments` would replace invalid UTF-8.
public enum Arguments {
    /// argv, byte for byte.
    public static var raw: [[UInt8]] {
        (0..<Int(CommandLine.argc)).map { i in
            guard let p = CommandLine.unsafeArgv[i] else { return [] }
            return Array(
                UnsafeBufferPointer(start: UnsafeRawPointer(p).assumingMemoryBound(to: UInt8.self), count: strlen(p)))
        }
    }
}

extension Array where Element == UInt8 {
    /// Calls `body` with these bytes as a NUL-terminated C string (cut at an inner NUL).
    public func withCString<R>(_ body: (UnsafePointer<CChar>) throws -> R) rethrows -> R {
        var terminated = self
        terminated.append(0)
        return try terminated.withUnsafeBufferPointer { buffer in
            try buffer.baseAddress!.withMemoryRebound(to: CChar.self, capacity: buffer.count) { try body($0) }
        }
    }

    /// The bytes as text for messages; invalid UTF-8 shows as U+FFFD (only for display).
    public var text: String { String(decoding: self, as: UTF8.self) }
}

#if canImport(Glibc)
import Glibc
#endif

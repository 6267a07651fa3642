#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A constant database file mapped into memory, as djb's cdb_init does.
///
/// The file is opened afresh by each `CDBFile`, so a database replaced by rename (tcprules)
/// is seen by the next open. The mapping is released on deinit.
public final class CDBFile {
    private let base: UnsafeMutableRawPointer?
    private let size: Int

    /// The reader over the mapped bytes.
    public var reader: CDBReader {
        CDBReader(bytes: UnsafeRawBufferPointer(start: base, count: size), owner: self)
    }

    /// Opens and maps `path`; throws the errno of the failing call.
    public convenience init(path: String) throws(CDBOpenError) {
        try self.init(path: Array(path.utf8))
    }

    /// Opens and maps the file whose name is these bytes (any bytes but NUL).
    public init(path: [UInt8]) throws(CDBOpenError) {
        var cPath = path
        cPath.append(0)
        let fd = cPath.withUnsafeBufferPointer { b in
            b.baseAddress!.withMemoryRebound(to: CChar.self, capacity: b.count) { open($0, O_RDONLY | O_CLOEXEC) }
        }
        if fd < 0 { throw CDBOpenError(errno: errno) }
        defer { close(fd) }
        var st = stat()
        if fstat(fd, &st) != 0 { throw CDBOpenError(errno: errno) }
        let length = Int(st.st_size)
        if length == 0 {
            base = nil
            size = 0
            return
        }
        guard let p = mmap(nil, length, PROT_READ, MAP_SHARED, fd, 0), p != MAP_FAILED else {
            throw CDBOpenError(errno: errno)
        }
        base = p
        size = length
    }

    deinit {
        if let base { munmap(base, size) }
    }
}

/// A failure to open or map a database file, with the errno that caused it.
public struct CDBOpenError: Error, Equatable {
    public let errno: Int32
    public init(errno: Int32) { self.errno = errno }
}

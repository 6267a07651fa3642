#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Testing
import CDB

/// The mapped-file reader, over small files in a private temporary directory.
@Suite("cdb files")
struct CDBFileTests {
    /// Writes `contents` to a fresh temporary file and returns its path.
    static func temporaryFile(_ contents: [UInt8]) throws -> String {
        var template = Array("/tmp/cdbtests.XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        try #require(fd >= 0)
        defer { close(fd) }
        let written = contents.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        try #require(written == contents.count)
        return String(decoding: template.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    @Test func opensAndReads() throws {
        let db = try buildDatabase([(bytes("1.2.3.4"), bytes("D\0")), (bytes(""), bytes("+A=b\0"))])
        let path = try Self.temporaryFile(db)
        defer { unlink(path) }
        let file = try CDBFile(path: path)
        let r = file.reader
        #expect(r.bytes.count == db.count)
        #expect(try r.value("1.2.3.4") == bytes("D\0"))
        #expect(try r.value("") == bytes("+A=b\0"))
        #expect(try r.value("5.6.7.8") == nil)
    }

    /// The reader keeps the mapping alive after the file object is gone.
    @Test func readerOutlivesFile() throws {
        let db = try buildDatabase([(bytes("k"), bytes("v"))])
        let path = try Self.temporaryFile(db)
        defer { unlink(path) }
        let r = try CDBFile(path: path).reader
        #expect(try r.value("k") == bytes("v"))
    }

    @Test func emptyFileIsEmptyError() throws {
        let path = try Self.temporaryFile([])
        defer { unlink(path) }
        let r = try CDBFile(path: path).reader
        #expect(throws: CDBReadError.empty) { try r.find("x") }
    }

    @Test func missingFileReportsErrno() {
        #expect(throws: CDBOpenError(errno: ENOENT)) { try CDBFile(path: "/nonexistent/bastion/rules.cdb") }
    }
}

#if canImport(Glibc)
import Glibc
#endif
import GatewayKit
import TCPProxy
import Testing

private let time = "2026-11-21 07:15:04.123"

private func recordedEndpoint(_ address: String, _ port: UInt16, scope: UInt32 = 0) -> Endpoint {
    Endpoint(address: IPAddress(address)!, port: port, scopeID: scope)
}

/// Reverses the dump's escaping (the test's own decoder).
private func unescape(_ text: String) -> [UInt8]? {
    let bytes = Array(text.utf8)
    var out: [UInt8] = []
    var i = 0
    func hex(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: return c - 0x30
        case 0x61...0x66: return c - 0x61 + 10
        default: return nil
        }
    }
    while i < bytes.count {
        let c = bytes[i]
        guard c == 0x5C else {
            guard c >= 0x20 && c <= 0x7E else { return nil }
            out.append(c)
            i += 1
            continue
        }
        guard i + 1 < bytes.count else { return nil }
        switch bytes[i + 1] {
        case UInt8(ascii: "\\"): out.append(0x5C)
        case UInt8(ascii: "r"): out.append(0x0D)
        case UInt8(ascii: "n"): out.append(0x0A)
        case UInt8(ascii: "t"): out.append(0x09)
        case UInt8(ascii: "x"):
            guard i + 3 < bytes.count, let high = hex(bytes[i + 2]), let low = hex(bytes[i + 3]) else { return nil }
            let byte = high << 4 | low
            // Bytes with a shorter form never appear as \xHH.
            guard !(byte >= 0x20 && byte <= 0x7E), ![0x09, 0x0A, 0x0D].contains(byte) else { return nil }
            out.append(byte)
            i += 4
            continue
        default: return nil
        }
        i += 2
    }
    return out
}

/// The bytes of a dump's lines, which must each start with the four-space indent.
private func undump(_ lines: [String]) -> [UInt8]? {
    var out: [UInt8] = []
    for line in lines {
        guard line.hasPrefix("    "), let bytes = unescape(String(line.dropFirst(4))) else { return nil }
        out += bytes
    }
    return out
}

/// A directory under /tmp removed with its files at the end of a test.
private final class RecordingScratch {
    let path: String

    init() throws {
        var template = Array("/tmp/bastion-recording-XXXXXX".utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw SystemError.current
        }
        path = String(cString: made)
    }

    deinit {
        if let dir = opendir(path) {
            while let entry = readdir(dir) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                    String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
                }
                if name != "." && name != ".." { unlink(path + "/" + name) }
            }
            closedir(dir)
        }
        rmdir(path)
    }

    func read(_ name: String) -> String? {
        UserDatabase.readFile(path + "/" + name).map { String(decoding: $0, as: UTF8.self) }
    }
}

@Suite("Connection recording")
struct RecordingTests {
    // MARK: Escaping

    @Test(arguments: [
        (UInt8(ascii: "A"), "A"), (0x20, " "), (0x7E, "~"), (UInt8(ascii: "\""), "\""), (UInt8(ascii: "#"), "#"),
        (0x5C, "\\\\"), (0x0D, "\\r"), (0x0A, "\\n"), (0x09, "\\t"),
        (0x00, "\\x00"), (0x1B, "\\x1b"), (0x7F, "\\x7f"), (0x80, "\\x80"), (0xAB, "\\xab"), (0xFF, "\\xff"),
        (0x0B, "\\x0b"), (0x0C, "\\x0c"),
    ])
    func escapeByte(byte: UInt8, expected: String) {
        #expect(RecordingFormat.escape(byte) == expected)
        #expect(RecordingFormat.escape([byte]) == expected)
    }

    @Test func escapeBytes() {
        #expect(RecordingFormat.escape(Array("GET / HTTP/1.0\r\n".utf8)) == "GET / HTTP/1.0\\r\\n")
        #expect(RecordingFormat.escape([0x00, 0x01, 0x6F, 0x6B, 0x5C, 0xC3, 0xA9]) == "\\x00\\x01ok\\\\\\xc3\\xa9")
        #expect(RecordingFormat.escape([UInt8]()) == "")
    }

    @Test func everyByteRoundTrips() {
        let all = (0...255).map { UInt8($0) }
        let text = RecordingFormat.escape(all)
        #expect(unescape(text) == all)
        #expect(text.utf8.allSatisfy { $0 >= 0x20 && $0 <= 0x7E })
    }

    // MARK: Dumps

    @Test func dumpOfNothing() {
        #expect(RecordingFormat.dump([UInt8]()).isEmpty)
    }

    @Test func dumpBreaksAfterNewlines() {
        #expect(
            RecordingFormat.dump(Array("GET / HTTP/1.0\r\nHost: a\r\n\r\nbody".utf8)) == [
                "    GET / HTTP/1.0\\r\\n",
                "    Host: a\\r\\n",
                "    \\r\\n",
                "    body",
            ])
        #expect(RecordingFormat.dump([0x0A, 0x0A]) == ["    \\n", "    \\n"])
        #expect(RecordingFormat.dump(Array("+OK\r\n".utf8)) == ["    +OK\\r\\n"])
    }

    @Test func dumpWrapsAt76Columns() {
        let text = [UInt8](repeating: UInt8(ascii: "a"), count: 100)
        let lines = RecordingFormat.dump(text)
        #expect(lines == ["    " + String(repeating: "a", count: 72), "    " + String(repeating: "a", count: 28)])
        #expect(lines[0].utf8.count == 76)
        #expect(RecordingFormat.dump([UInt8](repeating: 0x61, count: 72)) == [lines[0]])
    }

    @Test func dumpNeverSplitsAnEscape() {
        // 70 letters leave two columns: "\xff" (4) goes to the next line, "\n" (2) would fit.
        let letters = [UInt8](repeating: UInt8(ascii: "b"), count: 70)
        #expect(
            RecordingFormat.dump(letters + [0xFF, 0x41]) == [
                "    " + String(repeating: "b", count: 70),
                "    \\xffA",
            ])
        let indented = "    " + String(repeating: "b", count: 70)
        #expect(RecordingFormat.dump(letters + [0x0D, 0x0A]) == [indented + "\\r", "    \\n"])
        #expect(RecordingFormat.dump(letters + [0x0A, 0x41]) == [indented + "\\n", "    A"])
        // 69 letters leave three columns: not enough for \x00.
        #expect(
            RecordingFormat.dump([UInt8](repeating: 0x62, count: 69) + [0x00])
                == ["    " + String(repeating: "b", count: 69), "    \\x00"])
        // 18 escapes of four columns fill 72 columns exactly.
        #expect(
            RecordingFormat.dump([UInt8](repeating: 0x00, count: 19))
                == ["    " + String(repeating: "\\x00", count: 18), "    \\x00"])
    }

    @Test func dumpWithOtherWidthAndIndent() {
        #expect(RecordingFormat.dump(Array("abcdefgh".utf8), width: 5, indent: "> ") == ["> abc", "> def", "> gh"])
        // Narrower than one escape: still one escape per line.
        #expect(RecordingFormat.dump([0xFF, 0xFE], width: 3, indent: "  ") == ["  \\xff", "  \\xfe"])
        #expect(RecordingFormat.dump(Array("ab".utf8), width: 0, indent: "") == ["a", "b"])
    }

    @Test func randomDumpsRoundTripAndStayNarrow() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            let count = Int.random(in: 0..<600, using: &generator)
            let bytes = (0..<count).map { _ in
                // Mostly text with some control and high bytes, as real sessions look.
                Bool.random(using: &generator)
                    ? UInt8.random(in: 0x20...0x7E, using: &generator) : UInt8.random(in: 0...255, using: &generator)
            }
            let lines = RecordingFormat.dump(bytes)
            #expect(undump(lines) == bytes)
            #expect(lines.allSatisfy { $0.utf8.count <= 76 && $0.utf8.count > 4 })
        }
    }

    // MARK: Lines

    @Test func timestamp() {
        let seconds = 1_795_000_000
        #expect(RecordingFormat.timestamp(seconds: seconds, milliseconds: 45) == LogFormat.timestamp(seconds) + ".045")
        #expect(RecordingFormat.timestamp(seconds: seconds, milliseconds: 0) == LogFormat.timestamp(seconds) + ".000")
        #expect(RecordingFormat.timestamp(seconds: seconds, milliseconds: 999) == LogFormat.timestamp(seconds) + ".999")
        #expect(RecordingFormat.timestamp(seconds: seconds, milliseconds: 7).utf8.count == 23)
        let now = RecordingFormat.now()
        #expect(now.utf8.count == 23)
        #expect(Array(now.utf8)[19] == UInt8(ascii: "."))
    }

    @Test(arguments: [
        (recordedEndpoint("192.0.2.7", 40000), "192.0.2.7:40000"),
        (recordedEndpoint("::ffff:192.0.2.7", 40000), "192.0.2.7:40000"),
        (recordedEndpoint("2001:db8::1", 443), "[2001:db8::1]:443"),
        (recordedEndpoint("fe80::1", 22, scope: 3), "[fe80::1%3]:22"),
        (recordedEndpoint("::1", 0), "[::1]:0"),
    ])
    func endpoint(endpoint: Endpoint, expected: String) {
        #expect(RecordingFormat.endpoint(endpoint) == expected)
    }

    @Test(arguments: [
        (0.0, "0.000"), (0.0174, "0.017"), (0.0175001, "0.018"), (1.2346, "1.235"), (12.5, "12.500"),
        (59.9996, "60.000"), (3600, "3600.000"), (-1, "0.000"), (Double.nan, "0.000"), (Double.infinity, "inf"),
    ])
    func seconds(value: Double, expected: String) {
        #expect(RecordingFormat.seconds(value) == expected)
    }

    @Test func byteCounts() {
        #expect(RecordingFormat.byteCount(0) == "0 bytes")
        #expect(RecordingFormat.byteCount(1) == "1 byte")
        #expect(RecordingFormat.byteCount(42) == "42 bytes")
        #expect(RecordingFormat.byteCount(UInt64.max) == "18446744073709551615 bytes")
    }

    @Test func lines() {
        #expect(
            RecordingFormat.startLine(
                time: time, connection: 17, client: recordedEndpoint("192.0.2.7", 40000), server: "10.0.0.5:80")
                == "2026-11-21 07:15:04.123 #17 start client 192.0.2.7:40000 server 10.0.0.5:80")
        #expect(
            RecordingFormat.startLine(
                time: time, connection: 1, client: recordedEndpoint("::1", 5), server: "exec /bin/cat\n")
                == "2026-11-21 07:15:04.123 #1 start client [::1]:5 server exec /bin/cat\\n")
        #expect(
            RecordingFormat.chunkLine(time: time, connection: 17, direction: .clientToServer, count: 42)
                == "2026-11-21 07:15:04.123 #17 client>server 42 bytes")
        #expect(
            RecordingFormat.chunkLine(time: time, connection: 17, direction: .serverToClient, count: 1)
                == "2026-11-21 07:15:04.123 #17 server>client 1 byte")
        #expect(
            RecordingFormat.endLine(
                time: time, connection: 17, clientToServer: 120, serverToClient: 4096, seconds: 1.2346)
                == "2026-11-21 07:15:04.123 #17 end client>server 120 bytes, server>client 4096 bytes, 1.235 s")
        #expect(RecordedDirection.clientToServer.description == "client>server")
        #expect(RecordedDirection.serverToClient.description == "server>client")
        #expect(
            RecordingFormat.fileName(basename: "/var/log/tcpproxy/session", pid: 4242)
                == "/var/log/tcpproxy/session.4242.log")
    }

    @Test func record() {
        let bytes = Array("USER anne\r\nPASS \u{1}x\\\r\n".utf8)
        let record = RecordingFormat.record(time: time, connection: 3, direction: .clientToServer, bytes: bytes)
        #expect(
            String(decoding: record, as: UTF8.self) == """
                2026-11-21 07:15:04.123 #3 client>server 21 bytes
                    USER anne\\r\\n
                    PASS \\x01x\\\\\\r\\n

                """)
        let empty = RecordingFormat.record(time: time, connection: 3, direction: .serverToClient, bytes: [UInt8]())
        #expect(String(decoding: empty, as: UTF8.self) == "2026-11-21 07:15:04.123 #3 server>client 0 bytes\n")
    }

    // MARK: The recorder

    /// The file's lines with the 24 columns of timestamp and blank cut from heading lines.
    private static func withoutTimes(_ text: String) -> [String] {
        text.split(separator: "\n", omittingEmptySubsequences: false).map { line in
            line.hasPrefix(" ") || line.isEmpty ? String(line) : String(line.dropFirst(24))
        }
    }

    @Test func recorderWritesAReadableFile() throws {
        let scratch = try RecordingScratch()
        let basename = scratch.path + "/session"
        let recorder = try ConnectionRecorder(
            basename: basename, pid: 4242, connection: 17, client: recordedEndpoint("::ffff:192.0.2.7", 40000),
            server: "10.0.0.5:80")
        #expect(recorder.path == basename + ".4242.log")
        #expect(recorder.connection == 17)
        Array("GET / HTTP/1.0\r\n\r\n".utf8).withUnsafeBytes { recorder.record(direction: .clientToServer, bytes: $0) }
        ([0x00, 0x01, 0x6F, 0x6B] as [UInt8]).withUnsafeBytes { recorder.record(direction: .serverToClient, bytes: $0) }
        recorder.finish(clientToServer: 18, serverToClient: 4, seconds: 0.0174)
        // Ignored once finished.
        Array("late".utf8).withUnsafeBytes { recorder.record(direction: .clientToServer, bytes: $0) }
        recorder.finish(clientToServer: 0, serverToClient: 0, seconds: 0)

        let text = try #require(scratch.read("session.4242.log"))
        #expect(
            Self.withoutTimes(text) == [
                "#17 start client 192.0.2.7:40000 server 10.0.0.5:80",
                "#17 client>server 18 bytes",
                "    GET / HTTP/1.0\\r\\n",
                "    \\r\\n",
                "#17 server>client 4 bytes",
                "    \\x00\\x01ok",
                "#17 end client>server 18 bytes, server>client 4 bytes, 0.017 s",
                "",
            ])
        let first = text.split(separator: "\n")[0]
        #expect(first.utf8.count > 24 && Array(first.utf8)[19] == UInt8(ascii: "."))

        var info = stat()
        #expect(stat(recorder.path, &info) == 0)
        // 0640 less the umask: never more than the owner's and the group's read.
        #expect(info.st_mode & 0o777 & ~0o640 == 0)
        #expect(info.st_mode & 0o600 == 0o600)
    }

    @Test func recordersAppend() throws {
        let scratch = try RecordingScratch()
        let basename = scratch.path + "/w"
        let first = try ConnectionRecorder(
            basename: basename, pid: 7, connection: 1, client: recordedEndpoint("10.0.0.1", 1), server: "s")
        let second = try ConnectionRecorder(
            basename: basename, pid: 7, connection: 2, client: recordedEndpoint("10.0.0.2", 2), server: "s")
        ([0x61] as [UInt8]).withUnsafeBytes { first.record(direction: .clientToServer, bytes: $0) }
        ([0x62] as [UInt8]).withUnsafeBytes { second.record(direction: .serverToClient, bytes: $0) }
        second.finish(clientToServer: 0, serverToClient: 1, seconds: 0)
        first.finish(clientToServer: 1, serverToClient: 0, seconds: 0)
        let text = try #require(scratch.read("w.7.log"))
        #expect(
            Self.withoutTimes(text) == [
                "#1 start client 10.0.0.1:1 server s",
                "#2 start client 10.0.0.2:2 server s",
                "#1 client>server 1 byte",
                "    a",
                "#2 server>client 1 byte",
                "    b",
                "#2 end client>server 0 bytes, server>client 1 byte, 0.000 s",
                "#1 end client>server 1 byte, server>client 0 bytes, 0.000 s",
                "",
            ])
    }

    @Test func recorderFailsOnAMissingDirectory() {
        #expect(throws: SystemError(errno: ENOENT)) {
            _ = try ConnectionRecorder(
                basename: "/nonexistent/bastion/session", pid: 1, connection: 1,
                client: recordedEndpoint("10.0.0.1", 1), server: "s")
        }
    }

    /// The bytes of record `index` of connection `connection`: 500 to 6499 of them.
    private static func payload(_ connection: Int, _ index: Int) -> [UInt8] {
        let size = 500 + (connection * 977 + index * 131) % 6000
        return (0..<size).map { UInt8(truncatingIfNeeded: $0 &* (connection + 1) &+ index) }
    }

    /// Several recorders on one file, each on its own task, each record a few kilobytes: every
    /// record must come out whole, in each connection's order.
    @Test func concurrentRecordsNeverInterleave() async throws {
        let scratch = try RecordingScratch()
        let basename = scratch.path + "/busy"
        let connections = 6
        let records = 40
        let path = basename
        try await withThrowingTaskGroup(of: Void.self) { group in
            for connection in 1...connections {
                group.addTask {
                    let recorder = try ConnectionRecorder(
                        basename: path, pid: 99, connection: UInt64(connection),
                        client: recordedEndpoint("10.0.0.\(connection)", 1000), server: "backend")
                    for index in 0..<records {
                        Self.payload(connection, index).withUnsafeBytes {
                            recorder.record(direction: index % 2 == 0 ? .clientToServer : .serverToClient, bytes: $0)
                        }
                    }
                    recorder.finish(clientToServer: 0, serverToClient: 0, seconds: 0)
                }
            }
            try await group.waitForAll()
        }

        let text = try #require(scratch.read("busy.99.log"))
        let lines = Self.withoutTimes(text).dropLast()
        var seen = [Int](repeating: 0, count: connections + 1)
        var ended = Set<Int>()
        var i = lines.startIndex
        while i < lines.endIndex {
            let words = lines[i].split(separator: " ")
            let connection = try #require(Int(words[0].dropFirst()))
            i += 1
            if words[1] == "start" || words[1] == "end" {
                if words[1] == "end" { ended.insert(connection) }
                continue
            }
            var dump: [String] = []
            while i < lines.endIndex && lines[i].hasPrefix(" ") {
                dump.append(lines[i])
                i += 1
            }
            let index = seen[connection]
            #expect(words[2] == "\(Self.payload(connection, index).count)")
            #expect(undump(dump) == Self.payload(connection, index), "record \(index) of #\(connection)")
            seen[connection] += 1
        }
        #expect(seen.dropFirst().allSatisfy { $0 == records })
        #expect(ended == Set(1...connections))
    }
}

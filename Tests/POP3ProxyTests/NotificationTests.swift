import POP3Proxy
import Testing

/// The CRLF lines of `bytes` (a bare LF stays inside its line).
func crlfLines(_ bytes: [UInt8]) -> [String] {
    var lines: [String] = []
    var start = 0
    var i = 0
    while i + 1 < bytes.count {
        if bytes[i] == 13 && bytes[i + 1] == 10 {
            lines.append(String(decoding: bytes[start..<i], as: UTF8.self))
            i += 2
            start = i
        } else {
            i += 1
        }
    }
    lines.append(String(decoding: bytes[start...], as: UTF8.self))
    return lines
}

@Suite("What -z adds to a clean message and puts in place of an infected one")
struct ScanNoticeTests {
    static let original = Array(
        ("From: Mallory <mallory@example.net>\r\nTo: joe@example.org\r\nSubject: your invoice\r\n"
            + "\tsecond line\r\nDate: Tue, 1 Dec 2026 10:00:00 +0100\r\nMessage-ID: <123@example.net>\r\n"
            + "\r\nFrom: not a header\r\nbody\r\n").utf8)

    @Test func theScanHeader() {
        #expect(
            ScanNotice.header(clamdVersion: "ClamAV 1.0.7/27500")
                == Array(
                    "X-Proxy-Scanned: pop3.proxy (Bastion) with ClamAV 1.0.7/27500\r\n".utf8))
    }

    @Test func headerFieldsAreUnfoldedAndEndAtTheEmptyLine() {
        let fields = ScanNotice.headerFields(of: Self.original)
        #expect(fields.map(\.0) == ["from", "to", "subject", "date", "message-id"])
        #expect(fields[2].1 == Array("your invoice second line".utf8))
    }

    @Test func theNotificationIsAMessageAndAWellFormedAnswer() {
        let notice = ScanNotice.infected(
            virus: "Eicar-Test-Signature", message: Self.original, clamdVersion: "ClamAV 1.0.7", seconds: 1_796_238_792,
            host: "gw.example.org")
        #expect(notice.suffix(5).elementsEqual(Array("\r\n.\r\n".utf8)))
        let lines = crlfLines(notice)
        #expect(lines.contains("Subject: Virus found: Eicar-Test-Signature"))
        #expect(lines.contains("To: joe@example.org"))
        #expect(lines.contains("Date: Wed, 02 Dec 2026 19:13:12 +0000"))
        #expect(lines.contains("  From:        Mallory <mallory@example.net>"))
        #expect(lines.contains("  Subject:     your invoice second line"))
        #expect(lines.contains("  Message-ID:  <123@example.net>"))
        #expect(lines.contains("X-Proxy-Scanned: pop3.proxy (Bastion) with ClamAV 1.0.7"))
        // Every line ends with CRLF, none is longer than 998 bytes, headers are ASCII.
        #expect(!lines.contains { $0.contains("\n") || $0.contains("\r") })
        #expect(lines.allSatisfy { $0.utf8.count <= 998 })
        let header = lines.prefix { !$0.isEmpty }
        #expect(header.allSatisfy { $0.utf8.allSatisfy { $0 >= 32 && $0 < 127 } })
    }

    @Test func hostileHeadersCannotBreakTheNotice() {
        let evil = Array("Subject: a\u{1}b\u{e9}\r\nTo: x\r\n\r\n".utf8) + [UInt8](repeating: 0x41, count: 5000)
        let notice = ScanNotice.infected(
            virus: "X\r\nInjected: yes", message: evil, clamdVersion: "ClamAV", seconds: 0, host: "h")
        let lines = crlfLines(notice)
        #expect(!lines.contains("Injected: yes"))
        #expect(lines.contains("  Subject:     a?b??"))
        #expect(lines.contains("  Date:        (none)"))
    }
}

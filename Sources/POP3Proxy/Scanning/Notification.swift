#if canImport(Glibc)
import Glibc
#endif

/// The lines pop3.proxy adds or puts in place of a scanned message (`-z`): the
/// `X-Proxy-Scanned:` header at the top of a clean one, and for an infected one a short
/// notification that is itself a valid RFC 5322 message (CRLF lines of at most 998 bytes,
/// ASCII headers, a text body in UTF-8) naming the virus and quoting the original's From, To,
/// Subject, Date and Message-ID. Both come ready for a multi-line POP3 answer: dot-stuffed,
/// and the notification ends with the answer's final `.` line.
public enum ScanNotice {
    /// `X-Proxy-Scanned: pop3.proxy (Bastion) with ClamAV 1.0.7/27500/...` and CRLF.
    public static func header(clamdVersion: String) -> [UInt8] {
        Array("X-Proxy-Scanned: pop3.proxy (Bastion) with \(headerText(clamdVersion, limit: 900))\r\n".utf8)
    }

    /// The header fields of a message (the bytes before the first empty line), unfolded, with
    /// names in lower case; at most `limit` bytes of the message are read.
    public static func headerFields(of message: some Collection<UInt8>, limit: Int = 65536) -> [(String, [UInt8])] {
        var fields: [(String, [UInt8])] = []
        for rawLine in message.prefix(limit).split(separator: 10, omittingEmptySubsequences: false) {
            var line = Array(rawLine)
            if line.last == 13 { line.removeLast() }
            if line.isEmpty { break }
            if line.first == 32 || line.first == 9 {
                // A continuation of the field before.
                if !fields.isEmpty { fields[fields.count - 1].1 += [32] + line.drop { $0 == 32 || $0 == 9 } }
                continue
            }
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { continue }
            let name = String(decoding: line[..<colon].map(lowercased), as: UTF8.self)
            fields.append((name, Array(line[(colon + 1)...].drop { $0 == 32 || $0 == 9 })))
        }
        return fields
    }

    /// The notification sent in place of an infected message, as the lines of a multi-line
    /// answer (dot-stuffed, ending with `.` CRLF). `message` is the original (its header
    /// is read), `seconds` the time for its Date, `host` the proxy's host name.
    public static func infected(
        virus: String, message: some Collection<UInt8>, clamdVersion: String, seconds: Int, host: String
    ) -> [UInt8] {
        let fields = headerFields(of: message)
        func value(_ name: String) -> String {
            guard let raw = fields.first(where: { $0.0 == name })?.1 else { return "(none)" }
            return headerText(String(decoding: raw, as: UTF8.self), limit: 900)
        }
        let hostName = headerText(host, limit: 200).filter { $0 != " " }
        let lines = [
            "From: pop3.proxy <MAILER-DAEMON@\(hostName)>",
            "To: \(value("to"))",
            "Subject: Virus found: \(headerText(virus, limit: 200))",
            "Date: \(date(seconds))",
            "Message-ID: <pop3.proxy.\(seconds).\(getpid()).\(UInt32.random(in: 0...UInt32.max))@\(hostName)>",
            "MIME-Version: 1.0",
            "Content-Type: text/plain; charset=utf-8",
            "Content-Transfer-Encoding: 8bit",
            String(decoding: header(clamdVersion: clamdVersion).dropLast(2), as: UTF8.self),
            "",
            "pop3.proxy found a virus in a message for you and did not deliver it.",
            "",
            "  Virus:       \(headerText(virus, limit: 200))",
            "  From:        \(value("from"))",
            "  To:          \(value("to"))",
            "  Subject:     \(value("subject"))",
            "  Date:        \(value("date"))",
            "  Message-ID:  \(value("message-id"))",
            "",
            "The message stays on the server. Ask your administrator if you need it.",
        ]
        var out: [UInt8] = []
        for line in lines {
            if line.hasPrefix(".") { out.append(UInt8(ascii: ".")) }
            out += Array(line.utf8) + [13, 10]
        }
        return out + Array(".\r\n".utf8)
    }

    /// `text` fit for a header line: printable ASCII only (anything else as `?`), at most
    /// `limit` bytes.
    static func headerText(_ text: String, limit: Int) -> String {
        String(decoding: text.utf8.prefix(limit).map { $0 >= 32 && $0 < 127 ? $0 : UInt8(ascii: "?") }, as: UTF8.self)
    }

    /// An RFC 5322 date in UTC: `Wed, 02 Dec 2026 19:13:12 +0000`.
    static func date(_ seconds: Int) -> String {
        var t = time_t(seconds)
        var parts = tm()
        gmtime_r(&t, &parts)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ n: Int32) -> String { n < 10 ? "0\(n)" : "\(n)" }
        return
            "\(days[Int(parts.tm_wday)]), \(two(parts.tm_mday)) \(months[Int(parts.tm_mon)]) \(parts.tm_year + 1900) "
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) +0000"
    }
}

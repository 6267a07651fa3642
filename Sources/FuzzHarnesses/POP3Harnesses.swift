import POP3Proxy

/// pop3.proxy's protocol pieces on arbitrary bytes: what a client sends (command lines, USER
/// and PASS with server selection and proxy authentication, the -s list it is matched with)
/// and what a server sends (status lines, multi-line answers in pieces of any size).
enum POP3Harnesses {
    /// Client lines: every line parses to a command; a forwarded command's canonical line
    /// parses back to the same command; keywords in the log are printable.
    static func commands(_ data: UnsafeRawBufferPointer) {
        var reader = LineReader(limit: 512)
        var rest = data
        while !rest.isEmpty {
            switch reader.next(rest) {
            case .line(let line, let used):
                let command = POP3Command.parse(line)
                precondition(command.keyword.utf8.allSatisfy { $0 >= 32 && $0 < 127 }, "a printable keyword")
                switch command {
                case .unsupported, .malformed: break
                default:
                    let canonical = command.line
                    precondition(canonical.suffix(2) == [13, 10], "a forwarded line ends with CRLF")
                    precondition(POP3Command.parse(canonical.dropLast(2)) == command, "the canonical line reads back")
                }
                precondition(used > 0 && used <= rest.count, "a line uses some bytes")
                rest = UnsafeRawBufferPointer(rebasing: rest[used...])
            case .incomplete:
                precondition(reader.pendingCount <= 512, "bounded")
                return
            case .tooLong:
                return
            }
        }
    }

    /// Server bytes: the end of a multi-line answer is found at the same place whatever the
    /// pieces; the status of the first line is +OK, -ERR or nothing.
    static func answers(_ data: UnsafeRawBufferPointer) {
        let (pieces, stream) = Harnesses.halves(data)
        _ = POP3Status.of(stream.prefix { $0 != 10 })
        var whole = MultilineEnd()
        let expected = whole.scan(stream)
        var scanner = MultilineEnd()
        var offset = 0
        var index = 0
        var found: Int?
        while offset < stream.count {
            let size = pieces.isEmpty ? 1 : Int(pieces[index % pieces.count]) % 64 + 1
            index += 1
            let upper = min(offset + size, stream.count)
            if let end = scanner.scan(UnsafeRawBufferPointer(rebasing: stream[offset..<upper])) {
                found = offset + end
                break
            }
            offset = upper
        }
        precondition(found == expected, "the end of an answer does not depend on the pieces")
        if let expected {
            precondition(stream[..<expected].suffix(3).elementsEqual([46, 13, 10]), "an answer ends with .CRLF")
        }
    }

    /// USER and PASS with every delimiter set, and the -s list matched in bounded time.
    static func logins(_ data: UnsafeRawBufferPointer) {
        let (listPart, userPart) = Harnesses.halves(data)
        let user = Array(userPart.prefix(40))
        let delimiters = Array(listPart.prefix(3))
        let login = ServerLogin(user: user, delimiters: delimiters.isEmpty ? nil : delimiters)
        precondition(login.serverUser.count <= user.count, "the server login is part of the USER")
        let pass = Array(userPart.dropFirst(40))
        let (proxy, server) = login.passwords(pass)
        if login.proxyAuthentication && pass.contains(UInt8(ascii: ":")) {
            precondition(proxy + [UInt8(ascii: ":")] + server == pass, "PASS splits at a colon")
        } else {
            precondition(proxy == pass && server == pass, "an unsplit PASS goes whole to both")
        }
        let list = ServerList(String(decoding: listPart.dropFirst(3), as: UTF8.self))
        _ = list.allows(login.server ?? user)
    }

    /// pop3.proxy's command line (arbitrary argv): parsed, or refused with a message.
    static func arguments(_ data: UnsafeRawBufferPointer) {
        let words = Harnesses.arguments(data).map { String(decoding: $0, as: UTF8.self) }
        do {
            let options = try POP3ProxyOptions.parse(words)
            precondition(options.help || options.server != nil || options.serverSelection, "a server or -e")
        } catch {
            precondition(!error.message.isEmpty, "a refusal says why")
        }
    }

    /// clamd's replies: only its own forms of "OK" are clean, and whatever it says is shown in
    /// printable form.
    static func clamdReply(_ data: UnsafeRawBufferPointer) {
        switch ClamdProtocol.verdict(data) {
        case .clean:
            var text = Array(data)
            while let last = text.last, last == 0 || last == 10 || last == 13 { text.removeLast() }
            precondition(
                text.split(separator: UInt8(ascii: ":")).last?.drop { $0 == 32 }.elementsEqual(Array("OK".utf8))
                    == true, "clean only for OK")
        case .infected(let name), .failed(let name):
            precondition(name.utf8.allSatisfy { $0 >= 32 && $0 < 127 }, "printable words")
        }
        _ = ClamdProtocol.versionLine(data)
    }

    /// The virus notification for any message and any virus name: a multi-line answer whose
    /// end is exactly its last byte, CRLF lines of at most 998 bytes, ASCII header lines.
    static func scanNotice(_ data: UnsafeRawBufferPointer) {
        let (virus, message) = Harnesses.halves(data)
        let notice = ScanNotice.infected(
            virus: String(decoding: virus, as: UTF8.self), message: message, clamdVersion: "ClamAV 1.0", seconds: 0,
            host: "gw.example.org")
        var end = MultilineEnd()
        precondition(notice.withUnsafeBytes { end.scan($0) } == notice.count, "the answer ends at its end")
        var inHeader = true
        for line in notice.split(separator: 10, omittingEmptySubsequences: false).dropLast() {
            precondition(line.last == 13 && line.count <= 999, "CRLF lines of at most 998 bytes")
            precondition(!line.dropLast().contains(13), "no bare CR")
            if line.count == 1 { inHeader = false }
            if inHeader { precondition(line.dropLast().allSatisfy { $0 >= 32 && $0 < 127 }, "ASCII headers") }
        }
    }
}

// MARK: - Words of Zekoll's dialect

/// A word of a configuration file and where it starts.
struct Word: Equatable {
    var text: String
    var line: Int
    /// 1-based, in bytes.
    var column: Int
}

/// The lines of a file in Zekoll's dialect that hold words: whitespace (space, tab, CR, FF, VT) separates words,
/// and a word that starts with `#` starts a comment to the end of its line (so `a#b` is one word).
func directiveLines(_ text: [UInt8]) -> [[Word]] {
    var lines: [[Word]] = []
    var lineNumber = 0
    for line in text.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
        lineNumber += 1
        var words: [Word] = []
        var index = line.startIndex
        while index < line.endIndex {
            if isBlank(line[index]) {
                index += 1
                continue
            }
            if line[index] == UInt8(ascii: "#") { break }
            let start = index
            while index < line.endIndex && !isBlank(line[index]) { index += 1 }
            words.append(
                Word(
                    text: String(decoding: line[start..<index], as: UTF8.self),
                    line: lineNumber,
                    column: start - line.startIndex + 1))
        }
        if !words.isEmpty { lines.append(words) }
    }
    return lines
}

private func isBlank(_ byte: UInt8) -> Bool {
    byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") || byte == UInt8(ascii: "\r") || byte == 0x0b
        || byte == 0x0c
}

// MARK: - Tokens of spreadspace's dialect

/// A token of spreadspace's grammar.
struct Token: Equatable {
    enum Kind: Equatable {
        case word
        case open
        case close
        case semicolon
    }

    var kind: Kind
    var text: String
    var line: Int
    var column: Int
}

/// spreadspace's tokens: `{`, `}`, `;` and words (runs of anything else but whitespace). `#` starts a comment
/// to the end of the line wherever it stands, as in spreadspace's lexer.
func stanzaTokens(_ text: [UInt8]) -> [Token] {
    var tokens: [Token] = []
    var line = 1
    var lineStart = 0
    var index = 0
    func isWordByte(_ byte: UInt8) -> Bool {
        !isBlank(byte) && byte != UInt8(ascii: "\n") && byte != UInt8(ascii: "#") && byte != UInt8(ascii: "{")
            && byte != UInt8(ascii: "}") && byte != UInt8(ascii: ";")
    }
    while index < text.count {
        let byte = text[index]
        let column = index - lineStart + 1
        switch byte {
        case UInt8(ascii: "\n"):
            line += 1
            index += 1
            lineStart = index
        case UInt8(ascii: "#"):
            while index < text.count && text[index] != UInt8(ascii: "\n") { index += 1 }
        case UInt8(ascii: "{"):
            tokens.append(Token(kind: .open, text: "{", line: line, column: column))
            index += 1
        case UInt8(ascii: "}"):
            tokens.append(Token(kind: .close, text: "}", line: line, column: column))
            index += 1
        case UInt8(ascii: ";"):
            tokens.append(Token(kind: .semicolon, text: ";", line: line, column: column))
            index += 1
        case _ where isBlank(byte):
            index += 1
        default:
            let start = index
            while index < text.count && isWordByte(text[index]) { index += 1 }
            let word = String(decoding: text[start..<index], as: UTF8.self)
            tokens.append(Token(kind: .word, text: word, line: line, column: column))
        }
    }
    return tokens
}

// MARK: - Dialect detection

extension ConfigurationDialect {
    /// The dialect of a file: spreadspace's when its first directive is `listen` and a `{` follows somewhere
    /// after it, Zekoll's otherwise (an empty file included).
    public static func detect(in text: [UInt8]) -> ConfigurationDialect {
        let words = directiveLines(text).joined()
        guard words.first?.text == "listen" else { return .zekoll }
        return words.dropFirst().contains { $0.text.contains("{") } ? .spreadspace : .zekoll
    }
}

/// The lexical rules sockd.conf and sockd.route share, on bytes: lines end at LF (a CR before it
/// is a blank), words are separated by blanks (space, tab, CR), `#` starts a comment.
enum ConfigWords {
    static let space = UInt8(ascii: " ")
    static let tab = UInt8(ascii: "\t")
    static let carriageReturn = UInt8(ascii: "\r")
    static let newline = UInt8(ascii: "\n")
    static let hash = UInt8(ascii: "#")
    static let colon = UInt8(ascii: ":")
    static let comma = UInt8(ascii: ",")
    static let slash = UInt8(ascii: "/")
    static let dot = UInt8(ascii: ".")

    static func isBlank(_ byte: UInt8) -> Bool { byte == space || byte == tab || byte == carriageReturn }

    /// Calls `body` with each line (without its LF) and its number, from 1. A last line without
    /// LF counts; an empty text has no line.
    static func forEachLine(_ text: [UInt8], _ body: (ArraySlice<UInt8>, Int) -> Void) {
        var start = text.startIndex
        var number = 1
        while start < text.endIndex {
            let end = text[start...].firstIndex(of: newline) ?? text.endIndex
            body(text[start..<end], number)
            number += 1
            start = end + 1
        }
    }

    /// The blank-separated words of `line`.
    static func words(_ line: ArraySlice<UInt8>) -> [ArraySlice<UInt8>] {
        line.split(whereSeparator: isBlank)
    }

    /// `line` without blanks at either end.
    static func trimmed(_ line: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
        guard let first = line.firstIndex(where: { !isBlank($0) }) else { return line[line.endIndex...] }
        let last = line.lastIndex(where: { !isBlank($0) })!
        return line[first...last]
    }

    /// ASCII lower case.
    static func lowercased(_ bytes: some Collection<UInt8>) -> [UInt8] {
        bytes.map { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") ? $0 + 32 : $0 }
    }

    /// True when `word` can stand as one word of a line: not empty, no blank, LF or `#`.
    static func isWord(_ word: some Collection<UInt8>) -> Bool {
        !word.isEmpty && !word.contains { isBlank($0) || $0 == newline || $0 == hash }
    }

    /// True for a command the parser could have read after `:` (or after `#NO_IDENTD:`):
    /// not empty, one line, no blank at either end, and (`comment` false) no `#`.
    static func isCommand(_ command: [UInt8], allowsHash: Bool) -> Bool {
        guard let first = command.first, let last = command.last, !isBlank(first), !isBlank(last) else {
            return false
        }
        return !command.contains(newline) && (allowsHash || !command.contains(hash))
    }
}

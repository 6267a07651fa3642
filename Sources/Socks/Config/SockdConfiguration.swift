import GatewayKit

/// A `#NO_IDENTD:` or `#BAD_ID:` line: the command for one of the two identd failures.
public struct SpecialCommand: Hashable, Sendable {
    public var line: Int
    public var command: [UInt8]

    public init(line: Int, command: [UInt8]) {
        self.line = line
        self.command = command
    }
}

/// A parsed sockd.conf: its rules in file order and the two identd failure commands.
public struct SockdConfiguration: Hashable, Sendable {
    public var rules: [SockdRule]
    /// `#NO_IDENTD:`: run when identd on the client's host cannot be reached (under `?=I`/`-I`).
    public var noIdentd: SpecialCommand?
    /// `#BAD_ID:`: run when identd names another user than the client claims.
    public var badIdent: SpecialCommand?

    public init(rules: [SockdRule] = [], noIdentd: SpecialCommand? = nil, badIdent: SpecialCommand? = nil) {
        self.rules = rules
        self.noIdentd = noIdentd
        self.badIdent = badIdent
    }

    /// The first line that applies to `query`; nil denies (no line matched).
    public func match(_ query: RuleQuery) -> SockdRule? {
        rules.first { $0.matches(query) }
    }

    /// The configuration as sockd.conf text (dump_sockdfc, SIGUSR1): each rule and special
    /// line at its own line number (blank lines in between), so that the text parses back to
    /// the same configuration with the same line numbers.
    public var text: [UInt8] {
        var lines: [(Int, [UInt8])] = rules.map { ($0.line, $0.text) }
        if let noIdentd { lines.append((noIdentd.line, Array("#NO_IDENTD: ".utf8) + noIdentd.command)) }
        if let badIdent { lines.append((badIdent.line, Array("#BAD_ID: ".utf8) + badIdent.command)) }
        return ConfigText.numbered(lines)
    }
}

enum ConfigText {
    /// Lines placed at their numbers (ascending and distinct), blank lines filling the gaps.
    static func numbered(_ lines: [(Int, [UInt8])]) -> [UInt8] {
        var out: [UInt8] = []
        var current = 1
        for (number, text) in lines.sorted(by: { $0.0 < $1.0 }) {
            while current < number {
                out.append(ConfigWords.newline)
                current += 1
            }
            out += text
            out.append(ConfigWords.newline)
            current += 1
        }
        return out
    }
}

/// Reads a user list file named in sockd.conf (`*=/path`): the file's bytes or why not.
public typealias UserFileReader = @Sendable (_ path: [UInt8]) throws(SystemError) -> [UInt8]

/// Finds the tcp port of an /etc/services name.
public typealias ServiceLookup = @Sendable (_ name: [UInt8]) -> UInt16?

/// The sockd.conf parser. Pure: the user list files and /etc/services come from the closures
/// it is given (the tools and the daemon read the real files, tests give tables).
public struct SockdConfParser: Sendable {
    /// The file's name in messages.
    public var path: String
    public var readUserFile: UserFileReader
    public var servicePort: ServiceLookup

    public init(path: String, readUserFile: @escaping UserFileReader, servicePort: @escaping ServiceLookup) {
        self.path = path
        self.readUserFile = readUserFile
        self.servicePort = servicePort
    }

    /// Every good line, and every bad line's error (the bad lines are left out).
    public func parse(_ text: [UInt8]) -> (configuration: SockdConfiguration, errors: [SockdConfigError]) {
        var configuration = SockdConfiguration()
        var errors: [SockdConfigError] = []
        var lists = UserLists()
        ConfigWords.forEachLine(text) { line, number in
            do throws(SockdConfigProblem) {
                try parseLine(line, number: number, into: &configuration, lists: &lists)
            } catch {
                errors.append(SockdConfigError(path: path, line: number, problem: error))
            }
        }
        return (configuration, errors)
    }

    /// Lenient: the good lines and the bad lines' errors (to log). Strict: the configuration
    /// only when no line is bad; otherwise every bad line, in a ``SockdConfigRejection``.
    public func load(_ text: [UInt8], mode: SockdConfigMode) throws(SockdConfigRejection) -> (
        configuration: SockdConfiguration, warnings: [SockdConfigError]
    ) {
        let (configuration, errors) = parse(text)
        if mode == .strict && !errors.isEmpty { throw SockdConfigRejection(path: path, errors: errors) }
        return (configuration, errors)
    }

    // MARK: - One line

    static let noIdentdKeyword = Array("#NO_IDENTD:".utf8)
    static let badIdentKeyword = Array("#BAD_ID:".utf8)

    /// What one parse has read already: each user file once, and each `*=` list once (rules
    /// that name the same list share its names and its set).
    private struct UserLists {
        var files: [[UInt8]: [[UInt8]]] = [:]
        var lists: [ArraySlice<UInt8>: UserList?] = [:]
    }

    private func parseLine(
        _ line: ArraySlice<UInt8>, number: Int, into configuration: inout SockdConfiguration,
        lists: inout UserLists
    ) throws(SockdConfigProblem) {
        for (keyword, isNoIdentd) in [(Self.noIdentdKeyword, true), (Self.badIdentKeyword, false)]
        where line.starts(with: keyword) {
            let command = ConfigWords.trimmed(line.dropFirst(keyword.count))
            guard !command.isEmpty else { return }
            let existing = isNoIdentd ? configuration.noIdentd : configuration.badIdent
            if let existing {
                throw .repeatedSpecial(String(decoding: keyword.dropLast(), as: UTF8.self), firstLine: existing.line)
            }
            let special = SpecialCommand(line: number, command: Array(command))
            if isNoIdentd { configuration.noIdentd = special } else { configuration.badIdent = special }
            return
        }
        let content = line.prefix { $0 != ConfigWords.hash }
        var (words, command) = splitCommand(content)
        guard !words.isEmpty else {
            if command != nil { throw .missing("permit or deny before the command") }
            return
        }
        let actionWord = words.removeFirst()
        let action: RuleAction
        if actionWord.elementsEqual("permit".utf8) {
            action = .permit
        } else if actionWord.elementsEqual("deny".utf8) {
            action = .deny
        } else {
            throw .unknownAction(Array(actionWord))
        }
        var rule = SockdRule(line: number, action: action, source: .all, command: command)
        var index = 0
        var sawIdent = false
        var sawUsers = false
        while index < words.count, words[index].count >= 2, words[index].dropFirst().first == UInt8(ascii: "=") {
            let word = words[index]
            if word.first == UInt8(ascii: "?") {
                guard !sawIdent else { throw .repeatedOption(Array(word.prefix(2))) }
                sawIdent = true
                switch Array(word.dropFirst(2)) {
                case [UInt8(ascii: "I")]: rule.ident = .strict
                case [UInt8(ascii: "i")]: rule.ident = .lenient
                case [UInt8(ascii: "n")]: rule.ident = .off
                default: throw .invalidIdentOption(Array(word))
                }
            } else if word.first == UInt8(ascii: "*") {
                guard !sawUsers else { throw .repeatedOption(Array(word.prefix(2))) }
                sawUsers = true
                rule.users = try userList(word.dropFirst(2), lists: &lists)
            } else {
                break
            }
            index += 1
        }
        let (source, sourceWords) = try AddressPattern.parse(words, at: index, what: "source address and mask")
        rule.source = source
        index += sourceWords
        if index < words.count && PortCondition.Operator(word: words[index]) == nil {
            let (destination, destinationWords) = try AddressPattern.parse(
                words, at: index, what: "destination address")
            rule.destination = destination
            index += destinationWords
        }
        if index < words.count {
            guard let op = PortCondition.Operator(word: words[index]) else {
                throw .unknownOperator(Array(words[index]))
            }
            guard index + 1 < words.count else { throw .missing("port after \(op.word)") }
            rule.port = try port(op, words[index + 1])
            index += 2
        }
        if index < words.count { throw .unexpectedWord(Array(words[index]), expected: ": and a command, or the end") }
        configuration.rules.append(rule)
    }

    /// The words before the command and the command (nil when there is none, or nothing
    /// follows the `:`). The command starts at the first word that begins with `:` and is not
    /// an IPv6 address (`::1`, `::/0` and a mask `::` begin with a colon too).
    private func splitCommand(_ content: ArraySlice<UInt8>) -> ([ArraySlice<UInt8>], [UInt8]?) {
        var words: [ArraySlice<UInt8>] = []
        for word in ConfigWords.words(content) {
            if word.first == ConfigWords.colon && !Self.isIPv6Word(word) {
                let command = ConfigWords.trimmed(content[(word.startIndex + 1)...])
                return (words, command.isEmpty ? nil : Array(command))
            }
            words.append(word)
        }
        return (words, nil)
    }

    private static func isIPv6Word(_ word: ArraySlice<UInt8>) -> Bool {
        let address = word.prefix { $0 != ConfigWords.slash }
        return IPAddress(parsing: String(decoding: address, as: UTF8.self), family: .v6) != nil
    }

    private func userList(_ text: ArraySlice<UInt8>, lists: inout UserLists) throws(SockdConfigProblem) -> UserList? {
        if let known = lists.lists[text] { return known }
        var entries: [UserEntry] = []
        for part in text.split(separator: ConfigWords.comma) {
            let item = Array(part)
            if item.first == ConfigWords.slash {
                if let names = lists.files[item] {
                    entries.append(.file(path: item, names: names))
                    continue
                }
                let contents: [UInt8]
                do { contents = try readUserFile(item) } catch { throw .unreadableUserFile(item, error) }
                let names = UserList.names(inFile: contents)
                lists.files[item] = names
                entries.append(.file(path: item, names: names))
            } else {
                entries.append(.name(item))
            }
        }
        let list = entries.isEmpty ? nil : UserList(entries)
        lists.lists[text] = list
        return list
    }

    private func port(_ op: PortCondition.Operator, _ word: ArraySlice<UInt8>) throws(SockdConfigProblem)
        -> PortCondition
    {
        if word.allSatisfy({ $0 >= 48 && $0 <= 57 }) {
            guard word.count <= 5, let number = UInt16(String(decoding: word, as: UTF8.self)) else {
                throw .unknownService(Array(word))
            }
            return PortCondition(op: op, port: number)
        }
        guard let number = servicePort(Array(word)) else { throw .unknownService(Array(word)) }
        return PortCondition(op: op, port: number, service: Array(word))
    }
}

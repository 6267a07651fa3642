/// A command line that cannot be used; `message` says what and where.
public struct UsageError: Error, Equatable, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// The options a daemon takes: letters (clustered `-de`, an argument joined `-t600` or apart
/// `-t 600`) and GNU long options (`--name`, `--name=value`, `--name value`), each letter
/// an alias of a long name. Options come first: the first word that is not an option (or
/// `-` alone) and everything after it are operands, as is everything after `--`.
public struct OptionTable: Sendable {
    /// The program's name, for "see NAME --help".
    public let program: String
    /// Letters without an argument, by their long names.
    public let flags: [Character: String]
    /// Letters with an argument.
    public let withArgument: [Character: String]
    /// Long names without an argument (the letters' names and those with no letter).
    public let longFlags: Set<String>
    /// Long names with an argument.
    public let longWithArgument: Set<String>

    public init(
        program: String, flags: [Character: String], withArgument: [Character: String],
        longFlags: Set<String> = [], longWithArgument: Set<String> = []
    ) {
        self.program = program
        self.flags = flags
        self.withArgument = withArgument
        self.longFlags = longFlags.union(flags.values)
        self.longWithArgument = longWithArgument.union(withArgument.values)
    }

    /// Scans `args` (the words after the program's name): `option` gets each option's long
    /// name and its argument (nil for a flag) in order; the operands are returned.
    public func scan(
        _ args: [String], _ option: (_ name: String, _ value: String?) throws(UsageError) -> Void
    ) throws(UsageError) -> [String] {
        var i = 0
        while i < args.count {
            let word = args[i]
            if word == "-" || !word.hasPrefix("-") { break }
            i += 1
            if word == "--" { break }
            if word.hasPrefix("--") {
                var name = String(word.dropFirst(2))
                var value: String?
                if let eq = name.firstIndex(of: "=") {
                    value = String(name[name.index(after: eq)...])
                    name = String(name[..<eq])
                }
                if longFlags.contains(name) {
                    if value != nil { throw UsageError("option --\(name) takes no argument") }
                    try option(name, nil)
                } else if longWithArgument.contains(name) {
                    if value == nil {
                        guard i < args.count else { throw UsageError("option --\(name) needs an argument") }
                        value = args[i]
                        i += 1
                    }
                    try option(name, value)
                } else {
                    throw UsageError("unknown option --\(name) (see \(program) --help)")
                }
                continue
            }
            var letters = Substring(word.dropFirst())
            while let letter = letters.first {
                letters = letters.dropFirst()
                if let name = flags[letter] {
                    try option(name, nil)
                } else if let name = withArgument[letter] {
                    var value = String(letters)
                    letters = ""
                    if value.isEmpty {
                        guard i < args.count else { throw UsageError("option -\(letter) needs an argument") }
                        value = args[i]
                        i += 1
                    }
                    try option(name, value)
                } else {
                    throw UsageError("unknown option -\(letter) (see \(program) --help)")
                }
            }
        }
        return Array(args[i...])
    }
}

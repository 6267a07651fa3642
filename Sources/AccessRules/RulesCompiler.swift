import CDB

/// Why compiling rules failed.
public enum RulesCompileError: Error, Equatable {
    case parse(RuleParseError)
    case write(CDBWriteError)
}

/// Turns a rules text, fed in chunks of any size, into cdb records exactly as tcprules does:
/// one record per key, in input order, ranges expanded in ascending order.
public struct RulesCompiler<Sink: CDBSink> {
    public private(set) var writer: CDBWriter<Sink>
    private var partial: [UInt8] = []
    private var scratch: [UInt8] = []

    public init(writer: CDBWriter<Sink>) {
        self.writer = writer
    }

    /// Feeds the next chunk of input.
    public mutating func feed(_ chunk: UnsafeRawBufferPointer) throws(RulesCompileError) {
        let bytes = chunk.bindMemory(to: UInt8.self)
        var start = 0
        var i = 0
        let n = bytes.count
        while i < n {
            if bytes[i] == UInt8(ascii: "\n") {
                if partial.isEmpty {
                    try line(UnsafeBufferPointer(rebasing: bytes[start...i]))
                } else {
                    partial.append(contentsOf: bytes[start...i])
                    let whole = partial
                    partial.removeAll(keepingCapacity: true)
                    try whole.withUnsafeBufferPointer { p in
                        Result { () throws(RulesCompileError) in try self.line(p) }
                    }.get()
                }
                start = i + 1
            }
            i += 1
        }
        if start < n { partial.append(contentsOf: bytes[start..<n]) }
    }

    /// Handles a last line without a newline and writes the tables.
    public mutating func finish() throws(RulesCompileError) {
        if !partial.isEmpty {
            let whole = partial
            partial = []
            try whole.withUnsafeBufferPointer { p in Result { () throws(RulesCompileError) in try self.line(p) } }.get()
        }
        do { try writer.finish() } catch { throw .write(error) }
    }

    private mutating func line(_ text: UnsafeBufferPointer<UInt8>) throws(RulesCompileError) {
        scratch.removeAll(keepingCapacity: true)
        let addressLength: Int
        do {
            guard let n = try RuleParser.scan(text, instructions: &scratch) else { return }
            addressLength = n
        } catch { throw .parse(error) }
        let address = UnsafeBufferPointer(rebasing: text[0..<addressLength])
        if !address.contains(UInt8(ascii: "-")) {
            do {
                try scratch.withUnsafeBytes { d in
                    Result { () throws(CDBWriteError) in try writer.add(key: UnsafeRawBufferPointer(address), data: d) }
                }.get()
            } catch { throw .write(error) }
            return
        }
        guard let keys = RuleParser.keys(for: Array(address)) else { throw .parse(RuleParseError(quoting: text)) }
        let data = scratch
        for key in keys {
            do { try writer.add(key: key, data: data) } catch { throw .write(error) }
        }
    }
}

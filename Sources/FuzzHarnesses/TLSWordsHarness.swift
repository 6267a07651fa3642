import GatewayKit
import TLS

/// The TLS settings' pure parsers and the SNI name matching, on text: every line of the
/// input is read as a `--tls-protocols` value, a `--tls-ciphers` value and a version name;
/// each pair of neighbouring lines as a certificate's name and a client's SNI; the last line
/// as the SNI chosen among certificates made of the other lines (their words the names).
/// The first line's versions and ciphers, when they parse, go on to OpenSSL in a client
/// context, as tcpproxy hands them over (once per process for each combination).
///
/// Checked against the settings' own words, not their code: a run of versions parses to its
/// bounds, and what does not parse has no versions, an unknown word or a gap; a version's
/// name and a range's description read back as themselves; a cipher list keeps its TLS_
/// words as suites, the others as the list, either empty part the default, and reads back
/// the same; names match as RFC 6125 says on the names' bytes (ASCII case ignored, one
/// trailing dot ignored, a wildcard only as the whole leftmost label, standing for exactly one
/// label, never for a top-level domain); SNI picks the first exact name, then the first
/// wildcard, else the first certificate; a context OpenSSL refuses says why.
enum TLSWordsHarness {
    static func run(_ data: UnsafeRawBufferPointer) {
        let lines = data.split(separator: 10, omittingEmptySubsequences: false).map {
            String(decoding: $0, as: UTF8.self)
        }
        for line in lines {
            protocols(line)
            ciphers(line)
            if let version = TLSVersion(name: line) {
                precondition(TLSVersion(name: version.description) == version, "\(version) reads back")
            }
        }
        for (pattern, name) in zip(lines, lines.dropFirst()) {
            let matched = TLSNames.matches(pattern, name)
            let expected = matches(Array(pattern.utf8), Array(name.utf8))
            precondition(
                matched == expected, "\"\(pattern)\" against \"\(name)\": \(matched), RFC 6125 says \(expected)")
        }
        if let sni = lines.last {
            let certificates = lines.dropLast().map { $0.split(separator: " ").map(String.init) }
            let chosen = TLSNames.select(sni, among: certificates)
            precondition(chosen == select(sni, among: certificates), "SNI \"\(sni)\" chose certificate \(chosen)")
        }
        if let first = lines.first, let protocols = try? TLSProtocols(parsing: first),
            let ciphers = try? TLSCiphers(parsing: first)
        {
            let settings = "\(protocols) \(ciphers.list) \(ciphers.suites)"
            let untried = tried.withLock { tried in
                guard tried.count < 1024, !tried.contains(settings) else { return false }
                tried.insert(settings)
                return true
            }
            if untried {
                do {
                    _ = try TLSClientContext(TLSClientSettings(verify: false, protocols: protocols, ciphers: ciphers))
                } catch {
                    precondition(!error.description.isEmpty, "a refused context says why")
                }
            }
        }
    }

    /// The settings already handed to OpenSSL. OpenSSL 3's SSL_CTX_new fetches its algorithms
    /// anew for every context (a third of a millisecond, several times that under
    /// AddressSanitizer), which made it most of this harness's time (343 executions a second):
    /// each combination is tried once, the first 1,024 of them.
    static let tried = Locked<Set<String>>([])

    static func words(_ text: String) -> [String] {
        text.split { $0 == "," || $0 == ":" || $0 == " " }.map(String.init)
    }

    static func protocols(_ text: String) {
        let named = words(text).map { TLSVersion(name: $0) }
        switch Result(catching: { () throws(TLSError) in try TLSProtocols(parsing: text) }) {
        case .success(let range):
            precondition(range.minimum <= range.maximum, "\(range) is a range")
            let versions = named.compactMap { $0 }
            precondition(!versions.isEmpty && versions.count == named.count, "\"\(text)\" has an unknown word")
            precondition(range.minimum == versions.min() && range.maximum == versions.max(), "\(range): its bounds")
            for version in TLSVersion.allCases where version >= range.minimum && version <= range.maximum {
                precondition(versions.contains(version), "\(range) holds \(version), which \"\(text)\" never named")
            }
            precondition((try? TLSProtocols(parsing: range.description)) == range, "\(range) reads back")
        case .failure(let error):
            precondition(!error.description.isEmpty, "a refusal says why")
            let versions = named.compactMap { $0 }
            let gap =
                versions.count == named.count && !versions.isEmpty
                && TLSVersion.allCases.contains { v in
                    v > versions.min()! && v < versions.max()! && !versions.contains(v)
                }
            precondition(named.isEmpty || versions.count < named.count || gap, "\"\(text)\" refused: \(error)")
        }
    }

    static func ciphers(_ text: String) {
        let all = words(text)
        guard let parsed = try? TLSCiphers(parsing: text) else {
            precondition(all.isEmpty, "\"\(text)\" has ciphers, yet was refused")
            return
        }
        let suites = all.filter { $0.hasPrefix("TLS_") }
        let list = all.filter { !$0.hasPrefix("TLS_") }
        precondition(
            parsed.suites == (suites.isEmpty ? TLSCiphers.intermediate.suites : suites.joined(separator: ":")),
            "\"\(text)\": suites \(parsed.suites)")
        precondition(
            parsed.list == (list.isEmpty ? TLSCiphers.intermediate.list : list.joined(separator: ":")),
            "\"\(text)\": list \(parsed.list)")
        precondition((try? TLSCiphers(parsing: "\(parsed.list):\(parsed.suites)")) == parsed, "\(parsed) reads back")
    }

    // MARK: - RFC 6125 on bytes

    static func normal(_ name: [UInt8]) -> [UInt8] {
        var lower = name.map { $0 >= 65 && $0 <= 90 ? $0 + 32 : $0 }
        if lower.last == 46 { lower.removeLast() }
        return lower
    }

    static func matches(_ pattern: [UInt8], _ name: [UInt8]) -> Bool {
        let pattern = normal(pattern)
        let name = normal(name)
        guard !pattern.isEmpty, !name.isEmpty else { return false }
        guard pattern.starts(with: [42, 46]) else { return pattern == name }
        // "*.rest": the name is one label of at least a byte, then ".rest"; rest has a dot.
        let rest = pattern.dropFirst(2)
        guard rest.contains(46), let dot = name.firstIndex(of: 46), dot > 0 else { return false }
        return name[(dot + 1)...].elementsEqual(rest)
    }

    static func select(_ name: String, among certificates: [[String]]) -> Int {
        guard !name.isEmpty else { return 0 }
        let sni = Array(name.utf8)
        func exact(_ pattern: String) -> Bool {
            let bytes = Array(pattern.utf8)
            return !bytes.starts(with: [42, 46]) && matches(bytes, sni)
        }
        if let i = certificates.firstIndex(where: { $0.contains(where: exact) }) { return i }
        return certificates.firstIndex { $0.contains { matches(Array($0.utf8), sni) } } ?? 0
    }
}

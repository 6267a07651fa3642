#if canImport(Glibc)
import Glibc
#endif
import FuzzHarnesses
import GatewayKit
import Testing

// Every committed fuzz input (the seed corpora and the regressions found by fuzzing) through
// its harness, in the ordinary test command: a finding that was fixed can never come back.
// scripts/fuzz --replay does the same under AddressSanitizer; scripts/fuzz SECONDS searches.

/// The repository's Fuzz/ folder.
let fuzzRoot: String = {
    var path = #filePath
    for _ in 0..<3 { path = String(path[..<path.lastIndex(of: "/")!]) }
    return path + "/Fuzz"
}()

/// The files in `folder` (none when it does not exist).
func files(in folder: String) -> [String] {
    guard let dir = opendir(folder) else { return [] }
    defer { closedir(dir) }
    var names: [String] = []
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if !name.hasPrefix(".") { names.append(folder + "/" + name) }
    }
    return names.sorted()
}

@Suite("Fuzz corpora and regressions replayed")
struct FuzzReplayTests {
    @Test(arguments: Harnesses.all.map(\.name))
    func replay(harness name: String) throws {
        let harness = try #require(Harnesses.named(name))
        let inputs = files(in: "\(fuzzRoot)/corpus/\(name)") + files(in: "\(fuzzRoot)/regressions/\(name)")
        #expect(!inputs.isEmpty, "every harness has a seed corpus")
        for path in inputs {
            let bytes = try FD.readWholeFile(path)
            bytes.withUnsafeBytes { harness.run($0) }
        }
    }

    /// The differential inputs against ucspi-tcp itself, when scripts/test (or
    /// scripts/fetch-peers) has unpacked it into peers/.
    @Test func differentialAgainstUcspiTcp() throws {
        let reference = fuzzRoot.dropLast("/Fuzz".count) + "/peers/ucspi-tcp/usr/bin"
        guard access(reference + "/tcprules", X_OK) == 0 else { return }
        let name = "tcprules-differential"
        for path in files(in: "\(fuzzRoot)/corpus/\(name)") + files(in: "\(fuzzRoot)/regressions/\(name)") {
            let bytes = try FD.readWholeFile(path)
            bytes.withUnsafeBytes { Harnesses.tcprulesDifferential($0, reference: String(reference)) }
        }
    }

    /// tls-server's recorded conversations finish their handshakes on replay (the harness's
    /// random numbers are fixed): if an OpenSSL update changes how it draws them, the server
    /// answers differently, the recorded clients fail, and the fuzzer is back to ClientHellos.
    /// Then delete Fuzz/corpus/tls-server/{conversation,resumption,no-certificate}-* and run
    /// Fuzz/make-seeds.py with bastion-fuzz built (scripts/fuzz --replay tls-server builds it).
    @Test func tlsConversationsStillFinishTheirHandshakes() throws {
        let folder = "\(fuzzRoot)/corpus/tls-server"
        for path in files(in: folder) {
            let name = String(path.dropFirst(folder.count + 1))
            let bytes = try FD.readWholeFile(path)
            let outcome = bytes.withUnsafeBytes { Harnesses.tlsServer($0) }
            if name.hasPrefix("conversation-") || name.hasPrefix("resumption-") {
                #expect(outcome.established && outcome.plaintext > 0, "\(name) no longer finishes its handshake")
                let sni = name.split(separator: "-").dropFirst(2).first.map(String.init)
                #expect(outcome.serverName == (sni == "no" ? nil : sni), "\(name)")
            } else {
                #expect(!outcome.established, "\(name): established without the client's whole handshake")
            }
            if name.hasPrefix("resumption-") {
                #expect(outcome.resumed, "\(name) no longer resumes its session")
            }
        }
    }

    @Test func everyHarnessHasADictionaryOrSaysWhyNot() {
        for harness in Harnesses.all {
            #expect(access("\(fuzzRoot)/dict/\(harness.name).dict", R_OK) == 0, "\(harness.name) has no dictionary")
        }
    }
}

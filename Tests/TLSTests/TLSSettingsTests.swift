import Testing

@testable import TLS

@Suite("TLS settings, pure")
struct TLSSettingsTests {
    @Test("versions are read in OpenSSL's names and bare numbers, as one run")
    func protocols() throws {
        #expect(try TLSProtocols(parsing: "TLSv1.2,TLSv1.3") == .default)
        #expect(try TLSProtocols(parsing: "tlsv1.3") == TLSProtocols(minimum: .tls1_3, maximum: .tls1_3))
        #expect(try TLSProtocols(parsing: "1.3 1.2") == .default)
        #expect(try TLSProtocols(parsing: "TLSv1:TLSv1.1").maximum == .tls1_1)
        #expect(TLSProtocols.default.description == "TLSv1.2,TLSv1.3")
        #expect(throws: TLSError("the TLS versions \"TLSv1.1,TLSv1.3\" have a gap: give a run such as TLSv1.2,TLSv1.3"))
        {
            try TLSProtocols(parsing: "TLSv1.1,TLSv1.3")
        }
        #expect(throws: TLSError("unknown TLS version \"SSLv3\" (TLSv1, TLSv1.1, TLSv1.2 or TLSv1.3)")) {
            try TLSProtocols(parsing: "SSLv3,TLSv1.2")
        }
        #expect(throws: TLSError("no TLS version in \",\"")) { try TLSProtocols(parsing: ",") }
    }

    @Test("a cipher list's TLS_ words are TLS 1.3 suites; either part left out keeps its default")
    func ciphers() throws {
        let both = try TLSCiphers(parsing: "ECDHE-RSA-AES128-GCM-SHA256:TLS_AES_256_GCM_SHA384")
        #expect(both == TLSCiphers(list: "ECDHE-RSA-AES128-GCM-SHA256", suites: "TLS_AES_256_GCM_SHA384"))
        #expect(try TLSCiphers(parsing: "TLS_CHACHA20_POLY1305_SHA256").list == TLSCiphers.intermediate.list)
        #expect(try TLSCiphers(parsing: "HIGH").suites == TLSCiphers.intermediate.suites)
        #expect(
            !TLSCiphers.intermediate.list.contains("CBC") && !TLSCiphers.intermediate.list.contains("RSA-AES128-SHA"))
        #expect(throws: TLSError.self) { try TLSCiphers(parsing: "::") }
    }

    @Test("names match as RFC 6125 says: case, the trailing dot, one label per wildcard")
    func names() {
        #expect(TLSNames.matches("Example.ORG", "example.org."))
        #expect(TLSNames.matches("*.example.org", "www.example.org"))
        #expect(!TLSNames.matches("*.example.org", "example.org"))
        #expect(!TLSNames.matches("*.example.org", "a.b.example.org"))
        #expect(!TLSNames.matches("*.org", "example.org"), "a wildcard needs two labels under it")
        #expect(!TLSNames.matches("w*.example.org", "www.example.org"), "only a whole label is a wildcard")
        #expect(!TLSNames.matches("", "example.org") && !TLSNames.matches("example.org", ""))
    }

    @Test("names compare as bytes: no Unicode case mapping or equivalence, no label hidden from a wildcard")
    func namesAsBytes() {
        // Found by the tls-words fuzz harness's RFC 6125 check on hand-made inputs.
        #expect(!TLSNames.matches("k.test", "\u{212A}.test"), "the Kelvin sign is not k")
        #expect(!TLSNames.matches("\u{C9}.test", "\u{E9}.test"), "no case mapping beyond ASCII")
        #expect(!TLSNames.matches("caf\u{E9}.test", "cafe\u{301}.test"), "no canonical equivalence")
        #expect(!TLSNames.matches("*.x.test", "a.\u{301}.x.test"), "a wildcard stands for one label of bytes")
        #expect(TLSNames.matches("caf\u{E9}.test", "CAF\u{E9}.TEST."), "other bytes match themselves")
        #expect(TLSNames.select("a.\u{301}.x.test", among: [["localhost"], ["*.x.test"]]) == 0)
    }

    @Test("SNI picks an exact name first, then a wildcard, else the first certificate")
    func selection() {
        let certificates = [["localhost"], ["*.wild.test", "other.test"], ["exact.wild.test"]]
        #expect(TLSNames.select(nil, among: certificates) == 0)
        #expect(TLSNames.select("", among: certificates) == 0)
        #expect(TLSNames.select("other.test", among: certificates) == 1)
        #expect(TLSNames.select("a.wild.test", among: certificates) == 1)
        #expect(TLSNames.select("exact.wild.test", among: certificates) == 2)
        #expect(TLSNames.select("LOCALHOST.", among: certificates) == 0)
        #expect(TLSNames.select("unknown.test", among: certificates) == 0)
    }

    @Test("facts read as one log phrase")
    func summary() {
        let facts = TLSFacts(
            version: "TLSv1.3", cipher: "TLS_AES_128_GCM_SHA256", serverName: "a.test", peerSubject: "CN=x",
            resumed: true)
        #expect(facts.summary == "TLSv1.3 TLS_AES_128_GCM_SHA256 resumed sni=a.test subject=CN=x")
    }
}

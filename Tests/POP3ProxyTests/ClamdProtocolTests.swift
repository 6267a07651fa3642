import POP3Proxy
import Testing

@Suite("clamd's INSTREAM protocol (clamd(8))")
struct ClamdProtocolTests {
    @Test func commandsAndChunks() {
        #expect(ClamdProtocol.instream == Array("zINSTREAM\0".utf8))
        #expect(ClamdProtocol.version == Array("zVERSION\0".utf8))
        #expect(ClamdProtocol.chunkHeader(1) == [0, 0, 0, 1])
        #expect(ClamdProtocol.chunkHeader(65536) == [0, 1, 0, 0])
        #expect(ClamdProtocol.chunkHeader(0x0102_0304) == [1, 2, 3, 4])
        #expect(ClamdProtocol.endOfStream == [0, 0, 0, 0])
    }

    @Test(arguments: [
        ("stream: OK\0", ClamdProtocol.Verdict.clean),
        ("stream: OK", .clean),
        ("stream: Eicar-Test-Signature FOUND\0", .infected("Eicar-Test-Signature")),
        ("stream: Win.Test.EICAR_HDB-1 FOUND\n", .infected("Win.Test.EICAR_HDB-1")),
        ("INSTREAM size limit exceeded. ERROR\0", .failed("INSTREAM size limit exceeded. ERROR")),
        (
            "stream: lstat() failed: No such file or directory. ERROR",
            .failed("stream: lstat() failed: No such file or directory. ERROR")
        ),
        ("stream:  FOUND", .failed("stream:  FOUND")),
        ("", .failed("")),
        ("UNKNOWN COMMAND\0", .failed("UNKNOWN COMMAND")),
        ("stream: OK\u{1}", .failed("stream: OK\\001")),
    ])
    func verdicts(reply: String, verdict: ClamdProtocol.Verdict) {
        #expect(ClamdProtocol.verdict(Array(reply.utf8)) == verdict)
    }

    @Test func versionLines() {
        #expect(
            ClamdProtocol.versionLine(Array("ClamAV 1.0.7/27500/Mon Dec  1 09:00:00 2026\0".utf8))
                == "ClamAV 1.0.7/27500/Mon Dec  1 09:00:00 2026")
        #expect(ClamdProtocol.versionLine(Array("UNKNOWN COMMAND\0".utf8)) == nil)
    }
}

import Socks
import Testing

@Suite("sockd's reply codes")
struct OutcomeTests {
    @Test func socks4CodesAreTheManualsFour() {
        #expect(Outcome.granted.socks4Code == 90)
        #expect(Outcome.noIdentd.socks4Code == 92)
        #expect(Outcome.identMismatch.socks4Code == 93)
        for outcome in Outcome.allCases where ![.granted, .noIdentd, .identMismatch].contains(outcome) {
            #expect(outcome.socks4Code == 91, "\(outcome)")
        }
    }

    @Test func socks5CodesAreRFC1928s() {
        let codes: [Outcome: UInt8] = [
            .granted: 0, .generalFailure: 1, .notAllowed: 2, .networkUnreachable: 3, .hostUnreachable: 4,
            .connectionRefused: 5, .timedOut: 6, .commandNotSupported: 7, .addressTypeNotSupported: 8,
            .noIdentd: 2, .identMismatch: 2,
        ]
        for outcome in Outcome.allCases { #expect(outcome.socks5Code == codes[outcome], "\(outcome)") }
    }
}

import GatewayKit
import Socks
import Testing

// The negotiation as a session drives it: the client's bytes in pieces, the password check
// answered when asked. Every case runs whole, a byte at a time, cut at every single point,
// and cut at many random points: the actions must not depend on the pieces.

/// A client's bytes through a negotiation, cut at `cuts`; the password check is answered at
/// once (`passwords` holds the good ones), as a driver that stops reading meanwhile would.
/// Pieces after the `ready` belong to the relay: they are added to its `following`, so every
/// cut gives the same actions as the whole.
func negotiate(
    _ stream: [UInt8], policy: NegotiationPolicy, passwords: [[UInt8]: [UInt8]] = [:], cuts: [Int] = [],
    endOfInput: Bool = false
) -> [NegotiationAction] {
    var negotiation = SocksNegotiation(policy: policy)
    var actions: [NegotiationAction] = []
    var answered = 0
    func answerChecks() {
        while answered < actions.count {
            defer { answered += 1 }
            if case .checkPassword(let username, let password) = actions[answered] {
                negotiation.passwordChecked(passwords[username] == password, into: &actions)
            }
        }
    }
    var start = 0
    for end in cuts.sorted() + [stream.count] where end >= start {
        let piece = stream[start..<end]
        start = end
        if negotiation.isFinished {
            if case .ready(let request, let following) = actions.last {
                actions[actions.count - 1] = .ready(request, following: following + piece)
            }
            continue
        }
        negotiation.receive(piece, into: &actions)
        answerChecks()
        #expect(negotiation.bufferedCount <= Socks4Request.maximumLength, "the negotiation holds little")
    }
    if endOfInput {
        negotiation.endOfInput(into: &actions)
        answerChecks()
    }
    return actions
}

/// The same stream cut every way: whole, a byte at a time, at each single point, at random
/// points. Returns the whole's actions after checking every other way gives them too.
func negotiateEveryWay(
    _ stream: [UInt8], policy: NegotiationPolicy, passwords: [[UInt8]: [UInt8]] = [:], endOfInput: Bool = false,
    sourceLocation: SourceLocation = #_sourceLocation
) -> [NegotiationAction] {
    let whole = negotiate(stream, policy: policy, passwords: passwords, endOfInput: endOfInput)
    var ways: [[Int]] = [Array(0...stream.count)]
    for cut in 0...stream.count { ways.append([cut]) }
    var state: UInt64 = 0x2545_F491_4F6C_DD1D
    for _ in 0..<40 {
        var cuts: [Int] = []
        for _ in 0..<4 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            cuts.append(Int(state >> 33) % (stream.count + 1))
        }
        ways.append(cuts)
    }
    for cuts in ways {
        let split = negotiate(stream, policy: policy, passwords: passwords, cuts: cuts, endOfInput: endOfInput)
        #expect(split == whole, "cut at \(cuts)", sourceLocation: sourceLocation)
        if split != whole { break }
    }
    return whole
}

let noPassword = NegotiationPolicy(passwordRequired: false)
let passwordNeeded = NegotiationPolicy(passwordRequired: true)
let bob: [[UInt8]: [UInt8]] = [bytes("bob"): bytes("secret")]

func socks4Request(_ port: UInt16, _ address: IPAddress, user: String = "") -> [UInt8] {
    Socks4Request(command: .connect, port: port, address: address, userID: bytes(user)).bytes
}

func request(
    _ version: SocksVersion, _ command: SocksCommand, _ destination: SocksAddress, user: String = "",
    method: Socks5Method? = nil
) -> SocksRequest {
    SocksRequest(version: version, command: command, destination: destination, user: bytes(user), method: method)
}

func request(
    _ version: SocksVersion, destination: SocksAddress, user: String = "", method: Socks5Method? = nil
) -> SocksRequest {
    request(version, .connect, destination, user: user, method: method)
}

let login: [UInt8] = UsernamePasswordRequest(username: bytes("bob"), password: bytes("secret")).bytes
let connectV4: [UInt8] = Socks5Request(command: .connect, destination: SocksAddress(v4, port: 80)).bytes
let data = bytes("GET / HTTP/1.0\r\n\r\n")

@Suite("SOCKS4 and SOCKS4a negotiations")
struct Socks4NegotiationTests {
    @Test func aConnectIsReadyWithTheBytesAfterIt() {
        let stream = socks4Request(80, v4, user: "joe") + data
        #expect(
            negotiateEveryWay(stream, policy: noPassword) == [
                .ready(request(.socks4, destination: SocksAddress(v4, port: 80), user: "joe"), following: data)
            ])
    }

    @Test func socks4aAndBind() {
        let named = Socks4Request(command: .bind, port: 21, hostName: bytes("ftp.example.org"), userID: bytes("ann"))
        #expect(
            negotiateEveryWay(named.bytes, policy: noPassword) == [
                .ready(
                    request(
                        .socks4a, .bind, SocksAddress(host: .name(bytes("ftp.example.org")), port: 21), user: "ann"),
                    following: [])
            ])
    }

    @Test func theLongestRequestIsRead() {
        let longest = Socks4Request(
            command: .connect, port: 1, hostName: [UInt8](repeating: 0x68, count: 255),
            userID: [UInt8](repeating: 0x75, count: 255))
        let actions = negotiateEveryWay(longest.bytes + [9], policy: noPassword)
        #expect(
            actions == [
                .ready(
                    SocksRequest(
                        version: .socks4a, command: .connect, destination: longest.destination, user: longest.userID,
                        method: nil), following: [9])
            ])
    }

    @Test(
        arguments: [
            ([4, 3, 0, 80, 1, 2, 3, 4, 0], SocksFailure.unknownCommand(.socks4, 3)),
            ([4, 0, 0, 80, 1, 2, 3, 4, 0], .unknownCommand(.socks4, 0)),
            ([4, 1, 0, 80, 1, 2, 3, 4] + [UInt8](repeating: 0x41, count: 300), .userIDTooLong),
            ([4, 1, 0, 80, 0, 0, 0, 9, 0x41, 0, 0], .emptyHostName),
            ([4, 1, 0, 80, 0, 0, 0, 9, 0] + [UInt8](repeating: 0x68, count: 300), .hostNameTooLong),
        ] as [([UInt8], SocksFailure)])
    func badRequestsGetReply91(stream: [UInt8], failure: SocksFailure) {
        #expect(negotiateEveryWay(stream, policy: noPassword) == [.send([0, 91, 0, 0, 0, 0, 0, 0]), .failed(failure)])
    }

    @Test func aPasswordRequiredRefusesSocks4WholeRequestsWith91() {
        let plain = Socks4Request(command: .connect, port: 80, address: v4, userID: bytes("joe"))
        let named = Socks4Request(command: .connect, port: 80, hostName: bytes("a.example"), userID: [])
        for message in [plain, named] {
            let actions = negotiateEveryWay(message.bytes + data, policy: passwordNeeded)
            #expect(actions == [.send([0, 91, 0, 0, 0, 0, 0, 0]), .failed(.passwordRequired(message))])
        }
        // A malformed one is still malformed.
        #expect(
            negotiateEveryWay([4, 7], policy: passwordNeeded) == [
                .send([0, 91, 0, 0, 0, 0, 0, 0]), .failed(.unknownCommand(.socks4, 7)),
            ])
    }

    @Test func aTruncatedRequestIsNotAnswered() {
        let stream = socks4Request(80, v4, user: "joe")
        for end in 1..<stream.count {
            #expect(
                negotiate(Array(stream[..<end]), policy: noPassword, cuts: [end / 2], endOfInput: true) == [
                    .failed(.truncated(.socks4Request, received: end))
                ])
        }
    }
}

@Suite("SOCKS5 negotiations (RFC 1928, RFC 1929)")
struct Socks5NegotiationTests {
    @Test(arguments: [
        SocksAddress(v4, port: 80), SocksAddress(v6, port: 443), SocksAddress(mapped, port: 8080),
        SocksAddress(host: .name(bytes("www.example.org")), port: 80),
        SocksAddress(host: .name([UInt8](repeating: 0x61, count: 255)), port: 65535),
    ])
    func everyCommandAndAddressTypeWithoutAuthentication(destination: SocksAddress) {
        for command in SocksCommand.allCases {
            let stream = [5, 1, 0] + Socks5Request(command: command, destination: destination).bytes + data
            #expect(
                negotiateEveryWay(stream, policy: noPassword) == [
                    .send([5, 0]),
                    // The encoder writes an IPv4-mapped address as IPv4.
                    .ready(
                        request(.socks5, command, destination.unmappedForTest, method: .noAuthentication),
                        following: data),
                ])
        }
    }

    @Test func theServersPreferenceChoosesAmongTheClientsMethods() {
        let both: [UInt8] = [5, 3, 2, 1, 0]
        #expect(negotiateEveryWay(both + connectV4, policy: noPassword).first == .send([5, 0]))
        let preferPassword = NegotiationPolicy(
            passwordRequired: false, methods: [.usernamePassword, .noAuthentication])
        #expect(
            negotiateEveryWay(both + login + connectV4, policy: preferPassword, passwords: bob).first == .send([5, 2]))
        let onlyNone = NegotiationPolicy(passwordRequired: false, methods: [.noAuthentication])
        #expect(
            negotiateEveryWay([5, 1, 2] + login, policy: onlyNone) == [
                .send([5, 0xFF]), .failed(.noAcceptableMethod(offered: [2])),
            ])
    }

    @Test func usernamePasswordAccepted() {
        let stream = [5, 2, 0, 2] + login + connectV4 + data
        #expect(
            negotiateEveryWay(stream, policy: passwordNeeded, passwords: bob) == [
                .send([5, 2]), .checkPassword(username: bytes("bob"), password: bytes("secret")), .send([1, 0]),
                .ready(
                    request(.socks5, destination: SocksAddress(v4, port: 80), user: "bob", method: .usernamePassword),
                    following: data),
            ])
        // Without --passwd, a client offering only username/password gets it (and the
        // daemon's check decides).
        #expect(negotiateEveryWay([5, 1, 2] + login + connectV4, policy: noPassword, passwords: bob).count == 4)
    }

    @Test func usernamePasswordRefused() {
        let wrong = UsernamePasswordRequest(username: bytes("bob"), password: bytes("guess")).bytes
        #expect(
            negotiateEveryWay([5, 1, 2] + wrong + connectV4, policy: passwordNeeded, passwords: bob) == [
                .send([5, 2]), .checkPassword(username: bytes("bob"), password: bytes("guess")), .send([1, 1]),
                .failed(.passwordRefused(username: bytes("bob"))),
            ])
        let empty = UsernamePasswordRequest(username: bytes("bob"), password: []).bytes
        #expect(
            negotiateEveryWay([5, 1, 2] + empty, policy: passwordNeeded, passwords: bob).suffix(2) == [
                .send([1, 1]), .failed(.passwordRefused(username: bytes("bob"))),
            ])
    }

    @Test func aPasswordRequiredRefusesNoAuthentication() {
        #expect(
            negotiateEveryWay([5, 1, 0] + connectV4, policy: passwordNeeded) == [
                .send([5, 0xFF]), .failed(.noAcceptableMethod(offered: [0])),
            ])
        #expect(
            negotiateEveryWay([5, 2, 0, 1], policy: passwordNeeded) == [
                .send([5, 0xFF]), .failed(.noAcceptableMethod(offered: [0, 1])),
            ])
        #expect(SocksFailure.noAcceptableMethod(offered: [0]).kind == .refused)
    }

    @Test(
        arguments: [
            ([5, 0], [5, 0xFF], SocksFailure.noMethods),
            (
                [5, 1, 0, 4, 1, 0, 1, 1, 2, 3, 4, 0, 80], [5, 1, 0, 1, 0, 0, 0, 0, 0, 0], .badVersion(4, .socks5Request)
            ),
            ([5, 1, 0, 5, 9, 0, 1, 1, 2, 3, 4, 0, 80], [5, 7, 0, 1, 0, 0, 0, 0, 0, 0], .unknownCommand(.socks5, 9)),
            ([5, 1, 0, 5, 0], [5, 7, 0, 1, 0, 0, 0, 0, 0, 0], .unknownCommand(.socks5, 0)),
            ([5, 1, 0, 5, 1, 0, 2, 1, 2, 3, 4, 0, 80], [5, 8, 0, 1, 0, 0, 0, 0, 0, 0], .unsupportedAddressType(2)),
            ([5, 1, 0, 5, 1, 0, 0xFF], [5, 8, 0, 1, 0, 0, 0, 0, 0, 0], .unsupportedAddressType(255)),
            ([5, 1, 0, 5, 1, 0, 3, 0, 0, 80], [5, 1, 0, 1, 0, 0, 0, 0, 0, 0], .emptyHostName),
            ([5, 1, 0, 5, 1, 0, 3, 2, 0x61, 0, 0, 80], [5, 1, 0, 1, 0, 0, 0, 0, 0, 0], .hostNameHasNUL),
            ([5, 1, 2, 2, 3] + bytes("bob"), [1, 1], .badVersion(2, .passwordRequest)),
            ([5, 1, 2, 1, 0, 1, 0x78], [1, 1], .emptyUsername),
        ] as [([UInt8], [UInt8], SocksFailure)])
    func malformedMessagesGetTheirProtocolsReply(stream: [UInt8], reply: [UInt8], failure: SocksFailure) {
        let actions = negotiateEveryWay(stream + data, policy: noPassword, passwords: bob)
        #expect(actions.suffix(2) == [.send(reply), .failed(failure)])
        #expect(failure.kind == .malformed)
    }

    @Test func aBadFirstByteIsNotAnswered() {
        for first: UInt8 in [0, 1, 3, 6, 0x16, 0x47, 0xFF] {
            #expect(negotiateEveryWay([first] + data, policy: noPassword) == [.failed(.badVersion(first, .start))])
        }
        // An HTTP client at a SOCKS port: "G".
        #expect(negotiateEveryWay(data, policy: noPassword) == [.failed(.badVersion(71, .start))])
    }

    @Test func truncatedMessagesAndClientsThatLeave() {
        let cases: [([UInt8], [NegotiationAction])] = [
            ([], [.failed(.truncated(.start, received: 0))]),
            ([5], [.failed(.truncated(.socks5Greeting, received: 1))]),
            ([5, 2, 0], [.failed(.truncated(.socks5Greeting, received: 3))]),
            ([5, 1, 0], [.send([5, 0]), .failed(.truncated(.socks5Request, received: 0))]),
            ([5, 1, 0, 5, 1, 0, 3, 9, 0x61], [.send([5, 0]), .failed(.truncated(.socks5Request, received: 6))]),
            ([5, 1, 2], [.send([5, 2]), .failed(.truncated(.passwordRequest, received: 0))]),
            ([5, 1, 2, 1, 3, 0x62], [.send([5, 2]), .failed(.truncated(.passwordRequest, received: 3))]),
            // The check is answered first, then the end counts.
            (
                [5, 1, 2] + login + [5, 1],
                [
                    .send([5, 2]), .checkPassword(username: bytes("bob"), password: bytes("secret")), .send([1, 0]),
                    .failed(.truncated(.socks5Request, received: 2)),
                ]
            ),
        ]
        for (stream, expected) in cases {
            #expect(negotiateEveryWay(stream, policy: noPassword, passwords: bob, endOfInput: true) == expected)
        }
    }

    @Test func aClientThatHalfClosesAfterItsRequestIsServed() {
        // printf '...' | nc -N: the request and the end of file together, during the check.
        let stream = [5, 1, 2] + login + connectV4 + data
        let actions = negotiateEveryWay(stream, policy: noPassword, passwords: bob, endOfInput: true)
        #expect(
            actions.last
                == .ready(
                    request(.socks5, destination: SocksAddress(v4, port: 80), user: "bob", method: .usernamePassword),
                    following: data))
        #expect(negotiateEveryWay([5, 1, 0] + connectV4, policy: noPassword, endOfInput: true).count == 2)
    }

    @Test func theLongestMessagesAreRead() {
        let methods = [UInt8](repeating: 0x80, count: 253) + [0, 2]
        let name = [UInt8](repeating: 0x6E, count: 255)
        let longLogin = UsernamePasswordRequest(username: name, password: name).bytes
        let destination = SocksAddress(host: .name(name), port: 1)
        let stream = [5, 255] + methods + longLogin + Socks5Request(command: .connect, destination: destination).bytes
        let policy = NegotiationPolicy(passwordRequired: false, methods: [.usernamePassword, .noAuthentication])
        let actions = negotiateEveryWay(stream, policy: policy, passwords: [name: name])
        #expect(
            actions.last
                == .ready(
                    SocksRequest(
                        version: .socks5, command: .connect, destination: destination, user: name,
                        method: .usernamePassword), following: []))
    }
}

@Suite("What the negotiation holds")
struct NegotiationBoundTests {
    @Test func aFloodWithoutEndHoldsAFewHundredBytes() {
        for start in [[4, 1, 0, 80, 1, 2, 3, 4], [4, 1, 0, 80, 0, 0, 0, 1, 0]] as [[UInt8]] {
            var negotiation = SocksNegotiation(policy: noPassword)
            var actions: [NegotiationAction] = []
            negotiation.receive(start[...], into: &actions)
            var most = 0
            for _ in 0..<10_000 where !negotiation.isFinished {
                negotiation.receive([0x41][...], into: &actions)
                most = max(most, negotiation.bufferedCount)
            }
            #expect(most <= 264)
            #expect(negotiation.isFinished && negotiation.bufferedCount == 0)
        }
    }

    @Test func aPieceOfManyKilobytesIsNotKeptBeyondItsRequest() {
        var negotiation = SocksNegotiation(policy: noPassword)
        var actions: [NegotiationAction] = []
        let piece = [5, 1, 0] + connectV4 + [UInt8](repeating: 7, count: 100_000)
        negotiation.receive(piece[...], into: &actions)
        #expect(negotiation.bufferedCount == 0 && negotiation.isFinished)
        guard case .ready(_, let following) = actions.last else {
            Issue.record("no request")
            return
        }
        #expect(following.count == 100_000)
    }

    @Test func nothingIsTakenOnceFinished() {
        var negotiation = SocksNegotiation(policy: noPassword)
        var actions: [NegotiationAction] = []
        negotiation.receive([0x47][...], into: &actions)
        negotiation.receive([5, 1, 0][...], into: &actions)
        negotiation.endOfInput(into: &actions)
        #expect(actions == [.failed(.badVersion(0x47, .start))])
        #expect(negotiation.bufferedCount == 0)
    }

    @Test func bytesDuringACheckAreHeldThenRead() {
        var negotiation = SocksNegotiation(policy: passwordNeeded)
        var actions: [NegotiationAction] = []
        negotiation.receive(([5, 1, 2] + login + connectV4.prefix(4))[...], into: &actions)
        negotiation.receive(connectV4.dropFirst(4), into: &actions)
        #expect(negotiation.bufferedCount == connectV4.count)
        #expect(actions == [.send([5, 2]), .checkPassword(username: bytes("bob"), password: bytes("secret"))])
        negotiation.passwordChecked(true, into: &actions)
        #expect(actions.count == 4 && negotiation.isFinished && negotiation.bufferedCount == 0)
    }
}

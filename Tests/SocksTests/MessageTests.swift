import GatewayKit
import Socks
import Testing

func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

let v4 = IPAddress(v4: 192, 0, 2, 1)
let v6 = IPAddress("2001:db8::1")!
let mapped = IPAddress("::ffff:192.0.2.1")!

// The messages of SOCKS4, SOCKS4a, SOCKS5 (RFC 1928) and RFC 1929 one at a time, byte for
// byte as the documents lay them out; the negotiation that strings them together is in
// NegotiationTests.

@Suite("SOCKS4 and SOCKS4a requests")
struct Socks4RequestTests {
    @Test(
        arguments: [
            // The SOCKS4 document's CONNECT: VN CD DSTPORT DSTIP USERID NUL.
            (
                [4, 1, 0, 80, 192, 0, 2, 1] + bytes("joe") + [0],
                Socks4Request(command: .connect, port: 80, address: v4, userID: bytes("joe"))
            ),
            (
                [4, 2, 0x1F, 0x90, 10, 0, 0, 7, 0],
                Socks4Request(command: .bind, port: 8080, address: IPAddress(v4: 10, 0, 0, 7), userID: [])
            ),
            // DSTIP 0.0.0.0 is no SOCKS4a: x must not be 0.
            ([4, 1, 0, 21, 0, 0, 0, 0, 0], Socks4Request(command: .connect, port: 21, address: .anyV4, userID: [])),
            // SOCKS4a: 0.0.0.x, then the host name after the user id.
            (
                [4, 1, 1, 0xBB, 0, 0, 0, 1] + bytes("ann") + [0] + bytes("www.example.org") + [0],
                Socks4Request(command: .connect, port: 443, hostName: bytes("www.example.org"), userID: bytes("ann"))
            ),
            (
                [4, 2, 0, 80, 0, 0, 0, 255, 0] + bytes("h") + [0],
                Socks4Request(
                    command: .bind, port: 80, address: IPAddress(v4: 0, 0, 0, 255), userID: [], hostName: bytes("h"))
            ),
            // Any byte but NUL in a user id.
            (
                [4, 1, 0, 80, 192, 0, 2, 1, 0xFF, 10, 13, 0],
                Socks4Request(command: .connect, port: 80, address: v4, userID: [0xFF, 10, 13])
            ),
        ] as [([UInt8], Socks4Request)])
    func requestsParseAndEncodeBack(wire: [UInt8], request: Socks4Request) {
        #expect(Socks4Request.parse(wire) == .message(request, length: wire.count))
        #expect(request.bytes == wire)
        // What follows is not the request's.
        #expect(Socks4Request.parse(wire + bytes("GET / HTTP/1.0\r\n")) == .message(request, length: wire.count))
        for end in 0..<wire.count { #expect(Socks4Request.parse(wire[..<end]) == .incomplete, "\(end) bytes") }
    }

    @Test func versionDestinationAndBounds() {
        let plain = Socks4Request(command: .connect, port: 80, address: v4, userID: [])
        let named = Socks4Request(command: .connect, port: 80, hostName: bytes("a.example"), userID: [])
        #expect(plain.version == .socks4 && named.version == .socks4a)
        #expect(plain.destination == SocksAddress(v4, port: 80))
        #expect(named.destination == SocksAddress(host: .name(bytes("a.example")), port: 80))
        #expect(Socks4Request.maximumLength == 520)
        let longest = Socks4Request(
            command: .bind, port: 1, hostName: [UInt8](repeating: 0x68, count: 255),
            userID: [UInt8](repeating: 0x75, count: 255))
        #expect(longest.bytes.count == Socks4Request.maximumLength)
        #expect(Socks4Request.parse(longest.bytes) == .message(longest, length: 520))
    }

    @Test(
        arguments: [
            ([5, 1, 0, 80, 1, 2, 3, 4, 0], SocksFailure.badVersion(5, .socks4Request)),
            ([4, 0], .unknownCommand(.socks4, 0)),
            // UDP ASSOCIATE is SOCKS5's only.
            ([4, 3, 0, 80, 1, 2, 3, 4, 0], .unknownCommand(.socks4, 3)),
            ([4, 0xFF], .unknownCommand(.socks4, 255)),
            ([4, 1, 0, 80, 1, 2, 3, 4] + [UInt8](repeating: 0x41, count: 256), .userIDTooLong),
            ([4, 1, 0, 80, 1, 2, 3, 4] + [UInt8](repeating: 0x41, count: 256) + [0], .userIDTooLong),
            ([4, 1, 0, 80, 0, 0, 0, 1, 0, 0], .emptyHostName),
            ([4, 1, 0, 80, 0, 0, 0, 1, 0] + [UInt8](repeating: 0x68, count: 256), .hostNameTooLong),
        ] as [([UInt8], SocksFailure)])
    func malformedRequests(wire: [UInt8], failure: SocksFailure) {
        #expect(Socks4Request.parse(wire) == .malformed(failure))
    }

    @Test func fieldsOfExactly255BytesAreRead() {
        let user = [UInt8](repeating: 0x75, count: 255)
        let wire: [UInt8] = [4, 1, 0, 80, 1, 2, 3, 4] + user + [0]
        #expect(
            Socks4Request.parse(wire)
                == .message(
                    Socks4Request(command: .connect, port: 80, address: IPAddress(v4: 1, 2, 3, 4), userID: user),
                    length: 264))
        // 255 bytes without their NUL yet: more may come.
        #expect(Socks4Request.parse(wire.dropLast()) == .incomplete)
    }
}

@Suite("SOCKS4 replies")
struct Socks4ReplyTests {
    @Test(
        arguments: [
            (Outcome.granted, SocksAddress(IPAddress(v4: 10, 0, 0, 1), port: 1080), [0, 90, 4, 56, 10, 0, 0, 1]),
            (.generalFailure, .unspecified, [0, 91, 0, 0, 0, 0, 0, 0]),
            (.notAllowed, .unspecified, [0, 91, 0, 0, 0, 0, 0, 0]),
            (.noIdentd, .unspecified, [0, 92, 0, 0, 0, 0, 0, 0]),
            (.identMismatch, .unspecified, [0, 93, 0, 0, 0, 0, 0, 0]),
            // A dual-stack socket's view of an IPv4 address is sent as that address.
            (.granted, SocksAddress(mapped, port: 80), [0, 90, 0, 80, 192, 0, 2, 1]),
            // SOCKS4 cannot name an IPv6 address or a name: 0.0.0.0, with the port.
            (.granted, SocksAddress(v6, port: 80), [0, 90, 0, 80, 0, 0, 0, 0]),
            (.granted, SocksAddress(host: .name(bytes("x")), port: 80), [0, 90, 0, 80, 0, 0, 0, 0]),
        ] as [(Outcome, SocksAddress, [UInt8])])
    func repliesAreEightBytes(outcome: Outcome, bound: SocksAddress, wire: [UInt8]) {
        let reply = Socks4Reply(outcome, bound: bound)
        #expect(reply.bytes == wire)
        #expect(Socks4Reply.parse(wire) == reply)
    }

    @Test func clientsReadOnlyEightBytesWithVersion0() {
        #expect(Socks4Reply.parse([0, 90, 0, 80, 1, 2, 3]) == nil)
        #expect(Socks4Reply.parse([4, 90, 0, 80, 1, 2, 3, 4]) == nil)
        #expect(Socks4Reply.parse([0, 90, 0, 80, 1, 2, 3, 4, 5]) == nil)
    }
}

@Suite("SOCKS5 greetings, method selection and RFC 1929")
struct Socks5GreetingTests {
    @Test(
        arguments: [[5, 1, 0], [5, 2, 0, 2], [5, 3, 2, 1, 0x80], [5, 255] + (0..<255).map { UInt8($0) }] as [[UInt8]])
    func greetingsParseAndEncodeBack(wire: [UInt8]) {
        let greeting = Socks5Greeting(methods: Array(wire.dropFirst(2)))
        #expect(Socks5Greeting.parse(wire) == .message(greeting, length: wire.count))
        #expect(greeting.bytes == wire)
        for end in 0..<wire.count { #expect(Socks5Greeting.parse(wire[..<end]) == .incomplete) }
    }

    @Test func badGreetings() {
        #expect(Socks5Greeting.parse([4, 1, 0]) == .malformed(.badVersion(4, .socks5Greeting)))
        #expect(Socks5Greeting.parse([5, 0]) == .malformed(.noMethods))
        #expect(Socks5Greeting.parse([5, 0, 0, 2]) == .malformed(.noMethods))
    }

    @Test func selectionAndStatusBytes() {
        #expect(Socks5MethodSelection.bytes(.noAuthentication) == [5, 0])
        #expect(Socks5MethodSelection.bytes(.usernamePassword) == [5, 2])
        #expect(Socks5MethodSelection.noAcceptableMethods == [5, 0xFF])
        #expect(UsernamePasswordStatus.bytes(accepted: true) == [1, 0])
        #expect(UsernamePasswordStatus.bytes(accepted: false) == [1, 1])
    }

    @Test(
        arguments: [
            (
                [1, 3] + bytes("bob") + [6] + bytes("secret"),
                UsernamePasswordRequest(username: bytes("bob"), password: bytes("secret"))
            ),
            ([1, 1, 0x78, 0], UsernamePasswordRequest(username: [0x78], password: [])),
            (
                [1, 255] + [UInt8](repeating: 0x75, count: 255) + [255] + [UInt8](repeating: 0x70, count: 255),
                UsernamePasswordRequest(
                    username: [UInt8](repeating: 0x75, count: 255), password: [UInt8](repeating: 0x70, count: 255))
            ),
        ] as [([UInt8], UsernamePasswordRequest)])
    func passwordRequestsParseAndEncodeBack(wire: [UInt8], request: UsernamePasswordRequest) {
        #expect(UsernamePasswordRequest.parse(wire) == .message(request, length: wire.count))
        #expect(request.bytes == wire)
        for end in 0..<wire.count { #expect(UsernamePasswordRequest.parse(wire[..<end]) == .incomplete) }
        #expect(wire.count <= UsernamePasswordRequest.maximumLength)
    }

    @Test func badPasswordRequests() {
        #expect(UsernamePasswordRequest.parse([5, 1, 0x78, 0]) == .malformed(.badVersion(5, .passwordRequest)))
        #expect(UsernamePasswordRequest.parse([1, 0, 3] + bytes("abc")) == .malformed(.emptyUsername))
    }
}

@Suite("SOCKS5 requests and replies (RFC 1928 sections 4 to 6)")
struct Socks5RequestTests {
    @Test(
        arguments: [
            (
                [5, 1, 0, 1, 192, 0, 2, 1, 0, 80],
                Socks5Request(command: .connect, destination: SocksAddress(v4, port: 80))
            ),
            (
                [5, 2, 0, 4] + v6.bytes + [0x1F, 0x90],
                Socks5Request(command: .bind, destination: SocksAddress(v6, port: 8080))
            ),
            (
                [5, 3, 0, 1, 0, 0, 0, 0, 0, 0],
                Socks5Request(command: .udpAssociate, destination: SocksAddress(.anyV4, port: 0))
            ),
            (
                [5, 1, 0, 3, 15] + bytes("www.example.org") + [1, 0xBB],
                Socks5Request(
                    command: .connect, destination: SocksAddress(host: .name(bytes("www.example.org")), port: 443))
            ),
            (
                [5, 1, 0, 3, 255] + [UInt8](repeating: 0x61, count: 255) + [0, 1],
                Socks5Request(
                    command: .connect,
                    destination: SocksAddress(host: .name([UInt8](repeating: 0x61, count: 255)), port: 1))
            ),
            // Names may hold any byte but NUL; an IPv4-mapped IPv6 address stays as sent.
            (
                [5, 1, 0, 3, 3, 0xFF, 10, 0x41, 0, 80],
                Socks5Request(command: .connect, destination: SocksAddress(host: .name([0xFF, 10, 0x41]), port: 80))
            ),
        ] as [([UInt8], Socks5Request)])
    func requestsParseAndEncodeBack(wire: [UInt8], request: Socks5Request) {
        #expect(Socks5Request.parse(wire) == .message(request, length: wire.count))
        #expect(request.bytes == wire)
        #expect(Socks5Request.parse(wire + [1, 2, 3]) == .message(request, length: wire.count))
        for end in 0..<wire.count { #expect(Socks5Request.parse(wire[..<end]) == .incomplete, "\(end) bytes") }
        #expect(wire.count <= Socks5Request.maximumLength)
    }

    @Test func theReservedByteIsIgnored() {
        #expect(
            Socks5Request.parse([5, 1, 0xAA, 1, 192, 0, 2, 1, 0, 80])
                == .message(Socks5Request(command: .connect, destination: SocksAddress(v4, port: 80)), length: 10))
    }

    @Test func aMappedDestinationIsReadAsSent() {
        let wire: [UInt8] = [5, 1, 0, 4] + mapped.bytes + [0, 80]
        #expect(
            Socks5Request.parse(wire)
                == .message(Socks5Request(command: .connect, destination: SocksAddress(mapped, port: 80)), length: 22))
    }

    @Test(
        arguments: [
            ([4, 1, 0, 1], SocksFailure.badVersion(4, .socks5Request)),
            ([5, 0], .unknownCommand(.socks5, 0)),
            ([5, 4], .unknownCommand(.socks5, 4)),
            ([5, 0xFF, 0, 1, 1, 2, 3, 4, 0, 80], .unknownCommand(.socks5, 255)),
            ([5, 1, 0, 0], .unsupportedAddressType(0)),
            ([5, 1, 0, 2, 1, 2, 3, 4, 0, 80], .unsupportedAddressType(2)),
            ([5, 1, 0, 5], .unsupportedAddressType(5)),
            ([5, 1, 0, 3, 0, 0, 80], .emptyHostName),
            ([5, 1, 0, 3, 3, 0x61, 0, 0x62], .hostNameHasNUL),
        ] as [([UInt8], SocksFailure)])
    func malformedRequests(wire: [UInt8], failure: SocksFailure) {
        #expect(Socks5Request.parse(wire) == .malformed(failure))
    }

    @Test(
        arguments: [
            (Socks5Reply(.granted, bound: SocksAddress(v4, port: 8080)), [5, 0, 0, 1, 192, 0, 2, 1, 0x1F, 0x90]),
            (Socks5Reply(.granted, bound: SocksAddress(mapped, port: 8080)), [5, 0, 0, 1, 192, 0, 2, 1, 0x1F, 0x90]),
            (Socks5Reply(.hostUnreachable, bound: SocksAddress(v6, port: 1)), [5, 4, 0, 4] + v6.bytes + [0, 1]),
            (Socks5Reply(.commandNotSupported), [5, 7, 0, 1, 0, 0, 0, 0, 0, 0]),
            (Socks5Reply(.addressTypeNotSupported), [5, 8, 0, 1, 0, 0, 0, 0, 0, 0]),
            (
                Socks5Reply(.granted, bound: SocksAddress(host: .name(bytes("gw")), port: 80)),
                [5, 0, 0, 3, 2] + bytes("gw") + [0, 80]
            ),
        ] as [(Socks5Reply, [UInt8])])
    func repliesBytes(reply: Socks5Reply, wire: [UInt8]) {
        #expect(reply.bytes == wire)
        #expect(
            Socks5Reply.parse(wire)
                == .message(Socks5Reply(code: reply.code, bound: reply.bound.unmappedForTest), length: wire.count))
    }

    @Test func everyOutcomeHasItsREP() {
        for outcome in Outcome.allCases {
            #expect(Socks5Reply(outcome).bytes == [5, outcome.socks5Code, 0, 1, 0, 0, 0, 0, 0, 0])
        }
    }

    @Test func badRepliesAreNotReplies() {
        #expect(Socks5Reply.parse([4, 0, 0, 1]) == .malformed(.badVersion(4, .socks5Reply)))
        #expect(Socks5Reply.parse([5, 0, 1, 1]) == .malformed(.reservedNotZero(1)))
        #expect(Socks5Reply.parse([5, 0, 0, 1, 1, 2]) == .incomplete)
    }

    @Test func aRequestRepliesInItsOwnProtocol() {
        let bound = SocksAddress(IPAddress(v4: 10, 0, 0, 1), port: 1080)
        let socks4 = SocksRequest(version: .socks4a, command: .connect, destination: bound, user: [], method: nil)
        let socks5 = SocksRequest(
            version: .socks5, command: .connect, destination: bound, user: [], method: .noAuthentication)
        #expect(socks4.reply(.timedOut, bound: bound) == [0, 91, 4, 56, 10, 0, 0, 1])
        #expect(socks5.reply(.timedOut, bound: bound) == [5, 6, 0, 1, 10, 0, 0, 1, 4, 56])
        #expect(socks4.reply(.granted) == [0, 90, 0, 0, 0, 0, 0, 0])
    }
}

extension SocksAddress {
    /// As a reply carries it: the address unmapped.
    var unmappedForTest: SocksAddress { SocksAddress(host: host.unmapped, port: port) }
}

@Suite("SOCKS5 UDP datagrams (RFC 1928 section 7)")
struct SocksDatagramTests {
    @Test(arguments: [
        SocksAddress(v4, port: 53), SocksAddress(v6, port: 5353),
        SocksAddress(host: .name(bytes("dns.example")), port: 53),
        SocksAddress(host: .name([UInt8](repeating: 0x61, count: 255)), port: 65535),
    ])
    func headersRoundTrip(address: SocksAddress) {
        let payload = bytes("\u{0}payload\u{1}")
        let datagram = SocksDatagram.datagram(address, payload: payload)
        let header = SocksDatagram.header(address)
        #expect(datagram == header + payload)
        #expect(header.count <= SocksDatagram.maximumHeaderLength)
        #expect(SocksDatagram.parse(datagram) == .datagram(destination: address, payloadOffset: header.count))
        // An empty payload is a datagram too.
        #expect(SocksDatagram.parse(header) == .datagram(destination: address, payloadOffset: header.count))
        for end in 0..<header.count {
            #expect(SocksDatagram.parse(header[..<end]) == .malformed(.truncated(.udpHeader, received: end)))
        }
    }

    @Test func exactBytes() {
        #expect(SocksDatagram.header(SocksAddress(v4, port: 53)) == [0, 0, 0, 1, 192, 0, 2, 1, 0, 53])
        #expect(SocksDatagram.header(SocksAddress(mapped, port: 53)) == [0, 0, 0, 1, 192, 0, 2, 1, 0, 53])
        #expect(SocksDatagram.header(SocksAddress(v6, port: 53)) == [0, 0, 0, 4] + v6.bytes + [0, 53])
        #expect(SocksDatagram.header(SocksAddress(host: .name(bytes("a")), port: 1)) == [0, 0, 0, 3, 1, 0x61, 0, 1])
    }

    @Test func fragmentsAreDroppedAndReservedBytesIgnored() {
        #expect(SocksDatagram.parse([0, 0, 1, 1, 192, 0, 2, 1, 0, 53, 0x78]) == .fragment(1))
        #expect(SocksDatagram.parse([0, 0, 0x81]) == .fragment(0x81))
        #expect(
            SocksDatagram.parse([0xFF, 0xFF, 0, 1, 192, 0, 2, 1, 0, 53])
                == .datagram(destination: SocksAddress(v4, port: 53), payloadOffset: 10))
    }

    @Test(
        arguments: [
            ([0, 0, 0, 2, 1, 2, 3, 4, 0, 53], SocksFailure.unsupportedAddressType(2)),
            ([0, 0, 0, 0], .unsupportedAddressType(0)),
            ([0, 0, 0, 3, 0, 0, 53], .emptyHostName),
            ([0, 0, 0, 3, 2, 0, 0x61, 0, 53], .hostNameHasNUL),
            ([0, 0, 0, 3, 5, 0x61], .truncated(.udpHeader, received: 6)),
        ] as [([UInt8], SocksFailure)])
    func malformedHeaders(datagram: [UInt8], failure: SocksFailure) {
        #expect(SocksDatagram.parse(datagram) == .malformed(failure))
    }
}

@Suite("Addresses and failures in the log")
struct SocksTextTests {
    @Test func addressesAsTheLogShowsThem() {
        #expect(SocksAddress(v4, port: 80).description == "192.0.2.1:80")
        #expect(SocksAddress(mapped, port: 80).description == "192.0.2.1:80")
        #expect(SocksAddress(v6, port: 80).description == "[2001:db8::1]:80")
        #expect(SocksAddress(host: .name(bytes("www.example.org")), port: 443).description == "www.example.org:443")
        #expect(SocksAddress(host: .name([0x61, 10, 0x5C]), port: 1).description == "a\\012\\134:1")
        #expect(SocksHost.name([0x0D]).description == "\\015")
        #expect(SocksCommand.udpAssociate.description == "UDP ASSOCIATE")
        #expect(SocksVersion.socks4a.description == "SOCKS4a")
    }

    @Test(
        arguments: [
            (SocksFailure.badVersion(71, .start), "bad version byte 71", SocksFailure.Kind.malformed),
            (.badVersion(4, .socks5Request), "bad version byte 4 in the SOCKS5 request", .malformed),
            (.badVersion(2, .passwordRequest), "bad version byte 2 in the username/password request", .malformed),
            (.truncated(.start, received: 0), "closed before a request", .closed),
            (.truncated(.socks5Request, received: 0), "closed before the SOCKS5 request", .closed),
            (.truncated(.socks5Greeting, received: 1), "truncated SOCKS5 greeting (1 byte)", .malformed),
            (.truncated(.socks4Request, received: 9), "truncated SOCKS4 request (9 bytes)", .malformed),
            (.unknownCommand(.socks4, 3), "unknown SOCKS4 command 3", .malformed),
            (.unknownCommand(.socks5, 9), "unknown SOCKS5 command 9", .malformed),
            (.unsupportedAddressType(2), "address type 2 not supported", .malformed),
            (.emptyHostName, "empty host name", .malformed),
            (.hostNameTooLong, "host name longer than 255 bytes", .malformed),
            (.hostNameHasNUL, "host name holds a NUL byte", .malformed),
            (.userIDTooLong, "user id longer than 255 bytes", .malformed),
            (.noMethods, "no authentication method offered", .malformed),
            (.noAcceptableMethod(offered: [0, 1]), "no acceptable authentication method (offered: 0 1)", .refused),
            (.emptyUsername, "empty user name", .malformed),
            (.passwordRefused(username: bytes("bob\n")), "password refused for bob\\012", .refused),
            (
                .passwordRequired(Socks4Request(command: .connect, port: 80, address: v4, userID: [])),
                "SOCKS4 carries no password", .refused
            ),
        ] as [(SocksFailure, String, SocksFailure.Kind)])
    func failuresSayWhat(failure: SocksFailure, text: String, kind: SocksFailure.Kind) {
        #expect(failure.description == text)
        #expect(failure.kind == kind)
    }
}

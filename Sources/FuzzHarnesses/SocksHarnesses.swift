import GatewayKit
import Socks

/// sockd's wire layer on arbitrary bytes: the negotiation from a client's first byte to its
/// request (`socks-request`), and the SOCKS5 UDP header (`socks-udp`).
enum SocksHarnesses {
    /// The first byte is the setting: bit 0 a password required (`--passwd`), bit 1
    /// username/password preferred over no authentication, bit 2 an end of file after the
    /// bytes, bit 3 which passwords pass (those of even or of odd length). The second seeds the
    /// pieces; the rest is what the client sends.
    ///
    /// Invariants: the actions are the same fed whole, a byte at a time and in random pieces;
    /// the negotiation never holds more than one message (520 bytes); every reply is a well
    /// formed one of the client's protocol; the request and the bytes after it are the
    /// stream's; a failure's text is printable.
    static func request(_ data: UnsafeRawBufferPointer) {
        guard data.count >= 2 else { return }
        let setting = data[0]
        let policy = NegotiationPolicy(
            passwordRequired: setting & 1 != 0,
            methods: setting & 2 != 0
                ? [.usernamePassword, .noAuthentication] : [.noAuthentication, .usernamePassword])
        let stream = UnsafeRawBufferPointer(rebasing: data[2...])
        let end = setting & 4 != 0
        let evenPasses = setting & 8 != 0

        let whole = negotiate(stream, policy: policy, end: end, evenPasses: evenPasses) { _ in stream.count }
        let bytewise = negotiate(stream, policy: policy, end: end, evenPasses: evenPasses) { _ in 1 }
        var state = UInt64(data[1]) &* 0x9E37_79B9_7F4A_7C15 | 1
        let pieces = negotiate(stream, policy: policy, end: end, evenPasses: evenPasses) { _ in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int(state >> 58) + 1
        }
        precondition(bytewise == whole, "a byte at a time differs from the whole:\n\(bytewise)\n\(whole)")
        precondition(pieces == whole, "pieces differ from the whole:\n\(pieces)\n\(whole)")
        check(whole, stream: stream, policy: policy)
    }

    /// The actions for `stream` fed in pieces of `size(offset)` bytes, the password check
    /// answered at once, the pieces after `ready` added to its `following` (they are the
    /// relay's).
    static func negotiate(
        _ stream: UnsafeRawBufferPointer, policy: NegotiationPolicy, end: Bool, evenPasses: Bool,
        size: (Int) -> Int
    ) -> [NegotiationAction] {
        var negotiation = SocksNegotiation(policy: policy)
        var actions: [NegotiationAction] = []
        var answered = 0
        func answer() {
            while answered < actions.count {
                defer { answered += 1 }
                if case .checkPassword(_, let password) = actions[answered] {
                    negotiation.passwordChecked((password.count % 2 == 0) == evenPasses, into: &actions)
                }
            }
        }
        var offset = 0
        while offset < stream.count && !negotiation.isFinished {
            let upper = min(offset + max(size(offset), 1), stream.count)
            negotiation.receive(UnsafeRawBufferPointer(rebasing: stream[offset..<upper]), into: &actions)
            offset = upper
            answer()
            precondition(negotiation.bufferedCount <= Socks4Request.maximumLength, "holds \(negotiation.bufferedCount)")
        }
        if offset < stream.count, case .ready(let request, let following) = actions.last {
            actions[actions.count - 1] = .ready(request, following: following + stream[offset...])
        }
        if end {
            negotiation.endOfInput(into: &actions)
            answer()
        }
        return actions
    }

    /// What every negotiation's actions must be.
    static func check(_ actions: [NegotiationAction], stream: UnsafeRawBufferPointer, policy: NegotiationPolicy) {
        var socks5: Bool?
        for (i, action) in actions.enumerated() {
            switch action {
            case .send(let reply):
                if reply.count == 2 && reply[0] == 5 {
                    precondition(
                        reply[1] == Socks5Method.noAcceptableMethods
                            || policy.methods.contains { $0.rawValue == reply[1] }, "a method sockd offers")
                    socks5 = true
                } else if reply.count == 2 {
                    precondition(reply == [1, 0] || reply == [1, 1], "a username/password status")
                } else if reply.count == Socks4Reply.length && reply[0] == 0 {
                    precondition(Socks4Reply.parse(reply)?.code == 91 && socks5 == nil, "a SOCKS4 refusal")
                } else {
                    precondition(socks5 == true, "a SOCKS5 reply after a greeting")
                    guard case .message(let parsed, let length) = Socks5Reply.parse(reply) else {
                        preconditionFailure("a SOCKS5 reply reads back")
                    }
                    precondition(length == reply.count && [1, 7, 8].contains(parsed.code), "a SOCKS5 refusal")
                    precondition(parsed.bound == .unspecified, "a refusal names nothing")
                }
            case .checkPassword(let username, _):
                precondition(!username.isEmpty && username.count <= 255, "a user name from RFC 1929")
                precondition(actions.count > i + 1, "a check is answered")
                guard case .send(let status) = actions[i + 1], status.count == 2, status[0] == 1 else {
                    preconditionFailure("the status follows the check")
                }
            case .ready(let request, let following):
                precondition(i == actions.count - 1, "nothing after ready")
                precondition(following.count <= stream.count, "bytes of the stream")
                precondition(stream.suffix(following.count).elementsEqual(following), "the stream's last bytes")
                let consumed = UnsafeRawBufferPointer(rebasing: stream[..<(stream.count - following.count)])
                switch request.version {
                case .socks4, .socks4a:
                    precondition(!policy.passwordRequired, "SOCKS4 served only without a password")
                    guard case .message(let parsed, let length) = Socks4Request.parse(consumed),
                        length == consumed.count
                    else { preconditionFailure("a SOCKS4 request is the bytes it took") }
                    precondition(parsed.destination == request.destination && parsed.userID == request.user, "SOCKS4")
                case .socks5:
                    precondition(request.method != nil, "a SOCKS5 request has a method")
                    precondition(!policy.passwordRequired || request.method == .usernamePassword, "--passwd holds")
                    precondition(request.method == .usernamePassword || request.user.isEmpty, "a user needs a login")
                    // sockd writes an IPv4-mapped address as IPv4, so the client's request may
                    // be 12 bytes longer than sockd's encoding of it.
                    let wire = Socks5Request(command: request.command, destination: request.destination).bytes
                    let reread = [wire.count, wire.count + 12].lazy.compactMap { length -> Socks5Request? in
                        guard length <= consumed.count,
                            case .message(let parsed, let read) = Socks5Request.parse(consumed.suffix(length)),
                            read == length
                        else { return nil }
                        return parsed
                    }.first
                    guard let parsed = reread else { preconditionFailure("the request's bytes end what was read") }
                    precondition(
                        parsed.command == request.command
                            && parsed.destination.host.unmapped == request.destination.host.unmapped
                            && parsed.destination.port == request.destination.port, "the request read back")
                }
            case .failed(let failure):
                precondition(i == actions.count - 1, "nothing after failed")
                precondition(failure.description.utf8.allSatisfy { $0 >= 32 && $0 < 127 }, "a printable reason")
            }
        }
    }

    /// A client's datagram: its header reads back from the header sockd would write for the
    /// same address and payload, and exactly so when the address is written as sent.
    static func udp(_ data: UnsafeRawBufferPointer) {
        switch SocksDatagram.parse(data) {
        case .datagram(let destination, let offset):
            precondition(offset <= data.count && offset <= SocksDatagram.maximumHeaderLength, "a header in the bytes")
            let payload = UnsafeRawBufferPointer(rebasing: data[offset...])
            let rebuilt = SocksDatagram.datagram(destination, payload: payload)
            let header = SocksDatagram.header(destination)
            let unmapped = SocksAddress(host: destination.host.unmapped, port: destination.port)
            precondition(
                SocksDatagram.parse(rebuilt) == .datagram(destination: unmapped, payloadOffset: header.count),
                "the rebuilt header reads back")
            precondition(rebuilt.suffix(payload.count).elementsEqual(payload), "the payload is kept")
            if data[0] == 0 && data[1] == 0 && unmapped == destination {
                precondition(rebuilt.elementsEqual(data), "a canonical datagram is rebuilt byte for byte")
            }
        case .fragment(let fragment):
            precondition(fragment != 0 && data[2] == fragment, "FRAG as sent")
        case .malformed(let failure):
            precondition(failure.description.utf8.allSatisfy { $0 >= 32 && $0 < 127 }, "a printable reason")
        }
    }
}

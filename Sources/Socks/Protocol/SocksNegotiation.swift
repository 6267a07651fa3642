import GatewayKit

// MARK: - Policy, request, actions

/// What the negotiation accepts, from sockd's options.
public struct NegotiationPolicy: Hashable, Sendable {
    /// `--passwd`: every client must give a user name and password (RFC 1929). SOCKS5 "no
    /// authentication" is never selected and SOCKS4/4a requests are refused with 91.
    public let passwordRequired: Bool
    /// The SOCKS5 methods sockd selects, in order of preference: the first that the client
    /// offers is chosen.
    public let methods: [Socks5Method]

    /// With a password required, only username/password (whatever `methods` says); else
    /// `methods`, by default "no authentication" first and then username/password (a client
    /// that offers only the latter gets it, and its user name for sockd.conf's user lists).
    public init(passwordRequired: Bool, methods: [Socks5Method] = [.noAuthentication, .usernamePassword]) {
        self.passwordRequired = passwordRequired
        self.methods = passwordRequired ? [.usernamePassword] : methods
    }
}

/// What the negotiation wants done, in order.
public enum NegotiationAction: Hashable, Sendable {
    /// Bytes for the client: a method selection, a username/password status, a refusal.
    case send([UInt8])
    /// Check this user name and password (against `--passwd`), and tell the negotiation with
    /// ``SocksNegotiation/passwordChecked(_:into:)``. Until then it only holds what it is given:
    /// the driver should stop reading the client meanwhile.
    case checkPassword(username: [UInt8], password: [UInt8])
    /// The request, and the bytes that came after it in the same piece (the relay's, to go to
    /// the destination once it is connected). The negotiation is over.
    case ready(SocksRequest, following: [UInt8])
    /// The negotiation failed; any reply the client gets (SOCKS4 91, SOCKS5 REP 1, 7 or 8,
    /// method X'FF', username/password failure) is the `send` just before. Close the client.
    case failed(SocksFailure)
}

// MARK: - The negotiation

/// A client's side of a SOCKS negotiation, from its first byte to its request: SOCKS4 and 4a
/// (one request), SOCKS5 (greeting, method selection, RFC 1929's username/password when
/// selected, request). Pure: bytes in, actions out, no socket and no clock.
///
/// Bytes may come in pieces of any size, a byte at a time or several messages at once, and
/// the actions are the same whatever the pieces (the unit tests and the `socks-request` fuzz
/// harness check it at every split). It holds at most one incomplete message (520 bytes at
/// most, a SOCKS4a request with a user id and a host name of 255 bytes each), plus, while a
/// password check is pending, what it is given meanwhile (see
/// ``NegotiationAction/checkPassword(username:password:)``). Once it has said `ready` or
/// `failed` it takes no more bytes: they are the relay's, or nobody's.
public struct SocksNegotiation: Sendable {
    public let policy: NegotiationPolicy

    enum Phase: Sendable {
        case start
        case socks4
        case greeting
        case password
        case awaitingCheck(username: [UInt8])
        case request(method: Socks5Method, user: [UInt8])
        case ready(SocksRequest)
        case finished
    }

    private(set) var phase = Phase.start
    /// The bytes of the current message so far, when a piece ended inside it.
    private var partial: [UInt8] = []
    /// What came while a password check was pending.
    private var held: [UInt8] = []
    private var endOfInputPending = false

    public init(policy: NegotiationPolicy) {
        self.policy = policy
    }

    /// Whether the negotiation has said `ready` or `failed`.
    public var isFinished: Bool {
        if case .finished = phase { return true }
        return false
    }

    /// How many bytes it holds: the incomplete message and what came during a password check.
    public var bufferedCount: Int { partial.count + held.count }

    /// The client's next bytes.
    public mutating func receive(_ bytes: ArraySlice<UInt8>, into actions: inout [NegotiationAction]) {
        bytes.withUnsafeBytes { receive($0, into: &actions) }
    }

    /// The client's next bytes, borrowed for the call.
    public mutating func receive(_ bytes: UnsafeRawBufferPointer, into actions: inout [NegotiationAction]) {
        var input = bytes
        while true {
            switch phase {
            case .finished:
                return
            case .awaitingCheck:
                held += input
                return
            case .ready(let request):
                actions.append(.ready(request, following: Array(input)))
                phase = .finished
                return
            case .start:
                guard let first = input.first else { return }
                switch first {
                case 4: phase = .socks4
                case 5: phase = .greeting
                default: return fail(.badVersion(first, .start), into: &actions)
                }
            case .socks4, .greeting, .password, .request:
                guard !input.isEmpty else { return }
                guard let used = step(input, into: &actions) else { return }
                input = UnsafeRawBufferPointer(rebasing: input[used...])
            }
        }
    }

    /// The client's end of file (or a read error): a request that has not come whole never
    /// will. During a password check, what was held is read first, once the check is told.
    public mutating func endOfInput(into actions: inout [NegotiationAction]) {
        switch phase {
        case .finished, .ready: return
        case .awaitingCheck: endOfInputPending = true
        default: fail(.truncated(stage, received: partial.count), into: &actions)
        }
    }

    /// The answer to `checkPassword`: the status goes to the client, and then (accepted) the
    /// bytes that came meanwhile are read, or (refused) the negotiation fails.
    public mutating func passwordChecked(_ accepted: Bool, into actions: inout [NegotiationAction]) {
        guard case .awaitingCheck(let username) = phase else {
            preconditionFailure("passwordChecked without a pending check")
        }
        actions.append(.send(UsernamePasswordStatus.bytes(accepted: accepted)))
        guard accepted else {
            held = []
            phase = .finished
            actions.append(.failed(.passwordRefused(username: username)))
            return
        }
        phase = .request(method: .usernamePassword, user: username)
        let pending = held
        held = []
        pending.withUnsafeBytes { receive($0, into: &actions) }
        if endOfInputPending {
            endOfInputPending = false
            endOfInput(into: &actions)
        }
    }

    // MARK: - Messages

    /// The message the phase expects.
    var stage: SocksFailure.Stage {
        switch phase {
        case .start: .start
        case .socks4: .socks4Request
        case .greeting: .socks5Greeting
        case .password, .awaitingCheck: .passwordRequest
        case .request, .ready, .finished: .socks5Request
        }
    }

    /// The longest form of the message the phase expects.
    private var maximumLength: Int {
        switch phase {
        case .socks4: Socks4Request.maximumLength
        case .greeting: Socks5Greeting.maximumLength
        case .password: UsernamePasswordRequest.maximumLength
        default: Socks5Request.maximumLength
        }
    }

    /// Reads the phase's message from `input` (after what `partial` holds): the bytes of
    /// `input` it took, or nil when `input` ended inside it (kept) or the negotiation failed.
    private mutating func step(_ input: UnsafeRawBufferPointer, into actions: inout [NegotiationAction]) -> Int? {
        guard !partial.isEmpty else {
            switch parse(input, into: &actions) {
            case .some(let length): return length
            case .none where !isFinished:
                // The parsers decide by their message's longest form: this is less.
                partial = Array(input)
                return nil
            case .none: return nil
            }
        }
        let before = partial.count
        let taken = min(input.count, maximumLength - before)
        partial += input[..<taken]
        let buffer = partial  // parse may change `partial`: read a copy of it
        let result = buffer.withUnsafeBytes { parse($0, into: &actions) }
        guard let length = result else {
            precondition(isFinished || taken == input.count, "a message of its longest form is decided")
            return nil
        }
        partial = []
        return length - before
    }

    /// Reads the phase's message from the start of `bytes` and acts on it: its length, or nil
    /// when it is incomplete or the negotiation failed.
    private mutating func parse(_ bytes: UnsafeRawBufferPointer, into actions: inout [NegotiationAction]) -> Int? {
        switch phase {
        case .socks4:
            switch Socks4Request.parse(bytes) {
            case .incomplete: return nil
            case .malformed(let failure):
                fail(failure, into: &actions)
                return nil
            case .message(let request, let length):
                guard !policy.passwordRequired else {
                    fail(.passwordRequired(request), into: &actions)
                    return nil
                }
                phase = .ready(
                    SocksRequest(
                        version: request.version, command: request.command, destination: request.destination,
                        user: request.userID, method: nil))
                return length
            }
        case .greeting:
            switch Socks5Greeting.parse(bytes) {
            case .incomplete: return nil
            case .malformed(let failure):
                fail(failure, into: &actions)
                return nil
            case .message(let greeting, let length):
                guard let method = policy.methods.first(where: { greeting.methods.contains($0.rawValue) }) else {
                    fail(.noAcceptableMethod(offered: greeting.methods), into: &actions)
                    return nil
                }
                actions.append(.send(Socks5MethodSelection.bytes(method)))
                phase = method == .usernamePassword ? .password : .request(method: method, user: [])
                return length
            }
        case .password:
            switch UsernamePasswordRequest.parse(bytes) {
            case .incomplete: return nil
            case .malformed(let failure):
                fail(failure, into: &actions)
                return nil
            case .message(let login, let length):
                actions.append(.checkPassword(username: login.username, password: login.password))
                phase = .awaitingCheck(username: login.username)
                return length
            }
        case .request(let method, let user):
            switch Socks5Request.parse(bytes) {
            case .incomplete: return nil
            case .malformed(let failure):
                fail(failure, into: &actions)
                return nil
            case .message(let request, let length):
                phase = .ready(
                    SocksRequest(
                        version: .socks5, command: request.command, destination: request.destination, user: user,
                        method: method))
                return length
            }
        default:
            preconditionFailure("no message is read in this phase")
        }
    }

    /// Ends the negotiation with `failure`, after the reply the client's protocol has for it.
    private mutating func fail(_ failure: SocksFailure, into actions: inout [NegotiationAction]) {
        if case .truncated = failure {
            // The client is gone: nothing to answer.
        } else {
            switch phase {
            case .socks4:
                actions.append(.send(Socks4Reply(.generalFailure).bytes))
            case .greeting:
                actions.append(.send(Socks5MethodSelection.noAcceptableMethods))
            case .password:
                actions.append(.send(UsernamePasswordStatus.bytes(accepted: false)))
            case .request:
                let outcome: Outcome
                switch failure {
                case .unknownCommand: outcome = .commandNotSupported
                case .unsupportedAddressType: outcome = .addressTypeNotSupported
                default: outcome = .generalFailure
                }
                actions.append(.send(Socks5Reply(outcome).bytes))
            default:
                break
            }
        }
        partial = []
        held = []
        phase = .finished
        actions.append(.failed(failure))
    }
}

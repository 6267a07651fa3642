import GatewayKit

/// The addresses of a DNS name, asked on an `EventLoop` without blocking it: one `DNSQuery`
/// per record type (A, AAAA or both, at the same time), the answers put together as the
/// blocking `DNSResolver.addresses(of:family:)` puts them: AAAA's addresses before A's, a
/// failure of one question ignored when the other was answered.
///
/// Only the DNS part: address literals and the hosts file are the caller's
/// (`HostResolver.answerLocally`), so that what is known at once is never sent to a server.
///
/// The completion is called once, on the loop's thread, never before `start` returns, and
/// never after `cancel`.
public final class AddressQuery {
    /// What the servers said.
    public enum Answer: Equatable, Sendable {
        /// The addresses found, in the order of the types asked (empty: the name exists, with
        /// no address of these types).
        case addresses([IPAddress])
        /// Every answer was NXDOMAIN: there is no such name.
        case noSuchName
        /// No question was answered: the first question's error.
        case failed(DNSError)
    }

    public typealias Completion = (Answer) -> Void

    private var queries: [DNSQuery?] = []
    private var results: [Result<(addresses: [IPAddress], noSuchName: Bool), DNSError>?]
    private var completion: Completion?

    /// Asks `servers` about `name` (wire format) for each of `types`, with `DNSQuery`'s
    /// `timeouts` and `limit` for each question (they run side by side, so `limit` bounds the
    /// whole). Call on the loop's thread.
    @discardableResult
    public static func start(
        loop: EventLoop, name: [UInt8], types: [DNSType], servers: [DNSServer], timeouts: [Duration],
        limit: Duration, completion: @escaping Completion
    ) -> AddressQuery {
        precondition(!types.isEmpty, "AddressQuery without a record type")
        let query = AddressQuery(count: types.count, completion: completion)
        for (index, type) in types.enumerated() {
            query.queries[index] = DNSQuery.start(
                loop: loop, question: DNSQuestion(name: name, type: type), servers: servers, timeouts: timeouts,
                limit: limit
            ) { [weak query] result in
                query?.answered(index, type: type, result)
            }
        }
        return query
    }

    private init(count: Int, completion: @escaping Completion) {
        queries = Array(repeating: nil, count: count)
        results = Array(repeating: nil, count: count)
        self.completion = completion
    }

    /// Gives up: the questions still asked are cancelled, the completion is not called.
    public func cancel() {
        completion = nil
        for case let query? in queries { query.cancel() }
        queries = []
    }

    private func answered(_ index: Int, type: DNSType, _ result: Result<DNSResponse, DNSError>) {
        guard completion != nil, index < queries.count else { return }
        queries[index] = nil
        results[index] = result.flatMap { response in
            Result { () throws(DNSError) in (try response.addresses(of: type), response.rcode == 3) }
        }
        guard results.allSatisfy({ $0 != nil }) else { return }
        var addresses: [IPAddress] = []
        var firstError: DNSError?
        var answered = 0
        var noSuchName = true
        for case let result? in results {
            switch result {
            case .success(let found):
                answered += 1
                addresses += found.addresses
                noSuchName = noSuchName && found.noSuchName
            case .failure(let error):
                if firstError == nil { firstError = error }
            }
        }
        let answer: Answer
        if answered == 0 {
            answer = .failed(firstError ?? .timedOut)
        } else if addresses.isEmpty && noSuchName {
            answer = .noSuchName
        } else {
            answer = .addresses(addresses)
        }
        let completion = self.completion
        self.completion = nil
        queries = []
        completion?(answer)
    }
}

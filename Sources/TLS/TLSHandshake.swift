import GatewayKit
import Loop

/// A handshake on an event loop: the connection's socket watched (edge-triggered, both ways)
/// until the handshake is done, failed, or `timeout` passed. Then the watch ends, so the
/// socket can be registered again by whoever takes the connection, and `completion` runs
/// once, on the loop's thread. `cancel` stops it without calling `completion`.
public final class TLSHandshake {
    public let connection: TLSConnection
    private let loop: EventLoop
    private var watch: DescriptorWatch?
    private var timer: LoopTimer?
    private var completion: ((Result<TLSFacts, TLSError>) -> Void)?

    public init(
        loop: EventLoop, connection: TLSConnection, completion: @escaping (Result<TLSFacts, TLSError>) -> Void
    ) {
        self.loop = loop
        self.connection = connection
        self.completion = completion
    }

    /// Starts watching and takes the first step at once.
    public func start(timeout: Duration) {
        do {
            watch = try DescriptorWatch(
                loop: loop, fd: connection.fd, interest: [.readable, .writable, .edgeTriggered, .readHangup]
            ) { [unowned self] _ in self.step() }
        } catch {
            return finish(.failure(TLSError("cannot watch the socket: \(error)")))
        }
        let timer = LoopTimer(loop: loop) { [unowned self] in
            self.finish(.failure(TLSError("the handshake took longer than \(timeout)")))
        }
        self.timer = timer
        timer.setUnlessArmed(after: timeout)
        step()
    }

    /// Stops without a word.
    public func cancel() {
        completion = nil
        stopWatching()
    }

    private func step() {
        guard completion != nil else { return }
        switch connection.handshake() {
        case .done: finish(.success(connection.facts))
        case .wantRead, .wantWrite: break  // the next edge comes
        case .failed(let error): finish(.failure(error))
        }
    }

    private func finish(_ result: Result<TLSFacts, TLSError>) {
        let completion = self.completion
        self.completion = nil
        stopWatching()
        completion?(result)
    }

    private func stopWatching() {
        watch?.cancel()
        watch = nil
        timer?.invalidate()
        timer = nil
    }
}

import Loop

/// The relay's name for a ``StreamTransport`` (defined in Loop, so that a buffered stream can
/// read through one too): see there.
public typealias RelayTransport = StreamTransport

/// The transports of a relay's two sides (nil: a plain socket). One reference in the relay,
/// so a plain relay grows by a pointer only.
public final class RelayTransports {
    public let client: (any RelayTransport)?
    public let server: (any RelayTransport)?

    public init(client: (any RelayTransport)? = nil, server: (any RelayTransport)? = nil) {
        self.client = client
        self.server = server
    }

    @inline(__always)
    func transport(_ side: RelaySide) -> (any RelayTransport)? { side == .client ? client : server }
}

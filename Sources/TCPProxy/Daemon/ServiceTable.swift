#if canImport(Glibc)
import Glibc
#endif
import Gateway
import GatewayKit
import TLS
import Synchronization

/// A listening socket and the handler it serves. A handler with an `interface` has a socket
/// bound to that address; the kernel gives a connection to the most specific socket, so the
/// any-address handler of the same port (bound to the wildcard) gets the rest.
public struct ProxyListener: Sendable {
    /// The address and port the socket is bound to (the key kept across reloads).
    public let key: ListenerKey
    public let fd: Int32
    /// Index into the configuration's services.
    public let service: Int
    /// Index into the service's handlers.
    public let handler: Int
}

/// A forward target with its addresses resolved when the configuration was loaded.
/// A handler's TLS, made when its table is loaded: toward the client (its listener's
/// certificates) and toward the server. A reload makes new ones; connections keep theirs.
public struct HandlerTLS: Sendable {
    public let server: TLSServerContext?
    public let client: TLSClientContext?

    public init(server: TLSServerContext?, client: TLSClientContext?) {
        self.server = server
        self.client = client
    }

    public static let none = HandlerTLS(server: nil, client: nil)

    /// The contexts of `handler`'s settings; an unusable file is an error naming `place`.
    static func make(_ handler: ProxyHandler, place: String) throws(StartError) -> HandlerTLS {
        guard handler.tls != nil || handler.remoteTLS != nil else { return .none }
        do throws(TLSError) {
            return HandlerTLS(
                server: try handler.tls.map { settings throws(TLSError) in try TLSServerContext(settings) },
                client: try handler.remoteTLS.map { settings throws(TLSError) in try TLSClientContext(settings) })
        } catch {
            throw StartError("\(place): \(error)")
        }
    }
}

public struct ResolvedTarget: Sendable {
    public let host: String
    /// nil: the port the client connected to.
    public let port: UInt16?
    public let address: IPAddress
    public let source: IPAddress?
    public let rotate: AddressRange?

    package init(host: String, port: UInt16?, address: IPAddress, source: IPAddress?, rotate: AddressRange?) {
        self.host = host
        self.port = port
        self.address = address
        self.source = source
        self.rotate = rotate
    }
}

/// One loaded configuration, shared read-only by every event loop: the services, their
/// listeners and resolved targets, and the state that must be shared (rotation counters).
public final class ServiceTable: ServingTable {
    public let configuration: ProxyConfiguration
    public let listeners: [ProxyListener]
    /// The listeners by socket, for the accepting loops.
    public let listenerByDescriptor: [Int32: ProxyListener]
    /// Per service, per handler: the resolved forward target (nil for exec handlers).
    public let targets: [[ResolvedTarget?]]
    /// Per service, per handler: its TLS contexts.
    public let tls: [[HandlerTLS]]
    public let relayBufferSize: Int
    /// Where client names come from; nil when no handler runs a program or names are off.
    public let clientNames: ClientNameSource?
    private let rotation: [[RotationCounter]]

    init(
        configuration: ProxyConfiguration, listeners: [ProxyListener], targets: [[ResolvedTarget?]],
        tls: [[HandlerTLS]], bufferSize: Int, clientNames: ClientNameSource?
    ) {
        self.configuration = configuration
        self.tls = tls
        self.listeners = listeners
        listenerByDescriptor = Dictionary(listeners.map { ($0.fd, $0) }, uniquingKeysWith: { first, _ in first })
        self.targets = targets
        self.relayBufferSize = bufferSize
        self.clientNames = clientNames
        rotation = targets.map { $0.map { _ in RotationCounter() } }
    }

    public var listenerSockets: [Listener] { listeners.map { Listener(key: $0.key, fd: $0.fd) } }

    public var configurationPath: String { configuration.path }

    /// The same configuration serving only the listeners in `fds` (a worker process's share).
    public func restricted(to fds: Set<Int32>) -> ServiceTable {
        ServiceTable(
            configuration: configuration, listeners: listeners.filter { fds.contains($0.fd) }, targets: targets,
            tls: tls, bufferSize: relayBufferSize, clientNames: clientNames)
    }

    /// The next source address of a `rotate` range (round robin, shared by all loops).
    public func nextRotatedSource(service: Int, handler: Int, range: AddressRange) -> IPAddress {
        let n = rotation[service][handler].value.wrappingAdd(1, ordering: .relaxed).oldValue
        return AddressArithmetic.address(in: range, at: n)
    }
}

/// A handler's position in its rotate range.
final class RotationCounter: Sendable {
    let value = Atomic<UInt64>(0)
}

/// Stepping through an address range.
public enum AddressArithmetic {
    /// The `index`-th address of `range` (wrapping round), counting from `start`.
    public static func address(in range: AddressRange, at index: UInt64) -> IPAddress {
        let size = count(range)
        let offset = size == 0 ? index : index % size
        return add(range.start, offset)
    }

    /// How many addresses the range holds (saturating at 2^64-1 for huge IPv6 ranges; 0 means 2^64).
    public static func count(_ range: AddressRange) -> UInt64 {
        let a = value(range.start)
        let b = value(range.end)
        let high = b.high &- a.high &- (b.low < a.low ? 1 : 0)
        if high != 0 { return UInt64.max }
        return (b.low &- a.low) &+ 1
    }

    static func value(_ address: IPAddress) -> (high: UInt64, low: UInt64) {
        var high: UInt64 = 0
        var low: UInt64 = 0
        let bytes = address.bytes
        if bytes.count == 4 {
            for b in bytes { low = low << 8 | UInt64(b) }
        } else {
            for b in bytes[0..<8] { high = high << 8 | UInt64(b) }
            for b in bytes[8..<16] { low = low << 8 | UInt64(b) }
        }
        return (high, low)
    }

    static func add(_ address: IPAddress, _ n: UInt64) -> IPAddress {
        var (high, low) = value(address)
        let (sum, carry) = low.addingReportingOverflow(n)
        low = sum
        if carry { high &+= 1 }
        if address.bytes.count == 4 {
            let v = UInt32(truncatingIfNeeded: low)
            return IPAddress(v4: UInt8(v >> 24), UInt8(v >> 16 & 255), UInt8(v >> 8 & 255), UInt8(v & 255))
        }
        var bytes = [UInt8](repeating: 0, count: 16)
        for i in 0..<8 {
            bytes[i] = UInt8(truncatingIfNeeded: high >> (56 - 8 * UInt64(i)))
            bytes[8 + i] = UInt8(truncatingIfNeeded: low >> (56 - 8 * UInt64(i)))
        }
        return IPAddress(bytes: bytes)!
    }
}

#if canImport(Glibc)
import Glibc
#endif
import CBastion
import Loop

/// What the relays of one event loop share: the scratch buffer every copy reads into, the
/// pools of relay buffers and splice pipes (so idle relays hold neither), and the counters
/// behind ``EventLoop/relayStatistics``. One per loop, made on the first relay's start
/// (``EventLoop/resource(_:)``), freed with the loop.
final class RelayResources: LoopResource {
    /// Empty relay buffers kept for reuse (beyond this they are freed).
    static let pooledBuffers = 64
    /// Empty pipes kept for reuse (beyond this they are closed).
    static let pooledPipes = 64
    /// Most pipes open at once (in use plus pooled, two descriptors each); when reached,
    /// relays copy through user space instead of splicing.
    static let maximumPipes = 8192

    var buffers = BufferPool(limit: RelayResources.pooledBuffers)
    var pipes = PipePool(limit: RelayResources.pooledPipes, maximum: RelayResources.maximumPipes)
    /// Relays running now.
    var relays = 0
    /// Relays started since the loop was created.
    var relaysStarted: UInt64 = 0
    /// Bytes read but not yet written by all relays (user-space buffers plus pipes).
    var bufferedBytes = 0

    init(loop: EventLoop) {}

    deinit { loopDidClose() }

    func loopDidClose() {
        buffers.releaseAll()
        pipes.releaseAll()
    }
}

/// Counters of what a loop's relays hold, for tests and status reports.
public struct RelayStatistics: Sendable, Equatable {
    /// Relays running now.
    public var relays = 0
    /// Relays started since the loop was created.
    public var relaysStarted: UInt64 = 0
    /// Bytes read but not yet written by all relays (user-space buffers plus pipes).
    public var bufferedBytes = 0
    /// Relay buffers holding data now.
    public var buffersInUse = 0
    /// Empty relay buffers kept for reuse.
    public var buffersPooled = 0
    /// Pipes attached to relays now.
    public var pipesInUse = 0
    /// Empty pipes kept for reuse.
    public var pipesPooled = 0
}

extension EventLoop {
    /// What this loop's relays hold now.
    public var relayStatistics: RelayStatistics {
        let r = resource(RelayResources.self)
        return RelayStatistics(
            relays: r.relays, relaysStarted: r.relaysStarted, bufferedBytes: r.bufferedBytes,
            buffersInUse: r.buffers.inUse, buffersPooled: r.buffers.pooled, pipesInUse: r.pipes.inUse,
            pipesPooled: r.pipes.pooled)
    }
}

/// Relay buffers of one size, kept for reuse once empty. A relay takes a buffer only when a
/// write could not take everything it read, and gives it back as soon as it is drained, so
/// idle connections hold none.
struct BufferPool {
    private var free: [UnsafeMutableRawPointer] = []
    /// The size of the pooled buffers (the size most recently asked for with an empty pool).
    private(set) var size = 0
    private let limit: Int
    private(set) var inUse = 0

    /// The loop's scratch buffer: every read in copy mode lands here first and is written on
    /// at once; only what the writer cannot take is copied to a relay buffer.
    private(set) var scratch: UnsafeMutableRawPointer?
    private var scratchSize = 0

    init(limit: Int) { self.limit = max(limit, 0) }

    var pooled: Int { free.count }

    mutating func take(_ size: Int) -> UnsafeMutableRawPointer {
        inUse += 1
        if size == self.size, let buffer = free.popLast() { return buffer }
        if free.isEmpty { self.size = size }
        return UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 16)
    }

    mutating func give(_ buffer: UnsafeMutableRawPointer, size: Int) {
        inUse -= 1
        if size == self.size && free.count < limit {
            free.append(buffer)
        } else {
            buffer.deallocate()
        }
    }

    /// A scratch buffer of at least `size` bytes.
    @inline(__always)
    mutating func scratch(_ size: Int) -> UnsafeMutableRawPointer {
        if size <= scratchSize, let scratch { return scratch }
        scratch?.deallocate()
        let new = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 16)
        scratch = new
        scratchSize = size
        return new
    }

    mutating func releaseAll() {
        for buffer in free { buffer.deallocate() }
        free.removeAll()
        scratch?.deallocate()
        scratch = nil
        scratchSize = 0
    }
}

/// A pipe used to splice one direction of a relay: socket -> pipe -> socket.
struct Pipe {
    var readFD: Int32
    var writeFD: Int32
    /// The capacity asked for (0: the system's default), to match pooled pipes to requests.
    var requested: Int32
    /// The capacity the kernel granted, in bytes.
    var capacity: Int32

    func close() {
        Glibc.close(readFD)
        Glibc.close(writeFD)
    }
}

/// Empty pipes kept for reuse, and the count of pipes open, bounded so that splicing never
/// takes the descriptors the daemon needs for connections.
struct PipePool {
    private var free: [Pipe] = []
    private let limit: Int
    private let maximum: Int
    private(set) var inUse = 0

    init(limit: Int, maximum: Int) {
        self.limit = max(limit, 0)
        self.maximum = max(maximum, 0)
    }

    var pooled: Int { free.count }

    /// An empty pipe of about `capacity` bytes (0: the system's default), or nil when the
    /// maximum is reached or the system refuses one; the caller then copies instead.
    mutating func take(capacity: Int32) -> Pipe? {
        if var pipe = free.popLast() {
            if pipe.requested != capacity {
                let granted = capacity > 0 ? bastion_set_pipe_size(pipe.writeFD, capacity) : -1
                pipe.capacity = granted > 0 ? granted : bastion_get_pipe_size(pipe.writeFD)
                pipe.requested = capacity
            }
            inUse += 1
            return pipe
        }
        guard inUse + free.count < maximum else { return nil }
        var fds: (Int32, Int32) = (-1, -1)
        let r = withUnsafeMutableBytes(of: &fds) { raw in
            bastion_pipe_nonblocking(raw.baseAddress!.assumingMemoryBound(to: Int32.self))
        }
        guard r == 0 else { return nil }
        var granted: Int32 = -1
        if capacity > 0 { granted = bastion_set_pipe_size(fds.1, capacity) }
        if granted <= 0 { granted = bastion_get_pipe_size(fds.1) }
        if granted <= 0 { granted = 65536 }
        inUse += 1
        return Pipe(readFD: fds.0, writeFD: fds.1, requested: capacity, capacity: granted)
    }

    /// Takes back a pipe: pooled when empty and there is room, closed otherwise.
    mutating func give(_ pipe: Pipe, empty: Bool) {
        inUse -= 1
        if empty && free.count < limit {
            free.append(pipe)
        } else {
            pipe.close()
        }
    }

    mutating func releaseAll() {
        for pipe in free { pipe.close() }
        free.removeAll()
    }
}

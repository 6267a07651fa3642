import GatewayKit

/// A hashed timing wheel with at most one timer per registration: O(1) to set, move or
/// cancel (each entry's position is kept per slot, removal swaps in the bucket's last entry),
/// and per-tick work only for the bucket that comes due.
///
/// Activity updates do not touch the wheel at all: a relay stores a time stamp when bytes
/// move, and when its timer fires it compares "last activity + idle timeout" with now and
/// sets the timer again if the connection was busy. So an idle connection costs one 16-byte
/// entry that is looked at once per timeout period, and a finished one costs nothing
/// (unregistering cancels its entry at once, so short connections leave nothing behind).
struct TimerWheel {
    struct Entry {
        var registration: EventLoop.Registration
        /// The tick at or after which the entry fires.
        var tick: UInt64
    }

    private struct Position {
        var bucket: Int32 = -1
        var index: Int32 = 0
    }

    /// Length of one tick in nanoseconds.
    let tickNanoseconds: UInt64
    private var buckets: [[Entry]]
    /// Where each slot's entry is (bucket -1: none).
    private var positions: [Position] = []
    private let mask: UInt64
    /// Every tick up to and including this one has been processed.
    private(set) var processedTick: UInt64
    /// Entries in the wheel.
    private(set) var count = 0

    /// A wheel of `bucketCount` buckets (rounded up to a power of two) of `tick` each,
    /// starting at `now` (monotonic nanoseconds).
    init(tick: Duration, bucketCount: Int, now: UInt64) {
        tickNanoseconds = max(tick.nanosecondsClamped, 1_000_000)
        var n = 1
        while n < max(bucketCount, 2) { n <<= 1 }
        buckets = Array(repeating: [], count: n)
        mask = UInt64(n - 1)
        processedTick = now / tickNanoseconds
    }

    /// Sets the timer of `registration` to `deadline` (monotonic nanoseconds), rounded up to
    /// the next tick, replacing any it had; a deadline in the past fires on the next tick.
    mutating func set(_ registration: EventLoop.Registration, at deadline: UInt64) {
        let slot = Int(registration.slot)
        if slot < positions.count {
            if positions[slot].bucket >= 0 { remove(Int(positions[slot].bucket), Int(positions[slot].index)) }
        } else {
            positions.append(contentsOf: repeatElement(Position(), count: slot + 1 - positions.count))
        }
        var tick = deadline / tickNanoseconds
        if tick * tickNanoseconds < deadline { tick += 1 }
        if tick <= processedTick { tick = processedTick + 1 }
        let bucket = Int(tick & mask)
        buckets[bucket].append(Entry(registration: registration, tick: tick))
        positions[slot] = Position(bucket: Int32(bucket), index: Int32(buckets[bucket].count - 1))
        count += 1
    }

    /// Removes the timer of `slot`, if it has one.
    mutating func cancel(slot: UInt32) {
        let slot = Int(slot)
        guard slot < positions.count, positions[slot].bucket >= 0 else { return }
        remove(Int(positions[slot].bucket), Int(positions[slot].index))
    }

    private mutating func remove(_ bucket: Int, _ index: Int) {
        let removed = buckets[bucket][index]
        let last = buckets[bucket].count - 1
        if index != last {
            let moved = buckets[bucket][last]
            buckets[bucket][index] = moved
            positions[Int(moved.registration.slot)].index = Int32(index)
        }
        buckets[bucket].removeLast()
        positions[Int(removed.registration.slot)].bucket = -1
        count -= 1
    }

    /// Moves every entry due at `now` into `due` (which it appends to).
    mutating func collect(now: UInt64, into due: inout [Entry]) {
        let nowTick = now / tickNanoseconds
        guard nowTick > processedTick else { return }
        // More ticks than buckets have passed: each bucket is visited once.
        let steps = min(nowTick - processedTick, mask + 1)
        var tick = nowTick - steps + 1
        while tick <= nowTick {
            let bucket = Int(tick & mask)
            var index = 0
            while index < buckets[bucket].count {
                let entry = buckets[bucket][index]
                if entry.tick <= nowTick {
                    due.append(entry)
                    remove(bucket, index)
                } else {
                    index += 1
                }
            }
            tick += 1
        }
        processedTick = nowTick
    }

    /// Nanoseconds from `now` until the next tick boundary, nil when the wheel is empty.
    func nanosecondsToNextTick(now: UInt64) -> UInt64? {
        guard count > 0 else { return nil }
        let next = (processedTick + 1) * tickNanoseconds
        return next > now ? next - now : 0
    }
}

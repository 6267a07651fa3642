/// djb's cdb hash: h = 5381, then h = ((h << 5) + h) ^ c for every byte, modulo 2^32.
@inlinable
public func cdbHash<Bytes: Sequence>(_ key: Bytes) -> UInt32 where Bytes.Element == UInt8 {
    var h: UInt32 = 5381
    for c in key {
        h = (h &<< 5) &+ h ^ UInt32(c)
    }
    return h
}

/// The same hash over raw memory, for the hot paths that hold a pointer.
@inlinable
public func cdbHash(_ key: UnsafeRawBufferPointer) -> UInt32 {
    var h: UInt32 = 5381
    for c in key {
        h = (h &<< 5) &+ h ^ UInt32(c)
    }
    return h
}

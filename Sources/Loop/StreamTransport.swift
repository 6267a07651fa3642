/// What a stream that is not a plain socket offers instead of recv/send/shutdown: TLS, say.
/// A relay (Relay's `RelayTransport` is this protocol) and a `BufferedSocket` read and write
/// through it.
///
/// The relay's seam between moving bytes and the socket they cross. Plain sockets have no transport and
/// keep the fast path (copy or splice, nothing in between); a side with a transport is
/// always copied (TLS and a filtering stream have no pipe operations), through the loop's
/// scratch buffer as usual.
///
/// The calls follow the system calls they replace: a count of bytes, 0 for the end of the
/// stream, or -1 with `errno` set (EAGAIN: wait for the socket's next readiness; anything
/// else ends the relay with that error). They are made on the loop's thread, never
/// concurrently, and only while the relay runs.
///
/// Readiness: the relay watches the socket itself, edge-triggered. A transport may need the
/// other direction's readiness to progress (TLS wants to read while writing, in a
/// renegotiation or a handshake), so every event on a side with a transport counts as both
/// readable and writable, and the relay simply tries again. Bytes a transport holds already
/// (decrypted plaintext, say) raise no edge: the relay reads a side with a transport until
/// the read says EAGAIN or the end, so the transport hands out what it holds first and says
/// EAGAIN only when it holds nothing and its socket has nothing either.
public protocol StreamTransport: AnyObject {
    /// Reads up to `count` bytes into `buffer`.
    func read(into buffer: UnsafeMutableRawPointer, count: Int) -> Int
    /// Writes up to `count` bytes from `buffer`; `more` says that more bytes or an end of
    /// stream follow at once (MSG_MORE), which the transport may use to coalesce. As with
    /// send(2), fewer than `count` (or EAGAIN) means the socket is full: the relay writes
    /// again on the socket's next readiness, so a transport must not stop short otherwise
    /// (TLS keeps a record it could not finish and says it took it, or says EAGAIN).
    func write(from buffer: UnsafeRawPointer, count: Int, more: Bool) -> Int
    /// The relay has nothing more to send this way: end the stream (a TLS close_notify, then
    /// shutdown(SHUT_WR) of the socket).
    func shutdownWrite()
    /// The relay has ended and closes the socket next: release what the transport holds.
    func close()
}

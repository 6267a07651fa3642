// The event loop and what any session on it uses, for every daemon: nothing here knows of
// relays, of a protocol or of a daemon. No SwiftNIO, no Swift concurrency, nothing
// allocated per event.
//
// EventLoop          one epoll instance per thread (a daemon runs one per core), a slot table
//                    of handlers (epoll data = slot, generation and a tag, so stale events are
//                    dropped and one handler can own several descriptors), a timer wheel with
//                    one O(1) timer per handler, deferred calls for fairness, an eventfd
//                    through which other threads (EventLoop.Remote, EventLoopThread) queue
//                    tasks or stop it, and LoopResources: what one kind of handler shares on
//                    a loop (the relay engine keeps its pools there).
// LoopTimer          a closure on a timer.  DescriptorWatch: a closure on a descriptor.
// Acceptor           accept until EAGAIN (bounded per turn); EMFILE/ENFILE pause it.
// Connector          non-blocking connect with optional source address and timeout.
// DNSQuery           a UDP DNS query driven by readiness and timers.
// IdentQuery         an RFC 1413 query (remoteinfo's semantics) driven by readiness and a timer.
// BufferedSocket     a socket for line protocols: bounded reads, lines or bytes, write queue.
// ChildProgram       a program started with posix_spawn, its exit seen through a pidfd.
//
// Threading: everything but EventLoop.Remote and EventLoopThread belongs to one loop's
// thread. Signals: creating a loop ignores SIGPIPE (splice into a reset socket raises it).

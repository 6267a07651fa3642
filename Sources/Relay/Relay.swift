// The relay engine: what tcpproxy (and later sockd and the application gateways) run
// connections on. No SwiftNIO, no Swift concurrency, nothing allocated per event.
//
// EventLoop          one epoll instance per thread (a daemon runs one per core, each with
//                    its own SO_REUSEPORT listener), a slot table of handlers (epoll data =
//                    slot, generation and a tag, so stale events are dropped and one handler
//                    can own several descriptors), a timer wheel with one O(1) timer per
//                    handler, deferred calls for fairness, and an eventfd through which
//                    other threads (EventLoop.Remote, EventLoopThread) queue tasks or stop it.
// RelayConnection    two sockets, edge-triggered, registered once for reading and writing:
//                    back-pressure by not reading (no epoll_ctl per chunk), half-close passed
//                    on with shutdown(SHUT_WR), idle timeout by time stamp plus one timer.
//                    Bytes move by copy (through the loop's scratch buffer; only what a slow
//                    writer leaves is kept, in a pooled buffer of bufferSize), by splice
//                    (socket -> pooled pipe -> socket) or automatically (copy small chunks,
//                    splice bulk). Idle relays hold no buffer and no pipe. `connecting`
//                    makes the server connection too: one registration, optimistic writes,
//                    nothing read from it or shut down on it until the connect is done.
// Connector          non-blocking connect with optional source address and timeout.
// Acceptor           accept until EAGAIN (bounded per turn); EMFILE/ENFILE pause it.
// DescriptorWatch    a closure on a descriptor, for the daemon's own (signalfd...).
//
// Threading: everything but EventLoop.Remote and EventLoopThread belongs to one loop's
// thread. Signals: creating a loop ignores SIGPIPE (splice into a reset socket raises it).

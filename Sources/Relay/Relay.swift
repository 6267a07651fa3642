// The relay engine: two sockets joined on one event loop (module Loop), what tcpproxy (and
// later sockd and the application gateways) hand a connection to once nothing more needs to
// be seen of it. Nothing allocated per event.
//
// RelayConnection    two sockets, edge-triggered, registered once for reading and writing:
//                    back-pressure by not reading (no epoll_ctl per chunk), half-close passed
//                    on with shutdown(SHUT_WR), idle timeout by time stamp plus one timer.
//                    Bytes move by copy (through the loop's scratch buffer; only what a slow
//                    writer leaves is kept, in a pooled buffer of bufferSize), by splice
//                    (socket -> pooled pipe -> socket) or automatically (copy small chunks,
//                    splice bulk). Idle relays hold no buffer and no pipe. `connecting`
//                    makes the server connection too: one registration, optimistic writes,
//                    nothing read from it or shut down on it until the connect is done.
// RelayResources     the pools and counters the relays of one loop share (a LoopResource).
//
// Threading: a relay belongs to its loop's thread.

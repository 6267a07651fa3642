/* bench/tlsload.c: TLS load against a TLS-terminating proxy in front of a plain backend, and
 * that backend, for bench/tls-run. OpenSSL 3, blocking sockets, pthreads.
 *
 *   tlsload backend HOST        the plain backend: prints its port, then serves each
 *                               connection by its first byte:
 *                                 'c'  writes 'c' back and closes (the handshake rate: the
 *                                      backend closes first, the proxy passes the close on)
 *                                 'h'  writes 'h' back and keeps the connection, echoing,
 *                                      until end of file (idle connections)
 *                                 'b'  then an 8-byte big-endian length L and L bytes: reads
 *                                      them, writes 'a', reads to end of file (bulk sink)
 *   tlsload probe HOST PORT CAFILE NAME
 *                               one full handshake that verifies the certificate against
 *                               CAFILE for NAME, one 'c' exchange; then whether the proxy
 *                               resumes TLS 1.3 (ticket), TLS 1.2 (ticket) and TLS 1.2
 *                               (session ID) sessions, and how many tickets a resumed
 *                               connection brings. Prints "key value" lines. Offers the
 *                               client's default ciphers (what each proxy prefers shows).
 *   tlsload hs HOST PORT MODE THREADS SECONDS
 *                               THREADS threads loop for SECONDS: connect, handshake, 'c'
 *                               out, its echo back, end of stream (close_notify or FIN),
 *                               close. MODE: full (TLS 1.3, no session offered), res13
 *                               (TLS 1.3, each thread offers its newest unused ticket, each
 *                               ticket once; none left: a full handshake), res12 (TLS 1.2
 *                               with tickets), res12id (TLS 1.2, no ticket: the server's
 *                               session-ID cache), plain (no TLS at all).
 *                               Prints "served N failed F resumed R tickets T seconds S".
 *   tlsload bulk HOST PORT STREAMS SECONDS TLS
 *                               STREAMS connections (TLS 1 or plain 0) each send 'b', a
 *                               length and that many bytes in 1 MiB writes, and wait for
 *                               the sink's 'a'. A first pass of 32 MiB per stream sizes the
 *                               measured pass to last about SECONDS. Prints
 *                               "bytes B seconds S gbits G".
 *   tlsload idle HOST PORT N    opens N TLS 1.3 connections ('h' exchanged on each), prints
 *                               "ready N seconds S", waits for a line (or end of file) on
 *                               standard input, closes them all, prints "closed".
 *
 * TLSLOAD_CIPHERSUITES / TLSLOAD_CIPHERS in the environment restrict what the load modes
 * offer (TLS 1.3 suites / TLS 1.2 cipher list), so every proxy negotiates the same one.
 *
 * Only loopback addresses are accepted (127.0.0.0/8). The client verifies certificates only
 * in probe; the load modes skip verification (the same saving for every proxy) and send
 * SNI "localhost".
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum mode { PLAIN, FULL, RES13, RES12, RES12ID };

static struct sockaddr_in target;
static double deadline;
static atomic_long served, failed, resumed, tickets_total;
static int keep_sessions;                 /* the new-session callback keeps what arrives */
/* Per thread (a ticket arrives in the thread reading): the sessions received and not yet
 * used, newest last. TLS 1.3 tickets are used once each (RFC 8446 C.4: clients SHOULD NOT
 * reuse a ticket); a TLS 1.2 session is offered until the server replaces it. */
enum { POOL = 8 };
static __thread SSL_SESSION *pool[POOL];
static __thread int pooled;
static __thread long tickets;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int loopback(const char *host, int port, struct sockaddr_in *out) {
    memset(out, 0, sizeof *out);
    out->sin_family = AF_INET;
    out->sin_port = htons((unsigned short)port);
    if (inet_pton(AF_INET, host, &out->sin_addr) != 1) return -1;
    return (ntohl(out->sin_addr.s_addr) >> 24) == 127 ? 0 : -1;
}

static int read_exact(int fd, unsigned char *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r > 0) { got += (size_t)r; continue; }
        if (r < 0 && errno == EINTR) continue;
        return -1;
    }
    return 0;
}

static int write_all(int fd, const unsigned char *buf, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, buf, n);
        if (w > 0) { buf += w; n -= (size_t)w; continue; }
        if (w < 0 && errno == EINTR) continue;
        return -1;
    }
    return 0;
}

/* A connected blocking socket with 5 s timeouts (a stuck proxy fails a connection, never
 * the run), or -1. */
static int dial(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int on = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    if (connect(fd, (struct sockaddr *)&target, sizeof target) != 0) { close(fd); return -1; }
    return fd;
}

// MARK: - client contexts

static int on_new_session(SSL *ssl, SSL_SESSION *session) {
    (void)ssl;
    tickets++;
    if (!keep_sessions) return 0;          /* OpenSSL frees it */
    if (pooled == POOL) {                  /* full: the oldest goes */
        SSL_SESSION_free(pool[0]);
        memmove(pool, pool + 1, (POOL - 1) * sizeof pool[0]);
        pooled--;
    }
    pool[pooled++] = session;
    return 1;                              /* we hold the reference */
}

/* The session to offer next (a reference the caller frees), or NULL: TLS 1.3 takes the
 * newest out of the pool, TLS 1.2 shares it. */
static SSL_SESSION *next_session(enum mode m) {
    if (pooled == 0) return NULL;
    if (m == RES13) return pool[--pooled];
    SSL_SESSION_up_ref(pool[pooled - 1]);
    return pool[pooled - 1];
}

static void drop_sessions(void) {
    while (pooled > 0) SSL_SESSION_free(pool[--pooled]);
}

/* TLSLOAD_CIPHERSUITES (TLS 1.3) and TLSLOAD_CIPHERS (TLS 1.2), when set, are all the
 * client offers: every proxy then negotiates the same cipher. */
static int offer_ciphers(SSL_CTX *ctx) {
    const char *suites = getenv("TLSLOAD_CIPHERSUITES"), *ciphers = getenv("TLSLOAD_CIPHERS");
    if (suites && *suites && SSL_CTX_set_ciphersuites(ctx, suites) != 1) return -1;
    if (ciphers && *ciphers && SSL_CTX_set_cipher_list(ctx, ciphers) != 1) return -1;
    return 0;
}

static SSL_CTX *client_ctx(enum mode m, const char *cafile) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(ctx, (m == RES12 || m == RES12ID) ? TLS1_2_VERSION : TLS1_3_VERSION);
    if (m == RES12ID) SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    /* Sessions come to us through the callback only (no client cache of OpenSSL's own). */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, on_new_session);
    if (!cafile && offer_ciphers(ctx) != 0) {
        fprintf(stderr, "tlsload: bad TLSLOAD_CIPHERSUITES or TLSLOAD_CIPHERS\n");
        exit(2);
    }
    if (cafile) {
        if (SSL_CTX_load_verify_locations(ctx, cafile, NULL) != 1) return NULL;
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    return ctx;
}

/* Reads until the stream ends: 1 when it ended cleanly (close_notify, or end of file
 * without one, which proxies that simply close send), 0 on timeout or error. Sets *notify
 * when a close_notify came. */
static int read_to_end(SSL *ssl, int *notify) {
    unsigned char b[256];
    for (;;) {
        int r = SSL_read(ssl, b, sizeof b);
        if (r > 0) continue;
        int e = SSL_get_error(ssl, r);
        if (e == SSL_ERROR_ZERO_RETURN) { *notify = 1; return 1; }
        if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            return 1;  /* FIN (or RST after the proxy closed) without close_notify */
        /* OpenSSL 3 reports a FIN without close_notify as SSL_ERROR_SSL "unexpected eof" */
        if (e == SSL_ERROR_SSL && ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
            ERR_clear_error();
            return 1;
        }
        ERR_clear_error();
        return 0;
    }
}

/* One connection through the proxy: handshake (offering `session` when given), `op` out,
 * its echo back; with `to_end`, then the end of the stream and close. Returns the SSL (for
 * idle, still open; *fdp its socket) or NULL when done/failed; *ok says how it went. */
static SSL *one(SSL_CTX *ctx, SSL_SESSION *session, unsigned char op, int to_end, int *ok, int *fdp,
                int *was_resumed) {
    *ok = 0;
    if (was_resumed) *was_resumed = 0;
    int fd = dial();
    if (fd < 0) return NULL;
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    SSL_set_tlsext_host_name(ssl, "localhost");
    if (session) SSL_set_session(ssl, session);
    unsigned char b = 0;
    int notify = 0;
    if (SSL_connect(ssl) != 1 || SSL_write(ssl, &op, 1) != 1 || SSL_read(ssl, &b, 1) != 1 || b != op) {
        ERR_clear_error();
        SSL_free(ssl);
        close(fd);
        return NULL;
    }
    if (was_resumed) *was_resumed = SSL_session_reused(ssl);
    if (!to_end) {
        *ok = 1;
        *fdp = fd;
        return ssl;
    }
    *ok = read_to_end(ssl, &notify);
    if (notify) SSL_shutdown(ssl);  /* answer it, as a polite client does; never wait */
    ERR_clear_error();
    SSL_free(ssl);
    close(fd);
    return NULL;
}

static int plain_one(void) {
    int fd = dial();
    if (fd < 0) return 0;
    unsigned char b = 'c', r = 0, rest[64];
    int ok = write_all(fd, &b, 1) == 0 && read_exact(fd, &r, 1) == 0 && r == 'c';
    if (ok) ok = read(fd, rest, sizeof rest) == 0;
    close(fd);
    return ok;
}

// MARK: - hs

struct hs_args { SSL_CTX *ctx; enum mode mode; };

static void *hs_worker(void *arg) {
    struct hs_args *a = arg;
    long s = 0, f = 0, res = 0;
    while (now() < deadline) {
        int ok = 0, reused = 0, fd;
        if (a->mode == PLAIN) {
            ok = plain_one();
        } else {
            SSL_SESSION *offer = a->mode == FULL ? NULL : next_session(a->mode);
            one(a->ctx, offer, 'c', 1, &ok, &fd, &reused);
            if (offer) SSL_SESSION_free(offer);
        }
        if (ok) s++; else f++;
        res += reused;
    }
    atomic_fetch_add(&served, s);
    atomic_fetch_add(&failed, f);
    atomic_fetch_add(&resumed, res);
    atomic_fetch_add(&tickets_total, tickets);
    drop_sessions();
    return NULL;
}

static enum mode parse_mode(const char *s) {
    if (!strcmp(s, "plain")) return PLAIN;
    if (!strcmp(s, "full")) return FULL;
    if (!strcmp(s, "res13")) return RES13;
    if (!strcmp(s, "res12")) return RES12;
    if (!strcmp(s, "res12id")) return RES12ID;
    fprintf(stderr, "tlsload: unknown mode %s\n", s);
    exit(2);
}

static int hs(enum mode m, int threads, double seconds) {
    struct hs_args a = {.ctx = m == PLAIN ? NULL : client_ctx(m, NULL), .mode = m};
    keep_sessions = m != FULL && m != PLAIN;
    pthread_t *t = calloc((size_t)threads, sizeof *t);
    double start = now();
    deadline = start + seconds;
    for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, hs_worker, &a);
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    printf("served %ld failed %ld resumed %ld tickets %ld seconds %.3f\n", (long)served, (long)failed,
           (long)resumed, (long)tickets_total, now() - start);
    return 0;
}

// MARK: - probe

/* Whether a session of the kind m is resumed; *issued: how many new sessions (tickets)
 * the resumed connection brought. */
static int resumes(enum mode m, long *issued) {
    SSL_CTX *ctx = client_ctx(m, NULL);
    keep_sessions = 1;
    int ok, fd, reused = 0;
    one(ctx, NULL, 'c', 1, &ok, &fd, NULL);
    SSL_SESSION *offer = next_session(m);
    if (!ok || !offer) { drop_sessions(); SSL_CTX_free(ctx); return 0; }
    long before = tickets;
    one(ctx, offer, 'c', 1, &ok, &fd, &reused);
    *issued = tickets - before;
    SSL_SESSION_free(offer);
    drop_sessions();
    SSL_CTX_free(ctx);
    return ok && reused;
}

static int probe(const char *cafile, const char *name) {
    SSL_CTX *ctx = client_ctx(FULL, cafile);
    if (!ctx) { fprintf(stderr, "tlsload: cannot load %s\n", cafile); return 111; }
    int fd = dial();
    if (fd < 0) { printf("connect failed\n"); return 1; }
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    SSL_set_tlsext_host_name(ssl, name);
    SSL_set1_host(ssl, name);
    if (SSL_connect(ssl) != 1) {
        unsigned long e = ERR_peek_error();
        long v = SSL_get_verify_result(ssl);
        printf("handshake failed %s verify %s\n", e ? ERR_reason_error_string(e) : "(no error)",
               X509_verify_cert_error_string(v));
        return 1;
    }
    printf("version %s\ncipher %s\n", SSL_get_version(ssl), SSL_get_cipher_name(ssl));
    int group = SSL_get_negotiated_group(ssl), sig = 0, hash = 0;
    printf("group %s\n", group ? SSL_group_to_name(ssl, group) : "-");
    if (SSL_get_peer_signature_type_nid(ssl, &sig) == 1 && SSL_get_peer_signature_nid(ssl, &hash) == 1)
        printf("signature %s+%s\n", OBJ_nid2sn(sig), OBJ_nid2sn(hash));
    X509 *cert = SSL_get1_peer_certificate(ssl);
    if (cert) {
        char subject[256];
        X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof subject);
        EVP_PKEY *key = X509_get0_pubkey(cert);
        printf("subject %s\nkey %s %d\n", subject, key ? OBJ_nid2sn(EVP_PKEY_get_base_id(key)) : "-",
               key ? EVP_PKEY_get_bits(key) : 0);
        X509_free(cert);
    }
    long verified = SSL_get_verify_result(ssl);
    printf("verify %s\n", X509_verify_cert_error_string(verified));
    unsigned char op = 'c', b = 0;
    int echo = SSL_write(ssl, &op, 1) == 1 && SSL_read(ssl, &b, 1) == 1 && b == op;
    int notify = 0, end = echo && read_to_end(ssl, &notify);
    printf("echo %s\nend %s\ntickets %ld\n", echo ? "ok" : "failed",
           end ? (notify ? "close_notify" : "eof") : "none", tickets);
    SSL_free(ssl);
    close(fd);
    const char *kinds[] = {"resume13", "resume12", "resume12id"};
    enum mode modes[] = {RES13, RES12, RES12ID};
    for (int i = 0; i < 3; i++) {
        long issued = 0;
        int yes = resumes(modes[i], &issued);
        printf("%s %s\n%s_tickets %ld\n", kinds[i], yes ? "yes" : "no", kinds[i], issued);
    }
    return echo && end && verified == X509_V_OK ? 0 : 1;
}

// MARK: - bulk

struct bulk_args {
    SSL_CTX *ctx;
    uint64_t length;
    pthread_barrier_t *go;
    int ok;
};

static void *bulk_stream(void *arg) {
    struct bulk_args *a = arg;
    static unsigned char chunk[1 << 20];
    unsigned char head[9] = {'b'};
    for (int i = 0; i < 8; i++) head[1 + i] = (unsigned char)(a->length >> (56 - 8 * i));
    int fd = dial();
    SSL *ssl = NULL;
    a->ok = 0;
    if (fd >= 0 && a->ctx) {
        ssl = SSL_new(a->ctx);
        SSL_set_fd(ssl, fd);
        SSL_set_tlsext_host_name(ssl, "localhost");
        if (SSL_connect(ssl) != 1) { SSL_free(ssl); ssl = NULL; close(fd); fd = -1; }
    }
    pthread_barrier_wait(a->go);  /* every stream connected (and handshaken) before the clock */
    if (fd < 0) { pthread_barrier_wait(a->go); return NULL; }
    int good = ssl ? SSL_write(ssl, head, sizeof head) == (int)sizeof head : write_all(fd, head, sizeof head) == 0;
    uint64_t left = a->length;
    while (good && left > 0) {
        size_t n = left < sizeof chunk ? (size_t)left : sizeof chunk;
        good = ssl ? SSL_write(ssl, chunk, (int)n) == (int)n : write_all(fd, chunk, n) == 0;
        left -= n;
    }
    unsigned char ack = 0;
    if (good) good = ssl ? SSL_read(ssl, &ack, 1) == 1 && ack == 'a' : read_exact(fd, &ack, 1) == 0 && ack == 'a';
    a->ok = good;
    pthread_barrier_wait(a->go);
    if (ssl) { SSL_shutdown(ssl); SSL_free(ssl); }
    ERR_clear_error();
    close(fd);
    return NULL;
}

/* One pass of `streams` streams of `length` bytes each; returns the seconds from the start
 * (all connected) to the last ack, or -1 when a stream failed. */
static double bulk_pass(SSL_CTX *ctx, int streams, uint64_t length) {
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, (unsigned)streams + 1);
    pthread_t *t = calloc((size_t)streams, sizeof *t);
    struct bulk_args *a = calloc((size_t)streams, sizeof *a);
    for (int i = 0; i < streams; i++) {
        a[i] = (struct bulk_args){.ctx = ctx, .length = length, .go = &go};
        pthread_create(&t[i], NULL, bulk_stream, &a[i]);
    }
    pthread_barrier_wait(&go);
    double start = now();
    pthread_barrier_wait(&go);
    double took = now() - start;
    int ok = 1;
    for (int i = 0; i < streams; i++) { pthread_join(t[i], NULL); ok &= a[i].ok; }
    pthread_barrier_destroy(&go);
    free(t);
    free(a);
    return ok ? took : -1;
}

static int bulk(int streams, double seconds, int tls) {
    SSL_CTX *ctx = tls ? client_ctx(FULL, NULL) : NULL;
    uint64_t warm = 32ull << 20;
    double t = bulk_pass(ctx, streams, warm);
    if (t <= 0) { printf("bytes 0 seconds 0 gbits 0 failed\n"); return 1; }
    double rate = (double)warm * streams / t;
    uint64_t length = (uint64_t)(rate * seconds / streams) & ~((1ull << 20) - 1);
    if (length < warm) length = warm;
    t = bulk_pass(ctx, streams, length);
    if (t <= 0) { printf("bytes 0 seconds 0 gbits 0 failed\n"); return 1; }
    double bytes = (double)length * streams;
    printf("bytes %.0f seconds %.3f gbits %.3f\n", bytes, t, bytes * 8 / t / 1e9);
    return 0;
}

// MARK: - idle

static int idle(int n) {
    SSL_CTX *ctx = client_ctx(FULL, NULL);
    SSL **ssl = calloc((size_t)n, sizeof *ssl);
    int *fds = calloc((size_t)n, sizeof *fds);
    double start = now();
    int open = 0;
    for (int i = 0; i < n; i++) {
        int ok, fd = -1;
        SSL *s = one(ctx, NULL, 'h', 0, &ok, &fd, NULL);
        if (!ok) { fprintf(stderr, "tlsload: idle connection %d failed\n", i); break; }
        ssl[open] = s;
        fds[open++] = fd;
    }
    printf("ready %d seconds %.3f\n", open, now() - start);
    fflush(stdout);
    char line[64];
    (void)!fgets(line, sizeof line, stdin);
    for (int i = 0; i < open; i++) { SSL_free(ssl[i]); close(fds[i]); }
    printf("closed\n");
    return open == n ? 0 : 1;
}

// MARK: - backend

static void *sink(void *arg) {
    int fd = (int)(long)arg;
    enum { size = 1 << 20 };
    unsigned char *buf = malloc(size), head[8];
    if (read_exact(fd, head, 8) == 0) {
        uint64_t left = 0;
        for (int i = 0; i < 8; i++) left = left << 8 | head[i];
        while (left > 0) {
            ssize_t r = read(fd, buf, left < size ? (size_t)left : size);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) break;
            left -= (uint64_t)r;
        }
        if (left == 0) {
            unsigned char a = 'a';
            if (write_all(fd, &a, 1) == 0)
                while (read(fd, buf, size) > 0) {}
        }
    }
    free(buf);
    close(fd);
    return NULL;
}

static int backend(const char *host) {
    struct sockaddr_in at;
    if (loopback(host, 0, &at) != 0) { fprintf(stderr, "tlsload: %s is not a loopback address\n", host); return 2; }
    signal(SIGPIPE, SIG_IGN);
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int on = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    if (bind(listener, (struct sockaddr *)&at, sizeof at) != 0 || listen(listener, 4096) != 0) {
        perror("tlsload: bind");
        return 111;
    }
    socklen_t len = sizeof at;
    getsockname(listener, (struct sockaddr *)&at, &len);
    printf("%d\n", ntohs(at.sin_port));
    fflush(stdout);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    size_t slots = rl.rlim_cur == RLIM_INFINITY ? 1 << 20 : (size_t)rl.rlim_cur;
    unsigned char *holding = calloc(slots, 1);  /* per descriptor: 'h' once it echoes */
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = listener};
    epoll_ctl(ep, EPOLL_CTL_ADD, listener, &ev);
    struct epoll_event events[256];
    unsigned char buf[4096];
    for (;;) {
        int n = epoll_wait(ep, events, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == listener) {
                int c;
                while ((c = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
                    struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
                    if ((size_t)c >= slots) { close(c); continue; }
                    holding[c] = 0;
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
                }
                continue;
            }
            if (holding[fd]) {
                ssize_t r = read(fd, buf, sizeof buf);
                if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
                if (r > 0 && write_all(fd, buf, (size_t)r) == 0) continue;
                holding[fd] = 0;
                close(fd);
                continue;
            }
            unsigned char op;
            ssize_t r = read(fd, &op, 1);
            if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            if (r == 1 && op == 'b') {
                epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
                fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
                pthread_t t;
                pthread_attr_t attr;
                pthread_attr_init(&attr);
                pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
                pthread_create(&t, &attr, sink, (void *)(long)fd);
                pthread_attr_destroy(&attr);
                continue;
            }
            if (r == 1 && (op == 'c' || op == 'h')) {
                (void)!write(fd, &op, 1);
                if (op == 'h') { holding[fd] = 1; continue; }
            }
            close(fd);
        }
    }
}

// MARK: - main

static void usage(void) {
    fprintf(stderr, "usage: tlsload backend HOST | probe HOST PORT CAFILE NAME | hs HOST PORT MODE THREADS SECONDS |"
                    " bulk HOST PORT STREAMS SECONDS TLS | idle HOST PORT N\n");
    exit(2);
}

int main(int argc, char **argv) {
    if (argc < 3) usage();
    signal(SIGPIPE, SIG_IGN);
    if (!strcmp(argv[1], "backend")) return backend(argv[2]);
    if (argc < 4) usage();
    if (loopback(argv[2], atoi(argv[3]), &target) != 0) {
        fprintf(stderr, "tlsload: %s is not a loopback address\n", argv[2]);
        return 2;
    }
    if (!strcmp(argv[1], "probe") && argc == 6) return probe(argv[4], argv[5]);
    if (!strcmp(argv[1], "hs") && argc == 7) return hs(parse_mode(argv[4]), atoi(argv[5]), atof(argv[6]));
    if (!strcmp(argv[1], "bulk") && argc == 7) return bulk(atoi(argv[4]), atof(argv[5]), atoi(argv[6]));
    if (!strcmp(argv[1], "idle") && argc == 5) return idle(atoi(argv[4]));
    usage();
}

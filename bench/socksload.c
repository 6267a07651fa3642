/* bench/socksload.c: SOCKS connection-rate load in C, so the client is not what limits the
 * servers measured (a Python client tops out near one core's worth of connections).
 *
 *   socksload echo HOST                 a backend: prints its port, then for each connection
 *                                       reads one byte, writes it back and closes (the
 *                                       backend closes first, so TIME_WAIT stays on its side)
 *   socksload client PHOST PPORT DHOST DPORT VERSION CONCURRENCY SECONDS
 *                                       CONCURRENCY threads loop for SECONDS: connect to the
 *                                       proxy, SOCKS5 (greeting, method, CONNECT, reply) or
 *                                       SOCKS4 (request, reply), or VERSION 0: straight to
 *                                       DHOST:DPORT; then one byte out, its echo back, end of
 *                                       file, close. Prints "served N failed F seconds S".
 *   socksload sink HOST | source HOST   a bulk backend: prints its port; per connection (a
 *                                       thread) reads to end of file and closes, or writes
 *                                       1 MiB pieces until the peer goes
 *   socksload bulk PHOST PPORT DHOST DPORT VERSION SECONDS up|down
 *                                       one tunnel (VERSION 0: a plain connection to
 *                                       DHOST:DPORT, such as a tcpproxy): up writes for
 *                                       SECONDS, half-closes and waits for the sink's close;
 *                                       down reads from a source for SECONDS. Prints
 *                                       "bytes B seconds S gbits G".
 *
 * Only loopback addresses are accepted (127.0.0.0/8 and ::1): IPv4 for the SOCKS requests.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_in proxy, dest;
static int version;
static double deadline;
static atomic_long served, failed;

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

/* Reads exactly n bytes; 0 when they came. */
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

/* A connection through the proxy (or straight to the destination for version 0), its
 * SOCKS exchange done; -1 on any failure. */
static int tunnel(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one_ = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one_, sizeof one_);
    const struct sockaddr_in *to = version ? &proxy : &dest;
    int ok = connect(fd, (const struct sockaddr *)to, sizeof *to) == 0;
    unsigned char buf[32];
    if (ok && version == 5) {
        static const unsigned char greeting[3] = {5, 1, 0};
        unsigned char request[10] = {5, 1, 0, 1};
        memcpy(request + 4, &dest.sin_addr, 4);
        memcpy(request + 8, &dest.sin_port, 2);
        ok = write_all(fd, greeting, 3) == 0 && read_exact(fd, buf, 2) == 0 && buf[0] == 5 && buf[1] == 0
             && write_all(fd, request, 10) == 0 && read_exact(fd, buf, 10) == 0 && buf[1] == 0;
    } else if (ok && version == 4) {
        unsigned char request[9] = {4, 1};
        memcpy(request + 2, &dest.sin_port, 2);
        memcpy(request + 4, &dest.sin_addr, 4);
        ok = write_all(fd, request, 9) == 0 && read_exact(fd, buf, 8) == 0 && buf[1] == 90;
    }
    if (!ok) {
        close(fd);
        return -1;
    }
    return fd;
}

static int one(void) {
    int fd = tunnel();
    if (fd < 0) return 0;
    unsigned char buf[32];
    int ok = 1;
    if (ok) ok = write_all(fd, (const unsigned char *)"x", 1) == 0 && read_exact(fd, buf, 1) == 0 && buf[0] == 'x';
    if (ok) ok = read(fd, buf, 1) == 0;
    close(fd);
    return ok;
}

static void *worker(void *arg) {
    (void)arg;
    while (now() < deadline) {
        if (one())
            atomic_fetch_add(&served, 1);
        else
            atomic_fetch_add(&failed, 1);
    }
    return NULL;
}

/* A listening socket on HOST (loopback only) at a port the kernel picks, printed on standard
 * output for the driver; -1 (and a message) when it cannot be made. */
static int listen_and_print(const char *host, int flags, int backlog) {
    struct sockaddr_in at;
    if (loopback(host, 0, &at) != 0) { fprintf(stderr, "socksload: %s is not a loopback address\n", host); return -1; }
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | flags, 0);
    int on = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    if (bind(listener, (struct sockaddr *)&at, sizeof at) != 0 || listen(listener, backlog) != 0) {
        perror("socksload: bind");
        return -1;
    }
    socklen_t len = sizeof at;
    getsockname(listener, (struct sockaddr *)&at, &len);
    printf("%d\n", ntohs(at.sin_port));
    fflush(stdout);
    return listener;
}

static int echo(const char *host) {
    int listener = listen_and_print(host, SOCK_NONBLOCK, 4096);
    if (listener < 0) return 111;
    int on = 1;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = listener};
    epoll_ctl(ep, EPOLL_CTL_ADD, listener, &ev);
    struct epoll_event events[256];
    for (;;) {
        int n = epoll_wait(ep, events, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == listener) {
                int c;
                while ((c = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
                    struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
                }
                continue;
            }
            unsigned char b;
            ssize_t r = read(fd, &b, 1);
            if (r < 0 && errno == EAGAIN) continue;
            if (r == 1) (void)!write(fd, &b, 1);
            close(fd);
        }
    }
}

static void *bulk_peer(void *arg) {
    long v = (long)arg;
    int fd = (int)(v >> 1), sink = (int)(v & 1);
    static unsigned char chunk[1 << 20];
    if (sink) {
        while (read(fd, chunk, sizeof chunk) > 0) {}
    } else {
        while (write(fd, chunk, sizeof chunk) > 0) {}
    }
    close(fd);
    return NULL;
}

static int bulk_backend(const char *host, int sink) {
    int listener = listen_and_print(host, 0, 64);
    if (listener < 0) return 111;
    signal(SIGPIPE, SIG_IGN);
    for (;;) {
        int c = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0) continue;
        pthread_t t;
        pthread_create(&t, NULL, bulk_peer, (void *)(((long)c << 1) | sink));
        pthread_detach(t);
    }
}

static int bulk(double seconds, int up) {
    signal(SIGPIPE, SIG_IGN);
    int fd = tunnel();
    if (fd < 0) { fprintf(stderr, "socksload: the tunnel failed\n"); return 1; }
    static unsigned char chunk[1 << 20];
    long long bytes = 0;
    double start = now(), end = start + seconds;
    if (up) {
        while (now() < end) {
            ssize_t w = write(fd, chunk, sizeof chunk);
            if (w <= 0) { if (errno == EINTR) continue; break; }
            bytes += w;
        }
        shutdown(fd, SHUT_WR);
        while (read(fd, chunk, sizeof chunk) > 0) {}
    } else {
        while (now() < end) {
            ssize_t r = read(fd, chunk, sizeof chunk);
            if (r <= 0) { if (r < 0 && errno == EINTR) continue; break; }
            bytes += r;
        }
    }
    double took = now() - start;
    close(fd);
    printf("bytes %lld seconds %.3f gbits %.3f\n", bytes, took, bytes * 8 / took / 1e9);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "echo") == 0) return echo(argv[2]);
    if (argc == 3 && strcmp(argv[1], "sink") == 0) return bulk_backend(argv[2], 1);
    if (argc == 3 && strcmp(argv[1], "source") == 0) return bulk_backend(argv[2], 0);
    if (argc == 9 && strcmp(argv[1], "bulk") == 0) {
        if (loopback(argv[2], atoi(argv[3]), &proxy) != 0 || loopback(argv[4], atoi(argv[5]), &dest) != 0) {
            fprintf(stderr, "socksload: only IPv4 loopback addresses\n");
            return 100;
        }
        version = atoi(argv[6]);
        return bulk(atof(argv[7]), strcmp(argv[8], "up") == 0);
    }
    if (argc != 9 || strcmp(argv[1], "client") != 0) {
        fprintf(stderr, "usage: socksload echo|sink|source HOST | socksload client PHOST PPORT DHOST DPORT 0|4|5 "
                        "CONCURRENCY SECONDS | socksload bulk PHOST PPORT DHOST DPORT 0|4|5 SECONDS up|down\n");
        return 100;
    }
    if (loopback(argv[2], atoi(argv[3]), &proxy) != 0 || loopback(argv[4], atoi(argv[5]), &dest) != 0) {
        fprintf(stderr, "socksload: only IPv4 loopback addresses\n");
        return 100;
    }
    version = atoi(argv[6]);
    int threads = atoi(argv[7]);
    double seconds = atof(argv[8]);
    if ((version != 0 && version != 4 && version != 5) || threads < 1 || threads > 1024 || seconds <= 0) {
        fprintf(stderr, "socksload: bad VERSION, CONCURRENCY or SECONDS\n");
        return 100;
    }
    pthread_t tids[1024];
    double start = now();
    deadline = start + seconds;
    for (int i = 0; i < threads; i++) pthread_create(&tids[i], NULL, worker, NULL);
    for (int i = 0; i < threads; i++) pthread_join(tids[i], NULL);
    printf("served %ld failed %ld seconds %.3f\n", atomic_load(&served), atomic_load(&failed), now() - start);
    return 0;
}

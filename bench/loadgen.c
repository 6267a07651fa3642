/* bench/loadgen.c: connections-per-second load for a tcpserver on loopback.
 *
 *   loadgen HOST PORT CONCURRENCY SECONDS [EXPECT]
 *
 * CONCURRENCY threads each loop: connect, read until EOF, close, for SECONDS of wall time.
 * A connection counts as served when it connected and read exactly EXPECT (default "ok\n")
 * before EOF; anything else (connect error, read error, reset, other bytes) is a failure.
 * Prints one line: "served N failed F seconds S" (S the measured wall time).
 *
 * bench/run compiles this with gcc into a temporary directory. Only loopback addresses are
 * accepted: HOST must be 127.0.0.0/8 or ::1.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_storage target;
static socklen_t target_len;
static const char *expect = "ok\n";
static size_t expect_len;
static double deadline;
static atomic_long served, failed;
static atomic_long fail_connect, fail_read, fail_bytes;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int one(void) {
    int fd = socket(target.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) { atomic_fetch_add(&fail_connect, 1); return 0; }
    if (connect(fd, (struct sockaddr *)&target, target_len) != 0) {
        atomic_fetch_add(&fail_connect, 1);
        close(fd);
        return 0;
    }
    char buf[256];
    size_t got = 0;
    int ok = 1;
    for (;;) {
        ssize_t n = read(fd, buf + got, sizeof buf - got);
        if (n == 0) break;
        if (n < 0) {
            if (errno == EINTR) continue;
            atomic_fetch_add(&fail_read, 1);
            ok = 0;
            break;
        }
        got += (size_t)n;
        if (got == sizeof buf) { ok = 0; break; }
    }
    if (ok && (got != expect_len || memcmp(buf, expect, expect_len) != 0)) {
        atomic_fetch_add(&fail_bytes, 1);
        ok = 0;
    }
    close(fd);
    return ok;
}

static void *worker(void *arg) {
    (void)arg;
    long s = 0, f = 0;
    while (now() < deadline) {
        if (one()) s++; else f++;
    }
    atomic_fetch_add(&served, s);
    atomic_fetch_add(&failed, f);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: loadgen HOST PORT CONCURRENCY SECONDS [EXPECT]\n");
        return 100;
    }
    int port = atoi(argv[2]);
    int k = atoi(argv[3]);
    double seconds = atof(argv[4]);
    if (argc > 5) expect = argv[5];
    expect_len = strlen(expect);
    if (k < 1 || k > 1024 || seconds <= 0 || seconds > 120 || port <= 0 || port > 65535) {
        fprintf(stderr, "loadgen: bad arguments\n");
        return 100;
    }
    memset(&target, 0, sizeof target);
    struct sockaddr_in *v4 = (struct sockaddr_in *)&target;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&target;
    if (inet_pton(AF_INET, argv[1], &v4->sin_addr) == 1) {
        if ((ntohl(v4->sin_addr.s_addr) >> 24) != 127) {
            fprintf(stderr, "loadgen: refusing non-loopback address %s\n", argv[1]);
            return 100;
        }
        v4->sin_family = AF_INET;
        v4->sin_port = htons((unsigned short)port);
        target_len = sizeof *v4;
    } else if (inet_pton(AF_INET6, argv[1], &v6->sin6_addr) == 1) {
        if (!IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr)) {
            fprintf(stderr, "loadgen: refusing non-loopback address %s\n", argv[1]);
            return 100;
        }
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((unsigned short)port);
        target_len = sizeof *v6;
    } else {
        fprintf(stderr, "loadgen: not an IP address: %s\n", argv[1]);
        return 100;
    }

    pthread_t *threads = calloc((size_t)k, sizeof *threads);
    double start = now();
    deadline = start + seconds;
    for (int i = 0; i < k; i++) {
        if (pthread_create(&threads[i], NULL, worker, NULL) != 0) {
            fprintf(stderr, "loadgen: pthread_create failed\n");
            return 111;
        }
    }
    for (int i = 0; i < k; i++) pthread_join(threads[i], NULL);
    double elapsed = now() - start;
    printf("served %ld failed %ld seconds %.3f connect_errors %ld read_errors %ld wrong_bytes %ld\n",
           atomic_load(&served), atomic_load(&failed), elapsed, atomic_load(&fail_connect),
           atomic_load(&fail_read), atomic_load(&fail_bytes));
    return 0;
}

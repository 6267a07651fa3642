/* bench/spawn.c: the cost of starting a program, for the start-up comparison of the
 * multi-call binary against the separate executables (bench/startup).
 *
 *   spawn N PROGRAM [ARGS...]
 *
 * Runs PROGRAM N times (posix_spawn, standard output and error to /dev/null, waited for
 * each time) and prints "runs N microseconds-per-run U failures F" (F: runs that did not
 * exit 0).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: spawn N PROGRAM [ARGS...]\n");
        return 100;
    }
    long n = atol(argv[1]);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
    struct timespec a, b;
    long failures = 0;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++) {
        pid_t pid;
        if (posix_spawn(&pid, argv[2], &actions, NULL, argv + 2, environ) != 0) {
            perror("spawn: posix_spawn");
            return 111;
        }
        int status;
        waitpid(pid, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) failures++;
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double us = ((b.tv_sec - a.tv_sec) * 1e6 + (b.tv_nsec - a.tv_nsec) / 1e3) / n;
    printf("runs %ld microseconds-per-run %.1f failures %ld\n", n, us, failures);
    return 0;
}

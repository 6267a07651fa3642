#ifndef CBASTION_H
#define CBASTION_H

#include <stddef.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/types.h>

/// The process environment (environ), which Swift cannot name portably.
char **bastion_environ(void);

/// openlog(3) with a copied ident that stays valid.
void bastion_openlog(const char *ident, int option, int facility);

/// syslog(3) of one preformatted message (syslog itself is variadic).
void bastion_syslog(int priority, const char *message);

/// The value of errno's EPROTO etc. are plain macros Swift sees; WIFEXITED and friends are not.
int bastion_wifexited(int status);
int bastion_wexitstatus(int status);
int bastion_wifsignaled(int status);
int bastion_wtermsig(int status);

/// accept4(2), which glibc declares only under _GNU_SOURCE.
int bastion_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags);

/// dup3(2) (dup2 with O_CLOEXEC in the same step), which glibc declares only under _GNU_SOURCE.
int bastion_dup3(int oldfd, int newfd, int flags);

// MARK: - Relay: epoll, eventfd, splice and pipes

#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

/// splice(2) without offsets (socket -> pipe or pipe -> socket); glibc declares it only
/// under _GNU_SOURCE. Returns the bytes moved, 0 at end of input, -1 with errno.
ssize_t bastion_splice(int fd_in, int fd_out, size_t length, unsigned int flags);

/// splice(2) flags (SPLICE_F_*), which Swift cannot see without _GNU_SOURCE.
#define BASTION_SPLICE_F_MOVE 1u
#define BASTION_SPLICE_F_NONBLOCK 2u
#define BASTION_SPLICE_F_MORE 4u

/// pipe2(2) with O_NONBLOCK and O_CLOEXEC: fds[0] is the read end, fds[1] the write end.
int bastion_pipe_nonblocking(int fds[2]);

/// fcntl(F_SETPIPE_SZ): asks for a pipe capacity of `size` bytes; returns the capacity the
/// kernel chose (a power of two pages, at least `size`) or -1 with errno.
int bastion_set_pipe_size(int fd, int size);

/// fcntl(F_GETPIPE_SZ): the capacity of a pipe in bytes, or -1 with errno.
int bastion_get_pipe_size(int fd);

/// pidfd_open(2): a descriptor that becomes readable when the process `pid` exits, so an
/// event loop can wait for a child without SIGCHLD. -1 with errno on failure.
int bastion_pidfd_open(pid_t pid);

/// prctl(PR_SET_PDEATHSIG, sig): the calling process gets `sig` when its parent dies. Cleared by
/// a change of credentials, so set it after dropping privileges.
int bastion_set_parent_death_signal(int sig);

// MARK: - Counters shared by processes

/// A zeroed counter in a page mapped MAP_SHARED | MAP_ANONYMOUS: processes forked after it
/// was made all use the same one. NULL (with errno) when mmap fails.
uint64_t *bastion_shared_counter(void);

/// Adds 1 to `*counter` atomically, also across processes, and returns the new value.
uint64_t bastion_counter_next(uint64_t *counter);

// MARK: - Passwords

/// Whether `password` hashes to `hash` under crypt(3) (libxcrypt: yescrypt, sha512crypt,
/// sha256crypt, bcrypt, md5crypt, DES), compared in constant time. 0 for no, 1 for yes, -1
/// when `hash` is no hash crypt(3) knows. Thread-safe (crypt_rn with its own state); slow on
/// purpose (milliseconds): call it away from an event loop.
int bastion_crypt_matches(const char *password, const char *hash);

/// Whether `hash` is a setting crypt(3) can check passwords against: 1 or 0.
int bastion_crypt_known(const char *hash);

#endif

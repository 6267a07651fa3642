#define _GNU_SOURCE
#include <sys/prctl.h>
#include "CBastion.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

char **bastion_environ(void) { return environ; }

static char *saved_ident;

void bastion_openlog(const char *ident, int option, int facility) {
    char *copy = strdup(ident ? ident : "");
    openlog(copy, option, facility);
    free(saved_ident);
    saved_ident = copy;
}

void bastion_syslog(int priority, const char *message) { syslog(priority, "%s", message); }

int bastion_wifexited(int status) { return WIFEXITED(status); }
int bastion_wexitstatus(int status) { return WEXITSTATUS(status); }
int bastion_wifsignaled(int status) { return WIFSIGNALED(status); }
int bastion_wtermsig(int status) { return WTERMSIG(status); }

int bastion_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
    return accept4(fd, addr, len, flags);
}

int bastion_dup3(int oldfd, int newfd, int flags) {
    return dup3(oldfd, newfd, flags);
}

// MARK: - Relay: splice and pipes

#include <fcntl.h>

ssize_t bastion_splice(int fd_in, int fd_out, size_t length, unsigned int flags) {
    return splice(fd_in, NULL, fd_out, NULL, length, flags);
}

int bastion_pipe_nonblocking(int fds[2]) { return pipe2(fds, O_NONBLOCK | O_CLOEXEC); }

int bastion_set_pipe_size(int fd, int size) { return fcntl(fd, F_SETPIPE_SZ, size); }

int bastion_get_pipe_size(int fd) { return fcntl(fd, F_GETPIPE_SZ); }

#include <sys/syscall.h>

int bastion_pidfd_open(pid_t pid) {
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    errno = ENOSYS;
    return -1;
#endif
}

// MARK: - Counters shared by processes

#include <sys/mman.h>

uint64_t *bastion_shared_counter(void) {
    void *page = mmap(NULL, sizeof(uint64_t), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    return page == MAP_FAILED ? NULL : (uint64_t *)page;
}

uint64_t bastion_counter_next(uint64_t *counter) { return __atomic_add_fetch(counter, 1, __ATOMIC_RELAXED); }

int bastion_set_parent_death_signal(int sig) {
    return prctl(PR_SET_PDEATHSIG, (unsigned long)sig, 0UL, 0UL, 0UL);
}

// MARK: - Passwords

#include <crypt.h>
#include <stdlib.h>
#include <string.h>

int bastion_crypt_matches(const char *password, const char *hash) {
    struct crypt_data *data = calloc(1, sizeof(struct crypt_data));
    if (data == NULL) return -1;
    const char *out = crypt_rn(password, hash, data, (int)sizeof(struct crypt_data));
    int result = -1;
    if (out != NULL && out[0] != '*') {
        size_t n = strlen(hash);
        size_t m = strlen(out);
        unsigned char differ = (unsigned char)(n != m);
        size_t length = n < m ? n : m;
        for (size_t i = 0; i < length; i++) differ |= (unsigned char)(out[i] ^ hash[i]);
        result = differ == 0;
    }
    explicit_bzero(data, sizeof(struct crypt_data));
    free(data);
    return result;
}

int bastion_crypt_known(const char *hash) {
    if (hash[0] == '\0' || hash[0] == '*' || hash[0] == '!') return 0;
    int verdict = crypt_checksalt(hash);
    // Old methods (DES, md5crypt) and cheap settings still check passwords; only what crypt
    // cannot use at all is refused.
    return verdict == CRYPT_SALT_OK || verdict == CRYPT_SALT_METHOD_LEGACY || verdict == CRYPT_SALT_TOO_CHEAP;
}

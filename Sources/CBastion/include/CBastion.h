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

#endif

/* Socket activation: listening sockets a service manager (systemd, or
 * libnbd's nbd_connect_systemd_socket_activation) opened for us and passed
 * as descriptors 3, 4, ... with LISTEN_FDS=N and LISTEN_PID=our pid, as
 * sd_listen_fds(3) describes. The protocol is a few lines; no libsystemd. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blockd.h"

/* The first descriptor passed (SD_LISTEN_FDS_START). */
#define FIRST_FD 3

/* Parses the decimal VALUE of environment variable NAME, from 0 to MAX,
 * into *OUT. Returns 0 or -1 with ERR set. */
static int parse_env_number(const char *name, const char *value, long max, long *out,
                            char *err, size_t errlen)
{
  char *end;
  long n;

  errno = 0;
  n = strtol(value, &end, 10);
  if (errno || end == value || *end || value[0] == '-' || value[0] == '+' || n > max) {
    snprintf(err, errlen, "socket activation: %s='%.32s': expected a number from 0 to %ld",
             name, value, max);
    return -1;
  }
  *out = n;
  return 0;
}

/* Reads integer socket option OPT of FD into *V. Returns 0 or -1. */
static int sockopt(int fd, int opt, int *v)
{
  socklen_t len = sizeof *v;

  return getsockopt(fd, SOL_SOCKET, opt, v, &len);
}

/* Checks that FD is a listening unix or TCP stream socket and makes it
 * close-on-exec and non-blocking (the accept loop takes clients until
 * EAGAIN). Returns 0 or -1 with ERR set. */
static int check_fd(int fd, char *err, size_t errlen)
{
  struct stat st;
  int family, type, listening, proto, fl;

  if (fcntl(fd, F_GETFD) == -1) {
    snprintf(err, errlen, "socket activation: descriptor %d is not open", fd);
    return -1;
  }
  if (fstat(fd, &st) == -1 || !S_ISSOCK(st.st_mode)) {
    snprintf(err, errlen, "socket activation: descriptor %d is not a socket", fd);
    return -1;
  }
  if (sockopt(fd, SO_DOMAIN, &family) == -1 || sockopt(fd, SO_TYPE, &type) == -1 ||
      sockopt(fd, SO_ACCEPTCONN, &listening) == -1 || sockopt(fd, SO_PROTOCOL, &proto) == -1) {
    snprintf(err, errlen, "socket activation: descriptor %d: getsockopt: %s", fd,
             strerror(errno));
    return -1;
  }
  if (family != AF_UNIX && family != AF_INET && family != AF_INET6) {
    snprintf(err, errlen, "socket activation: descriptor %d is neither a unix nor an IP socket",
             fd);
    return -1;
  }
  /* SCTP sockets are SOCK_STREAM too. */
  if (type != SOCK_STREAM || (family != AF_UNIX && proto != IPPROTO_TCP)) {
    snprintf(err, errlen, "socket activation: descriptor %d is not a stream socket "
                          "(unix or TCP)", fd);
    return -1;
  }
  if (!listening) {
    snprintf(err, errlen, "socket activation: descriptor %d is not listening", fd);
    return -1;
  }
  fl = fcntl(fd, F_GETFL);
  if (fl == -1 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) == -1 ||
      fcntl(fd, F_SETFD, FD_CLOEXEC) == -1) {
    snprintf(err, errlen, "socket activation: descriptor %d: fcntl: %s", fd, strerror(errno));
    return -1;
  }
  return 0;
}

/* Takes the sockets passed with LISTEN_FDS/LISTEN_PID into FDS (room for
 * MAX). Returns how many: 0 when none were passed to this process. */
int activation_take(int *fds, size_t max, char *err, size_t errlen)
{
  const char *pid_s = getenv("LISTEN_PID"), *fds_s = getenv("LISTEN_FDS");
  long pid, n;
  int r = 0;

  if (pid_s == NULL || fds_s == NULL)
    goto out;
  if (parse_env_number("LISTEN_PID", pid_s, 0x7fffffff, &pid, err, errlen) < 0 ||
      parse_env_number("LISTEN_FDS", fds_s, 0x7fffffff, &n, err, errlen) < 0) {
    r = -1;
    goto out;
  }
  /* Meant for another process, which passed its environment on. */
  if (pid != (long)getpid())
    goto out;
  if ((size_t)n > max) {
    snprintf(err, errlen, "socket activation: LISTEN_FDS=%ld: at most %zu sockets", n, max);
    r = -1;
    goto out;
  }
  for (int i = 0; i < (int)n; i++) {
    if (check_fd(FIRST_FD + i, err, errlen) < 0) {
      r = -1;
      goto out;
    }
    fds[i] = FIRST_FD + i;
  }
  r = (int)n;
out:
  /* Whatever they said, they were for us alone: nothing we start may
   * take our sockets for its own. */
  unsetenv("LISTEN_PID");
  unsetenv("LISTEN_FDS");
  unsetenv("LISTEN_FDNAMES");
  return r;
}

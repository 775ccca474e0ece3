/* A minimal QMP client: connect and negotiate, send commands without
 * waiting, and pick the SHUTDOWN event (with its reason) out of what QEMU
 * sends. QMP puts one JSON object on each line, which is all the parsing
 * this needs. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "launch.h"

/* A QMP connection. */
struct qmp {
  int fd;          /* connected unix socket, non-blocking after negotiation */
  char buf[8192];  /* bytes received and not yet consumed as lines */
  size_t have;     /* bytes in buf */
};

/* Writes all of S. Returns 0 or -errno. */
static int write_all(int fd, const char *s)
{
  size_t len = strlen(s);

  while (len > 0) {
    ssize_t r = write(fd, s, len);

    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0 && errno == EAGAIN) {
      struct pollfd p = { .fd = fd, .events = POLLOUT };

      poll(&p, 1, 1000);
      continue;
    }
    if (r < 0)
      return -errno;
    s += r;
    len -= r;
  }
  return 0;
}

/* Takes the next complete line out of Q's buffer into LINE. Returns true if
 * there was one. */
static bool next_line(struct qmp *q, char *line, size_t len)
{
  char *nl = memchr(q->buf, '\n', q->have);
  size_t n;

  if (nl == NULL) {
    if (q->have == sizeof q->buf)  /* a line longer than we care about */
      q->have = 0;
    return false;
  }
  n = nl - q->buf + 1;
  snprintf(line, len, "%.*s", (int)(n - 1), q->buf);
  memmove(q->buf, q->buf + n, q->have - n);
  q->have -= n;
  return true;
}

/* Reads what is available into Q's buffer, waiting up to MS for it.
 * Returns bytes read, 0 on EOF, -ETIMEDOUT, or -errno. */
static ssize_t fill(struct qmp *q, int ms)
{
  struct pollfd p = { .fd = q->fd, .events = POLLIN };
  ssize_t r;

  if (poll(&p, 1, ms) == 0)
    return -ETIMEDOUT;
  r = read(q->fd, q->buf + q->have, sizeof q->buf - q->have);
  if (r < 0)
    return errno == EAGAIN ? -ETIMEDOUT : -errno;
  q->have += r;
  return r;
}

/* Reads lines until one contains WANT, for up to MS. Returns 0 or -errno. */
static int expect(struct qmp *q, const char *want, int ms)
{
  char line[8192];

  for (int waited = 0; waited <= ms; waited += 100) {
    while (next_line(q, line, sizeof line))
      if (strstr(line, want) != NULL)
        return 0;
    ssize_t r = fill(q, 100);
    if (r == 0)
      return -ECONNRESET;
    if (r < 0 && r != -ETIMEDOUT)
      return r;
  }
  return -ETIMEDOUT;
}

/* Connects to the QMP socket at PATH, retrying for up to TIMEOUT_MS while
 * QEMU creates it, and leaves capabilities negotiation mode. Returns NULL
 * (errno set) on failure. */
struct qmp *qmp_connect(const char *path, unsigned timeout_ms)
{
  const struct timespec tick = { 0, 20 * 1000 * 1000 };
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  struct qmp *q;
  int err;

  if (strlen(path) >= sizeof sun.sun_path) {
    errno = ENAMETOOLONG;
    return NULL;
  }
  strcpy(sun.sun_path, path);
  q = calloc(1, sizeof *q);
  if (q == NULL)
    return NULL;
  q->fd = -1;
  q->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (q->fd < 0)
    goto err;
  for (unsigned waited = 0;; waited += 20) {
    if (connect(q->fd, (struct sockaddr *)&sun, sizeof sun) == 0)
      break;
    if ((errno != ENOENT && errno != ECONNREFUSED) || waited >= timeout_ms)
      goto err;
    nanosleep(&tick, NULL);
  }
  if ((err = expect(q, "\"QMP\"", 5000)) < 0 ||
      (err = write_all(q->fd, "{\"execute\": \"qmp_capabilities\"}\n")) < 0 ||
      (err = expect(q, "\"return\"", 5000)) < 0) {
    errno = -err;
    goto err;
  }
  fcntl(q->fd, F_SETFL, fcntl(q->fd, F_GETFL) | O_NONBLOCK);
  return q;

err:
  err = errno;
  qmp_close(q);
  errno = err;
  return NULL;
}

/* The socket, for poll(). */
int qmp_fd(const struct qmp *q)
{
  return q->fd;
}

/* Sends the argument-less command CMD; its reply is read (and ignored) by
 * qmp_read_events. Returns 0 or -errno. */
int qmp_command(struct qmp *q, const char *cmd)
{
  char msg[128];

  debug("qmp: %s", cmd);
  snprintf(msg, sizeof msg, "{\"execute\": \"%s\"}\n", cmd);
  return write_all(q->fd, msg);
}

/* Copies the string value of "KEY": "..." in LINE into OUT. */
static void json_string(const char *line, const char *key, char *out, size_t len)
{
  char pat[64];
  const char *p, *end;

  snprintf(pat, sizeof pat, "\"%s\": \"", key);
  p = strstr(line, pat);
  if (p == NULL) {
    snprintf(out, len, "unknown");
    return;
  }
  p += strlen(pat);
  end = strchr(p, '"');
  snprintf(out, len, "%.*s", end ? (int)(end - p) : 0, p);
}

/* Reads what QEMU sent. Returns 1 if it includes the SHUTDOWN event (its
 * reason, e.g. "guest-shutdown", copied into REASON), 0 if not (yet), -1 on
 * EOF or error: QEMU closed the connection. */
int qmp_read_events(struct qmp *q, char *reason, size_t len)
{
  char line[8192];
  int ret = 0;
  ssize_t r;

  r = fill(q, 0);
  while (next_line(q, line, sizeof line)) {
    line[strcspn(line, "\r")] = '\0';
    debug("qmp: %s", line);
    if (strstr(line, "\"event\": \"SHUTDOWN\"") != NULL) {
      json_string(line, "reason", reason, len);
      ret = 1;
    }
  }
  if (ret == 0 && (r == 0 || (r < 0 && r != -ETIMEDOUT)))
    return -1;
  return ret;
}

/* Closes the connection and frees Q (may be NULL). */
void qmp_close(struct qmp *q)
{
  if (q == NULL)
    return;
  if (q->fd >= 0)
    close(q->fd);
  free(q);
}

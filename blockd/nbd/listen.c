/* Listening sockets, and the thread that accepts clients.
 *
 * A client is greeted as soon as it is accepted, then waits in a set the
 * accept thread watches (epoll) until it says something; only then does it
 * get a negotiation thread (negotiate.c). Clients that connect and never
 * speak cost a descriptor and a few bytes each, so a flood of them is
 * accepted as fast as it comes and never fills the listen backlog (where a
 * real client's SYN would be dropped and retried seconds later). The set is
 * bounded (WAIT_MAX): a newcomer closes the oldest client that never spoke.
 * A client that spoke negotiates once a connection slot (--max-connections
 * counts clients negotiating or served) and a negotiation slot are free.
 * Waiting clients are closed after the handshake timeout. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "nbd.h"

/* Clients accepted at once per readable listening socket, before the loop
 * looks at the rest. */
#define ACCEPT_BATCH 64
/* Clients that may wait to speak, or for a slot, at once. At the rate a
 * flood arrives on this kind of machine (tens of thousands a second) that
 * gives a real client some 100 ms to answer the greeting before it is the
 * oldest and closed for a newcomer. */
#define WAIT_MAX 4096

static int socks[16];           /* listening sockets */
static size_t nr_socks;
static char *unix_path;         /* to unlink at stop */
static int stop_pipe[2] = { -1, -1 }; /* written to stop the accept thread */
static int wake_pipe[2] = { -1, -1 }; /* written when a negotiation ends */
static pthread_t accept_thread;
static bool accept_running;

/* A client greeted and waiting to speak, or waiting for a negotiation
 * slot; in acceptance order. */
struct waiting {
  int fd;                        /* its socket */
  struct timespec since;         /* when it was accepted */
  bool spoke;                    /* it sent something: it waits for a slot */
  struct waiting *prev, *next;   /* the list, oldest first */
};
static struct waiting *oldest, *newest; /* the waiting clients */
static unsigned nr_waiting;              /* clients in that list */
static unsigned wait_max;                /* most that may wait (listen_start) */
static int epfd = -1;                    /* the accept thread's epoll set */
static int tag_limits;                   /* epoll tag of limits_conn_fd() */

/* Whether the socket at SUN is a leftover nobody listens on. */
static bool is_stale(const struct sockaddr_un *sun)
{
  struct stat st;
  int fd, r;

  if (lstat(sun->sun_path, &st) == -1 || !S_ISSOCK(st.st_mode))
    return false;
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd == -1)
    return false;
  r = connect(fd, (const struct sockaddr *)sun, sizeof *sun);
  close(fd);
  return r == -1 && errno == ECONNREFUSED;
}

/* Binds the unix socket PATH, mode 0600. Returns 0 or -1. */
static int open_unix(const char *path)
{
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  int fd, r;
  mode_t old;

  if (strlen(path) >= sizeof sun.sun_path) {
    log_msg("%s: socket path too long", path);
    return -1;
  }
  strcpy(sun.sun_path, path);
  /* Non-blocking: the accept loop takes clients until EAGAIN. */
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd == -1) {
    log_msg("socket: %m");
    return -1;
  }
  /* The umask makes the socket 0600 from the start, with no window. */
  old = umask(0177);
  r = bind(fd, (struct sockaddr *)&sun, sizeof sun);
  if (r == -1 && errno == EADDRINUSE && is_stale(&sun)) {
    /* Left by a server that was killed: nobody answers on it. */
    unlink(path);
    r = bind(fd, (struct sockaddr *)&sun, sizeof sun);
  }
  umask(old);
  if (r == -1) {
    if (errno == EADDRINUSE)
      log_msg("%s: in use by a running server", path);
    else
      log_msg("%s: bind: %m", path);
    close(fd);
    return -1;
  }
  if (listen(fd, SOMAXCONN) == -1) {
    log_msg("%s: listen: %m", path);
    close(fd);
    unlink(path);
    return -1;
  }
  unix_path = strdup(path);
  socks[nr_socks++] = fd;
  return 0;
}

/* Binds HOST:PORT (every address it resolves to). Returns 0 or -1. */
static int open_tcp(const char *host, const char *port)
{
  struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                            .ai_flags = AI_PASSIVE | AI_ADDRCONFIG };
  struct addrinfo *ai, *a;
  int r = getaddrinfo(host, port, &hints, &ai);

  if (r != 0) {
    log_msg("%s:%s: %s", host, port, gai_strerror(r));
    return -1;
  }
  for (a = ai; a && nr_socks < ARRAY_SIZE(socks); a = a->ai_next) {
    int one = 1, fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                                a->ai_protocol);

    if (fd == -1)
      continue;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (a->ai_family == AF_INET6)
      setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, a->ai_addr, a->ai_addrlen) == -1 || listen(fd, SOMAXCONN) == -1) {
      log_msg("%s:%s: bind: %m", host, port);
      close(fd);
      continue;
    }
    socks[nr_socks++] = fd;
  }
  freeaddrinfo(ai);
  return nr_socks > 0 ? 0 : -1;
}

/* Binds the unix socket PATH, or every address of the NR TCP pairs.
 * Returns 0 or -1 after logging. */
int listen_open(const char *path, const struct listen_spec *tcp, size_t nr)
{
  if (path)
    return open_unix(path);
  for (size_t i = 0; i < nr; i++) {
    size_t before = nr_socks;

    if (open_tcp(tcp[i].host, tcp[i].port) < 0 || nr_socks == before)
      return -1;
  }
  return 0;
}

/* Serves on the NR listening sockets FDS, passed by socket activation
 * (already checked, non-blocking): closed at stop, never unlinked, since
 * their files belong to whoever made them. Returns 0 or -1 after logging. */
int listen_adopt(const int *fds, size_t nr)
{
  if (nr > ARRAY_SIZE(socks) - nr_socks) {
    log_msg("socket activation: at most %zu sockets", ARRAY_SIZE(socks));
    return -1;
  }
  for (size_t i = 0; i < nr; i++)
    socks[nr_socks++] = fds[i];
  return 0;
}

/* Number of listening sockets. */
size_t listen_count(void)
{
  return nr_socks;
}

/* The I-th listening socket, in the order bound or passed; -1 past the end. */
int listen_get(size_t i)
{
  return i < nr_socks ? socks[i] : -1;
}

/* Wakes the accept loop: a negotiation ended (on its thread). */
static void wake_acceptor(void)
{
  if (write(wake_pipe[1], "x", 1) < 0 && errno != EAGAIN)
    log_msg("wake pipe: %m");
}

/* Reads everything written to the nonblocking descriptor FD. */
static void drain(int fd)
{
  char buf[64];

  while (read(fd, buf, sizeof buf) > 0)
    ;
}

/* Takes W off the waiting list (its fd stays open). */
static void unlink_waiting(struct waiting *w)
{
  if (w->prev)
    w->prev->next = w->next;
  else
    oldest = w->next;
  if (w->next)
    w->next->prev = w->prev;
  else
    newest = w->prev;
  nr_waiting--;
}

/* Closes waiting client W. */
static void drop_waiting(struct waiting *w)
{
  unlink_waiting(w);
  close(w->fd); /* also leaves the epoll set */
  free(w);
}

/* Starts the clients that spoke, oldest first, while a connection slot
 * (--max-connections) and a negotiation slot are free. */
static void start_ready(void)
{
  for (struct waiting *w = oldest, *next; w != NULL; w = next) {
    int fl;

    next = w->next;
    if (!w->spoke)
      continue;
    if (!negotiate_slot_free()) {
      negotiate_evict_oldest(); /* a slot comes back through wake_pipe */
      return;
    }
    if (!limits_conn_get())
      return; /* limits_conn_fd() says when one frees */
    unlink_waiting(w);
    /* Blocking from here on: the negotiation polls with its own deadline,
     * and io_uring must not see O_NONBLOCK (it would answer EAGAIN). */
    fl = fcntl(w->fd, F_GETFL);
    if (fl != -1)
      fcntl(w->fd, F_SETFL, fl & ~O_NONBLOCK);
    negotiate_start(w->fd);
    free(w);
  }
}

/* Closes the oldest waiting client to make room: one that never spoke if
 * any, else one still waiting for a slot. */
static void evict_waiting(void)
{
  for (struct waiting *w = oldest; w != NULL; w = w->next)
    if (!w->spoke) {
      drop_waiting(w);
      return;
    }
  if (oldest != NULL)
    drop_waiting(oldest);
}

/* Accepts, greets and watches the next client on listening socket FD.
 * Returns false when nobody is left to accept now (or descriptors ran
 * out: *BACKOFF is set). */
static bool accept_one(int fd, time_t *last_complaint, bool *backoff)
{
  struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP };
  struct waiting *w;
  int c, one = 1;

  c = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
  if (c == -1) {
    if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
      /* The client stays in the backlog; retrying at once would spin. */
      if (time(NULL) - *last_complaint >= 10) {
        log_msg("accept: %m (connections wait until some close)");
        *last_complaint = time(NULL);
      }
      *backoff = true;
    }
    else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
      log_msg("accept: %m");
    return false;
  }
  if (nr_waiting >= wait_max)
    evict_waiting();
  setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  w = calloc(1, sizeof *w);
  if (w == NULL || handshake_greet(c) < 0) {
    free(w);
    close(c);
    return true;
  }
  w->fd = c;
  clock_gettime(CLOCK_MONOTONIC, &w->since);
  ev.data.ptr = w;
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, c, &ev) == -1) {
    log_msg("epoll_ctl: %m");
    free(w);
    close(c);
    return true;
  }
  w->prev = newest;
  if (newest)
    newest->next = w;
  else
    oldest = w;
  newest = w;
  nr_waiting++;
  return true;
}

/* Closes the clients that have waited longer than the handshake timeout;
 * returns the milliseconds until the next one would, or -1 if none waits. */
static int expire_waiting(void)
{
  struct timespec now;

  clock_gettime(CLOCK_MONOTONIC, &now);
  while (oldest != NULL) {
    long ms = (oldest->since.tv_sec + NBD_HANDSHAKE_TIMEOUT - now.tv_sec) * 1000 +
              (oldest->since.tv_nsec - now.tv_nsec) / 1000000;

    if (ms > 0)
      return (int)ms;
    debug("client waited %d s without a handshake: closing", NBD_HANDSHAKE_TIMEOUT);
    drop_waiting(oldest);
  }
  return -1;
}

/* Adds or removes the listening sockets from the epoll set. */
static void watch_listeners(bool on)
{
  for (size_t i = 0; i < nr_socks; i++) {
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &socks[i] };

    epoll_ctl(epfd, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, socks[i], &ev);
  }
}

/* Accepts until told to stop through stop_pipe. Clients are accepted as
 * fast as they come (the waiting set makes room by closing its oldest);
 * only after running out of descriptors does the loop pause, 100 ms. */
static void *accept_loop(void *arg)
{
  struct epoll_event evs[64];
  struct epoll_event ev = { .events = EPOLLIN };
  time_t last_complaint = 0, last_full = 0;
  bool backoff = false;

  (void)arg;
  ev.data.ptr = &stop_pipe[0];
  epoll_ctl(epfd, EPOLL_CTL_ADD, stop_pipe[0], &ev);
  ev.data.ptr = &wake_pipe[0];
  epoll_ctl(epfd, EPOLL_CTL_ADD, wake_pipe[0], &ev);
  ev.data.ptr = &tag_limits;
  epoll_ctl(epfd, EPOLL_CTL_ADD, limits_conn_fd(), &ev);
  watch_listeners(true);
  for (;;) {
    int timeout = expire_waiting(), n;

    if (backoff && (timeout < 0 || timeout > 100))
      timeout = 100;
    n = epoll_wait(epfd, evs, ARRAY_SIZE(evs), timeout);
    if (n == -1) {
      if (errno == EINTR)
        continue;
      log_msg("epoll_wait: %m");
      return NULL;
    }
    if (backoff) {
      backoff = false;
      watch_listeners(true);
    }
    for (int i = 0; i < n; i++) {
      void *p = evs[i].data.ptr;

      if (p == &stop_pipe[0])
        return NULL;
      if (p == &wake_pipe[0])
        drain(wake_pipe[0]);
      else if (p == &tag_limits)
        drain(limits_conn_fd());
      else if (p >= (void *)socks && p < (void *)(socks + nr_socks)) {
        for (int k = 0; k < ACCEPT_BATCH && !backoff; k++)
          if (!accept_one(*(int *)p, &last_complaint, &backoff))
            break;
      }
      else {
        /* A waiting client spoke: out of the set for good; its negotiation
         * reads what it said. One that only hung up is closed here: a
         * flood of connect-and-close must not cost a thread each. */
        struct waiting *w = p;
        char byte;
        ssize_t got = recv(w->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);

        if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR)) {
          drop_waiting(w);
          continue;
        }
        epoll_ctl(epfd, EPOLL_CTL_DEL, w->fd, NULL);
        w->spoke = true;
      }
    }
    start_ready();
    if (backoff)
      watch_listeners(false);
    if (oldest != NULL && oldest->spoke && !limits_conn_get_idle() &&
        time(NULL) - last_full >= 10) {
      log_msg("%u connections open (--max-connections): new clients wait", limits_conn_count());
      last_full = time(NULL);
    }
  }
}

/* Starts the thread that accepts connections and runs their handshakes. */
int listen_start(void)
{
  int e;

  struct rlimit rl;

  /* Waiting clients cost a descriptor each: at most WAIT_MAX, and never
   * more than half of what the descriptor limit leaves. */
  wait_max = WAIT_MAX;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
      rl.rlim_cur / 2 < wait_max)
    wait_max = (unsigned)(rl.rlim_cur / 2);
  if (wait_max < 16)
    wait_max = 16;
  negotiate_init(wake_acceptor);
  epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd == -1 || pipe2(stop_pipe, O_CLOEXEC) == -1 ||
      pipe2(wake_pipe, O_CLOEXEC | O_NONBLOCK) == -1) {
    log_msg("accept thread: %m");
    return -1;
  }
  e = pthread_create(&accept_thread, NULL, accept_loop, NULL);
  if (e != 0) {
    errno = e;
    log_msg("pthread_create: %m");
    return -1;
  }
  accept_running = true;
  return 0;
}

/* Stops accepting, closes the sockets, unlinks the unix socket. */
void listen_stop(void)
{
  if (accept_running) {
    if (write(stop_pipe[1], "x", 1) < 0)
      log_msg("stop pipe: %m");
    pthread_join(accept_thread, NULL);
    accept_running = false;
  }
  /* Clients still negotiating are cut off: they hand nothing to the
   * workers, which stop next. Those that never spoke just go. */
  negotiate_stop();
  while (oldest != NULL)
    drop_waiting(oldest);
  for (size_t i = 0; i < nr_socks; i++)
    close(socks[i]);
  nr_socks = 0;
  if (unix_path) {
    unlink(unix_path);
    free(unix_path);
    unix_path = NULL;
  }
  for (int i = 0; i < 2; i++) {
    if (stop_pipe[i] >= 0)
      close(stop_pipe[i]);
    if (wake_pipe[i] >= 0)
      close(wake_pipe[i]);
    stop_pipe[i] = wake_pipe[i] = -1;
  }
  if (epfd >= 0)
    close(epfd);
  epfd = -1;
}

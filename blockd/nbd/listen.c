/* Listening sockets, and the thread that accepts connections and runs each
 * handshake on a short-lived thread of its own, so that a slow or hostile
 * client never holds up a worker's event loop or other clients. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "nbd.h"

/* Handshakes under way at once; more clients wait in the listen backlog. */
#define MAX_HANDSHAKES 128
/* Stack of a handshake thread: its option buffer is on the heap. */
#define HANDSHAKE_STACK (128 * 1024)

static int socks[16];           /* listening sockets */
static size_t nr_socks;
static char *unix_path;         /* to unlink at stop */
static int stop_pipe[2] = { -1, -1 }; /* written to stop the accept thread */
static int wake_pipe[2] = { -1, -1 }; /* written when a handshake thread ends */
static pthread_t accept_thread;
static bool accept_running;
static pthread_mutex_t hs_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hs_cond = PTHREAD_COND_INITIALIZER;
static unsigned hs_running;     /* handshake threads alive */
static int hs_fds[MAX_HANDSHAKES]; /* their sockets, -1 for a free slot */
static uint64_t hs_seq[MAX_HANDSHAKES]; /* order of acceptance, to find the oldest */
static bool hs_evicted[MAX_HANDSHAKES]; /* shut down to make room */
static unsigned hs_evicting;    /* evicted threads that have not ended yet */
static uint64_t hs_next_seq;    /* next value of hs_seq */
static bool hs_stopping;        /* listen_stop called: hand nothing over */

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
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
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
    int one = 1, fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);

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

/* A negotiated connection on its way to a worker. */
struct handover {
  struct task task;      /* runs on the worker */
  struct worker *w;      /* the worker */
  int fd;                /* the socket */
  struct conn_params p;  /* what was negotiated */
};

/* On the worker: makes the connection its own. */
static void adopt(struct task *t)
{
  struct handover *h = container_of(t, struct handover, task);

  nbd_conn_new(h->w, h->fd, &h->p);
  free(h);
}

/* Hands socket FD, negotiated as P, to the least loaded worker, with its
 * connection slot. */
static void hand_over(int fd, const struct conn_params *p)
{
  struct handover *h = malloc(sizeof *h);

  if (h == NULL || (h->w = workers_pick()) == NULL) {
    log_msg("cannot hand over a connection: out of memory");
    free(h);
    close(fd);
    limits_conn_put();
    return;
  }
  h->task.fn = adopt;
  h->fd = fd;
  h->p = *p;
  worker_post(h->w, &h->task);
}

/* Wakes the accept loop: a handshake thread has ended. */
static void wake_acceptor(void)
{
  if (write(wake_pipe[1], "x", 1) < 0 && errno != EAGAIN)
    log_msg("wake pipe: %m");
}

/* Runs one client's handshake, then hands the connection to a worker. */
static void *handshake_thread(void *arg)
{
  int slot = (int)(intptr_t)arg, fd = hs_fds[slot];
  struct conn_params p;
  bool go, evicted;

  go = handshake(fd, NBD_HANDSHAKE_TIMEOUT, &p) == 1;
  pthread_mutex_lock(&hs_lock);
  go = go && !hs_stopping;
  hs_fds[slot] = -1;
  evicted = hs_evicted[slot];
  pthread_mutex_unlock(&hs_lock);
  if (go) {
    debug("client entered transmission on export '%s'%s%s", p.exp->name,
          p.structured ? ", structured replies" : "", p.meta ? ", base:allocation" : "");
    hand_over(fd, &p); /* the connection slot goes with it */
  }
  else {
    close(fd);
    limits_conn_put();
  }
  pthread_mutex_lock(&hs_lock);
  if (evicted)
    hs_evicting--;
  if (--hs_running == 0)
    pthread_cond_broadcast(&hs_cond);
  wake_acceptor();
  pthread_mutex_unlock(&hs_lock);
  return NULL;
}

/* Starts a handshake thread for accepted socket FD, which holds a
 * connection slot. The caller has seen a free handshake slot; there is only
 * one accepting thread, so it is still free. */
static void start_handshake(int fd)
{
  pthread_attr_t attr;
  pthread_t t;
  int e, slot;

  pthread_mutex_lock(&hs_lock);
  for (slot = 0; slot < MAX_HANDSHAKES && hs_fds[slot] != -1; slot++)
    ;
  if (hs_stopping || slot == MAX_HANDSHAKES) {
    pthread_mutex_unlock(&hs_lock);
    close(fd);
    limits_conn_put();
    return;
  }
  hs_running++;
  hs_fds[slot] = fd;
  hs_seq[slot] = hs_next_seq++;
  hs_evicted[slot] = false;
  pthread_mutex_unlock(&hs_lock);
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, HANDSHAKE_STACK);
  e = pthread_create(&t, &attr, handshake_thread, (void *)(intptr_t)slot);
  pthread_attr_destroy(&attr);
  if (e != 0) {
    errno = e;
    log_msg("pthread_create: %m");
    close(fd);
    limits_conn_put();
    pthread_mutex_lock(&hs_lock);
    hs_fds[slot] = -1;
    if (--hs_running == 0)
      pthread_cond_broadcast(&hs_cond);
    pthread_mutex_unlock(&hs_lock);
  }
}

/* Whether a handshake slot is free. */
static bool handshake_slot_free(void)
{
  bool free_slot;

  pthread_mutex_lock(&hs_lock);
  free_slot = hs_running < MAX_HANDSHAKES;
  pthread_mutex_unlock(&hs_lock);
  return free_slot;
}

/* With every handshake slot taken and a client waiting, shuts the oldest
 * unfinished handshake down, unless one is already on its way out: its
 * thread wakes at once, ends, and wakes the accept loop through wake_pipe.
 * Clients that connect and say nothing must not lock real ones out for the
 * whole handshake timeout; a real client negotiates in milliseconds, so the
 * oldest is the idlest. */
static void evict_oldest(void)
{
  int oldest = -1;

  pthread_mutex_lock(&hs_lock);
  if (hs_evicting == 0) {
    for (int i = 0; i < MAX_HANDSHAKES; i++)
      if (hs_fds[i] != -1 && !hs_evicted[i] && (oldest == -1 || hs_seq[i] < hs_seq[oldest]))
        oldest = i;
    if (oldest != -1) {
      shutdown(hs_fds[oldest], SHUT_RDWR);
      hs_evicted[oldest] = true;
      hs_evicting++;
    }
  }
  pthread_mutex_unlock(&hs_lock);
}

/* Reads everything written to the nonblocking descriptor FD. */
static void drain(int fd)
{
  char buf[64];

  while (read(fd, buf, sizeof buf) > 0)
    ;
}

/* Accepts until told to stop through stop_pipe. The listening sockets are
 * watched only while a connection slot is free (--max-connections) and a
 * handshake slot is free or being freed; otherwise clients wait in the
 * backlog and the loop sleeps until a handshake thread ends (wake_pipe) or a
 * connection closes (limits_conn_fd). After running out of file descriptors
 * it waits 100 ms. */
static void *accept_loop(void *arg)
{
  struct pollfd pfd[ARRAY_SIZE(socks) + 3];
  time_t last_complaint = 0, last_full = 0;
  bool backoff = false, at_cap = false, slot_wait = false;

  (void)arg;
  pfd[0] = (struct pollfd){ .fd = stop_pipe[0], .events = POLLIN };
  pfd[1] = (struct pollfd){ .fd = wake_pipe[0], .events = POLLIN };
  pfd[2] = (struct pollfd){ .fd = limits_conn_fd(), .events = POLLIN };
  for (size_t i = 0; i < nr_socks; i++)
    pfd[i + 3] = (struct pollfd){ .fd = socks[i], .events = POLLIN };
  for (;;) {
    bool listening = !backoff && !at_cap && !slot_wait;
    int r;

    for (size_t i = 0; i < ARRAY_SIZE(pfd); i++)
      pfd[i].revents = 0;
    r = poll(pfd, listening ? 3 + nr_socks : 3, backoff ? 100 : -1);
    backoff = false;
    if (r == -1) {
      if (errno == EINTR)
        continue;
      log_msg("poll: %m");
      return NULL;
    }
    if (pfd[0].revents)
      return NULL;
    if (pfd[1].revents) {
      drain(wake_pipe[0]);
      slot_wait = false;
    }
    if (pfd[2].revents) {
      drain(limits_conn_fd());
      at_cap = false;
    }
    for (size_t i = 3; i < 3 + nr_socks && listening; i++) {
      int fd, one = 1;

      if (!(pfd[i].revents & POLLIN))
        continue;
      /* One handshake per free slot, checked before every accept: never
       * more handshakes than slots, however many sockets are readable. */
      if (!handshake_slot_free()) {
        /* Some handshake thread ends soon (evicted, or finishing) and
         * writes wake_pipe: until then the sockets are not watched. */
        evict_oldest();
        slot_wait = true;
        break;
      }
      if (!limits_conn_get()) {
        if (time(NULL) - last_full >= 10) {
          log_msg("%u connections open (--max-connections): new clients wait", limits_conn_count());
          last_full = time(NULL);
        }
        at_cap = true;
        break;
      }
      fd = accept4(pfd[i].fd, NULL, NULL, SOCK_CLOEXEC);
      if (fd == -1) {
        limits_conn_put();
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
          /* The client stays in the backlog; retrying at once would spin. */
          if (time(NULL) - last_complaint >= 10) {
            log_msg("accept: %m (connections wait until some close)");
            last_complaint = time(NULL);
          }
          backoff = true;
          break;
        }
        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
          log_msg("accept: %m");
        continue;
      }
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      start_handshake(fd);
    }
  }
}

/* Starts the thread that accepts connections and runs their handshakes. */
int listen_start(void)
{
  int e;

  for (size_t i = 0; i < MAX_HANDSHAKES; i++)
    hs_fds[i] = -1;
  if (pipe2(stop_pipe, O_CLOEXEC) == -1 || pipe2(wake_pipe, O_CLOEXEC | O_NONBLOCK) == -1) {
    log_msg("pipe: %m");
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
  /* Clients still negotiating are cut off first: their threads end at once
   * and hand nothing to the workers, which stop next; and the accept thread
   * starts no more of them. */
  pthread_mutex_lock(&hs_lock);
  hs_stopping = true;
  for (size_t i = 0; accept_running && i < MAX_HANDSHAKES; i++)
    if (hs_fds[i] != -1)
      shutdown(hs_fds[i], SHUT_RDWR);
  pthread_mutex_unlock(&hs_lock);
  if (accept_running) {
    if (write(stop_pipe[1], "x", 1) < 0)
      log_msg("stop pipe: %m");
    pthread_join(accept_thread, NULL);
    accept_running = false;
  }
  for (size_t i = 0; i < nr_socks; i++)
    close(socks[i]);
  nr_socks = 0;
  if (unix_path) {
    unlink(unix_path);
    free(unix_path);
    unix_path = NULL;
  }
  pthread_mutex_lock(&hs_lock);
  while (hs_running > 0)
    pthread_cond_wait(&hs_cond, &hs_lock);
  pthread_mutex_unlock(&hs_lock);
  for (int i = 0; i < 2; i++) {
    if (stop_pipe[i] >= 0)
      close(stop_pipe[i]);
    if (wake_pipe[i] >= 0)
      close(wake_pipe[i]);
    stop_pipe[i] = wake_pipe[i] = -1;
  }
}

/* The connection a private worker serves, until it adopts it. */
struct private_conn {
  int fd;                /* the socket */
  struct conn_params p;  /* what was negotiated */
};

/* Adds the connection to the private worker W. */
static void adopt_private(struct worker *w, void *arg)
{
  struct private_conn *pc = arg;

  __atomic_add_fetch(&w->nr_clients, 1, __ATOMIC_RELAXED);
  nbd_conn_new(w, pc->fd, &pc->p);
}

/* Serves one connection on the calling thread until it closes: handshake,
 * then transmission on a private worker (the fuzzer). Returns 0 or -1. */
int nbd_serve_one(int fd)
{
  static const struct worker_limits limits = {
    .max_memory = 2 * (uint64_t)BUDGET_MAX_SHARE,
    .stall_timeout = NBD_STALL_TIMEOUT,
  };
  struct private_conn pc = { .fd = fd };
  int r = handshake(fd, 0, &pc.p);

  if (r <= 0) {
    close(fd);
    return r;
  }
  limits_conn_get(); /* the connection gives it back when it closes */
  if (worker_run_private(&limits, adopt_private, &pc) < 0) {
    close(fd);
    limits_conn_put();
    return -1;
  }
  return 0;
}

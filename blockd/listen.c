/* Listening sockets, and the thread that accepts connections and runs each
 * handshake on a short-lived thread of its own, so that a slow or hostile
 * client never holds up a worker's event loop or other clients. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "internal.h"

/* Handshakes under way at once; more clients wait in the listen backlog. */
#define MAX_HANDSHAKES 64

static int socks[8];            /* listening sockets */
static size_t nr_socks;
static char *unix_path;         /* to unlink at stop */
static int stop_pipe[2] = { -1, -1 }; /* written to stop the accept thread */
static pthread_t accept_thread;
static bool accept_running;
static sem_t handshake_slots;   /* MAX_HANDSHAKES tokens */
static pthread_mutex_t hs_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hs_cond = PTHREAD_COND_INITIALIZER;
static unsigned hs_running;     /* handshake threads alive */
static int hs_fds[MAX_HANDSHAKES]; /* their sockets, -1 for a free slot */
static bool hs_stopping;        /* listen_stop called: hand nothing over */

/* Binds the unix socket PATH, mode 0600. Returns 0 or -1. */
static int open_unix(const char *path)
{
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  int fd;
  mode_t old;

  if (strlen(path) >= sizeof sun.sun_path) {
    nbd_log("%s: socket path too long", path);
    return -1;
  }
  strcpy(sun.sun_path, path);
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd == -1) {
    nbd_log("socket: %m");
    return -1;
  }
  /* The umask makes the socket 0600 from the start, with no window. */
  old = umask(0177);
  if (bind(fd, (struct sockaddr *)&sun, sizeof sun) == -1) {
    umask(old);
    nbd_log("%s: bind: %m", path);
    close(fd);
    return -1;
  }
  umask(old);
  if (listen(fd, SOMAXCONN) == -1) {
    nbd_log("%s: listen: %m", path);
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
    nbd_log("%s:%s: %s", host, port, gai_strerror(r));
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
      nbd_log("%s:%s: bind: %m", host, port);
      close(fd);
      continue;
    }
    socks[nr_socks++] = fd;
  }
  freeaddrinfo(ai);
  return nr_socks > 0 ? 0 : -1;
}

int listen_open(const struct options *o)
{
  if (o->unix_path)
    return open_unix(o->unix_path);
  return open_tcp(o->listen_host, o->listen_port);
}

/* Runs one client's handshake, then hands the connection to a worker. */
static void *handshake_thread(void *arg)
{
  int slot = (int)(intptr_t)arg, fd = hs_fds[slot];
  struct timeval tv = { .tv_sec = BLOCKD_HANDSHAKE_TIMEOUT };
  struct conn_params p;
  bool go;

  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  go = handshake(fd, &p) == 1;
  pthread_mutex_lock(&hs_lock);
  go = go && !hs_stopping;
  hs_fds[slot] = -1;
  pthread_mutex_unlock(&hs_lock);
  if (go) {
    struct timeval none = { 0 };

    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof none);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &none, sizeof none);
    debug("client entered transmission on export '%s'%s%s", p.exp->name,
          p.structured ? ", structured replies" : "", p.meta ? ", base:allocation" : "");
    workers_add_conn(fd, &p);
  }
  else
    close(fd);
  sem_post(&handshake_slots);
  pthread_mutex_lock(&hs_lock);
  if (--hs_running == 0)
    pthread_cond_broadcast(&hs_cond);
  pthread_mutex_unlock(&hs_lock);
  return NULL;
}

/* Accepts until told to stop through stop_pipe. */
static void *accept_loop(void *arg)
{
  struct pollfd pfd[ARRAY_SIZE(socks) + 1];

  (void)arg;
  for (size_t i = 0; i < nr_socks; i++)
    pfd[i] = (struct pollfd){ .fd = socks[i], .events = POLLIN };
  pfd[nr_socks] = (struct pollfd){ .fd = stop_pipe[0], .events = POLLIN };
  for (;;) {
    if (poll(pfd, nr_socks + 1, -1) == -1) {
      if (errno == EINTR)
        continue;
      nbd_log("poll: %m");
      return NULL;
    }
    if (pfd[nr_socks].revents)
      return NULL;
    for (size_t i = 0; i < nr_socks; i++) {
      pthread_attr_t attr;
      pthread_t t;
      int fd, one = 1, e, slot;

      if (!(pfd[i].revents & POLLIN))
        continue;
      fd = accept4(socks[i], NULL, NULL, SOCK_CLOEXEC);
      if (fd == -1) {
        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
          nbd_log("accept: %m");
        continue;
      }
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      while (sem_wait(&handshake_slots) == -1 && errno == EINTR)
        ;
      pthread_mutex_lock(&hs_lock);
      hs_running++;
      for (slot = 0; hs_fds[slot] != -1; slot++)
        ;
      hs_fds[slot] = fd;
      pthread_mutex_unlock(&hs_lock);
      pthread_attr_init(&attr);
      pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
      pthread_attr_setstacksize(&attr, 256 * 1024);
      e = pthread_create(&t, &attr, handshake_thread, (void *)(intptr_t)slot);
      pthread_attr_destroy(&attr);
      if (e != 0) {
        errno = e;
        nbd_log("pthread_create: %m");
        close(fd);
        sem_post(&handshake_slots);
        pthread_mutex_lock(&hs_lock);
        hs_fds[slot] = -1;
        hs_running--;
        pthread_mutex_unlock(&hs_lock);
      }
    }
  }
}

int listen_start(void)
{
  int e;

  sem_init(&handshake_slots, 0, MAX_HANDSHAKES);
  for (size_t i = 0; i < MAX_HANDSHAKES; i++)
    hs_fds[i] = -1;
  if (pipe2(stop_pipe, O_CLOEXEC) == -1) {
    nbd_log("pipe: %m");
    return -1;
  }
  e = pthread_create(&accept_thread, NULL, accept_loop, NULL);
  if (e != 0) {
    errno = e;
    nbd_log("pthread_create: %m");
    return -1;
  }
  accept_running = true;
  return 0;
}

void listen_stop(void)
{
  bool started = accept_running;

  if (accept_running) {
    if (write(stop_pipe[1], "x", 1) < 0)
      nbd_log("stop pipe: %m");
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
  /* Clients still negotiating are cut off: their threads end at once and
   * hand nothing to the workers, which stop next. */
  pthread_mutex_lock(&hs_lock);
  hs_stopping = true;
  for (size_t i = 0; started && i < MAX_HANDSHAKES; i++)
    if (hs_fds[i] != -1)
      shutdown(hs_fds[i], SHUT_RDWR);
  while (hs_running > 0)
    pthread_cond_wait(&hs_cond, &hs_lock);
  pthread_mutex_unlock(&hs_lock);
  for (int i = 0; i < 2; i++)
    if (stop_pipe[i] >= 0) {
      close(stop_pipe[i]);
      stop_pipe[i] = -1;
    }
}

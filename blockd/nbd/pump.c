/* The TLS pump: a thread per TLS connection that moves bytes between the
 * client's TLS session and one end of a socketpair, whose other end a worker
 * serves exactly as it serves a plaintext client's socket.
 *
 * Why a thread and a socketpair: without kernel TLS (TCP_ULP "tls" is
 * missing from the kernels blockd runs on) records are sealed and opened in
 * user space. Doing that on a worker would put GnuTLS's record framing and
 * buffering inside conn.c's io_uring receive and send paths, and make each
 * worker's loop pay for every connection's crypto, so one slow TLS client
 * could hold up the others. The pump leaves the worker's path as it is:
 * request limits, the memory budget and the stall and idle timeouts apply to
 * the socketpair as they do to a socket, and SIGTERM drains it the same way.
 *
 * A pump holds the client's connection slot with the worker's connection
 * (two references): the slot is given back when both have ended, so TLS
 * threads never outnumber --max-connections. The pump holds at most
 * PUMP_BUF bytes in each direction, so a worker that stops reading (its
 * budget spent) holds the client back, and output the client leaves unread
 * for the stall timeout ends the connection, as the worker would. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "nbd.h"

/* Bytes moved at a time each way: four TLS records' plaintext. */
#define PUMP_BUF (4 * 16384)
/* Stack of a pump thread: GnuTLS (through GMP) keeps big temporaries there. */
#define PUMP_STACK (512 * 1024)
/* Seconds pump_stop lets pumps hand clients their last replies. */
#define PUMP_DRAIN_TIMEOUT 5

/* One TLS connection's pump. */
struct pump {
  struct tls_session *tls;      /* the client's session */
  int fd;                       /* the client's socket (non-blocking) */
  int inner;                    /* our end of the socketpair (non-blocking) */
  unsigned refs;                /* the thread and the worker's connection (atomic) */
  char in[PUMP_BUF];            /* from the client, not yet taken by the worker */
  size_t in_off, in_len;        /* where those bytes are in it */
  char out[PUMP_BUF];           /* from the worker, not yet sent to the client */
  size_t out_off, out_len;      /* where those bytes are in it */
  bool client_done;             /* nothing more comes from the client */
  bool inner_shut;              /* the worker was told so (SHUT_WR) */
  bool worker_done;             /* nothing more comes from the worker */
  struct timespec out_moved;    /* when output last moved, or began to wait */
  struct pump *prev, *next;     /* the running pumps */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ended = PTHREAD_COND_INITIALIZER;
static struct pump *pumps;      /* threads running */
static unsigned nr_pumps;       /* how many */
static bool stopping;           /* pump_stop was called: start no more */
static unsigned stall_timeout = NBD_STALL_TIMEOUT; /* --stall-timeout */

/* Sets the seconds a client may leave output unread. */
void pump_init(unsigned stall)
{
  stall_timeout = stall;
}

/* Drops one of P's two references; the last gives the slot back. */
static void pump_release(void *arg)
{
  struct pump *p = arg;

  if (__atomic_sub_fetch(&p->refs, 1, __ATOMIC_ACQ_REL) == 0) {
    limits_conn_put();
    free(p);
  }
}

/* Milliseconds from A to B. */
static long ms_between(const struct timespec *a, const struct timespec *b)
{
  return (b->tv_sec - a->tv_sec) * 1000 + (b->tv_nsec - a->tv_nsec) / 1000000;
}

/* Client to worker: takes records (up to PUMP_BUF bytes) once the last
 * ones are handed over, then hands them to the worker. Sets *EV (what each
 * socket must wait for).
 * Returns 1 if something moved, 0 if not, -1 when the session failed. */
static int pump_in(struct pump *p, struct pollfd *ev)
{
  int moved = 0;
  ssize_t n;

  if (p->in_len == 0)
    p->in_off = 0;
  /* Records until the buffer is full or the client has no more for now:
   * the worker wakes once for all of them. */
  while (!p->client_done && p->in_off == 0 && p->in_len < sizeof p->in) {
    n = tls_recv(p->tls, p->in + p->in_len, sizeof p->in - p->in_len);
    if (n == -EAGAIN) {
      if (p->in_len == 0)
        ev[0].events |= tls_wants(p->tls);
      break;
    }
    if (n < 0)
      return -1;
    moved = 1;
    if (n == 0) {
      p->client_done = true;
      break;
    }
    p->in_len += (size_t)n;
  }
  if (p->in_len > 0) {
    n = send(p->inner, p->in + p->in_off, p->in_len, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      p->in_off += (size_t)n;
      p->in_len -= (size_t)n;
      moved = 1;
    }
    else if (errno == EAGAIN)
      ev[1].events |= POLLOUT;
    else if (errno == EINTR)
      moved = 1;
    else {
      /* The worker dropped the connection: what the client sends is moot. */
      p->in_len = 0;
      p->client_done = true;
      moved = 1;
    }
  }
  if (p->client_done && p->in_len == 0 && !p->inner_shut) {
    /* The worker sees EOF once it has all the client sent, as it would on
     * the client's own socket. */
    shutdown(p->inner, SHUT_WR);
    p->inner_shut = true;
  }
  return moved;
}

/* Worker to client: takes what the worker sent when the last bytes are
 * gone, then seals and sends them. Sets *EV. Returns 1 if something moved,
 * 0 if not, -1 when the session failed. */
static int pump_out(struct pump *p, struct pollfd *ev, const struct timespec *now)
{
  int moved = 0;
  ssize_t n;

  if (p->out_len == 0 && !p->worker_done) {
    n = recv(p->inner, p->out, sizeof p->out, MSG_DONTWAIT);
    if (n > 0) {
      p->out_off = 0;
      p->out_len = (size_t)n;
      p->out_moved = *now;
      moved = 1;
    }
    else if (n == -1 && errno == EAGAIN)
      ev[1].events |= POLLIN;
    else if (n == -1 && errno == EINTR)
      moved = 1;
    else {
      p->worker_done = true;
      moved = 1;
    }
  }
  if (p->out_len > 0) {
    /* After -EAGAIN this repeats the call with the same arguments, as
     * GnuTLS requires: out is refilled only once it is empty. */
    n = tls_send(p->tls, p->out + p->out_off, p->out_len);
    if (n == -EAGAIN)
      ev[0].events |= tls_wants(p->tls);
    else if (n < 0)
      return -1;
    else {
      p->out_off += (size_t)n;
      p->out_len -= (size_t)n;
      p->out_moved = *now;
      moved = 1;
    }
  }
  return moved;
}

/* Moves bytes both ways until the worker has closed its end and everything
 * it sent is with the client, or the session fails, or the client leaves
 * output unread for the stall timeout. */
static void pump_run(struct pump *p)
{
  for (;;) {
    struct pollfd ev[2] = { { .fd = p->fd }, { .fd = p->inner } };
    struct timespec now;
    int in, out, timeout = -1;

    clock_gettime(CLOCK_MONOTONIC, &now);
    in = pump_in(p, ev);
    out = in < 0 ? 0 : pump_out(p, ev, &now);
    if (in < 0 || out < 0) {
      if (tls_peer_gone(p->tls))
        debug("TLS client went away");
      else
        log_msg("TLS: %s: dropping the client", tls_error(p->tls));
      return;
    }
    if (p->worker_done && p->out_len == 0) {
      tls_bye(p->tls);
      return;
    }
    if (in > 0 || out > 0)
      continue;
    if (p->out_len > 0) {
      long left = (long)stall_timeout * 1000 - ms_between(&p->out_moved, &now);

      if (left <= 0) {
        log_msg("TLS client has not read its replies for %u s: dropping it", stall_timeout);
        return;
      }
      timeout = (int)left;
    }
    /* A socket with nothing to wait for is left out: a closed peer would
     * make poll return at once, again and again. */
    for (int i = 0; i < 2; i++)
      if (ev[i].events == 0)
        ev[i].fd = -1;
    if (poll(ev, 2, timeout) == -1 && errno != EINTR) {
      log_msg("TLS pump: poll: %m");
      return;
    }
  }
}

/* Body of a pump thread. */
static void *pump_thread(void *arg)
{
  struct pump *p = arg;

  pump_run(p);
  pthread_mutex_lock(&lock);
  if (p->prev)
    p->prev->next = p->next;
  else
    pumps = p->next;
  if (p->next)
    p->next->prev = p->prev;
  pthread_mutex_unlock(&lock);
  /* Out of the list, so pump_stop no longer touches the descriptors. The
   * worker sees EOF, and its sends fail, if it has not closed yet. */
  shutdown(p->inner, SHUT_RDWR);
  close(p->inner);
  close(p->fd);
  tls_session_free(p->tls);
  pump_release(p);
  pthread_mutex_lock(&lock);
  if (--nr_pumps == 0)
    pthread_cond_broadcast(&ended);
  pthread_mutex_unlock(&lock);
  return NULL;
}

/* Starts the pump of client socket FD, whose TLS session is TLS (it owns
 * it from now on), and sets P->release so the worker's connection shares
 * the slot with it. Returns
 * the socket to hand the worker, or -1 after logging (FD closed, TLS freed,
 * the slot given back). */
int pump_start(int fd, struct tls_session *tls, struct conn_params *p)
{
  pthread_attr_t attr;
  struct pump *pp = calloc(1, sizeof *pp);
  int sv[2] = { -1, -1 }, fl, e;
  pthread_t t;

  if (pp == NULL || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1 ||
      (fl = fcntl(sv[0], F_GETFL)) == -1 || fcntl(sv[0], F_SETFL, fl | O_NONBLOCK) == -1) {
    log_msg("TLS pump: %m");
    goto err;
  }
  /* The worker's end stays blocking: io_uring must not see O_NONBLOCK. */
  pp->tls = tls;
  pp->fd = fd;
  pp->inner = sv[0];
  pp->refs = 2;
  pthread_mutex_lock(&lock);
  if (stopping) {
    pthread_mutex_unlock(&lock);
    goto err;
  }
  pp->next = pumps;
  if (pumps)
    pumps->prev = pp;
  pumps = pp;
  nr_pumps++;
  pthread_mutex_unlock(&lock);
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, PUMP_STACK);
  e = pthread_create(&t, &attr, pump_thread, pp);
  pthread_attr_destroy(&attr);
  if (e != 0) {
    errno = e;
    log_msg("TLS pump: pthread_create: %m");
    pthread_mutex_lock(&lock);
    if (pp->prev)
      pp->prev->next = pp->next;
    else
      pumps = pp->next;
    if (pp->next)
      pp->next->prev = pp->prev;
    if (--nr_pumps == 0)
      pthread_cond_broadcast(&ended);
    pthread_mutex_unlock(&lock);
    goto err;
  }
  p->tls = NULL;
  p->pumped = true;
  p->release = pump_release;
  p->release_arg = pp;
  return sv[1];

err:
  for (int i = 0; i < 2; i++)
    if (sv[i] >= 0)
      close(sv[i]);
  close(fd);
  tls_session_free(tls);
  p->tls = NULL;
  free(pp);
  limits_conn_put();
  return -1;
}

/* Waits until every pump has handed its client the last replies (the
 * workers have stopped, so each is only flushing), at most
 * PUMP_DRAIN_TIMEOUT seconds; then cuts the others off and waits for them. */
void pump_stop(void)
{
  struct timespec deadline;

  clock_gettime(CLOCK_REALTIME, &deadline);
  deadline.tv_sec += PUMP_DRAIN_TIMEOUT;
  pthread_mutex_lock(&lock);
  stopping = true;
  while (nr_pumps > 0 && pthread_cond_timedwait(&ended, &lock, &deadline) != ETIMEDOUT)
    ;
  if (nr_pumps > 0) {
    log_msg("%u TLS client(s) still have replies waiting: dropping them", nr_pumps);
    for (struct pump *p = pumps; p != NULL; p = p->next) {
      shutdown(p->fd, SHUT_RDWR);
      shutdown(p->inner, SHUT_RDWR);
    }
  }
  while (nr_pumps > 0)
    pthread_cond_wait(&ended, &lock);
  pthread_mutex_unlock(&lock);
}

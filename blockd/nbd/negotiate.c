/* negotiate: runs each client's handshake on a short-lived thread of its
 * own, so that a slow or hostile client never holds up a worker's event
 * loop or other clients, then hands the connection to the least loaded
 * worker. A client gets a thread only once it has spoken (listen.c keeps the
 * silent ones), and at most NEGOTIATE_SLOTS run at once. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "nbd.h"

/* Stack of a negotiation thread: its option buffer is on the heap. */
#define THREAD_STACK (128 * 1024)
/* ... and of one that may run a TLS handshake: GnuTLS (through GMP) keeps
 * big temporaries on the stack. Address space only, until touched. */
#define THREAD_STACK_TLS (512 * 1024)

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t idle_cond = PTHREAD_COND_INITIALIZER;
static unsigned running;                /* threads alive */
static int fds[NEGOTIATE_SLOTS];        /* their sockets, -1 for a free slot */
static uint64_t seqs[NEGOTIATE_SLOTS];  /* order of start, to find the oldest */
static bool evicted[NEGOTIATE_SLOTS];   /* shut down to make room */
static unsigned evicting;               /* evicted threads that have not ended */
static uint64_t next_seq;               /* next value of seqs */
static bool stopping;                   /* negotiate_stop called: hand nothing over */
static void (*on_end)(void);            /* called when a thread ends (wakes the acceptor) */

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
    nbd_conn_release(p);
    return;
  }
  h->task.fn = adopt;
  h->fd = fd;
  h->p = *p;
  worker_post(h->w, &h->task);
}

/* Sets every slot free; ON_END runs (on the ending thread) whenever a
 * negotiation ends. */
void negotiate_init(void (*end_fn)(void))
{
  for (size_t i = 0; i < NEGOTIATE_SLOTS; i++)
    fds[i] = -1;
  on_end = end_fn;
  stopping = false;
}

/* Runs one client's handshake (its greeting already sent), then hands the
 * connection on: its socket, or for TLS the socketpair end of its pump. */
static void *negotiate_thread(void *arg)
{
  int slot = (int)(intptr_t)arg, fd = fds[slot];
  struct conn_params p = { 0 };
  bool go, was_evicted;

  go = handshake(fd, NBD_HANDSHAKE_TIMEOUT, true, &p) == 1;
  pthread_mutex_lock(&lock);
  go = go && !stopping;
  fds[slot] = -1;
  was_evicted = evicted[slot];
  pthread_mutex_unlock(&lock);
  if (go) {
    debug("client entered transmission on export '%s'%s%s%s", p.exp->name,
          p.tls ? " over TLS" : "", p.structured ? ", structured replies" : "",
          p.meta ? ", base:allocation" : "");
    /* The connection slot goes with it (shared with the pump for TLS). */
    if (p.tls)
      fd = pump_start(fd, p.tls, &p);
    if (fd >= 0)
      hand_over(fd, &p);
  }
  else {
    tls_session_free(p.tls);
    close(fd);
    limits_conn_put();
  }
  pthread_mutex_lock(&lock);
  if (was_evicted)
    evicting--;
  if (--running == 0)
    pthread_cond_broadcast(&idle_cond);
  if (on_end)
    on_end();
  pthread_mutex_unlock(&lock);
  return NULL;
}

/* Whether a slot is free. */
bool negotiate_slot_free(void)
{
  bool free_slot;

  pthread_mutex_lock(&lock);
  free_slot = running < NEGOTIATE_SLOTS && !stopping;
  pthread_mutex_unlock(&lock);
  return free_slot;
}

/* Starts the negotiation of FD (greeted, holding a connection slot) on a
 * thread; without a free slot FD is closed. Returns 0 or -1. */
int negotiate_start(int fd)
{
  pthread_attr_t attr;
  pthread_t t;
  int e, slot;

  pthread_mutex_lock(&lock);
  for (slot = 0; slot < NEGOTIATE_SLOTS && fds[slot] != -1; slot++)
    ;
  if (stopping || slot == NEGOTIATE_SLOTS) {
    pthread_mutex_unlock(&lock);
    close(fd);
    limits_conn_put();
    return -1;
  }
  running++;
  fds[slot] = fd;
  seqs[slot] = next_seq++;
  evicted[slot] = false;
  pthread_mutex_unlock(&lock);
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, tls_mode() == TLS_OFF ? THREAD_STACK : THREAD_STACK_TLS);
  e = pthread_create(&t, &attr, negotiate_thread, (void *)(intptr_t)slot);
  pthread_attr_destroy(&attr);
  if (e == 0)
    return 0;
  errno = e;
  log_msg("pthread_create: %m");
  close(fd);
  limits_conn_put();
  pthread_mutex_lock(&lock);
  fds[slot] = -1;
  if (--running == 0)
    pthread_cond_broadcast(&idle_cond);
  pthread_mutex_unlock(&lock);
  return -1;
}

/* With every slot taken and a client waiting, shuts the oldest negotiation
 * down, unless one is already on its way out: its thread wakes at once and
 * ends (calling on_end). A real client negotiates in milliseconds, so the
 * oldest is the slowest: a client trickling bytes to hold a slot. */
void negotiate_evict_oldest(void)
{
  int oldest = -1;

  pthread_mutex_lock(&lock);
  if (evicting == 0) {
    for (int i = 0; i < NEGOTIATE_SLOTS; i++)
      if (fds[i] != -1 && !evicted[i] && (oldest == -1 || seqs[i] < seqs[oldest]))
        oldest = i;
    if (oldest != -1) {
      shutdown(fds[oldest], SHUT_RDWR);
      evicted[oldest] = true;
      evicting++;
    }
  }
  pthread_mutex_unlock(&lock);
}

/* Cuts off every negotiation and waits for the threads to end; none hands
 * anything over any more. */
void negotiate_stop(void)
{
  pthread_mutex_lock(&lock);
  stopping = true;
  for (size_t i = 0; i < NEGOTIATE_SLOTS; i++)
    if (fds[i] != -1)
      shutdown(fds[i], SHUT_RDWR);
  while (running > 0)
    pthread_cond_wait(&idle_cond, &lock);
  on_end = NULL;
  pthread_mutex_unlock(&lock);
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
  int r = handshake(fd, 0, false, &pc.p);

  if (r <= 0 || pc.p.tls != NULL) {
    /* No TLS here: the fuzzer runs with --tls=off. */
    tls_session_free(pc.p.tls);
    close(fd);
    return r <= 0 ? r : -1;
  }
  limits_conn_get(); /* the connection gives it back when it closes */
  if (worker_run_private(&limits, adopt_private, &pc) < 0) {
    close(fd);
    limits_conn_put();
    return -1;
  }
  return 0;
}

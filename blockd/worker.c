/* Worker threads: each owns an io_uring that carries the socket I/O and the
 * file I/O of its connections, and an eventfd through which other threads
 * hand it connections and finished pool jobs. */
#include <errno.h>
#include <semaphore.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

/* Submission queue entries per ring. */
#define RING_ENTRIES 256
/* Seconds a stopping worker waits for clients to take their replies. */
#define DRAIN_TIMEOUT 10

static struct worker *workers;
static unsigned nr_workers;

/* Returns an SQE of W's ring, submitting to make room if needed. */
struct io_uring_sqe *worker_sqe(struct worker *w)
{
  struct io_uring_sqe *sqe;

  while ((sqe = io_uring_get_sqe(&w->ring)) == NULL)
    io_uring_submit(&w->ring);
  return sqe;
}

/* Queues JOB for the pool; W hands its queue over before it next waits. */
void worker_to_pool(struct worker *w, struct pool_job *job)
{
  job->next = NULL;
  if (w->to_pool_tail)
    w->to_pool_tail->next = job;
  else
    w->to_pool = job;
  w->to_pool_tail = job;
  w->nr_to_pool++;
}

/* Hands W's queued pool jobs over in one batch. */
static void flush_to_pool(struct worker *w)
{
  if (w->to_pool == NULL)
    return;
  pool_submit_batch(w->to_pool, w->to_pool_tail, w->nr_to_pool);
  w->to_pool = w->to_pool_tail = NULL;
  w->nr_to_pool = 0;
}

/* Creates W's ring and eventfd, on the thread that will use the ring.
 * Returns 0 or -1 after logging. */
static int worker_init(struct worker *w)
{
  struct io_uring_params params;
  int r;

  pthread_mutex_init(&w->lock, NULL);
  w->efd = eventfd(0, EFD_CLOEXEC);
  if (w->efd == -1) {
    nbd_log("eventfd: %m");
    return -1;
  }
  /* Only this thread submits, and it reaps completions itself: let the
   * kernel defer task work to our waits (Linux 6.1), else fall back. */
  memset(&params, 0, sizeof params);
  params.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE;
  params.cq_entries = RING_ENTRIES * 8;
  r = io_uring_queue_init_params(RING_ENTRIES, &w->ring, &params);
  if (r == -EINVAL) {
    memset(&params, 0, sizeof params);
    params.flags = IORING_SETUP_CQSIZE;
    params.cq_entries = RING_ENTRIES * 8;
    r = io_uring_queue_init_params(RING_ENTRIES, &w->ring, &params);
  }
  if (r < 0) {
    errno = -r;
    nbd_log("io_uring_queue_init: %m");
    close(w->efd);
    return -1;
  }
  return 0;
}

/* Frees W's ring and eventfd. */
static void worker_fini(struct worker *w)
{
  io_uring_queue_exit(&w->ring);
  buffer_cache_clear(&w->buffers);
  close(w->efd);
  pthread_mutex_destroy(&w->lock);
}

/* Wakes W's event loop. */
static void worker_wake(struct worker *w)
{
  uint64_t one = 1;

  if (write(w->efd, &one, sizeof one) < 0 && errno != EAGAIN)
    nbd_log("eventfd write: %m");
}

/* Posts the read that completes when W's eventfd is written. */
static void arm_event(struct worker *w)
{
  struct io_uring_sqe *sqe = worker_sqe(w);

  io_uring_prep_read(sqe, w->efd, &w->efd_value, sizeof w->efd_value, 0);
  sqe->user_data = (uint64_t)(uintptr_t)w | TAG_EVENT;
}

/* Posts the timeout that wakes W once a second to check its connections'
 * clocks. */
static void arm_tick(struct worker *w)
{
  struct io_uring_sqe *sqe = worker_sqe(w);

  w->tick = (struct __kernel_timespec){ .tv_sec = 1 };
  io_uring_prep_timeout(sqe, &w->tick, 0, 0);
  sqe->user_data = (uint64_t)(uintptr_t)w | TAG_TICK;
}

/* Reads the coarse monotonic clock into W->now; once a second, checks every
 * connection's time limits. */
static void clock_check(struct worker *w)
{
  struct timespec now;

  clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
  w->now = now.tv_sec;
  if (w->now < w->next_tick)
    return;
  w->next_tick = w->now + 1;
  for (struct conn *c = w->conns, *next; c; c = next) {
    next = c->next;
    conn_tick(c, w->now, w->stall_timeout, w->idle_timeout);
  }
}

/* Starts draining every connection: no new requests, finish the rest. */
static void drain_all(struct worker *w)
{
  for (struct conn *c = w->conns, *next; c; c = next) {
    next = c->next;
    conn_drain(c);
  }
}

/* Takes what other threads handed W: connections, finished jobs, stop. */
static void event(struct worker *w)
{
  struct conn *incoming;
  struct pool_job *done, *reversed = NULL;
  bool stopping;

  pthread_mutex_lock(&w->lock);
  incoming = w->incoming;
  w->incoming = NULL;
  done = w->done;
  w->done = NULL;
  stopping = w->stopping;
  pthread_mutex_unlock(&w->lock);

  /* Jobs were pushed newest first; reply in completion order. */
  while (done) {
    struct pool_job *next = done->next;
    done->next = reversed;
    reversed = done;
    done = next;
  }
  for (struct pool_job *next; reversed; reversed = next) {
    next = reversed->next;
    dispatch_job_done(reversed);
  }
  while (incoming) {
    struct conn *next = incoming->next;
    conn_new(w, incoming->fd, &incoming->p);
    free(incoming);
    incoming = next;
  }
  if (stopping && !w->draining) {
    w->draining = true;
    drain_all(w);
  }
}

/* Handles one completion. */
static void complete(struct worker *w, struct io_uring_cqe *cqe)
{
  void *ptr = (void *)(uintptr_t)(cqe->user_data & ~TAG_MASK);

  switch (cqe->user_data & TAG_MASK) {
  case TAG_RECV:
    conn_recv_done(ptr, cqe->res);
    break;
  case TAG_SEND:
    conn_send_done(ptr, cqe->res);
    break;
  case TAG_FILE:
    dispatch_file_done(ptr, cqe->res);
    break;
  case TAG_EVENT:
    event(w);
    arm_event(w);
    break;
  case TAG_TICK:
    arm_tick(w);
    break;
  default:
    break;
  }
}

/* Runs W's event loop until it is stopped and idle, or, with ONE, until its
 * connections are gone. */
static void worker_loop(struct worker *w, bool one)
{
  struct timespec deadline = { 0 };

  arm_event(w);
  arm_tick(w);
  for (;;) {
    struct __kernel_timespec ts = { .tv_sec = 1 };
    struct io_uring_cqe *cqe;
    unsigned head, n = 0;
    bool stopping;
    int r;

    flush_to_pool(w);
    stopping = __atomic_load_n(&w->stopping, __ATOMIC_ACQUIRE);
    if ((one || stopping) && w->conns == NULL)
      break;
    if (stopping) {
      struct timespec now;

      clock_gettime(CLOCK_MONOTONIC, &now);
      if (deadline.tv_sec == 0)
        deadline.tv_sec = now.tv_sec + DRAIN_TIMEOUT;
      else if (now.tv_sec >= deadline.tv_sec) {
        /* Clients that never take their replies must not hold up exit. */
        for (struct conn *c = w->conns, *next; c; c = next) {
          next = c->next;
          if (c->dead)
            continue;
          nbd_log("export '%s': client still has replies waiting after %d s: dropping it",
                  c->p.exp->name, DRAIN_TIMEOUT);
          conn_abort(c);
        }
      }
      r = io_uring_submit_and_wait_timeout(&w->ring, &cqe, 1, &ts, NULL);
    }
    else
      r = io_uring_submit_and_wait(&w->ring, 1);
    if (r < 0 && r != -EINTR && r != -ETIME && r != -EAGAIN && r != -EBUSY) {
      errno = -r;
      nbd_log("io_uring_submit_and_wait: %m");
      break;
    }
    clock_check(w);
    io_uring_for_each_cqe(&w->ring, head, cqe) {
      complete(w, cqe);
      n++;
    }
    io_uring_cq_advance(&w->ring, n);
    if (w->wait_head != NULL && w->mem_used < w->mem_limit)
      conn_budget_resume(w);
  }
}

/* Body of a worker thread. */
static void *worker_thread(void *arg)
{
  struct worker *w = arg;

  /* A SINGLE_ISSUER ring belongs to the thread that creates it. */
  w->init_result = worker_init(w);
  sem_post(&w->started);
  if (w->init_result == 0) {
    worker_loop(w, false);
    worker_fini(w);
  }
  return NULL;
}

/* Sets W's share of LIMITS among N workers. Each may hold two maximal
 * payloads at least, so one connection never waits for itself. */
static void worker_set_limits(struct worker *w, const struct worker_limits *limits, unsigned n)
{
  w->mem_limit = limits->max_memory / n;
  if (w->mem_limit < 2 * (uint64_t)BLOCKD_MAX_PAYLOAD)
    w->mem_limit = 2 * (uint64_t)BLOCKD_MAX_PAYLOAD;
  w->stall_timeout = limits->stall_timeout;
  w->idle_timeout = limits->idle_timeout;
}

/* Starts N worker threads, each with its own io_uring. Returns 0 or -1. */
int workers_start(unsigned n, const struct worker_limits *limits)
{
  workers = calloc(n, sizeof *workers);
  if (workers == NULL) {
    nbd_log("out of memory");
    return -1;
  }
  for (nr_workers = 0; nr_workers < n; nr_workers++) {
    struct worker *w = &workers[nr_workers];
    int e;

    sem_init(&w->started, 0, 0);
    worker_set_limits(w, limits, n);
    e = pthread_create(&w->thread, NULL, worker_thread, w);
    if (e != 0) {
      errno = e;
      nbd_log("pthread_create: %m");
      goto err;
    }
    sem_wait(&w->started);
    if (w->init_result < 0) {
      pthread_join(w->thread, NULL);
      goto err;
    }
  }
  return 0;
err:
  workers_stop();
  return -1;
}

/* Hands a negotiated connection to the least loaded worker. */
void workers_add_conn(int fd, const struct conn_params *p)
{
  struct worker *best = NULL;
  struct conn *c;

  for (unsigned i = 0; i < nr_workers; i++) {
    struct worker *w = &workers[i];
    if (best == NULL || __atomic_load_n(&w->nr_conns, __ATOMIC_RELAXED) <
                          __atomic_load_n(&best->nr_conns, __ATOMIC_RELAXED))
      best = w;
  }
  /* The record carries the fd and parameters to the worker, which makes
   * the real connection on its own thread. */
  c = calloc(1, sizeof *c);
  if (best == NULL || c == NULL) {
    nbd_log("cannot hand over a connection: out of memory");
    free(c);
    close(fd);
    limits_conn_put();
    return;
  }
  c->fd = fd;
  c->p = *p;
  __atomic_add_fetch(&best->nr_conns, 1, __ATOMIC_RELAXED);
  pthread_mutex_lock(&best->lock);
  c->next = best->incoming;
  best->incoming = c;
  pthread_mutex_unlock(&best->lock);
  worker_wake(best);
}

/* Hands a finished pool job back to its worker (called from pool threads). */
void worker_job_done(struct worker *w, struct pool_job *job)
{
  bool wake;

  /* Wake under the lock: once the worker can see the job, it may finish
   * and free itself, so nothing here may touch W after the unlock. */
  pthread_mutex_lock(&w->lock);
  wake = w->done == NULL;
  job->next = w->done;
  w->done = job;
  if (wake)
    worker_wake(w);
  pthread_mutex_unlock(&w->lock);
}

/* Finishes every request in flight, closes the connections and stops the workers. */
void workers_stop(void)
{
  for (unsigned i = 0; i < nr_workers; i++) {
    pthread_mutex_lock(&workers[i].lock);
    __atomic_store_n(&workers[i].stopping, true, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&workers[i].lock);
    worker_wake(&workers[i]);
  }
  for (unsigned i = 0; i < nr_workers; i++)
    pthread_join(workers[i].thread, NULL);
  free(workers);
  workers = NULL;
  nr_workers = 0;
}

/* Serves one connection on the calling thread until it closes: handshake,
 * then transmission on a private io_uring. Used by the fuzzer. Returns 0 or -1. */
int worker_serve_one(int fd)
{
  static const struct worker_limits limits = {
    .max_memory = 2 * (uint64_t)BLOCKD_CONN_MAX_BYTES,
    .stall_timeout = BLOCKD_STALL_TIMEOUT,
  };
  struct conn_params p;
  struct worker w = { 0 };
  int r = handshake(fd, 0, &p);

  if (r <= 0) {
    close(fd);
    return r;
  }
  limits_conn_get(); /* conn_new's connection gives it back */
  worker_set_limits(&w, &limits, 1);
  if (worker_init(&w) < 0) {
    close(fd);
    limits_conn_put();
    return -1;
  }
  __atomic_add_fetch(&w.nr_conns, 1, __ATOMIC_RELAXED);
  if (conn_new(&w, fd, &p) == 0)
    worker_loop(&w, true);
  worker_fini(&w);
  return 0;
}

/* Worker threads: each owns an io_uring that carries the socket I/O and the
 * file I/O of its clients. Every completion is a struct completion whose
 * callback handles it; other threads hand work over as tasks through the
 * worker's eventfd. Once a second the worker ticks its clients (time
 * limits); when told to stop it drains them and waits until they are gone. */
#include <errno.h>
#include <sched.h>
#include <semaphore.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "core.h"

/* Submission queue entries per ring. */
#define RING_ENTRIES 256
/* Seconds a stopping worker waits for its clients to finish. */
#define DRAIN_TIMEOUT 10

static struct worker *workers;
static unsigned nr_workers;

/* Does nothing with a completion. */
static void ignore(struct completion *c, int res)
{
  (void)c;
  (void)res;
}

struct completion completion_ignore = { .fn = ignore };

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

/* Hands W's queued pool jobs over in one batch: one lock and one wake-up
 * for everything a pass of the loop produced. */
static void flush_to_pool(struct worker *w)
{
  if (w->to_pool == NULL)
    return;
  pool_submit_batch(w->to_pool, w->to_pool_tail, w->nr_to_pool);
  w->to_pool = w->to_pool_tail = NULL;
  w->nr_to_pool = 0;
}

/* Posts the read that completes when WT's eventfd is written. */
static void arm_watch(struct watch *wt)
{
  struct io_uring_sqe *sqe = worker_sqe(wt->w);

  io_uring_prep_read(sqe, wt->fd, &wt->value, sizeof wt->value, 0);
  sqe_set_completion(sqe, &wt->comp);
  wt->pending = true;
}

/* A watched eventfd was written (or its read was cancelled). */
static void watch_done(struct completion *c, int res)
{
  struct watch *wt = container_of(c, struct watch, comp);

  wt->pending = false;
  if (!wt->active) {
    if (wt->release)
      wt->release(wt);
    return;
  }
  if (res < 0 && res != -EINTR && res != -EAGAIN) {
    errno = -res;
    log_msg("eventfd read: %m");
    return;
  }
  wt->fn(wt);
  if (wt->active && !wt->pending)
    arm_watch(wt);
}

/* Watches eventfd FD on W's ring: FN runs after each write to it. */
void worker_watch(struct worker *w, struct watch *wt, int fd, void (*fn)(struct watch *wt))
{
  wt->comp.fn = watch_done;
  wt->w = w;
  wt->fd = fd;
  wt->fn = fn;
  wt->active = true;
  wt->pending = false;
  arm_watch(wt);
}

/* Stops watching; the watch may be freed once wt->pending is false. */
void worker_unwatch(struct watch *wt)
{
  struct io_uring_sqe *sqe;

  wt->active = false;
  if (!wt->pending) {
    if (wt->release)
      wt->release(wt);
    return;
  }
  sqe = worker_sqe(wt->w);
  io_uring_prep_cancel(sqe, &wt->comp, 0);
  sqe_set_completion(sqe, &completion_ignore);
}

/* Creates W's ring and eventfd, on the thread that will use the ring.
 * Returns 0 or -1 after logging. */
static int worker_init(struct worker *w)
{
  struct io_uring_params params;
  int r, efd;

  efd = eventfd(0, EFD_CLOEXEC);
  if (efd == -1) {
    log_msg("eventfd: %m");
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
    log_msg("io_uring_queue_init: %m");
    close(efd);
    return -1;
  }
  w->wake.fd = efd;
  return 0;
}

/* Frees W's ring and eventfd. */
static void worker_fini(struct worker *w)
{
  /* A thread that handed W its last task may still be about to write the
   * eventfd: wait for it (a few instructions) before closing that. */
  while (__atomic_load_n(&w->posting, __ATOMIC_ACQUIRE) != 0)
    sched_yield();
  io_uring_queue_exit(&w->ring);
  io_fini(w);
  buffer_cache_clear(&w->buffers);
  close(w->wake.fd);
}

/* Wakes W's event loop. */
static void worker_wake(struct worker *w)
{
  uint64_t one = 1;

  if (write(w->wake.fd, &one, sizeof one) < 0 && errno != EAGAIN)
    log_msg("eventfd write: %m");
}

/* Runs T on W's thread, soon (any thread). */
void worker_post(struct worker *w, struct task *t)
{
  struct task *head;

  /* No lock: librbd's completion thread and the pool call this once per
   * request. Pushed onto the stack with a compare-and-swap; only a push onto
   * an empty stack wakes the worker (it takes the whole stack at once, so a
   * non-empty one has a wake-up coming). Once the task is visible the
   * worker may run it, finish and free itself: POSTING keeps it from
   * closing the eventfd until the write below is done. */
  __atomic_add_fetch(&w->posting, 1, __ATOMIC_SEQ_CST);
  head = __atomic_load_n(&w->tasks, __ATOMIC_RELAXED);
  do
    t->next = head;
  while (!__atomic_compare_exchange_n(&w->tasks, &head, t, true, __ATOMIC_RELEASE,
                                      __ATOMIC_RELAXED));
  if (head == NULL)
    worker_wake(w);
  __atomic_sub_fetch(&w->posting, 1, __ATOMIC_RELEASE);
}

/* Runs T once, after the completions of the current pass. */
void worker_at_pass_end(struct worker *w, struct task *t)
{
  t->next = w->pass_end;
  w->pass_end = t;
}

/* Runs the pass-end tasks (queued newest first: order does not matter). */
static void run_pass_end(struct worker *w)
{
  while (w->pass_end != NULL) {
    struct task *t = w->pass_end;

    w->pass_end = t->next;
    t->fn(t);
  }
}

/* Adds C (its ops set) to W's clients. */
void client_add(struct worker *w, struct client *c, const struct client_ops *ops)
{
  c->ops = ops;
  c->w = w;
  if (ops->budget_resume != NULL)
    w->nr_budgeted++;
  c->prev = NULL;
  c->next = w->clients;
  if (w->clients)
    w->clients->prev = c;
  w->clients = c;
}

/* Removes C from its worker. */
void client_remove(struct client *c)
{
  struct worker *w = c->w;

  budget_unwait(c);
  if (c->ops->budget_resume != NULL)
    w->nr_budgeted--;
  if (c->prev)
    c->prev->next = c->next;
  else
    w->clients = c->next;
  if (c->next)
    c->next->prev = c->prev;
  c->prev = c->next = NULL;
  __atomic_sub_fetch(&w->nr_clients, 1, __ATOMIC_RELAXED);
}

/* Asks every client to drain: finish what it has, take nothing new. */
static void drain_all(struct worker *w)
{
  for (struct client *c = w->clients, *next; c; c = next) {
    next = c->next;
    c->ops->drain(c);
  }
}

/* Runs what other threads handed W: tasks in the order posted, then stop. */
static void wake_event(struct watch *wt)
{
  struct worker *w = container_of(wt, struct worker, wake);
  struct task *tasks, *reversed = NULL;
  bool stopping;

  tasks = __atomic_exchange_n(&w->tasks, NULL, __ATOMIC_ACQUIRE);
  stopping = __atomic_load_n(&w->stopping, __ATOMIC_ACQUIRE);

  /* Tasks were pushed newest first. */
  while (tasks) {
    struct task *next = tasks->next;
    tasks->next = reversed;
    reversed = tasks;
    tasks = next;
  }
  for (struct task *next; reversed; reversed = next) {
    next = reversed->next;
    reversed->fn(reversed);
  }
  if (stopping && !w->draining) {
    w->draining = true;
    drain_all(w);
  }
}

/* Whether tasks were handed to W that it has not run yet (one may bring a
 * client: a worker must not leave before it sees them). */
static bool tasks_waiting(struct worker *w)
{
  return __atomic_load_n(&w->tasks, __ATOMIC_ACQUIRE) != NULL;
}

/* Posts the timeout that wakes W once a second for its clients' ticks. */
static void arm_tick(struct worker *w)
{
  struct io_uring_sqe *sqe = worker_sqe(w);

  w->tick_ts = (struct __kernel_timespec){ .tv_sec = 1 };
  io_uring_prep_timeout(sqe, &w->tick_ts, 0, 0);
  sqe_set_completion(sqe, &w->tick);
}

/* The once-a-second timeout fired: post the next one. */
static void tick_done(struct completion *c, int res)
{
  (void)res;
  arm_tick(container_of(c, struct worker, tick));
}

/* Reads the coarse monotonic clock into W->now; once a second, ticks every
 * client. */
static void clock_check(struct worker *w)
{
  struct timespec now;

  clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
  w->now = now.tv_sec;
  if (w->now < w->next_tick)
    return;
  w->next_tick = w->now + 1;
  buffer_cache_tick(&w->buffers);
  io_tick(w);
  for (struct client *c = w->clients, *next; c; c = next) {
    next = c->next;
    if (c->ops->tick)
      c->ops->tick(c, w->now);
  }
}

/* Runs W's event loop until it is stopped and has no clients, or, with
 * PRIVATE, until its clients are gone. */
static void worker_loop(struct worker *w, bool private)
{
  struct timespec deadline = { 0 };

  w->tick.fn = tick_done;
  worker_watch(w, &w->wake, w->wake.fd, wake_event);
  arm_tick(w);
  clock_check(w);
  for (;;) {
    struct __kernel_timespec ts = { .tv_sec = 1 };
    struct io_uring_cqe *cqe;
    unsigned head, n = 0;
    bool stopping;
    int r;

    flush_to_pool(w);
    stopping = __atomic_load_n(&w->stopping, __ATOMIC_ACQUIRE);
    if ((private || stopping) && w->clients == NULL && !tasks_waiting(w))
      break;
    if (stopping) {
      struct timespec now;

      clock_gettime(CLOCK_MONOTONIC, &now);
      if (deadline.tv_sec == 0)
        deadline.tv_sec = now.tv_sec + DRAIN_TIMEOUT;
      else if (now.tv_sec >= deadline.tv_sec) {
        /* Clients that never take their replies must not hold up exit. */
        for (struct client *c = w->clients, *next; c; c = next) {
          next = c->next;
          c->ops->kill(c);
        }
      }
      r = io_uring_submit_and_wait_timeout(&w->ring, &cqe, 1, &ts, NULL);
    }
    else
      r = io_uring_submit_and_wait(&w->ring, 1);
    if (r < 0 && r != -EINTR && r != -ETIME && r != -EAGAIN && r != -EBUSY) {
      errno = -r;
      log_msg("io_uring_submit_and_wait: %m");
      break;
    }
    clock_check(w);
    io_uring_for_each_cqe(&w->ring, head, cqe) {
      struct completion *c = io_uring_cqe_get_data(cqe);

      c->fn(c, cqe->res);
      n++;
    }
    io_uring_cq_advance(&w->ring, n);
    budget_resume(w);
    run_pass_end(w);
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
 * payloads at least, so one client never waits for itself. */
static void worker_set_limits(struct worker *w, const struct worker_limits *limits, unsigned n)
{
  w->mem_limit = limits->max_memory / n;
  if (w->mem_limit < 2 * (uint64_t)BLOCKD_MAX_PAYLOAD)
    w->mem_limit = 2 * (uint64_t)BLOCKD_MAX_PAYLOAD;
  w->stall_timeout = limits->stall_timeout;
  w->idle_timeout = limits->idle_timeout;
}

/* Starts N worker threads with LIMITS. Returns 0 or -1. */
int workers_start(unsigned n, const struct worker_limits *limits)
{
  buffers_init();
  workers = calloc(n, sizeof *workers);
  if (workers == NULL) {
    log_msg("out of memory");
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
      log_msg("pthread_create: %m");
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

/* The worker with the fewest clients, counted as one more from now on. */
struct worker *workers_pick(void)
{
  struct worker *best = NULL;

  for (unsigned i = 0; i < nr_workers; i++) {
    struct worker *w = &workers[i];
    if (best == NULL || __atomic_load_n(&w->nr_clients, __ATOMIC_RELAXED) <
                          __atomic_load_n(&best->nr_clients, __ATOMIC_RELAXED))
      best = w;
  }
  if (best != NULL)
    __atomic_add_fetch(&best->nr_clients, 1, __ATOMIC_RELAXED);
  return best;
}

/* Undoes a workers_pick whose client never came. */
void worker_unpick(struct worker *w)
{
  __atomic_sub_fetch(&w->nr_clients, 1, __ATOMIC_RELAXED);
}

/* Counts one more client on W. */
void worker_claim(struct worker *w)
{
  __atomic_add_fetch(&w->nr_clients, 1, __ATOMIC_RELAXED);
}

/* Worker threads running. */
unsigned workers_count(void)
{
  return nr_workers;
}

/* Drains every client, then stops and frees the workers. */
void workers_stop(void)
{
  /* The workers live until joined: no need to hold them while waking. A
   * worker that read STOPPING before the store gets this wake-up after. */
  for (unsigned i = 0; i < nr_workers; i++) {
    __atomic_store_n(&workers[i].stopping, true, __ATOMIC_RELEASE);
    worker_wake(&workers[i]);
  }
  for (unsigned i = 0; i < nr_workers; i++)
    pthread_join(workers[i].thread, NULL);
  free(workers);
  workers = NULL;
  nr_workers = 0;
}

/* Runs a private worker on the calling thread: INIT adds its clients, and
 * it returns once they are all gone. Returns 0 or -1. */
int worker_run_private(const struct worker_limits *limits, void (*init)(struct worker *w, void *arg),
                       void *arg)
{
  struct worker w = { 0 };

  worker_set_limits(&w, limits, 1);
  if (worker_init(&w) < 0)
    return -1;
  init(&w, arg);
  if (w.clients != NULL || tasks_waiting(&w))
    worker_loop(&w, true);
  worker_fini(&w);
  return 0;
}

/* blockd's engine core: what each file of core/ exports, file by file.
 *
 * The core knows images and rings, never a wire protocol. A front end (nbd/,
 * vhost/) turns its wire requests into struct io_req and hands them to
 * io_submit; the core runs each on the worker's io_uring when the engine maps
 * the range onto a file, else on the blocking pool, and calls the request's
 * done callback on the worker's thread. Every io_uring completion carries a
 * struct completion whose callback handles it; work handed over by other
 * threads arrives as tasks. Calls only go down: nothing here calls a front
 * end except through a callback the front end registered.
 */
#ifndef BLOCKD_CORE_H
#define BLOCKD_CORE_H

#include <liburing.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>
#include <time.h>

#include "cleanup.h"
#include "format.h"

/* Largest payload of one read or write any front end takes. */
#define BLOCKD_MAX_PAYLOAD (32u * 1024 * 1024)

/* log.c */
extern bool verbose;
/* Sets the program name that prefixes every message. */
void log_init(const char *progname);
/* Prints "blockd: MESSAGE" on stderr (with %m support), one write per line. */
void log_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* As log_msg, for the control path, only with --verbose. */
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#define debug(...)                 \
  do {                             \
    if (unlikely(verbose))         \
      log_debug(__VA_ARGS__);      \
  } while (0)
/* Escapes LEN bytes of peer data at S into OUT for a log line: bytes outside
 * printable ASCII, quotes and backslashes become \xHH; over 64 bytes, "...".
 * Returns OUT. */
const char *log_escape(const char *s, size_t len, char *out, size_t outlen);
#define LOG_ESCAPE_MAX 300 /* size of an OUT buffer for log_escape */

/* export.c: the open images, by name, shared by every front end */
struct export {
  char *name;      /* as clients name it */
  struct fmt *fmt; /* the image */
};
/* Adds open image F as export NAME (taking F). Returns 0 or -1 after logging. */
int export_add(const char *name, struct fmt *f);
/* Returns the export named NAME (LEN bytes), or NULL. */
struct export *export_find(const char *name, size_t len);
/* Number of exports, and the I-th one (NULL past the end). */
size_t exports_count(void);
struct export *exports_get(size_t i);
/* Flushes every writable export. Returns 0 or -1 after logging. */
int exports_flush_all(void);
/* Closes every export. */
void exports_close(void);

/* limits.c: process-wide limits */
/* Sets the connection cap and raises RLIMIT_NOFILE. Returns 0 or -1. */
int limits_init(unsigned max_connections);
/* Frees what limits_init made. */
void limits_fini(void);
/* Takes a connection slot; false when every slot is taken. */
bool limits_conn_get(void);
/* Gives a connection slot back (any thread). */
void limits_conn_put(void);
/* Readable once a slot frees after limits_conn_get failed. */
int limits_conn_fd(void);
/* Whether a connection slot is free now (a hint). */
bool limits_conn_get_idle(void);
/* Connections open now. */
unsigned limits_conn_count(void);

/* buffer.c: payload buffers recycled per worker */
#define BUFFER_MIN 4096                 /* smallest buffer, and alignment */
#define BUFFER_CLASSES 14               /* 4 KiB .. 32 MiB */
#define BUFFER_CACHE_MAX (64u << 20)    /* bytes a busy worker keeps for reuse */
/* A worker's cache of free payload buffers, by power-of-two size class. */
struct buffer_cache {
  void *free[BUFFER_CLASSES];   /* singly linked through each buffer's first word */
  size_t cached;                /* bytes held in the lists */
  bool busy;                    /* a buffer was taken or given back since the last tick */
};
/* Returns a buffer of at least LEN bytes, page-aligned, or NULL. */
void *buffer_alloc(struct buffer_cache *bc, size_t len);
/* Gives back a buffer of LEN bytes (as asked of buffer_alloc); NULL is fine. */
void buffer_free(struct buffer_cache *bc, void *buf, size_t len);
/* Frees every cached buffer. */
void buffer_cache_clear(struct buffer_cache *bc);
/* Once a second: frees every cached buffer if none was taken or given back
 * since the last call, so that an idle worker gives its memory back. */
void buffer_cache_tick(struct buffer_cache *bc);
/* Makes freed payload buffers go back to the kernel at once (call once). */
void buffers_init(void);

/* worker.c: threads, each with an io_uring */
struct worker;
struct client;

/* What an io_uring operation's user_data points to: its completion
 * callback, embedded in whatever posted the operation. */
struct completion {
  void (*fn)(struct completion *c, int res); /* called once per CQE, on the worker */
};
/* A completion for operations whose result nobody needs (cancellations). */
extern struct completion completion_ignore;

/* Work handed to a worker from another thread (worker_post). */
struct task {
  void (*fn)(struct task *t); /* runs on the worker's thread */
  struct task *next;          /* queue link, owned by the worker */
};

/* An eventfd watched on a worker's ring: FN runs each time it is written. */
struct watch {
  struct completion comp;     /* the pending read */
  struct worker *w;           /* the worker whose ring watches */
  int fd;                     /* the eventfd */
  uint64_t value;             /* target of the read */
  bool active;                /* re-armed after each event; false once stopped */
  bool pending;               /* a read is in the kernel */
  void (*fn)(struct watch *wt); /* on the worker, after each event */
  void (*release)(struct watch *wt); /* once stopped and idle (may free it); may be NULL */
};

/* What a front end's connection or device answers to its worker. Every
 * callback runs on the worker's thread; each may free the client (after
 * client_remove). */
struct client_ops {
  /* Once a second: apply time limits (NOW: monotonic seconds). May be NULL. */
  void (*tick)(struct client *c, time_t now);
  /* The server stops: answer what was received, take nothing new, leave
   * (client_remove) once idle. */
  void (*drain)(struct client *c);
  /* Draining took too long: drop everything and leave. */
  void (*kill)(struct client *c);
  /* Its turn for the memory budget came (budget_take said BUDGET_QUEUED).
   * NULL for a client that never takes budget: it does not count when the
   * budget is shared. */
  void (*budget_resume)(struct client *c);
};

/* A connection or device as its worker sees it; front ends embed it. */
struct client {
  const struct client_ops *ops; /* the front end's answers */
  struct worker *w;             /* owner */
  struct client *prev, *next;   /* the worker's clients */
  uint64_t held;                /* budget bytes it holds */
  bool budget_waiting;          /* queued for the budget */
  uint32_t budget_need;         /* bytes of the request that waits */
  time_t budget_since;          /* when it began to wait */
  struct client *wprev, *wnext; /* links in the budget queue */
};

/* What workers enforce. */
struct worker_limits {
  uint64_t max_memory;         /* payload bytes of all clients together */
  unsigned stall_timeout;      /* seconds: unread replies, unfinished requests */
  unsigned idle_timeout;       /* seconds without a request, 0: none */
};

/* A cache=none file whose reads went through the page cache by splice: its
 * cached pages are dropped once a second while it has such reads, and once
 * more after (io.c). */
struct drop_file {
  int fd;                      /* the file (its engine's; never closed before exit) */
  unsigned ticks;              /* sweeps left */
};
#define DROP_FILES 8

/* A worker thread: one io_uring for the sockets and files of its clients. */
struct worker {
  pthread_t thread;            /* the thread (not for a private worker) */
  sem_t started;               /* posted once the thread has set up its ring */
  int init_result;             /* 0, or -1 if it could not */
  struct io_uring ring;        /* submission and completion queues */
  struct watch wake;           /* its eventfd: tasks from other threads, stop */
  struct task *tasks;          /* handed over, not yet run (newest first; atomic) */
  unsigned posting;            /* threads in worker_post now (atomic) */
  bool stopping;               /* workers_stop was called (atomic) */
  bool draining;               /* the worker thread has seen stopping */
  unsigned nr_clients;         /* clients owned or on their way, for balancing (atomic) */
  struct client *clients;      /* clients owned */
  unsigned nr_budgeted;        /* those of them that take budget (with budget_resume) */
  struct buffer_cache buffers; /* payload buffers for reuse */
  struct task *pass_end;       /* to run after this pass's completions */
  struct drop_file drops[DROP_FILES]; /* cache=none files read by splice lately (io.c) */
  unsigned nr_drops;
  struct io_req *trims;        /* trims for the ring, issued at the pass's end (io.c) */
  struct task trims_task;      /* the pass-end task that issues them */
  struct pool_job *to_pool;    /* jobs for the pool, handed over once per loop pass */
  struct pool_job *to_pool_tail;
  unsigned nr_to_pool;         /* jobs in to_pool */
  uint64_t mem_limit;          /* budget: payload bytes its clients may hold */
  uint64_t mem_used;           /* payload bytes they hold now */
  struct client *wait_head, *wait_tail; /* clients waiting for the budget, FIFO */
  struct client *budget_turn;  /* the waiter allowed one request now */
  unsigned stall_timeout;      /* seconds: unread replies, unfinished requests */
  unsigned idle_timeout;       /* seconds without a request, 0: none */
  time_t now;                  /* CLOCK_MONOTONIC seconds, once per loop pass */
  time_t next_tick;            /* when the clients' ticks run next */
  struct __kernel_timespec tick_ts; /* the timeout that wakes the loop for them */
  struct completion tick;      /* its completion */
};

/* Starts N worker threads with LIMITS. Returns 0 or -1. */
int workers_start(unsigned n, const struct worker_limits *limits);
/* Drains every client, then stops and frees the workers. */
void workers_stop(void);
/* The worker with the fewest clients (counted as one more from now on:
 * the caller posts it a task that adds a client, or calls worker_unpick). */
struct worker *workers_pick(void);
/* Undoes a workers_pick whose client never came. */
void worker_unpick(struct worker *w);
/* Counts one more client on W, as workers_pick does for the one it picks. */
void worker_claim(struct worker *w);
/* Worker threads running (0 before workers_start, and for a private worker). */
unsigned workers_count(void);
/* Runs T on W's thread, soon (any thread). */
void worker_post(struct worker *w, struct task *t);
/* Returns an SQE of W's ring, submitting to make room if needed. */
struct io_uring_sqe *worker_sqe(struct worker *w);
/* Sets the SQE's user_data to completion C. */
static inline void sqe_set_completion(struct io_uring_sqe *sqe, struct completion *c)
{
  io_uring_sqe_set_data(sqe, c);
}
/* Runs T on W's thread once, after the completions of the current pass of
 * its loop (to batch what a pass produced: a ring's used entries and one
 * interrupt). Call on W's thread; T must not be queued already. */
void worker_at_pass_end(struct worker *w, struct task *t);
/* Watches eventfd FD on W's ring: FN runs after each write to it. */
void worker_watch(struct worker *w, struct watch *wt, int fd, void (*fn)(struct watch *wt));
/* Stops watching; once its cancelled read has come back through the ring,
 * wt->release (if set) is called and may free the watch. */
void worker_unwatch(struct watch *wt);
/* Adds C (its ops set) to W's clients. */
void client_add(struct worker *w, struct client *c, const struct client_ops *ops);
/* Removes C from its worker (it holds no budget any more). */
void client_remove(struct client *c);
/* Runs a private worker on the calling thread with limits LIMITS: INIT runs
 * on it first (adding clients), and it returns once they are all gone
 * (tests, the fuzzer). Returns 0 or -1. */
int worker_run_private(const struct worker_limits *limits, void (*init)(struct worker *w, void *arg),
                       void *arg);

/* budget.c: the worker's memory budget, shared fairly by its clients */
/* What budget_take answers. */
enum budget_answer {
  BUDGET_OK,     /* taken */
  BUDGET_OWN,    /* not now: wait for the client's own requests to finish */
  BUDGET_QUEUED, /* not now: in line; ops->budget_resume says when */
};
/* Asks for NEED payload bytes for C, which has NR requests alive and, with
 * REPLIES_WAITING, output its peer has not taken yet. Bounds: C's fair
 * share of the worker's budget (one request is always allowed, so a single
 * maximal one never deadlocks), and the budget itself, which clients wait
 * for in turn, smallest request first. */
enum budget_answer budget_take(struct client *c, uint32_t need, unsigned nr,
                               bool replies_waiting);
/* Charges BYTES to C whatever the budget (a drain takes what has arrived). */
void budget_charge(struct client *c, uint64_t bytes);
/* Gives back BYTES that C held. */
void budget_put(struct client *c, uint64_t bytes);
/* Takes C out of the line (it leaves). */
void budget_unwait(struct client *c);
/* Lets waiting clients go on, in turn, while the budget lasts (the worker
 * loop calls it after each pass). */
void budget_resume(struct worker *w);
/* Payload bytes a client may hold however many share its worker. */
#define BUDGET_MIN_SHARE (4u * 1024 * 1024)
/* ... and at most, however few. */
#define BUDGET_MAX_SHARE (64u * 1024 * 1024)

/* pool.c: blocking threads for what must not run on a worker's ring */
struct pool_job {
  void (*run)(struct pool_job *job); /* runs on a pool thread */
  struct task done;                  /* posted back to the worker when run returns */
  struct worker *w;                  /* that worker */
  struct pool_job *next;             /* queue link, owned by the pool */
};
/* Starts N blocking threads. Returns 0 or -1 after logging. */
int pool_start(unsigned n);
/* Queues the N jobs linked from FIRST to LAST (through ->next). */
void pool_submit_batch(struct pool_job *first, struct pool_job *last, unsigned n);
/* Stops the pool after the queued jobs have run. */
void pool_stop(void);
/* Queues JOB for the pool; its worker hands its queue over before it next waits. */
void worker_to_pool(struct worker *w, struct pool_job *job);

/* io.c: the transport-neutral request, routed to the ring or the pool */
enum io_op {
  IO_READ,    /* into iov */
  IO_WRITE,   /* from iov; flags: FMT_FUA */
  IO_FLUSH,   /* every completed write durable */
  IO_TRIM,    /* flags: FMT_FUA */
  IO_ZERO,    /* flags: FMT_FUA, FMT_MAY_TRIM, FMT_FAST_ZERO */
  IO_CACHE,   /* prefetch */
  IO_EXTENTS, /* extent_fn gets the range's extents (on a pool thread) */
  IO_SPLICE,  /* the range into pipe_fd, page references instead of copies;
               * err EAGAIN: it does not map onto one file range, needs
               * more pipe pages than the pipe holds, or the file ends
               * inside it (read it into memory instead; if moved is not 0
               * the pipe holds part of the range); zero set: it reads as zeroes and
               * nothing went into the pipe. On any other error the pipe may
               * hold part of the range. */
};

/* One request of any front end, from submission to its done callback. */
struct io_req {
  /* Set by the front end before io_submit: */
  struct worker *w;            /* the worker that runs it and calls done */
  struct fmt *fmt;             /* the image */
  enum io_op op;               /* what to do */
  uint32_t flags;              /* FMT_* flags, as the op allows */
  uint64_t offset;             /* first byte */
  uint64_t length;             /* bytes */
  struct iovec *iov;           /* IO_READ, IO_WRITE: LENGTH bytes in all; the core
                                * may change the array (to resume short transfers) */
  unsigned iovcnt;             /* entries in iov */
  fmt_extent_fn extent_fn;     /* IO_EXTENTS: called per extent, on a pool thread */
  void *extent_opaque;         /* its argument */
  int pipe_fd;                 /* IO_SPLICE: the pipe's write end, empty */
  unsigned pipe_size;          /* IO_SPLICE: its capacity in bytes (F_GETPIPE_SZ) */
  void (*done)(struct io_req *r); /* on the worker's thread, with err set */
  /* The result: */
  int err;                     /* 0, or the host errno */
  bool zero;                   /* IO_SPLICE: the range reads as zeroes: a hole, or
                                * nothing mapped (nothing spliced) */
  /* The core's: */
  struct completion comp;      /* the ring operation in flight */
  struct pool_job job;         /* the pool's run of it; job.done also brings an
                                * asynchronous engine operation back */
  struct fmt_aio aio;          /* the engine's asynchronous operation (fmt_aio) */
  struct fmt_map m;            /* the file range the engine mapped */
  uint64_t moved;              /* bytes moved so far on the ring */
  struct io_req *trim_next;    /* IO_TRIM on the ring: the worker's pending trims, then
                                * the others this one's fallocate covers */
  uint64_t trim_length;        /* bytes that fallocate punches from m.offset */
};
/* Runs R: on the worker's ring if the engine maps the range, else through
 * the engine's asynchronous path if it has one for R, else on the pool;
 * R->done is called on R->w's thread, never before io_submit returns for
 * asynchronous and pool work, possibly within it for ranges that map to
 * nothing. */
void io_submit(struct io_req *r);
/* Once a second on W: drops the page cache of the cache=none files its
 * splices read through it. */
void io_tick(struct worker *w);
/* W's ring is gone: the last sweep of those files, directly. */
void io_fini(struct worker *w);

#endif

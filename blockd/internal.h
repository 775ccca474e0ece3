/* blockd's private header: what each file of the server exports, file by file. */
#ifndef BLOCKD_INTERNAL_H
#define BLOCKD_INTERNAL_H

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
#include "protocol.h"

/* Largest payload of a read or write, advertised as the maximum block size. */
#define BLOCKD_MAX_PAYLOAD (32u * 1024 * 1024)
/* Bytes of request payload a connection may hold in memory at once; past
 * this the worker stops reading from the socket until replies drain. */
#define BLOCKD_CONN_MAX_BYTES (64u * 1024 * 1024)
/* Requests a connection may have in flight at once. */
#define BLOCKD_CONN_MAX_REQUESTS 256
/* Payload bytes a connection may hold however many share its worker. */
#define BLOCKD_CONN_MIN_SHARE (4u * 1024 * 1024)
/* Default seconds a client may leave replies unread or a request unfinished. */
#define BLOCKD_STALL_TIMEOUT 30
/* Seconds a client may take over its whole handshake. */
#define BLOCKD_HANDSHAKE_TIMEOUT 10

/* log.c */
extern bool verbose;
/* Sets the program name that prefixes every message. */
void log_init(const char *progname);
/* Prints "blockd: MESSAGE" on stderr (with %m support). */
void nbd_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Escapes LEN bytes of client data at S into OUT for a log line. */
const char *log_escape(const char *s, size_t len, char *out, size_t outlen);
#define LOG_ESCAPE_MAX 300 /* size of an OUT buffer for log_escape */
/* As nbd_log, for the control path, only with --verbose. */
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#define debug(...)                 \
  do {                             \
    if (unlikely(verbose))         \
      log_debug(__VA_ARGS__);      \
  } while (0)

/* options.c */
/* One --export, or the lone FILE. */
struct export_spec {
  char *name;     /* export name; "" for the default export */
  char *path;     /* image file */
  char *format;   /* "raw", "qcow2", "overlay", or NULL to detect */
  bool readonly;  /* ,readonly or --readonly */
};

/* One --listen HOST:PORT. */
struct listen_spec {
  char *host;                   /* host part; "127.0.0.1" when left out */
  char *port;                   /* port part */
};
#define OPTIONS_MAX_LISTENS 8
#define OPTIONS_DEFAULT_MAX_CONNECTIONS 256
#define OPTIONS_DEFAULT_MAX_MEMORY (256u << 20)

/* The parsed command line. */
struct options {
  char *unix_path;              /* --unix, the default socket, or NULL with --listen */
  struct listen_spec listens[OPTIONS_MAX_LISTENS]; /* --listen, in order */
  size_t nr_listens;            /* entries in listens */
  char *pidfile;                /* --pidfile, or NULL */
  bool readonly;                /* --readonly: every export read-only */
  unsigned threads;             /* --threads, default: online CPUs */
  unsigned max_connections;     /* --max-connections */
  uint64_t max_memory;          /* --max-memory: payload bytes, all clients */
  unsigned stall_timeout;       /* --stall-timeout seconds */
  unsigned idle_timeout;        /* --idle-timeout seconds, 0: none */
  bool verbose;                 /* -v */
  struct export_spec *exports;  /* exports in command-line order */
  size_t nr_exports;            /* entries in exports */
};

/* What options_parse wants the caller to do next. */
enum options_result {
  OPTIONS_RUN = 0,   /* serve */
  OPTIONS_EXIT = 1,  /* --help or --version printed: exit 0 */
  OPTIONS_USAGE = 2, /* ERR holds a one-line message: exit 2 */
};
/* Parses ARGV into O. Returns an options_result. */
enum options_result options_parse(struct options *o, int argc, char **argv, char *err,
                                  size_t errlen);
/* Frees what options_parse allocated. */
void options_free(struct options *o);

/* export.c */
/* An open export. */
struct export {
  char *name;        /* as the client names it */
  char *description; /* for NBD_INFO_DESCRIPTION: format and mode, never a host path */
  struct fmt *fmt;   /* the image */
  uint16_t eflags;   /* transmission flags advertised for it */
};
/* Opens every export of O; on failure prints a message and returns -1. */
int exports_open(const struct options *o);
/* Returns the export named NAME, or NULL. */
struct export *export_find(const char *name, size_t len);
/* Number of exports, and the I-th one, for NBD_OPT_LIST. */
size_t exports_count(void);
struct export *exports_get(size_t i);
/* Registers a single already-open image as the only export (tests, fuzzer). */
int exports_set_single(struct fmt *f, const char *name);
/* Flushes every writable export. Returns 0 or -1 after logging. */
int exports_flush_all(void);
/* Closes every export. */
void exports_close(void);

/* request.c */
/* Checks a request header's framing. Returns 0, or -1 if the connection must
 * be dropped (bad magic, payload over the maximum), logging why. */
int request_check_framing(const struct nbd_request *req);
/* Validates a request (fields already in host order) against EXP. Returns 0
 * or the host errno the client gets. */
int request_validate(const struct export *exp, const struct nbd_request *req, bool structured,
                     bool meta);
/* Converts a host errno into the NBD error sent on the wire. */
uint32_t nbd_errno(int err);
/* Name of an NBD command, for messages. */
const char *nbd_cmd_name(uint16_t type);

/* handshake.c */
/* What the client negotiated. */
struct conn_params {
  struct export *exp;   /* the export chosen */
  bool structured;      /* NBD_OPT_STRUCTURED_REPLY acknowledged */
  bool meta;            /* base:allocation selected (context id 1) */
};
/* Runs the fixed newstyle negotiation on blocking socket FD, giving up after
 * TIMEOUT seconds in all (0: never). Returns 1 when the client entered
 * transmission (P filled), 0 when it left cleanly, -1 on error (logged). */
int handshake(int fd, int timeout, struct conn_params *p);
/* The one meta context id blockd hands out: base:allocation. */
#define META_BASE_ALLOCATION_ID 1

/* pool.c */
struct worker;
/* A blocking job run on the pool; its worker is told when it is done. */
struct pool_job {
  void (*run)(struct pool_job *job); /* runs on a pool thread */
  struct worker *worker;             /* worker to hand the job back to */
  struct pool_job *next;             /* queue link, owned by the pool */
};
/* Starts N blocking threads. Returns 0 or -1 after logging. */
int pool_start(unsigned n);
/* Queues the N jobs linked from FIRST to LAST (through ->next); when a job's
 * ->run has returned, it goes back to its ->worker. */
void pool_submit_batch(struct pool_job *first, struct pool_job *last, unsigned n);
/* Stops the pool after the queued jobs have run. */
void pool_stop(void);

/* worker.c */
/* What workers enforce on their connections. */
struct worker_limits {
  uint64_t max_memory;         /* payload bytes of all connections together */
  unsigned stall_timeout;      /* seconds: unread replies, unfinished requests */
  unsigned idle_timeout;       /* seconds without a request, 0: none */
};
/* Starts N worker threads, each with its own io_uring. Returns 0 or -1. */
int workers_start(unsigned n, const struct worker_limits *limits);
/* Hands a negotiated connection to the least loaded worker. */
void workers_add_conn(int fd, const struct conn_params *p);
/* Finishes every request in flight, closes the connections and stops the workers. */
void workers_stop(void);
/* Hands a finished pool job back to its worker (called from pool threads). */
void worker_job_done(struct worker *w, struct pool_job *job);
/* Serves one connection on the calling thread until it closes: handshake,
 * then transmission on a private io_uring. Used by the fuzzer. Returns 0 or -1. */
int worker_serve_one(int fd);

/* buffer.c */
#define BUFFER_MIN 4096                 /* smallest buffer, and alignment */
#define BUFFER_CLASSES 14               /* 4 KiB .. 32 MiB */
#define BUFFER_CACHE_MAX (16u << 20)    /* bytes a worker keeps for reuse */
/* A worker's cache of free payload buffers, by power-of-two size class. */
struct buffer_cache {
  void *free[BUFFER_CLASSES];   /* singly linked through each buffer's first word */
  size_t cached;                /* bytes held in the lists */
};
/* Returns a buffer of at least LEN bytes, page-aligned, or NULL. */
void *buffer_alloc(struct buffer_cache *bc, size_t len);
/* Gives back a buffer of LEN bytes (as asked of buffer_alloc); NULL is fine. */
void buffer_free(struct buffer_cache *bc, void *buf, size_t len);
/* Frees every cached buffer. */
void buffer_cache_clear(struct buffer_cache *bc);

/* worker.c, conn.c, dispatch.c: the transmission phase. */
/* Tags in the low bits of an io_uring user_data, which otherwise holds a pointer. */
enum uring_tag {
  TAG_RECV = 1,  /* struct conn: receive into its buffer or a write payload */
  TAG_SEND = 2,  /* struct conn: sendmsg of queued replies */
  TAG_FILE = 3,  /* struct request: file operation of the fast path */
  TAG_EVENT = 4, /* struct worker: its eventfd fired */
  TAG_IGNORE = 5, /* cancellations: nothing to do */
  TAG_TICK = 6,  /* struct worker: its once-a-second timeout */
};
#define TAG_MASK UINT64_C(7)

/* One request of the transmission phase, from header to reply. */
struct request {
  struct conn *conn;           /* connection it came on */
  struct nbd_request h;        /* header, host byte order */
  char *buf;                   /* write payload, or read data */
  uint64_t done;               /* bytes moved so far by fast-path file I/O */
  struct fmt_map m;            /* file range of a fast-path operation */
  int err;                     /* host errno of the result, 0 on success */
  bool hole;                   /* read data is all zeroes: reply with OFFSET_HOLE */
  struct nbd_block_descriptor *extents; /* block status result, wire order */
  uint32_t nr_extents;         /* descriptors in extents */
  struct pool_job job;         /* slow path on the blocking pool */
  struct request *next;        /* send queue link */
  size_t reply_len;            /* bytes of the reply: header + payload */
  size_t sent;                 /* bytes of the reply already sent */
  struct iovec iov[2];         /* reply: header, payload */
  int niov;                    /* iovecs used: 1 or 2 */
  char hdr[40];                /* encoded reply header */
};

/* Replies gathered into one sendmsg at most. */
#define SEND_BATCH 32
/* Receive buffer of a connection. */
#define CONN_RBUF_SIZE (128 * 1024)

/* One client connection in the transmission phase; owned by one worker. */
struct conn {
  struct worker *w;            /* owner */
  int fd;                      /* the socket */
  struct conn_params p;        /* what the handshake negotiated */
  struct conn *prev, *next;    /* worker's list */
  char *rbuf;                  /* receive buffer of CONN_RBUF_SIZE bytes */
  size_t rstart;               /* first byte not yet parsed */
  size_t rend;                 /* end of the bytes received */
  struct request *payload;     /* write whose payload is being received directly */
  bool recv_posted;            /* a TAG_RECV is in the kernel */
  bool send_posted;            /* a TAG_SEND is in the kernel */
  bool read_closed;            /* no more requests: EOF, DISC, error or stop */
  bool dead;                   /* the socket failed: replies are dropped */
  bool stalled;                /* parsing paused for memory until replies drain */
  struct request *sq_head, *sq_tail; /* replies waiting to be sent, in order */
  struct iovec siov[2 * SEND_BATCH]; /* iovecs of the posted send */
  struct msghdr msg;           /* the posted send */
  unsigned nr_requests;        /* requests alive (parsed, not yet freed) */
  size_t nr_bytes;             /* payload bytes held by those requests */
  bool budget_waiting;         /* queued for the worker's memory budget */
  uint32_t budget_need;        /* payload bytes of the request that waits */
  time_t budget_since;         /* when it began to wait (worker clock) */
  struct conn *wprev, *wnext;  /* links in that queue */
  time_t recv_at;              /* when a receive last brought bytes (worker clock) */
  time_t send_at;              /* when replies last moved, or began to wait */
};

/* A worker thread: one io_uring for the sockets and files of its connections. */
struct worker {
  pthread_t thread;            /* the thread (not for worker_serve_one) */
  sem_t started;               /* posted once the thread has set up its ring */
  int init_result;             /* 0, or -1 if it could not */
  struct io_uring ring;        /* submission and completion queues */
  int efd;                     /* eventfd: new connections, pool completions, stop */
  uint64_t efd_value;          /* target of the pending eventfd read */
  pthread_mutex_t lock;        /* protects incoming, done, stopping */
  struct conn *incoming;       /* connections handed over, not yet adopted */
  struct pool_job *done;       /* pool jobs finished, not yet replied to */
  bool stopping;               /* workers_stop was called (under lock) */
  bool draining;               /* the worker thread has seen stopping */
  unsigned nr_conns;           /* connections owned, for load balancing (atomic) */
  struct conn *conns;          /* connections owned */
  struct buffer_cache buffers; /* payload buffers for reuse */
  uint64_t mem_limit;          /* payload bytes its connections may hold together */
  uint64_t mem_used;           /* payload bytes they hold now */
  struct conn *wait_head, *wait_tail; /* connections waiting for the budget, FIFO */
  struct conn *budget_turn;    /* the waiter allowed one request now */
  unsigned stall_timeout;      /* seconds: unread replies, unfinished requests */
  unsigned idle_timeout;       /* seconds without a request, 0: none */
  time_t now;                  /* CLOCK_MONOTONIC seconds, once per loop pass */
  time_t next_tick;            /* when the connections' clocks are checked next */
  struct __kernel_timespec tick; /* the timeout that wakes the loop for that */
  struct pool_job *to_pool;    /* jobs for the pool, handed over once per loop pass */
  struct pool_job *to_pool_tail;
  unsigned nr_to_pool;         /* jobs in to_pool */
};

/* worker.c */
/* Returns an SQE of W's ring, submitting to make room if needed. */
struct io_uring_sqe *worker_sqe(struct worker *w);
/* Queues JOB for the pool; W hands its queue over before it next waits. */
void worker_to_pool(struct worker *w, struct pool_job *job);

/* conn.c */
/* Adopts socket FD with parameters P into W. Returns 0 or -1 (FD closed). */
int conn_new(struct worker *w, int fd, const struct conn_params *p);
/* Handles a TAG_RECV completion. */
void conn_recv_done(struct conn *c, int res);
/* Handles a TAG_SEND completion. */
void conn_send_done(struct conn *c, int res);
/* Queues REQ's encoded reply, or frees REQ if the socket is dead. */
void conn_reply(struct request *req);
/* Stops reading requests (EOF, DISC, error, shutdown); frees C when idle. */
void conn_close_read(struct conn *c);
/* Forces C off: shuts the socket so pending operations finish. */
void conn_abort(struct conn *c);
/* Answers requests already received with ESHUTDOWN, then stops reading. */
void conn_drain(struct conn *c);
/* Lets connections waiting for W's memory budget go on, in turn. */
void conn_budget_resume(struct worker *w);
/* Drops C if it broke a time limit at NOW. May free C. */
void conn_tick(struct conn *c, time_t now, unsigned stall, unsigned idle);

/* dispatch.c */
/* Starts a validated request (or replies to a request with an error). */
void dispatch(struct request *req);
/* Handles a TAG_FILE completion. */
void dispatch_file_done(struct request *req, int res);
/* Finishes a request that came back from the pool. */
void dispatch_job_done(struct pool_job *job);
/* Encodes REQ's reply into REQ->iov. */
void reply_encode(struct request *req);

/* limits.c */
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
/* Connections open now. */
unsigned limits_conn_count(void);

/* listen.c */
/* Binds the listening socket(s) of O. Returns 0 or -1 after logging. */
int listen_open(const struct options *o);
/* Starts the thread that accepts connections and runs their handshakes. */
int listen_start(void);
/* Stops accepting, closes the sockets, unlinks the unix socket. */
void listen_stop(void);

#endif

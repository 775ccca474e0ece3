/* blockd's NBD front end: what each file of nbd/ exports, file by file.
 *
 * listen.c accepts clients and runs each negotiation (handshake.c) on a
 * thread of its own; a negotiated connection is handed to a worker, where
 * conn.c reads requests off the socket, turns each into the core's struct
 * io_req, and sends the replies that reply.c encodes. request.c validates
 * requests once, at the edge, and maps errors onto NBD's. The wire format is
 * protocol.h.
 */
#ifndef BLOCKD_NBD_H
#define BLOCKD_NBD_H

#include <sys/types.h>

#include "core.h"
#include "protocol.h"

/* Seconds a client may take over its whole handshake. */
#define NBD_HANDSHAKE_TIMEOUT 10
/* Requests a connection may have alive at once. */
#define NBD_CONN_MAX_REQUESTS 256
/* Default seconds a client may leave replies unread or a request unfinished. */
#define NBD_STALL_TIMEOUT 30
/* The one meta context id blockd hands out: base:allocation. */
#define META_BASE_ALLOCATION_ID 1

/* request.c */
/* Transmission flags advertised for export E. */
uint16_t nbd_eflags(const struct export *e);
/* The description clients see for E: format and mode, never a host path. */
const char *nbd_description(const struct export *e, char *buf, size_t len);
/* Checks a request header's framing. Returns 0, or -1 if the connection must
 * be dropped (bad magic, payload over the maximum), logging why. */
int request_check_framing(const struct nbd_request *req);
/* Validates a request (fields already in host order) against EXP. Returns 0
 * or the host errno the client gets. */
int request_validate(const struct export *exp, const struct nbd_request *req, bool structured,
                     bool meta);
/* Converts a host errno into the NBD error sent on the wire. */
uint32_t nbd_errno(int err);
/* Name of NBD option OPTION for messages ("NBD_OPT_GO"); an option blockd
 * does not know is written into BUF (NBD_OPT_NAME_MAX bytes) as its number. */
#define NBD_OPT_NAME_MAX 32
const char *nbd_opt_name(uint32_t option, char *buf, size_t len);
/* Name of an NBD command, for messages. */
const char *nbd_cmd_name(uint16_t type);

/* tls.c: TLS sessions, on non-blocking sockets */
/* --tls: what a client may or must do (proto.md's three server modes). */
enum tls_mode {
  TLS_OFF,      /* STARTTLS refused (NOTLS) */
  TLS_ON,       /* STARTTLS offered, plaintext allowed (SELECTIVETLS, no export TLS-only) */
  TLS_REQUIRE,  /* every option but STARTTLS and ABORT refused before TLS (FORCEDTLS) */
};
/* The TLS settings of the command line. */
struct tls_config {
  enum tls_mode mode;       /* --tls */
  const char *certificates; /* --tls-certificates DIR, or NULL */
  const char *psk;          /* --tls-psk FILE, or NULL */
  bool verify_peer;         /* --tls-verify-peer */
};
struct tls_session;
/* Loads the credentials CFG names. Returns 0, or -1 after logging. */
int tls_init(const struct tls_config *cfg);
/* Frees the credentials. */
void tls_fini(void);
/* The mode --tls chose. */
enum tls_mode tls_mode(void);
/* What the line at start says of TLS ("TLS required (PSK)"), or NULL: off. */
const char *tls_describe(void);
/* Starts a server session on socket FD (made non-blocking). NULL after logging. */
struct tls_session *tls_session_new(int fd);
/* Frees T (NULL is fine); its socket stays open. */
void tls_session_free(struct tls_session *t);
/* Runs the handshake on. Returns 0 once done, -EAGAIN to be called again
 * once the socket is ready for tls_wants(T), or -1 (tls_error says why). */
int tls_handshake(struct tls_session *t);
/* Reads up to LEN bytes. Returns how many, 0 at the client's EOF, -EAGAIN
 * (wait for tls_wants), or -1 (tls_error). */
ssize_t tls_recv(struct tls_session *t, void *buf, size_t len);
/* Sends up to LEN bytes. Returns how many, -EAGAIN (wait for tls_wants,
 * then call again with the same BUF and LEN), or -1 (tls_error). */
ssize_t tls_send(struct tls_session *t, const void *buf, size_t len);
/* What the socket must be ready for after -EAGAIN: POLLIN or POLLOUT. */
short tls_wants(const struct tls_session *t);
/* Whether the call that returned -1 failed because the client vanished. */
bool tls_peer_gone(const struct tls_session *t);
/* Sends close_notify if the socket takes it now. */
void tls_bye(struct tls_session *t);
/* Why the last call on T failed, for the log. */
const char *tls_error(const struct tls_session *t);

/* handshake.c */
/* What the client negotiated. */
struct conn_params {
  struct export *exp;   /* the export chosen */
  bool structured;      /* NBD_OPT_STRUCTURED_REPLY acknowledged */
  bool meta;            /* base:allocation selected (context id 1) */
  struct tls_session *tls; /* its TLS session until pump_start takes it, or NULL */
  bool pumped;          /* the socket is a TLS pump's socketpair */
  /* Gives the connection slot back when the worker closes the socket; NULL:
   * limits_conn_put. A TLS connection shares its slot with its pump. */
  void (*release)(void *arg);
  void *release_arg;    /* its argument */
};
/* Sends the greeting on FD without blocking. Returns 0 or -1. */
int handshake_greet(int fd);
/* Runs the fixed newstyle negotiation on blocking socket FD (its greeting
 * already sent if GREETED), giving up after TIMEOUT seconds in all (0:
 * never). Returns 1 when the client entered transmission (P filled), 0 when
 * it left cleanly, -1 on error (logged). */
int handshake(int fd, int timeout, bool greeted, struct conn_params *p);

/* negotiate.c */
/* Serves one connection on the calling thread until it closes: handshake,
 * then transmission on a private worker (the fuzzer). Returns 0 or -1. */
int nbd_serve_one(int fd);
/* Negotiations running at once; more clients wait, or the oldest is cut. */
#define NEGOTIATE_SLOTS 128
/* Sets every slot free; END_FN runs whenever a negotiation ends. */
void negotiate_init(void (*end_fn)(void));
/* Whether a slot is free. */
bool negotiate_slot_free(void);
/* Starts the negotiation of greeted FD (holding a connection slot) on a
 * thread; without a free slot FD is closed. Returns 0 or -1. */
int negotiate_start(int fd);
/* Shuts the oldest negotiation down to make room (one at a time). */
void negotiate_evict_oldest(void);
/* Cuts off every negotiation and waits for them to end. */
void negotiate_stop(void);

/* conn.c, reply.c: the transmission phase */
/* Reads from this size up to PIPE_BYTES go from the file to the socket
 * through a pipe, by page reference, never through blockd's memory (with
 * structured replies: an error found midway cannot be taken back in a
 * simple reply's stream, and a chunk can be cut short with an error). */
#define SPLICE_MIN (64 * 1024)
#define PIPE_BYTES (1024 * 1024)
/* Pipes a connection keeps for that. */
#define CONN_PIPES 8
/* A pipe a spliced read goes through. */
struct nbd_pipe {
  int r, w;                    /* its ends, -1 until made */
  unsigned size;               /* its capacity in bytes */
  bool busy;                   /* a request holds it */
  bool broken;                 /* could not be made or sized: never again */
};
/* One request, from header to reply. */
struct nbd_req {
  struct io_req io;            /* what the core runs */
  struct nbd_conn *conn;       /* connection it came on */
  struct nbd_request h;        /* header, host byte order */
  char *buf;                   /* write payload, or read data */
  uint32_t held;               /* budget bytes taken for it */
  struct nbd_pipe *pipe;       /* a spliced read's data, or NULL */
  struct iovec data;           /* buf as io's one buffer */
  uint64_t received;           /* payload bytes received so far (writes) */
  int err;                     /* host errno of the result, 0 on success */
  bool hole;                   /* read data is all zeroes: reply with OFFSET_HOLE */
  struct nbd_block_descriptor *extents; /* block status result, wire order */
  uint32_t nr_extents;         /* descriptors in extents */
  struct nbd_req *next;        /* send queue link */
  size_t reply_len;            /* bytes of the reply: header + payload (a spliced
                                * read's payload comes from the pipe, not iov) */
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
struct nbd_conn {
  struct client client;        /* as the worker sees it (first) */
  int fd;                      /* the socket */
  struct conn_params p;        /* what the handshake negotiated */
  char *rbuf;                  /* receive buffer of CONN_RBUF_SIZE bytes */
  size_t rstart;               /* first byte not yet parsed */
  size_t rend;                 /* end of the bytes received */
  struct nbd_req *payload;     /* write whose payload is being received directly */
  struct completion recv_comp; /* the posted receive */
  struct completion send_comp; /* the posted send */
  bool recv_posted;            /* a receive is in the kernel */
  bool send_posted;            /* a send is in the kernel */
  bool read_closed;            /* no more requests: EOF, DISC, error or stop */
  bool draining;               /* the server stops: answer ESHUTDOWN */
  bool dead;                   /* the client takes no replies: they are dropped */
  bool stalled;                /* parsing paused for memory until replies drain */
  struct nbd_req *sq_head, *sq_tail; /* replies waiting to be sent, in order */
  struct iovec siov[2 * SEND_BATCH]; /* iovecs of the posted send */
  struct msghdr msg;           /* the posted send */
  unsigned nr_requests;        /* requests alive (parsed, not yet freed) */
  struct nbd_pipe pipes[CONN_PIPES]; /* for spliced reads */
  bool send_spliced;           /* the posted send is a splice from a pipe */
  struct task send_task;       /* posts the send at the end of the worker's pass */
  bool send_queued;            /* send_task waits for the pass end */
  time_t recv_at;              /* when a receive last brought bytes (worker clock) */
  time_t send_at;              /* when replies last moved, or began to wait */
};

/* conn.c */
/* Gives back the connection slot of a connection negotiated as P. */
void nbd_conn_release(const struct conn_params *p);
/* Adopts socket FD with parameters P into worker W (picked for it with
 * workers_pick). Returns 0 or -1 (FD closed). */
int nbd_conn_new(struct worker *w, int fd, const struct conn_params *p);

/* reply.c */
/* Encodes REQ's reply into REQ->iov, for a connection with STRUCTURED replies. */
void reply_encode(struct nbd_req *req, bool structured);

/* pump.c: a thread per TLS connection, between its session and a worker */
/* Sets the seconds a TLS client may leave replies unread (--stall-timeout). */
void pump_init(unsigned stall_timeout);
/* Starts the pump of client socket FD with session TLS (P->tls is then
 * NULL, P->pumped set); sets P->release.
 * Returns the socket to hand the worker, or -1 after logging (FD closed,
 * TLS freed, the slot given back). */
int pump_start(int fd, struct tls_session *tls, struct conn_params *p);
/* Lets every pump hand its client the last replies (a few seconds at
 * most), then cuts the rest off; returns once every pump has ended. */
void pump_stop(void);

/* listen.c */
/* One --listen HOST:PORT. */
struct listen_spec {
  char *host;                   /* host part; "127.0.0.1" when left out */
  char *port;                   /* port part */
};
/* Binds the listening socket(s): the unix socket PATH, or every address of
 * the NR (host, port) pairs. Returns 0 or -1 after logging. */
int listen_open(const char *path, const struct listen_spec *tcp, size_t nr);
/* Serves on the NR listening sockets FDS passed by socket activation: they
 * are closed at stop, never unlinked. Returns 0 or -1 after logging. */
int listen_adopt(const int *fds, size_t nr);
/* Number of listening sockets, and the I-th one (-1 past the end). */
size_t listen_count(void);
int listen_get(size_t i);
/* Starts the thread that accepts connections and runs their handshakes. */
int listen_start(void);
/* Stops accepting, closes the sockets, unlinks the unix socket. */
void listen_stop(void);

/* uri.c */
/* The NBD URI (NetworkBlockDevice/nbd doc/uri.md) of export NAME on the
 * listening socket FD, from the address it is bound to:
 * nbd+unix:///NAME?socket=PATH or nbd://HOST:PORT/NAME, percent-encoded
 * (nbds under --tls=require); a wildcard address becomes the loopback one.
 * Malloc'd, or NULL (logged). */
char *uri_make(int fd, const char *name);
/* Where the listening socket FD is, for messages: "unix socket PATH" or
 * "HOST:PORT". Malloc'd, or NULL (logged). */
char *uri_where(int fd);

#endif

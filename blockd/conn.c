/* A connection in the transmission phase: parsing requests out of the
 * socket, and sending replies back in batches, possibly out of order. */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"

/* Compact the receive buffer when less than this is free at its end. */
#define RBUF_COMPACT_AT 4096

/* Payload bytes a request holds in memory while it is alive. */
static uint32_t held_bytes(const struct nbd_request *h, int err)
{
  /* A write's payload must be read even if the write is refused; a refused
   * read needs no buffer (and may ask for 4 GiB). */
  return h->type == NBD_CMD_WRITE || (h->type == NBD_CMD_READ && err == 0) ? h->count : 0;
}

/* Payload bytes one connection of W may hold: its fair share of W's budget,
 * and never more than BLOCKD_CONN_MAX_BYTES. */
static uint64_t conn_share(const struct worker *w)
{
  uint64_t share = w->mem_limit / (w->nr_conns ? w->nr_conns : 1);

  if (share < BLOCKD_CONN_MIN_SHARE)
    share = BLOCKD_CONN_MIN_SHARE;
  return share < BLOCKD_CONN_MAX_BYTES ? share : BLOCKD_CONN_MAX_BYTES;
}

/* Queues C, which waits for NEED bytes of W's budget, behind the others. */
static void budget_wait(struct conn *c, uint32_t need)
{
  struct worker *w = c->w;

  c->budget_need = need;
  if (c->budget_waiting)
    return;
  c->budget_waiting = true;
  c->budget_since = w->now;
  c->wnext = NULL;
  c->wprev = w->wait_tail;
  if (w->wait_tail)
    w->wait_tail->wnext = c;
  else
    w->wait_head = c;
  w->wait_tail = c;
}

/* Takes C off its worker's queue of connections waiting for budget. */
static void budget_unwait(struct conn *c)
{
  struct worker *w = c->w;

  if (!c->budget_waiting)
    return;
  if (c->wprev)
    c->wprev->wnext = c->wnext;
  else
    w->wait_head = c->wnext;
  if (c->wnext)
    c->wnext->wprev = c->wprev;
  else
    w->wait_tail = c->wprev;
  c->wprev = c->wnext = NULL;
  c->budget_waiting = false;
}

/* Whether C may take another request holding NEED payload bytes. Three
 * bounds: requests per connection; the connection's fair share of its
 * worker's budget (one request is always allowed, so a single maximal write
 * never deadlocks); and the worker's budget itself. While others wait for
 * the budget, a request waits in line too (conn_budget_resume picks whose
 * turn it is). Returns false, with C queued if it waits for the budget
 * (else it waits for its own replies to drain). */
static bool has_room(struct conn *c, uint32_t need)
{
  struct worker *w = c->w;

  if (c->nr_requests >= BLOCKD_CONN_MAX_REQUESTS)
    return false;
  if (need == 0)
    return true;
  if (c->nr_requests > 0 && c->nr_bytes + need > conn_share(w))
    return false;
  if (w->mem_used + need <= w->mem_limit && (w->wait_head == NULL || w->budget_turn == c)) {
    w->budget_turn = NULL; /* one request a turn */
    return true;
  }
  /* A client with replies still to take waits for them, not in line: one
   * that never reads must not be handed each byte freed for others. */
  if (c->sq_head != NULL)
    return false;
  budget_wait(c, need);
  return false;
}

/* The waiter whose turn it is: the one waiting longest once it has waited
 * two stall timeouts, else the one needing least. Clients that pin memory by
 * never reading their replies pin big buffers (small replies fit in socket
 * buffers and free theirs), so small requests first keeps real clients
 * moving, and the age rule keeps big ones from starving. */
static struct conn *budget_pick(const struct worker *w)
{
  struct conn *best = w->wait_head;

  if (w->now - best->budget_since >= 2 * (time_t)w->stall_timeout)
    return best;
  for (struct conn *c = best->wnext; c; c = c->wnext)
    if (c->budget_need < best->budget_need)
      best = c;
  return best;
}

/* Frees C once nothing refers to it any more. */
static void conn_maybe_free(struct conn *c)
{
  struct worker *w = c->w;

  if (!c->read_closed || c->recv_posted || c->send_posted || c->nr_requests > 0)
    return;
  if (c->sq_head != NULL && !c->dead)
    return;
  debug("connection %d closed", c->fd);
  budget_unwait(c);
  close(c->fd);
  if (c->prev)
    c->prev->next = c->next;
  else
    w->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  __atomic_sub_fetch(&w->nr_conns, 1, __ATOMIC_RELAXED);
  limits_conn_put();
  free(c->rbuf);
  free(c);
}

/* Frees a request whose reply is sent or dropped. */
static void request_free(struct request *req)
{
  struct conn *c = req->conn;

  c->nr_requests--;
  if (req->buf) {
    c->nr_bytes -= req->h.count;
    c->w->mem_used -= req->h.count;
    buffer_free(&c->w->buffers, req->buf, req->h.count);
  }
  free(req->extents);
  free(req);
}

/* Posts a receive: into the write payload being read, else into the buffer. */
static void post_recv(struct conn *c)
{
  struct io_uring_sqe *sqe;
  void *dst;
  size_t len;

  if (c->recv_posted || c->read_closed || c->dead)
    return;
  if (c->payload) {
    dst = c->payload->buf + c->payload->done;
    len = c->payload->h.count - c->payload->done;
  }
  else {
    if (c->stalled || c->rend == CONN_RBUF_SIZE)
      return;
    dst = c->rbuf + c->rend;
    len = CONN_RBUF_SIZE - c->rend;
  }
  sqe = worker_sqe(c->w);
  io_uring_prep_recv(sqe, c->fd, dst, len, 0);
  sqe->user_data = (uint64_t)(uintptr_t)c | TAG_RECV;
  c->recv_posted = true;
}

/* The host errno a request with header H gets before it runs, 0 if none. */
static int request_precheck(const struct conn *c, const struct nbd_request *h)
{
  /* proto.md: requests that arrive while the server shuts down SHOULD get
   * ESHUTDOWN, so the client knows to disconnect rather than retry. */
  return c->w->draining ? ESHUTDOWN : request_validate(c->p.exp, h, c->p.structured, c->p.meta);
}

/* Allocates a request for header H, whose precheck gave ERR; NULL if out of
 * memory. */
static struct request *request_new(struct conn *c, const struct nbd_request *h, int err)
{
  struct request *req = calloc(1, sizeof *req);

  if (req == NULL)
    return NULL;
  req->conn = c;
  req->h = *h;
  req->err = err;
  if (held_bytes(h, err) > 0) {
    req->buf = buffer_alloc(&c->w->buffers, h->count);
    if (req->buf == NULL) {
      free(req);
      return NULL;
    }
  }
  c->nr_requests++;
  if (req->buf) {
    c->nr_bytes += h->count;
    c->w->mem_used += h->count;
  }
  return req;
}

/* Decodes the request header at the start of the unparsed bytes. */
static void peek_header(const struct conn *c, struct nbd_request *h)
{
  memcpy(h, c->rbuf + c->rstart, sizeof *h);
  h->magic = be32toh(h->magic);
  h->flags = be16toh(h->flags);
  h->type = be16toh(h->type);
  h->cookie = be64toh(h->cookie);
  h->offset = be64toh(h->offset);
  h->count = be32toh(h->count);
}

/* Parses every complete request in the receive buffer, then reads more.
 * May free C. */
static void parse(struct conn *c)
{
  bool draining = c->w->draining;

  c->stalled = false;
  while (!c->read_closed && c->payload == NULL) {
    size_t avail = c->rend - c->rstart;
    struct nbd_request h;
    struct request *req;
    int err;

    if (avail < sizeof h)
      break;
    peek_header(c, &h);
    if (request_check_framing(&h) < 0) {
      conn_close_read(c);
      return;
    }
    if (h.type == NBD_CMD_DISC) {
      debug("client sent disconnect");
      conn_close_read(c);
      return;
    }
    /* Bounded memory: wait for replies to drain before taking more. */
    err = request_precheck(c, &h);
    if (!has_room(c, held_bytes(&h, err)) && !draining) {
      c->stalled = true;
      break;
    }
    /* While draining, only writes whose payload is already here are taken. */
    if (draining && h.type == NBD_CMD_WRITE && avail - sizeof h < h.count)
      break;
    c->rstart += sizeof h;
    avail -= sizeof h;
    req = request_new(c, &h, err);
    if (req == NULL) {
      nbd_log("out of memory for a %" PRIu32 "-byte %s: dropping the connection", h.count,
              nbd_cmd_name(h.type));
      conn_close_read(c);
      return;
    }
    if (h.type == NBD_CMD_WRITE) {
      size_t n = avail < h.count ? avail : h.count;

      memcpy(req->buf, c->rbuf + c->rstart, n);
      c->rstart += n;
      req->done = n;
      if (n < h.count) {
        /* The rest goes straight from the socket into the request. */
        c->payload = req;
        break;
      }
      req->done = 0;
    }
    dispatch(req);
  }
  if (draining) {
    conn_close_read(c);
    return;
  }
  if (c->rstart == c->rend)
    c->rstart = c->rend = 0;
  else if (c->rstart > 0 && CONN_RBUF_SIZE - c->rend < RBUF_COMPACT_AT) {
    memmove(c->rbuf, c->rbuf + c->rstart, c->rend - c->rstart);
    c->rend -= c->rstart;
    c->rstart = 0;
  }
  post_recv(c);
}

/* Lets the connections that wait for W's budget take requests again, one
 * request a turn, while it lasts. */
void conn_budget_resume(struct worker *w)
{
  while (w->wait_head != NULL) {
    struct conn *c = budget_pick(w);

    if (w->mem_used + c->budget_need > w->mem_limit)
      break;
    budget_unwait(c);
    w->budget_turn = c;
    parse(c);
    w->budget_turn = NULL;
  }
}

/* Drops C if it broke a time limit at NOW (monotonic seconds): replies
 * unread or a request left unfinished for STALL seconds, or no request at
 * all for IDLE seconds (0: no limit). May free C. */
void conn_tick(struct conn *c, time_t now, unsigned stall, unsigned idle)
{
  const char *why = NULL;

  if (c->dead || c->read_closed)
    return;
  if (c->sq_head != NULL && now - c->send_at >= (time_t)stall)
    why = "has not read its replies";
  else if ((c->payload != NULL || (c->rend > c->rstart && !c->stalled)) &&
           now - c->recv_at >= (time_t)stall)
    why = "left a request unfinished";
  else if (idle > 0 && c->nr_requests == 0 && c->rend == c->rstart &&
           now - c->recv_at >= (time_t)idle) {
    debug("export '%s': connection idle for %u s: closing it", c->p.exp->name, idle);
    conn_abort(c);
    return;
  }
  if (why != NULL) {
    nbd_log("export '%s': client %s for %u s: dropping it", c->p.exp->name, why, stall);
    conn_abort(c);
  }
}

/* Adopts socket FD with parameters P into W. Returns 0 or -1 (FD closed). */
int conn_new(struct worker *w, int fd, const struct conn_params *p)
{
  struct conn *c = calloc(1, sizeof *c);

  if (c == NULL || (c->rbuf = malloc(CONN_RBUF_SIZE)) == NULL) {
    free(c);
    close(fd);
    __atomic_sub_fetch(&w->nr_conns, 1, __ATOMIC_RELAXED);
    limits_conn_put();
    nbd_log("out of memory for a new connection");
    return -1;
  }
  c->w = w;
  c->fd = fd;
  c->p = *p;
  c->recv_at = c->send_at = w->now;
  c->next = w->conns;
  if (w->conns)
    w->conns->prev = c;
  w->conns = c;
  if (w->draining)
    conn_close_read(c);
  else
    post_recv(c);
  return 0;
}

/* Handles a TAG_RECV completion. May free C. */
void conn_recv_done(struct conn *c, int res)
{
  c->recv_posted = false;
  if (c->read_closed) {
    /* A receive that raced with our cancel: whatever it got is dropped. */
    conn_close_read(c);
    return;
  }
  if (res == -EINTR || res == -EAGAIN) {
    post_recv(c);
    return;
  }
  if (res <= 0) {
    if (res < 0 && res != -ECONNRESET) {
      errno = -res;
      nbd_log("export '%s': recv: %m", c->p.exp->name);
    }
    else if (c->payload || c->rend > c->rstart)
      nbd_log("export '%s': client closed the connection in the middle of a request",
              c->p.exp->name);
    conn_close_read(c);
    return;
  }
  c->recv_at = c->w->now;
  if (c->payload) {
    struct request *req = c->payload;

    req->done += (uint64_t)res;
    if (req->done < req->h.count) {
      post_recv(c);
      return;
    }
    c->payload = NULL;
    req->done = 0;
    dispatch(req);
  }
  else
    c->rend += (size_t)res;
  parse(c);
}

/* Stops reading requests (EOF, DISC, error, shutdown); frees C when idle. */
void conn_close_read(struct conn *c)
{
  c->read_closed = true;
  if (c->recv_posted) {
    /* The kernel may still be writing into the payload buffer: keep it until
     * the receive completes (conn_recv_done comes back here). */
    struct io_uring_sqe *sqe = worker_sqe(c->w);

    io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)c | TAG_RECV, 0);
    sqe->user_data = TAG_IGNORE;
    return;
  }
  if (c->payload) {
    /* A write cut short is never acknowledged; drop it. */
    request_free(c->payload);
    c->payload = NULL;
  }
  conn_maybe_free(c);
}

/* Forces C off: shuts the socket so pending operations finish. May free C. */
void conn_abort(struct conn *c)
{
  c->dead = true;
  shutdown(c->fd, SHUT_RDWR);
  /* Replies not yet handed to the kernel will never be sent. */
  if (!c->send_posted) {
    while (c->sq_head) {
      struct request *req = c->sq_head;

      c->sq_head = req->next;
      request_free(req);
    }
    c->sq_tail = NULL;
  }
  conn_close_read(c); /* last: it may free C */
}

/* Begins the shutdown of C: requests already received are answered with
 * ESHUTDOWN, then reading stops. May free C. */
void conn_drain(struct conn *c)
{
  if (c->read_closed)
    return;
  if (c->payload) {
    conn_close_read(c);
    return;
  }
  parse(c);
}

/* Posts one sendmsg with up to SEND_BATCH queued replies. */
static void post_send(struct conn *c)
{
  struct io_uring_sqe *sqe;
  unsigned n = 0, iovs = 0;

  if (c->send_posted || c->sq_head == NULL || c->dead)
    return;
  for (struct request *req = c->sq_head; req && n < SEND_BATCH; req = req->next, n++) {
    size_t skip = req->sent;

    for (int i = 0; i < req->niov; i++) {
      if (skip >= req->iov[i].iov_len) {
        skip -= req->iov[i].iov_len;
        continue;
      }
      c->siov[iovs].iov_base = (char *)req->iov[i].iov_base + skip;
      c->siov[iovs].iov_len = req->iov[i].iov_len - skip;
      iovs++;
      skip = 0;
    }
  }
  memset(&c->msg, 0, sizeof c->msg);
  c->msg.msg_iov = c->siov;
  c->msg.msg_iovlen = iovs;
  sqe = worker_sqe(c->w);
  io_uring_prep_sendmsg(sqe, c->fd, &c->msg, MSG_NOSIGNAL);
  sqe->user_data = (uint64_t)(uintptr_t)c | TAG_SEND;
  c->send_posted = true;
}

/* Handles a TAG_SEND completion: frees what was sent. May free C. */
void conn_send_done(struct conn *c, int res)
{
  size_t left;

  c->send_posted = false;
  if (res == -EINTR || res == -EAGAIN)
    res = 0;
  else if (res < 0) {
    if (res != -EPIPE && res != -ECONNRESET) {
      errno = -res;
      nbd_log("export '%s': send: %m", c->p.exp->name);
    }
    conn_abort(c);
    return;
  }
  if (res > 0)
    c->send_at = c->w->now;
  left = (size_t)res;
  while (c->sq_head) {
    struct request *req = c->sq_head;
    size_t rest = req->reply_len - req->sent;

    if (left < rest) {
      req->sent += left;
      break;
    }
    left -= rest;
    c->sq_head = req->next;
    if (c->sq_head == NULL)
      c->sq_tail = NULL;
    request_free(req);
  }
  if (c->dead) {
    conn_abort(c);
    return;
  }
  post_send(c);
  if (c->stalled && !c->read_closed) {
    parse(c);
    return;
  }
  conn_maybe_free(c);
}

/* Queues REQ's encoded reply, or frees REQ if the socket is dead. May free
 * the connection. */
void conn_reply(struct request *req)
{
  struct conn *c = req->conn;

  if (c->dead) {
    request_free(req);
    conn_maybe_free(c);
    return;
  }
  reply_encode(req);
  req->next = NULL;
  if (c->sq_tail)
    c->sq_tail->next = req;
  else {
    c->sq_head = req;
    c->send_at = c->w->now; /* the client has had nothing to read till now */
  }
  c->sq_tail = req;
  post_send(c);
}

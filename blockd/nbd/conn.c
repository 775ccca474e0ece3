/* A connection in the transmission phase: parsing requests out of the
 * socket into the core's requests, and sending replies back in batches,
 * possibly out of order. All of it runs on the connection's worker. */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "nbd.h"

/* Compact the receive buffer when less than this is free at its end. */
#define RBUF_COMPACT_AT 4096
/* Most descriptors one block status reply carries. */
#define MAX_EXTENTS 1024
/* Smallest all-zero read answered with OFFSET_HOLE instead of its data. */
#define HOLE_REPLY_MIN 4096

static void parse(struct nbd_conn *c);
static void send_soon(struct nbd_conn *c);

/* Payload bytes a request with header H, whose precheck gave ERR, holds in
 * memory: a write's payload must be read even if the write is refused; a
 * refused read needs no buffer (and may ask for 4 GiB). */
static uint32_t held_bytes(const struct nbd_request *h, int err)
{
  return h->type == NBD_CMD_WRITE || (h->type == NBD_CMD_READ && err == 0) ? h->count : 0;
}

/* Closes pipe P's ends; it is made again when next wanted. */
static void pipe_close(struct nbd_pipe *p)
{
  if (p->r >= 0)
    close(p->r);
  if (p->w >= 0)
    close(p->w);
  p->r = p->w = -1;
}

/* A free pipe of C that holds PIPE_BYTES, made if need be; NULL if none. */
static struct nbd_pipe *pipe_get(struct nbd_conn *c)
{
  for (int i = 0; i < CONN_PIPES; i++) {
    struct nbd_pipe *p = &c->pipes[i];
    int fds[2];

    if (p->busy || p->broken)
      continue;
    if (p->r < 0) {
      if (pipe2(fds, O_CLOEXEC) == -1)
        return NULL; /* out of descriptors: copy instead, for now */
      p->r = fds[0];
      p->w = fds[1];
      /* Room for a whole read, which needs one more page when it does not
       * start on a page boundary (the kernel rounds up to a power of two
       * pages); the default 64 KiB would cut it up. Beyond the system's
       * pipe limits, this connection copies instead. */
      int size = fcntl(p->w, F_SETPIPE_SZ, PIPE_BYTES + 4096);

      if (size < 0)
        size = fcntl(p->w, F_SETPIPE_SZ, PIPE_BYTES);
      if (size < PIPE_BYTES) {
        pipe_close(p);
        p->broken = true;
        continue;
      }
      p->size = (unsigned)size;
    }
    p->busy = true;
    return p;
  }
  return NULL;
}

/* Frees C once nothing refers to it any more. */
static void conn_maybe_free(struct nbd_conn *c)
{
  if (!c->read_closed || c->recv_posted || c->send_posted || c->send_queued ||
      c->nr_requests > 0)
    return;
  if (c->sq_head != NULL && !c->dead)
    return;
  debug("connection %d closed", c->fd);
  client_remove(&c->client);
  close(c->fd);
  for (int i = 0; i < CONN_PIPES; i++)
    pipe_close(&c->pipes[i]);
  nbd_conn_release(&c->p);
  free(c->rbuf);
  free(c);
}

/* Frees a request whose reply is sent or dropped. */
static void request_free(struct nbd_req *req)
{
  struct nbd_conn *c = req->conn;

  c->nr_requests--;
  budget_put(&c->client, req->held);
  if (req->buf)
    buffer_free(&c->client.w->buffers, req->buf, req->h.count);
  if (req->pipe) {
    /* A reply cut short (or never made) may have left data in it: never
     * reuse that. */
    if (req->reply_len == 0 || req->sent < req->reply_len)
      pipe_close(req->pipe);
    req->pipe->busy = false;
  }
  free(req->extents);
  free(req);
}

/* Posts a receive: into the write payload being read, else into the buffer. */
static void post_recv(struct nbd_conn *c)
{
  struct io_uring_sqe *sqe;
  void *dst;
  size_t len;

  if (c->recv_posted || c->read_closed)
    return;
  if (c->payload) {
    dst = c->payload->buf + c->payload->received;
    len = c->payload->h.count - c->payload->received;
  }
  else {
    if (c->stalled || c->rend == CONN_RBUF_SIZE)
      return;
    dst = c->rbuf + c->rend;
    len = CONN_RBUF_SIZE - c->rend;
  }
  sqe = worker_sqe(c->client.w);
  io_uring_prep_recv(sqe, c->fd, dst, len, 0);
  sqe_set_completion(sqe, &c->recv_comp);
  c->recv_posted = true;
}

/* Stops reading requests (EOF, DISC, error, shutdown); frees C when idle. */
static void conn_close_read(struct nbd_conn *c)
{
  c->read_closed = true;
  if (c->recv_posted) {
    /* The kernel may still be writing into the payload buffer: keep it until
     * the receive completes (recv_done comes back here). */
    struct io_uring_sqe *sqe = worker_sqe(c->client.w);

    io_uring_prep_cancel(sqe, &c->recv_comp, 0);
    sqe_set_completion(sqe, &completion_ignore);
    return;
  }
  if (c->payload) {
    /* A write cut short is never acknowledged; drop it. */
    request_free(c->payload);
    c->payload = NULL;
  }
  conn_maybe_free(c);
}

/* Frees the replies queued and not yet handed to the kernel. */
static void drop_replies(struct nbd_conn *c)
{
  if (c->send_posted)
    return;
  while (c->sq_head) {
    struct nbd_req *req = c->sq_head;

    c->sq_head = req->next;
    request_free(req);
  }
  c->sq_tail = NULL;
}

/* Forces C off: shuts the socket so pending operations finish. May free C. */
static void conn_abort(struct nbd_conn *c)
{
  c->dead = true;
  shutdown(c->fd, SHUT_RDWR);
  /* Replies not yet handed to the kernel will never be sent. */
  drop_replies(c);
  conn_close_read(c); /* last: it may free C */
}

/* Replies were freed: parsing goes on if it paused for the room they held,
 * else C is freed if it is done. May free C. */
static void conn_resume(struct nbd_conn *c)
{
  if (c->stalled && !c->read_closed)
    parse(c);
  else
    conn_maybe_free(c);
}

/* The client takes no more replies (its end is closed) but what it sent
 * before closing is still to be read: a client may close right behind
 * NBD_CMD_DISC, and the writes it sent first must still be carried out
 * (proto.md: the server handles all outstanding requests). Replies are
 * dropped from now on; reading goes on to EOF or DISC. May free C. */
static void conn_replies_gone(struct nbd_conn *c)
{
  c->dead = true;
  drop_replies(c);
  conn_resume(c);
}

/* Queues REQ's encoded reply, or frees REQ if the client takes no more
 * replies. May free the connection. */
static void conn_reply(struct nbd_req *req)
{
  struct nbd_conn *c = req->conn;

  if (c->dead) {
    request_free(req);
    conn_resume(c);
    return;
  }
  /* An all-zero read costs a 12-byte chunk instead of its data. */
  if (req->h.type == NBD_CMD_READ && req->err == 0 && c->p.structured && req->buf != NULL &&
      req->h.count >= HOLE_REPLY_MIN && fmt_is_zero(req->buf, req->h.count))
    req->hole = true;
  reply_encode(req, c->p.structured);
  req->next = NULL;
  if (c->sq_tail)
    c->sq_tail->next = req;
  else {
    c->sq_head = req;
    c->send_at = c->client.w->now; /* the client has had nothing to read till now */
  }
  c->sq_tail = req;
  send_soon(c);
}

static void dispatch(struct nbd_req *req);

/* A spliced read finished: its pipe holds the data, or the range reads as
 * zeroes, or it must be read into memory after all. */
static void splice_done(struct nbd_req *req)
{
  struct nbd_conn *c = req->conn;
  struct io_req *io = &req->io;

  if (io->err == 0 && !io->zero) {
    conn_reply(req);
    return;
  }
  /* The pipe is of no use to this request any more. */
  if (io->moved > 0 || (io->err != 0 && io->err != EAGAIN))
    pipe_close(req->pipe); /* it may hold part of the range */
  req->pipe->busy = false;
  req->pipe = NULL;
  if (io->zero) {
    req->hole = true;
    conn_reply(req);
    return;
  }
  if (io->err != EAGAIN) {
    req->err = io->err;
    conn_reply(req);
    return;
  }
  /* Not one file range (an overlay's base, qcow2): through memory. */
  req->buf = buffer_alloc(&c->client.w->buffers, req->h.count);
  if (req->buf == NULL) {
    req->err = ENOMEM;
    conn_reply(req);
    return;
  }
  dispatch(req);
}

/* The core finished REQ's operation. */
static void io_done(struct io_req *io)
{
  struct nbd_req *req = container_of(io, struct nbd_req, io);

  if (io->op == IO_SPLICE) {
    splice_done(req);
    return;
  }
  req->err = io->err;
  /* The engine reported no extent at all for the range. */
  if (req->h.type == NBD_CMD_BLOCK_STATUS && req->err == 0 && req->nr_extents == 0)
    req->err = EIO;
  conn_reply(req);
}

/* Collects extents from the engine into wire descriptors (on a pool thread). */
static int add_extent(void *opaque, uint64_t offset, uint64_t length, uint32_t type)
{
  struct nbd_req *req = opaque;
  uint64_t end = req->h.offset + req->h.count;
  uint32_t flags = type & (NBD_STATE_HOLE | NBD_STATE_ZERO);

  if (offset >= end)
    return -1;
  if (length > end - offset)
    length = end - offset;
  if (req->nr_extents > 0 && be32toh(req->extents[req->nr_extents - 1].status_flags) == flags) {
    struct nbd_block_descriptor *last = &req->extents[req->nr_extents - 1];
    /* Descriptors are 32-bit; the request length is too, so this fits. */
    last->length = htobe32(be32toh(last->length) + (uint32_t)length);
  }
  else {
    if (req->nr_extents == MAX_EXTENTS)
      return -1;
    req->extents[req->nr_extents].length = htobe32((uint32_t)length);
    req->extents[req->nr_extents].status_flags = htobe32(flags);
    req->nr_extents++;
  }
  if (req->h.flags & NBD_CMD_FLAG_REQ_ONE)
    return -1;
  return 0;
}

/* Starts a validated request, or replies to one that failed validation. */
static void dispatch(struct nbd_req *req)
{
  const struct nbd_request *h = &req->h;
  struct io_req *io = &req->io;

  if (req->err != 0) {
    conn_reply(req);
    return;
  }
  io->w = req->conn->client.w;
  io->fmt = req->conn->p.exp->fmt;
  io->offset = h->offset;
  io->length = h->count;
  io->flags = (h->flags & NBD_CMD_FLAG_FUA) ? FMT_FUA : 0;
  io->done = io_done;
  switch (h->type) {
  case NBD_CMD_READ:
    if (req->pipe != NULL) {
      io->op = IO_SPLICE;
      io->pipe_fd = req->pipe->w;
      io->pipe_size = req->pipe->size;
      break;
    }
    __attribute__((fallthrough));
  case NBD_CMD_WRITE:
    io->op = h->type == NBD_CMD_READ ? IO_READ : IO_WRITE;
    req->data = (struct iovec){ .iov_base = req->buf, .iov_len = h->count };
    io->iov = &req->data;
    io->iovcnt = 1;
    break;
  case NBD_CMD_FLUSH:
    io->op = IO_FLUSH;
    break;
  case NBD_CMD_TRIM:
    io->op = IO_TRIM;
    break;
  case NBD_CMD_WRITE_ZEROES:
    io->op = IO_ZERO;
    if (!(h->flags & NBD_CMD_FLAG_NO_HOLE))
      io->flags |= FMT_MAY_TRIM;
    if (h->flags & NBD_CMD_FLAG_FAST_ZERO)
      io->flags |= FMT_FAST_ZERO;
    break;
  case NBD_CMD_CACHE:
    io->op = IO_CACHE;
    break;
  case NBD_CMD_BLOCK_STATUS:
    io->op = IO_EXTENTS;
    io->extent_fn = add_extent;
    io->extent_opaque = req;
    req->extents = malloc(MAX_EXTENTS * sizeof *req->extents);
    if (req->extents == NULL) {
      req->err = ENOMEM;
      conn_reply(req);
      return;
    }
    break;
  default:
    abort(); /* request_validate let nothing else through */
  }
  io_submit(io);
}

/* The host errno a request with header H gets before it runs, 0 if none. */
static int request_precheck(const struct nbd_conn *c, const struct nbd_request *h)
{
  /* proto.md: requests that arrive while the server shuts down SHOULD get
   * ESHUTDOWN, so the client knows to disconnect rather than retry. */
  return c->draining ? ESHUTDOWN : request_validate(c->p.exp, h, c->p.structured, c->p.meta);
}

/* Allocates a request for header H, whose precheck gave ERR and whose
 * payload bytes C has taken from the budget; NULL if out of memory. */
static struct nbd_req *request_new(struct nbd_conn *c, const struct nbd_request *h, int err)
{
  struct nbd_req *req = calloc(1, sizeof *req);
  uint32_t held = held_bytes(h, err);

  /* A large read goes through a pipe if one is free. Its budget is taken
   * all the same: the pipe pins as many page cache pages until sent. Not on
   * a TLS connection: its pump copies every byte into GnuTLS, so splicing
   * to the socketpair would save nothing and leave page cache pages pinned,
   * and changeable by later writes, in its queue for as long as the client
   * takes to read. */
  if (req != NULL && h->type == NBD_CMD_READ && err == 0 && c->p.structured && !c->p.pumped &&
      h->count >= SPLICE_MIN && h->count <= PIPE_BYTES)
    req->pipe = pipe_get(c);
  if (req != NULL && held > 0 && req->pipe == NULL) {
    req->buf = buffer_alloc(&c->client.w->buffers, h->count);
    if (req->buf == NULL) {
      free(req);
      req = NULL;
    }
  }
  if (req == NULL) {
    budget_put(&c->client, held);
    return NULL;
  }
  req->held = held;
  req->conn = c;
  req->h = *h;
  req->err = err;
  c->nr_requests++;
  return req;
}

/* Decodes the request header at the start of the unparsed bytes. */
static void peek_header(const struct nbd_conn *c, struct nbd_request *h)
{
  memcpy(h, c->rbuf + c->rstart, sizeof *h);
  h->magic = be32toh(h->magic);
  h->flags = be16toh(h->flags);
  h->type = be16toh(h->type);
  h->cookie = be64toh(h->cookie);
  h->offset = be64toh(h->offset);
  h->count = be32toh(h->count);
}

/* Whether C may take a request with header H now: its own limit on
 * requests, then the memory budget (core/budget.c). */
static bool has_room(struct nbd_conn *c, const struct nbd_request *h, int err)
{
  if (c->nr_requests >= NBD_CONN_MAX_REQUESTS)
    return false;
  return budget_take(&c->client, held_bytes(h, err), c->nr_requests, c->sq_head != NULL) ==
         BUDGET_OK;
}

/* Parses every complete request in the receive buffer, then reads more.
 * May free C. */
static void parse(struct nbd_conn *c)
{
  bool draining = c->draining;

  c->stalled = false;
  while (!c->read_closed && c->payload == NULL) {
    size_t avail = c->rend - c->rstart;
    struct nbd_request h;
    struct nbd_req *req;
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
    /* While draining, only writes whose payload is already here are taken. */
    if (draining && h.type == NBD_CMD_WRITE && avail - sizeof h < h.count)
      break;
    /* Bounded memory: wait for replies to drain, or for the budget. The
     * drain needs no budget: it takes only what is already here. */
    err = request_precheck(c, &h);
    if (draining)
      budget_charge(&c->client, held_bytes(&h, err));
    else if (!has_room(c, &h, err)) {
      c->stalled = true;
      break;
    }
    c->rstart += sizeof h;
    avail -= sizeof h;
    req = request_new(c, &h, err);
    if (req == NULL) {
      log_msg("out of memory for a %" PRIu32 "-byte %s: dropping the connection", h.count,
              nbd_cmd_name(h.type));
      conn_close_read(c);
      return;
    }
    if (h.type == NBD_CMD_WRITE) {
      size_t n = avail < h.count ? avail : h.count;

      if (n > 0) /* a zero-length write has no buffer */
        memcpy(req->buf, c->rbuf + c->rstart, n);
      c->rstart += n;
      req->received = n;
      if (n < h.count) {
        /* The rest goes straight from the socket into the request. */
        c->payload = req;
        break;
      }
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

/* Handles the completion of the posted receive. May free C. */
static void recv_done(struct completion *comp, int res)
{
  struct nbd_conn *c = container_of(comp, struct nbd_conn, recv_comp);

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
      log_msg("export '%s': recv: %m", c->p.exp->name);
    }
    else if (c->payload || c->rend > c->rstart)
      log_msg("export '%s': client closed the connection in the middle of a request",
              c->p.exp->name);
    conn_close_read(c);
    return;
  }
  c->recv_at = c->client.w->now;
  if (c->payload) {
    struct nbd_req *req = c->payload;

    req->received += (uint64_t)res;
    if (req->received < req->h.count) {
      post_recv(c);
      return;
    }
    c->payload = NULL;
    dispatch(req);
  }
  else
    c->rend += (size_t)res;
  parse(c);
}

/* Posts one sendmsg with up to SEND_BATCH queued replies, up to and
 * including the header of a spliced read; once that header is out, a
 * splice of its data from the pipe to the socket. */
static void post_send(struct nbd_conn *c)
{
  struct nbd_req *head = c->sq_head;
  struct io_uring_sqe *sqe;
  unsigned n = 0, iovs = 0;
  bool more = false;

  if (c->send_posted || head == NULL || c->dead)
    return;
  if (head->pipe != NULL && head->sent >= head->iov[0].iov_len) {
    sqe = worker_sqe(c->client.w);
    io_uring_prep_splice(sqe, head->pipe->r, -1, c->fd, -1,
                         (unsigned)(head->reply_len - head->sent), SPLICE_F_MOVE);
    sqe_set_completion(sqe, &c->send_comp);
    c->send_posted = true;
    c->send_spliced = true;
    return;
  }
  for (struct nbd_req *req = head; req && n < SEND_BATCH && !more; req = req->next, n++) {
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
    /* A spliced read's data must follow its header before anything else. */
    more = req->pipe != NULL;
  }
  memset(&c->msg, 0, sizeof c->msg);
  c->msg.msg_iov = c->siov;
  c->msg.msg_iovlen = iovs;
  sqe = worker_sqe(c->client.w);
  io_uring_prep_sendmsg(sqe, c->fd, &c->msg, MSG_NOSIGNAL | (more ? MSG_MORE : 0));
  sqe_set_completion(sqe, &c->send_comp);
  c->send_posted = true;
  c->send_spliced = false;
}

/* The worker's pass ended: send what it queued. May free C. */
static void send_task_run(struct task *t)
{
  struct nbd_conn *c = container_of(t, struct nbd_conn, send_task);

  c->send_queued = false;
  post_send(c);
  conn_maybe_free(c);
}

/* Sends C's queued replies once the worker's pass ends, so that every reply
 * its completions produced goes out in one sendmsg: a send posted at once
 * would carry only the first, and the rest would wait for its completion,
 * one more trip through the ring (the SQE is not submitted before the pass
 * ends anyway). */
static void send_soon(struct nbd_conn *c)
{
  if (c->send_queued || c->send_posted || c->sq_head == NULL || c->dead)
    return;
  c->send_queued = true;
  worker_at_pass_end(c->client.w, &c->send_task);
}

/* Handles the completion of the posted send: frees what was sent. May free C. */
static void send_done(struct completion *comp, int res)
{
  struct nbd_conn *c = container_of(comp, struct nbd_conn, send_comp);
  size_t left;

  c->send_posted = false;
  if (res == -EINTR || res == -EAGAIN)
    res = 0;
  else if (res == 0 && c->send_spliced) {
    /* The pipe came up empty though the reply says more follows. */
    log_msg("export '%s': spliced read came up short: dropping the connection",
            c->p.exp->name);
    conn_abort(c);
    return;
  }
  else if (res == -EPIPE || res == -ECONNRESET) {
    conn_replies_gone(c);
    return;
  }
  else if (res < 0) {
    errno = -res;
    log_msg("export '%s': send: %m", c->p.exp->name);
    conn_abort(c);
    return;
  }
  if (res > 0)
    c->send_at = c->client.w->now;
  left = (size_t)res;
  while (c->sq_head) {
    struct nbd_req *req = c->sq_head;
    size_t rest = req->reply_len - req->sent;

    if (left < rest) {
      req->sent += left;
      break;
    }
    left -= rest;
    req->sent = req->reply_len; /* all of it: its pipe, if any, is empty */
    c->sq_head = req->next;
    if (c->sq_head == NULL)
      c->sq_tail = NULL;
    request_free(req);
  }
  if (c->dead) {
    conn_abort(c);
    return;
  }
  send_soon(c);
  conn_resume(c);
}

/* Client op: drops C if it broke a time limit at NOW (monotonic seconds):
 * replies unread or a request left unfinished for the stall timeout, or no
 * request at all for the idle timeout (0: no limit). May free C. */
static void conn_tick(struct client *cl, time_t now)
{
  struct nbd_conn *c = container_of(cl, struct nbd_conn, client);
  unsigned stall = cl->w->stall_timeout, idle = cl->w->idle_timeout;
  const char *why = NULL;

  if (c->read_closed)
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
    log_msg("export '%s': client %s for %u s: dropping it", c->p.exp->name, why, stall);
    conn_abort(c);
  }
}

/* Client op: the server stops. Requests already received are answered with
 * ESHUTDOWN, then reading stops. May free C. */
static void conn_drain(struct client *cl)
{
  struct nbd_conn *c = container_of(cl, struct nbd_conn, client);

  c->draining = true;
  if (c->read_closed)
    return;
  if (c->payload) {
    conn_close_read(c);
    return;
  }
  parse(c);
}

/* Client op: the drain took too long (a client that never takes its
 * replies must not hold up exit). May free C. */
static void conn_kill(struct client *cl)
{
  struct nbd_conn *c = container_of(cl, struct nbd_conn, client);

  if (c->dead && c->read_closed)
    return;
  log_msg("export '%s': client still has replies waiting: dropping it", c->p.exp->name);
  conn_abort(c);
}

/* Client op: C's turn for the budget came. May free C. */
static void conn_budget_resume(struct client *cl)
{
  struct nbd_conn *c = container_of(cl, struct nbd_conn, client);

  if (!c->read_closed)
    parse(c);
}

static const struct client_ops conn_ops = {
  .tick = conn_tick,
  .drain = conn_drain,
  .kill = conn_kill,
  .budget_resume = conn_budget_resume,
};

/* Gives back the connection slot of a connection negotiated as P. */
void nbd_conn_release(const struct conn_params *p)
{
  if (p->release)
    p->release(p->release_arg);
  else
    limits_conn_put();
}

/* Adopts socket FD with parameters P into W. Returns 0 or -1 (FD closed). */
int nbd_conn_new(struct worker *w, int fd, const struct conn_params *p)
{
  struct nbd_conn *c = calloc(1, sizeof *c);

  if (c == NULL || (c->rbuf = malloc(CONN_RBUF_SIZE)) == NULL) {
    free(c);
    close(fd);
    worker_unpick(w);
    nbd_conn_release(p);
    log_msg("out of memory for a new connection");
    return -1;
  }
  c->fd = fd;
  c->p = *p;
  for (int i = 0; i < CONN_PIPES; i++)
    c->pipes[i].r = c->pipes[i].w = -1;
  c->recv_comp.fn = recv_done;
  c->send_comp.fn = send_done;
  c->send_task.fn = send_task_run;
  c->recv_at = c->send_at = w->now;
  client_add(w, &c->client, &conn_ops);
  if (w->draining)
    conn_drain(&c->client);
  else
    post_recv(c);
  return 0;
}

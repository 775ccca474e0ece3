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

/* Whether C holds as much as it may: stop reading until replies drain. */
static bool throttled(const struct conn *c)
{
  return c->nr_requests >= BLOCKD_CONN_MAX_REQUESTS || c->nr_bytes >= BLOCKD_CONN_MAX_BYTES;
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
  close(c->fd);
  if (c->prev)
    c->prev->next = c->next;
  else
    w->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  __atomic_sub_fetch(&w->nr_conns, 1, __ATOMIC_RELAXED);
  free(c->rbuf);
  free(c);
}

/* Frees a request whose reply is sent or dropped. */
static void request_free(struct request *req)
{
  struct conn *c = req->conn;

  c->nr_requests--;
  if (req->buf)
    c->nr_bytes -= req->h.count;
  free(req->buf);
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
    if (throttled(c))
      return;
    dst = c->rbuf + c->rend;
    len = CONN_RBUF_SIZE - c->rend;
  }
  sqe = worker_sqe(c->w);
  io_uring_prep_recv(sqe, c->fd, dst, len, 0);
  sqe->user_data = (uint64_t)(uintptr_t)c | TAG_RECV;
  c->recv_posted = true;
}

/* Allocates a request for header H, validated; NULL if out of memory. */
static struct request *request_new(struct conn *c, const struct nbd_request *h)
{
  struct request *req = calloc(1, sizeof *req);

  if (req == NULL)
    return NULL;
  req->conn = c;
  req->h = *h;
  req->err = request_validate(c->p.exp, h, c->p.structured, c->p.meta);
  /* A write's payload must be read even if the write is refused. */
  if (h->type == NBD_CMD_WRITE || (h->type == NBD_CMD_READ && req->err == 0)) {
    req->buf = malloc(h->count ? h->count : 1);
    if (req->buf == NULL) {
      free(req);
      return NULL;
    }
  }
  c->nr_requests++;
  if (req->buf)
    c->nr_bytes += h->count;
  return req;
}

/* Parses every complete request in the receive buffer, then reads more. */
static void parse(struct conn *c)
{
  while (!c->read_closed && c->payload == NULL && !throttled(c) && !c->w->stopping) {
    size_t avail = c->rend - c->rstart;
    struct nbd_request h;
    struct request *req;

    if (avail < sizeof h)
      break;
    memcpy(&h, c->rbuf + c->rstart, sizeof h);
    c->rstart += sizeof h;
    avail -= sizeof h;
    h.magic = be32toh(h.magic);
    h.flags = be16toh(h.flags);
    h.type = be16toh(h.type);
    h.cookie = be64toh(h.cookie);
    h.offset = be64toh(h.offset);
    h.count = be32toh(h.count);
    if (request_check_framing(&h) < 0) {
      conn_close_read(c);
      return;
    }
    if (h.type == NBD_CMD_DISC) {
      debug("client sent disconnect");
      conn_close_read(c);
      return;
    }
    req = request_new(c, &h);
    if (req == NULL) {
      nbd_log("out of memory for a %" PRIu32 "-byte request: dropping the connection", h.count);
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
  if (c->rstart == c->rend)
    c->rstart = c->rend = 0;
  else if (c->rstart > 0 && CONN_RBUF_SIZE - c->rend < sizeof(struct nbd_request)) {
    memmove(c->rbuf, c->rbuf + c->rstart, c->rend - c->rstart);
    c->rend -= c->rstart;
    c->rstart = 0;
  }
  post_recv(c);
}

int conn_new(struct worker *w, int fd, const struct conn_params *p)
{
  struct conn *c = calloc(1, sizeof *c);

  if (c == NULL || (c->rbuf = malloc(CONN_RBUF_SIZE)) == NULL) {
    free(c);
    close(fd);
    nbd_log("out of memory for a new connection");
    return -1;
  }
  c->w = w;
  c->fd = fd;
  c->p = *p;
  c->next = w->conns;
  if (w->conns)
    w->conns->prev = c;
  w->conns = c;
  if (w->stopping)
    conn_close_read(c);
  else
    post_recv(c);
  return 0;
}

void conn_recv_done(struct conn *c, int res)
{
  c->recv_posted = false;
  if (res == -EINTR || res == -EAGAIN) {
    post_recv(c);
    return;
  }
  if (res <= 0) {
    if (res < 0 && res != -ECANCELED && res != -ECONNRESET)
      nbd_log("recv: %s", strerror(-res));
    else if (c->payload || c->rend > c->rstart)
      nbd_log("client closed the connection in the middle of a request");
    conn_close_read(c);
    return;
  }
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

void conn_close_read(struct conn *c)
{
  c->read_closed = true;
  if (c->payload) {
    /* A write cut short is never acknowledged; drop it. */
    request_free(c->payload);
    c->payload = NULL;
  }
  if (c->recv_posted) {
    struct io_uring_sqe *sqe = worker_sqe(c->w);

    io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)c | TAG_RECV, 0);
    sqe->user_data = TAG_IGNORE;
  }
  conn_maybe_free(c);
}

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
  c->nsending = n;
  memset(&c->msg, 0, sizeof c->msg);
  c->msg.msg_iov = c->siov;
  c->msg.msg_iovlen = iovs;
  sqe = worker_sqe(c->w);
  io_uring_prep_sendmsg(sqe, c->fd, &c->msg, MSG_NOSIGNAL);
  sqe->user_data = (uint64_t)(uintptr_t)c | TAG_SEND;
  c->send_posted = true;
}

void conn_send_done(struct conn *c, int res)
{
  bool was_throttled = throttled(c);
  size_t left;

  c->send_posted = false;
  if (res == -EINTR || res == -EAGAIN)
    res = 0;
  else if (res < 0) {
    if (res != -EPIPE && res != -ECONNRESET)
      nbd_log("send: %s", strerror(-res));
    conn_abort(c);
    return;
  }
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
  if (was_throttled && !throttled(c) && !c->read_closed) {
    parse(c); /* may free C */
    return;
  }
  conn_maybe_free(c);
}

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
  else
    c->sq_head = req;
  c->sq_tail = req;
  post_send(c);
}

/* Requests to operations: the fast path on the worker's io_uring when the
 * engine maps the range onto a file, else the blocking pool; and the
 * encoding of replies (proto.md "Transmission phase"). */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Most descriptors one block status reply carries. */
#define MAX_EXTENTS 1024
/* Smallest all-zero read answered with OFFSET_HOLE instead of its data. */
#define HOLE_REPLY_MIN 4096

/* Whether LEN bytes at BUF are all zero. */
static bool is_zero(const char *buf, size_t len)
{
  /* Compare the buffer with itself shifted: after the first 16 bytes are
   * known zero, memcmp does the rest at memory speed. */
  size_t head = len < 16 ? len : 16;

  for (size_t i = 0; i < head; i++)
    if (buf[i])
      return false;
  return len <= 16 || memcmp(buf, buf + 16, len - 16) == 0;
}

/* Replies to REQ, whose err says how it went. */
static void finish(struct request *req)
{
  /* An all-zero read costs a 12-byte chunk instead of its data. */
  if (req->h.type == NBD_CMD_READ && req->err == 0 && req->conn->p.structured &&
      req->h.count >= HOLE_REPLY_MIN && is_zero(req->buf, req->h.count))
    req->hole = true;
  conn_reply(req);
}

/* Submits the next step of a fast-path file operation. */
static void submit_file(struct request *req)
{
  struct io_uring_sqe *sqe = worker_sqe(req->conn->w);
  const struct nbd_request *h = &req->h;

  switch (h->type) {
  case NBD_CMD_READ:
    io_uring_prep_read(sqe, req->m.fd, req->buf + req->done, h->count - req->done,
                       req->m.offset + req->done);
    break;
  case NBD_CMD_WRITE:
    io_uring_prep_write(sqe, req->m.fd, req->buf + req->done, h->count - req->done,
                        req->m.offset + req->done);
    /* FUA in the same operation: the write is durable when it completes. */
    if (h->flags & NBD_CMD_FLAG_FUA)
      sqe->rw_flags = RWF_DSYNC;
    break;
  case NBD_CMD_FLUSH:
    io_uring_prep_fsync(sqe, req->m.fd, IORING_FSYNC_DATASYNC);
    break;
  case NBD_CMD_TRIM:
    io_uring_prep_fallocate(sqe, req->m.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                            req->m.offset, h->count);
    break;
  case NBD_CMD_WRITE_ZEROES:
    io_uring_prep_fallocate(sqe, req->m.fd,
                            ((h->flags & NBD_CMD_FLAG_NO_HOLE) ? FALLOC_FL_ZERO_RANGE
                                                               : FALLOC_FL_PUNCH_HOLE) |
                              FALLOC_FL_KEEP_SIZE,
                            req->m.offset, h->count);
    break;
  case NBD_CMD_CACHE:
    io_uring_prep_fadvise(sqe, req->m.fd, req->m.offset, h->count, POSIX_FADV_WILLNEED);
    break;
  default:
    abort();
  }
  sqe->user_data = (uint64_t)(uintptr_t)req | TAG_FILE;
}

/* Collects extents from the engine into wire descriptors. */
static int add_extent(void *opaque, uint64_t offset, uint64_t length, uint32_t type)
{
  struct request *req = opaque;
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

/* Runs REQ synchronously through the engine, on a pool thread. */
static void run_sync(struct pool_job *job)
{
  struct request *req = container_of(job, struct request, job);
  struct fmt *f = req->conn->p.exp->fmt;
  const struct nbd_request *h = &req->h;
  uint32_t flags = (h->flags & NBD_CMD_FLAG_FUA) ? FMT_FUA : 0;
  int r = 0;

  switch (h->type) {
  case NBD_CMD_READ:
    r = f->ops->pread(f, req->buf, h->count, h->offset);
    break;
  case NBD_CMD_WRITE:
    r = f->ops->pwrite ? f->ops->pwrite(f, req->buf, h->count, h->offset, flags) : -EPERM;
    break;
  case NBD_CMD_FLUSH:
    r = f->ops->flush ? f->ops->flush(f) : 0;
    break;
  case NBD_CMD_TRIM:
    r = f->ops->trim ? f->ops->trim(f, h->count, h->offset, flags) : 0;
    break;
  case NBD_CMD_WRITE_ZEROES:
    if (!(h->flags & NBD_CMD_FLAG_NO_HOLE))
      flags |= FMT_MAY_TRIM;
    if (h->flags & NBD_CMD_FLAG_FAST_ZERO)
      flags |= FMT_FAST_ZERO;
    if (f->ops->zero)
      r = f->ops->zero(f, h->count, h->offset, flags);
    else if (flags & FMT_FAST_ZERO)
      r = -ENOTSUP;
    else {
      /* No native zeroing: write a zeroed buffer in bounded chunks. */
      const uint64_t chunk = 1024 * 1024;
      CLEANUP_FREE char *zeroes = calloc(1, chunk);
      uint64_t off = h->offset, left = h->count;

      r = zeroes ? 0 : -ENOMEM;
      while (r == 0 && left > 0) {
        uint64_t n = left < chunk ? left : chunk;
        r = f->ops->pwrite(f, zeroes, n, off, flags);
        off += n;
        left -= n;
      }
    }
    break;
  case NBD_CMD_CACHE:
    r = f->ops->cache ? f->ops->cache(f, h->count, h->offset) : 0;
    break;
  case NBD_CMD_BLOCK_STATUS:
    req->extents = malloc(MAX_EXTENTS * sizeof *req->extents);
    if (req->extents == NULL)
      r = -ENOMEM;
    else if (f->ops->extents && f->can_extents)
      r = f->ops->extents(f, h->count, h->offset, add_extent, req);
    else
      add_extent(req, h->offset, h->count, 0);
    if (r == 0 && req->nr_extents == 0)
      r = -EIO; /* the engine reported nothing for the range */
    break;
  }
  req->err = r < 0 ? -r : 0;
}

/* Sends REQ to the blocking pool. */
static void to_pool(struct request *req)
{
  req->job.run = run_sync;
  req->job.worker = req->conn->w;
  worker_to_pool(req->conn->w, &req->job);
}

/* Starts a validated request (or replies to a request with an error). */
void dispatch(struct request *req)
{
  const struct nbd_request *h = &req->h;
  struct fmt *f = req->conn->p.exp->fmt;
  enum fmt_map_dir dir;

  if (req->err != 0) {
    conn_reply(req);
    return;
  }
  switch (h->type) {
  case NBD_CMD_READ:  dir = FMT_MAP_READ; break;
  case NBD_CMD_CACHE: dir = FMT_MAP_READ; break;
  case NBD_CMD_WRITE: dir = FMT_MAP_WRITE; break;
  case NBD_CMD_FLUSH:
    if (f->readonly) {
      conn_reply(req);
      return;
    }
    dir = FMT_MAP_FLUSH;
    break;
  case NBD_CMD_TRIM:
    /* FUA would need a second, linked operation: rare, so the pool does it. */
    if (h->flags & NBD_CMD_FLAG_FUA)
      goto pool;
    dir = FMT_MAP_TRIM;
    break;
  case NBD_CMD_WRITE_ZEROES:
    if (h->flags & NBD_CMD_FLAG_FUA)
      goto pool;
    dir = FMT_MAP_ZERO;
    break;
  default:
    goto pool;
  }
  if (f->ops->map == NULL || !f->ops->map(f, dir, h->offset, h->count, &req->m))
    goto pool;
  if (req->m.fd < 0) {
    /* Mapped to nothing: zeroes for a read, nothing to prefetch for cache. */
    if (h->type == NBD_CMD_READ)
      memset(req->buf, 0, h->count);
    finish(req);
    return;
  }
  submit_file(req);
  return;
pool:
  to_pool(req);
}

/* Handles a TAG_FILE completion. */
void dispatch_file_done(struct request *req, int res)
{
  const struct nbd_request *h = &req->h;

  if (res == -EINTR || res == -EAGAIN) {
    submit_file(req);
    return;
  }
  /* A failed fsync poisons every later flush of the image (format.h). */
  if (h->type == NBD_CMD_FLUSH) {
    res = fmt_sync_result(req->conn->p.exp->fmt, res < 0 ? res : 0);
    req->err = res < 0 ? -res : 0;
    finish(req);
    return;
  }
  if (res == -EIO && h->type == NBD_CMD_WRITE && (h->flags & NBD_CMD_FLAG_FUA))
    fmt_sync_result(req->conn->p.exp->fmt, res);
  if (res < 0) {
    /* File systems that cannot punch or zero: the engine's synchronous path
     * has the fallbacks (and honours FAST_ZERO). */
    if ((res == -EOPNOTSUPP || res == -ENOSYS) &&
        (h->type == NBD_CMD_TRIM || h->type == NBD_CMD_WRITE_ZEROES)) {
      to_pool(req);
      return;
    }
    req->err = -res;
    finish(req);
    return;
  }
  if (h->type == NBD_CMD_READ || h->type == NBD_CMD_WRITE) {
    if (res == 0) {
      if (h->type == NBD_CMD_READ)
        memset(req->buf + req->done, 0, h->count - req->done); /* past EOF */
      else
        req->err = EIO;
      finish(req);
      return;
    }
    req->done += (uint64_t)res;
    if (req->done < h->count) {
      /* Short transfer: adjust and requeue. */
      submit_file(req);
      return;
    }
  }
  finish(req);
}

/* Finishes a request that came back from the pool. */
void dispatch_job_done(struct pool_job *job)
{
  finish(container_of(job, struct request, job));
}

/* Encodes REQ's reply into REQ->iov. */
void reply_encode(struct request *req)
{
  const struct nbd_request *h = &req->h;
  uint32_t err = nbd_errno(req->err);

  req->niov = 1;
  req->iov[0].iov_base = req->hdr;
  /* Reads and block status need structured chunks once negotiated; errors
   * too, so that the client gets them in the form it asked for. */
  if (req->conn->p.structured &&
      (err != 0 || h->type == NBD_CMD_READ || h->type == NBD_CMD_BLOCK_STATUS)) {
    struct nbd_structured_reply *sr = (void *)req->hdr;
    char *payload = req->hdr + sizeof *sr;
    uint32_t len;

    sr->magic = htobe32(NBD_STRUCTURED_REPLY_MAGIC);
    sr->flags = htobe16(NBD_REPLY_FLAG_DONE);
    sr->cookie = htobe64(h->cookie);
    if (err != 0) {
      struct nbd_chunk_error e = { .error = htobe32(err), .len = 0 };

      sr->type = htobe16(NBD_REPLY_TYPE_ERROR);
      memcpy(payload, &e, sizeof e);
      len = sizeof e;
    }
    else if (h->type == NBD_CMD_READ && req->hole) {
      struct nbd_chunk_offset_hole hole = { .offset = htobe64(h->offset),
                                            .length = htobe32(h->count) };

      sr->type = htobe16(NBD_REPLY_TYPE_OFFSET_HOLE);
      memcpy(payload, &hole, sizeof hole);
      len = sizeof hole;
    }
    else if (h->type == NBD_CMD_READ) {
      uint64_t off = htobe64(h->offset);

      sr->type = htobe16(NBD_REPLY_TYPE_OFFSET_DATA);
      memcpy(payload, &off, sizeof off);
      len = sizeof off;
      req->iov[1].iov_base = req->buf;
      req->iov[1].iov_len = h->count;
      req->niov = 2;
    }
    else {
      uint32_t id = htobe32(META_BASE_ALLOCATION_ID);

      sr->type = htobe16(NBD_REPLY_TYPE_BLOCK_STATUS);
      memcpy(payload, &id, sizeof id);
      len = sizeof id;
      req->iov[1].iov_base = req->extents;
      req->iov[1].iov_len = req->nr_extents * sizeof *req->extents;
      req->niov = 2;
    }
    req->iov[0].iov_len = sizeof *sr + len;
    sr->length = htobe32(len + (req->niov == 2 ? (uint32_t)req->iov[1].iov_len : 0));
  }
  else {
    struct nbd_simple_reply *r = (void *)req->hdr;

    r->magic = htobe32(NBD_SIMPLE_REPLY_MAGIC);
    r->error = htobe32(err);
    r->cookie = htobe64(h->cookie);
    req->iov[0].iov_len = sizeof *r;
    if (h->type == NBD_CMD_READ && err == 0) {
      req->iov[1].iov_base = req->buf;
      req->iov[1].iov_len = h->count;
      req->niov = 2;
    }
  }
  req->reply_len = req->iov[0].iov_len + (req->niov == 2 ? req->iov[1].iov_len : 0);
  req->sent = 0;
}

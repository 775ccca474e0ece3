/* io: a front end's request, run on the worker's io_uring when the engine
 * maps the range onto one file range, else through the engine's asynchronous
 * path where it has one (rbd), else through the engine's synchronous call on
 * the blocking pool (formats/io.c, which holds the fallbacks). Every way the
 * request's done callback runs on its worker's thread. */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core.h"

/* Calls R's done callback with the host errno ERR. */
static void finish(struct io_req *r, int err)
{
  r->err = err;
  r->done(r);
}

/* Skips the first N bytes of R's buffers: the array is advanced in place. */
static void iov_advance(struct io_req *r, uint64_t n)
{
  while (n > 0 && r->iovcnt > 0) {
    if (n < r->iov[0].iov_len) {
      r->iov[0].iov_base = (char *)r->iov[0].iov_base + n;
      r->iov[0].iov_len -= n;
      return;
    }
    n -= r->iov[0].iov_len;
    r->iov++;
    r->iovcnt--;
  }
}

/* Fills what is left of R's buffers with zeroes. */
static void iov_zero(struct io_req *r)
{
  for (unsigned i = 0; i < r->iovcnt; i++)
    memset(r->iov[i].iov_base, 0, r->iov[i].iov_len);
}

/* Submits the next step of R's ring operation. */
/* Whether bytes [OFFSET, OFFSET + LENGTH) of FD are all in one hole: such
 * a read is answered without touching the file (no page cache filled with
 * zeroes, a 12-byte reply). A file system without SEEK_DATA says no. */
static bool file_range_is_hole(int fd, uint64_t offset, uint64_t length)
{
  off_t data = lseek(fd, (off_t)offset, SEEK_DATA);

  if (data == -1)
    return errno == ENXIO; /* no data from OFFSET to the end of the file */
  return (uint64_t)data >= offset + length;
}

/* Page cache pages that bytes [OFFSET, OFFSET + LENGTH) of a file touch. */
static uint64_t splice_pages(uint64_t offset, uint64_t length)
{
  uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);

  return (offset % page + length + page - 1) / page;
}

/* The file R's data moves through from file offset OFF: with cache=none,
 * the O_DIRECT one when everything is aligned for it, else the cached one. */
static int data_fd(const struct io_req *r, uint64_t off)
{
  if (r->m.direct_fd < 0 || off % FMT_DIRECT_ALIGN != 0)
    return r->m.fd;
  for (unsigned i = 0; i < r->iovcnt; i++)
    if ((uintptr_t)r->iov[i].iov_base % FMT_DIRECT_ALIGN != 0 ||
        r->iov[i].iov_len % FMT_DIRECT_ALIGN != 0)
      return r->m.fd;
  return r->m.direct_fd;
}

/* Prepares R's next ring operation; returns its SQE. */
static struct io_uring_sqe *submit_ring(struct io_req *r)
{
  struct io_uring_sqe *sqe = worker_sqe(r->w);
  uint64_t off = r->m.offset + r->moved;
  int fd = r->op == IO_READ || r->op == IO_WRITE ? data_fd(r, off) : r->m.fd;

  switch (r->op) {
  case IO_READ:
    if (r->iovcnt == 1)
      io_uring_prep_read(sqe, fd, r->iov[0].iov_base, r->iov[0].iov_len, off);
    else
      io_uring_prep_readv(sqe, fd, r->iov, r->iovcnt, off);
    break;
  case IO_WRITE:
    if (r->iovcnt == 1)
      io_uring_prep_write(sqe, fd, r->iov[0].iov_base, r->iov[0].iov_len, off);
    else
      io_uring_prep_writev(sqe, fd, r->iov, r->iovcnt, off);
    /* FUA in the same operation: the write is durable when it completes. */
    if (r->flags & FMT_FUA)
      sqe->rw_flags = RWF_DSYNC;
    break;
  case IO_FLUSH:
    io_uring_prep_fsync(sqe, r->m.fd, IORING_FSYNC_DATASYNC);
    break;
  case IO_TRIM:
    io_uring_prep_fallocate(sqe, r->m.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                            r->m.offset, r->trim_length);
    break;
  case IO_ZERO:
    io_uring_prep_fallocate(sqe, r->m.fd,
                            ((r->flags & FMT_MAY_TRIM) ? FALLOC_FL_PUNCH_HOLE
                                                       : FALLOC_FL_ZERO_RANGE) |
                              FALLOC_FL_KEEP_SIZE,
                            r->m.offset, r->length);
    break;
  case IO_CACHE:
    io_uring_prep_fadvise(sqe, r->m.fd, r->m.offset, r->length, POSIX_FADV_WILLNEED);
    break;
  case IO_SPLICE:
    /* Page cache pages go into the pipe by reference: no copy. */
    io_uring_prep_splice(sqe, r->m.fd, (int64_t)off, r->pipe_fd, -1,
                         (unsigned)(r->length - r->moved), SPLICE_F_MOVE);
    break;
  case IO_EXTENTS:
    abort();
  }
  sqe_set_completion(sqe, &r->comp);
  return sqe;
}

/* Page cache behind a cache=none read: a read of 64 KiB or more goes from
 * the page cache to the socket by splice, with the kernel's read-ahead, and
 * what it brought in is dropped behind it. Spliced pages stay referenced
 * until the client has read them, and such a page is not dropped, so each
 * splice drops a window well behind it (DROP_LAG: a client's requests in
 * flight, 8 x 1 MiB for QEMU, lie after it), in whole large folios (a
 * folio partly outside the range stays), and once a second the whole file
 * is dropped: read-ahead past the last read, pages still referenced at
 * their window, ranges read at random. Against O_DIRECT and a copy into the
 * socket this moved 1 MiB reads at 1.3-1.4x the rate for 0.65-0.72x the CPU
 * (bench/README.md). */
#define DROP_LAG (8u << 20)
#define DROP_WINDOW (8u << 20)
#define DROP_ALIGN (2u << 20) /* the largest page cache folio on x86-64 */

/* Asks the kernel to drop FD's clean cached pages in [OFFSET, OFFSET +
 * LENGTH) (LENGTH 0: to the end); dirty ones are written back first. */
static void drop_range(struct worker *w, int fd, uint64_t offset, uint64_t length)
{
  struct io_uring_sqe *sqe = worker_sqe(w);

  io_uring_prep_fadvise(sqe, fd, offset, (off_t)length, POSIX_FADV_DONTNEED);
  sqe_set_completion(sqe, &completion_ignore);
}

/* R, a cache=none splice, has its pages in the pipe: drops the window
 * behind it, and keeps its file for the sweeps. */
static void drop_behind(struct io_req *r)
{
  struct worker *w = r->w;
  uint64_t off = r->m.offset;
  unsigned i;

  if (off >= DROP_LAG + DROP_WINDOW) {
    uint64_t end = (off - DROP_LAG) / DROP_ALIGN * DROP_ALIGN;
    uint64_t start = (off - DROP_LAG - DROP_WINDOW) / DROP_ALIGN * DROP_ALIGN;

    drop_range(w, r->m.fd, start, end - start);
  }
  for (i = 0; i < w->nr_drops && w->drops[i].fd != r->m.fd; i++)
    ;
  if (i == w->nr_drops) {
    if (i == DROP_FILES) {
      drop_range(w, w->drops[0].fd, 0, 0); /* its last sweep, early */
      i = 0;
    }
    else
      w->nr_drops++;
  }
  w->drops[i].fd = r->m.fd;
  w->drops[i].ticks = 2; /* this second's sweep, and one after the last read */
}

void io_tick(struct worker *w)
{
  unsigned i = 0;

  while (i < w->nr_drops) {
    drop_range(w, w->drops[i].fd, 0, 0);
    if (--w->drops[i].ticks == 0)
      w->drops[i] = w->drops[--w->nr_drops];
    else
      i++;
  }
}

void io_fini(struct worker *w)
{
  for (unsigned i = 0; i < w->nr_drops; i++)
    posix_fadvise(w->drops[i].fd, 0, 0, POSIX_FADV_DONTNEED);
  w->nr_drops = 0;
}

/* Runs R synchronously through the engine, on a pool thread. */
static void run_sync(struct pool_job *job)
{
  struct io_req *r = container_of(job, struct io_req, job);
  struct fmt *f = r->fmt;
  int e = 0;

  switch (r->op) {
  case IO_READ:
    e = fmt_preadv(f, r->iov, r->iovcnt, r->offset);
    break;
  case IO_WRITE:
    e = fmt_pwritev(f, r->iov, r->iovcnt, r->offset, r->flags & FMT_FUA);
    break;
  case IO_FLUSH:
    e = fmt_flush(f);
    break;
  case IO_TRIM:
    e = fmt_trim(f, r->length, r->offset, r->flags & FMT_FUA);
    break;
  case IO_ZERO:
    e = fmt_zero(f, r->length, r->offset, r->flags);
    break;
  case IO_CACHE:
    e = fmt_cache(f, r->length, r->offset);
    break;
  case IO_EXTENTS:
    e = fmt_extents(f, r->length, r->offset, r->extent_fn, r->extent_opaque);
    break;
  case IO_SPLICE:
    abort(); /* never sent to the pool */
  }
  r->err = e < 0 ? -e : 0;
}

/* A pool job came back to its worker. */
static void pool_done(struct task *t)
{
  struct io_req *r = container_of(t, struct io_req, job.done);

  r->done(r);
}

/* Sends R to the blocking pool. */
static void to_pool(struct io_req *r)
{
  r->job.run = run_sync;
  r->job.done.fn = pool_done;
  r->job.w = r->w;
  worker_to_pool(r->w, &r->job);
}

/* An asynchronous engine operation came back to its worker. */
static void aio_task(struct task *t)
{
  struct io_req *r = container_of(t, struct io_req, job.done);

  /* A failed flush poisons every later one, as on the ring (format.h). */
  if (r->op == IO_FLUSH)
    r->err = -fmt_sync_result(r->fmt, -r->err);
  r->done(r);
}

/* The engine finished R's asynchronous operation: on one of its library's
 * threads, so the result goes to R's worker as a task (one short lock and at
 * most one eventfd write, batched with the pool's results). */
static void aio_done(struct fmt_aio *a, int res)
{
  struct io_req *r = container_of(a, struct io_req, aio);

  r->err = res < 0 ? -res : 0;
  worker_post(r->w, &r->job.done);
}

/* Starts R on the engine's asynchronous path. Returns false if the engine
 * has none for R (fmt_aio): the pool must run it. */
static bool start_aio(struct io_req *r)
{
  enum fmt_aio_op op;

  switch (r->op) {
  case IO_READ:  op = FMT_AIO_READ; break;
  case IO_WRITE: op = FMT_AIO_WRITE; break;
  case IO_FLUSH: op = FMT_AIO_FLUSH; break;
  case IO_TRIM:  op = FMT_AIO_TRIM; break;
  case IO_ZERO:  op = FMT_AIO_ZERO; break;
  default:
    return false;
  }
  r->aio.done = aio_done;
  r->job.done.fn = aio_task;
  return fmt_aio(r->fmt, op, r->iov, r->iovcnt, r->length, r->offset, r->flags, &r->aio) == 0;
}

/* The fallocate of R, which covered the trims chained from R too, ended
 * with RES: each of them ends with it. */
static void trims_done(struct io_req *r, int res)
{
  while (r != NULL) {
    struct io_req *next = r->trim_next;

    /* done may reuse R: the chain is read first. */
    r->trim_next = NULL;
    if (res == -EOPNOTSUPP || res == -ENOSYS)
      to_pool(r); /* the engine's fallback, per request */
    else
      finish(r, res < 0 ? -res : 0);
    r = next;
  }
}

/* Sorts the list L by file, then offset (insertion sort: a pass brings
 * few trims). */
static struct io_req *trims_sort(struct io_req *l)
{
  struct io_req *sorted = NULL;

  while (l != NULL) {
    struct io_req *r = l, **p = &sorted;

    l = l->trim_next;
    while (*p != NULL && ((*p)->m.fd < r->m.fd ||
                          ((*p)->m.fd == r->m.fd && (*p)->m.offset <= r->m.offset)))
      p = &(*p)->trim_next;
    r->trim_next = *p;
    *p = r;
  }
  return sorted;
}

/* Pass-end task: issues the pass's trims. Those whose file ranges touch or
 * overlap become one fallocate (a guest discarding a freed file sends its
 * range in pieces), and the fallocates on one file run one after another
 * (hard-linked): in parallel they would only wait for each other on the
 * inode's lock, each on an io-wq thread of its own, and on file systems
 * mounted with online discard each punch also waits for the device. */
static void trims_issue(struct task *t)
{
  struct worker *w = container_of(t, struct worker, trims_task);
  struct io_req *r = trims_sort(w->trims);

  w->trims = NULL;
  while (r != NULL) {
    struct io_req *last = r, *next;
    uint64_t end = r->m.offset + r->length;
    struct io_uring_sqe *sqe;

    while (last->trim_next != NULL && last->trim_next->m.fd == r->m.fd &&
           last->trim_next->m.offset <= end) {
      struct io_req *m = last->trim_next;

      if (m->m.offset + m->length > end)
        end = m->m.offset + m->length;
      last = m;
    }
    next = last->trim_next;
    last->trim_next = NULL; /* R's chain: the trims its fallocate covers */
    r->trim_length = end - r->m.offset;
    sqe = submit_ring(r);
    if (next != NULL && next->m.fd == r->m.fd)
      sqe->flags |= IOSQE_IO_HARDLINK;
    r = next;
  }
}

/* Queues R, a trim mapped onto its file, for the end of the pass. */
static void trim_defer(struct io_req *r)
{
  struct worker *w = r->w;

  if (w->trims == NULL) {
    w->trims_task.fn = trims_issue;
    worker_at_pass_end(w, &w->trims_task);
  }
  r->trim_next = w->trims;
  w->trims = r;
}

/* Handles the completion of R's ring operation. */
static void ring_done(struct completion *c, int res)
{
  struct io_req *r = container_of(c, struct io_req, comp);

  if (res == -EINTR || res == -EAGAIN) {
    submit_ring(r);
    return;
  }
  /* A failed fsync poisons every later flush of the image (format.h). */
  if (r->op == IO_FLUSH) {
    res = fmt_sync_result(r->fmt, res < 0 ? res : 0);
    finish(r, res < 0 ? -res : 0);
    return;
  }
  if (res == -EIO && r->op == IO_WRITE && (r->flags & FMT_FUA))
    fmt_sync_result(r->fmt, res);
  if (r->op == IO_TRIM && r->trim_next != NULL) {
    trims_done(r, res);
    return;
  }
  if (res < 0) {
    /* File systems that cannot punch or zero: the engine's synchronous path
     * has the fallbacks (and honours FAST_ZERO). */
    if ((res == -EOPNOTSUPP || res == -ENOSYS) && (r->op == IO_TRIM || r->op == IO_ZERO)) {
      to_pool(r);
      return;
    }
    finish(r, -res);
    return;
  }
  if (r->op == IO_READ || r->op == IO_WRITE || r->op == IO_SPLICE) {
    if (res == 0) {
      if (r->op == IO_READ) {
        iov_zero(r); /* past EOF */
        finish(r, 0);
      }
      else if (r->op == IO_SPLICE)
        finish(r, EAGAIN); /* the file ends inside the range: the copy reads zeroes there */
      else
        finish(r, EIO); /* a write that moved nothing */
      return;
    }
    r->moved += (uint64_t)res;
    if (r->moved < r->length) {
      /* Short transfer: adjust and requeue. */
      if (r->op != IO_SPLICE)
        iov_advance(r, (uint64_t)res);
      submit_ring(r);
      return;
    }
    if (r->op == IO_SPLICE && r->m.direct_fd >= 0)
      drop_behind(r);
  }
  finish(r, 0);
}

/* Runs R: on the ring if the engine maps the range, else on the pool. */
void io_submit(struct io_req *r)
{
  struct fmt *f = r->fmt;
  enum fmt_map_dir dir;

  r->err = 0;
  r->trim_next = NULL;
  r->zero = false;
  r->moved = 0;
  r->comp.fn = ring_done;
  switch (r->op) {
  case IO_SPLICE:
    if (!fmt_map(f, FMT_MAP_READ, r->offset, r->length, &r->m)) {
      finish(r, EAGAIN);
      return;
    }
    if (r->m.fd < 0 || file_range_is_hole(r->m.fd, r->m.offset, r->length)) {
      r->zero = true;
      finish(r, 0);
      return;
    }
    /* One pipe slot per page touched: a splice that does not fit would
     * wait forever for a reader that only comes once it completes. */
    if (splice_pages(r->m.offset, r->length) > r->pipe_size / (uint64_t)sysconf(_SC_PAGESIZE)) {
      finish(r, EAGAIN);
      return;
    }
    submit_ring(r);
    return;
  case IO_READ:  dir = FMT_MAP_READ; break;
  case IO_CACHE: dir = FMT_MAP_READ; break;
  case IO_WRITE: dir = FMT_MAP_WRITE; break;
  case IO_FLUSH:
    if (f->readonly) {
      finish(r, 0);
      return;
    }
    dir = FMT_MAP_FLUSH;
    break;
  case IO_TRIM:
    /* FUA would need a second, linked operation: rare, so the pool does it. */
    if (r->flags & FMT_FUA)
      goto pool;
    dir = FMT_MAP_TRIM;
    break;
  case IO_ZERO:
    if (r->flags & FMT_FUA)
      goto pool;
    dir = FMT_MAP_ZERO;
    break;
  default:
    goto pool;
  }
  if (!fmt_map(f, dir, r->offset, r->length, &r->m))
    goto pool;
  if (r->m.fd < 0 || (r->op == IO_CACHE && r->m.direct_fd >= 0)) {
    /* Mapped to nothing: zeroes for a read, nothing to prefetch for cache
     * (nor with cache=none, where the page cache is not to be filled). */
    if (r->op == IO_READ)
      iov_zero(r);
    finish(r, 0);
    return;
  }
  if (r->op == IO_TRIM) {
    trim_defer(r);
    return;
  }
  submit_ring(r);
  return;
pool:
  if (!start_aio(r))
    to_pool(r);
}

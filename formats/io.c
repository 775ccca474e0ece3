/* io: the synchronous operations every front end calls (format.h).
 *
 * One entry point per operation, like nbdkit's backend.c: the range and the
 * image's mode are checked here once, and the fallbacks for what an engine
 * cannot do live here once: zeroes written where it has no ->zero (or -ENOTSUP
 * at once for a fast zero), one data extent where it cannot tell holes, no-ops
 * for flush and cache. blockd's pool, the nbdkit plugin and blockd-img all
 * come through here; only blockd's io_uring fast path goes around, through
 * fmt_map, and there the engine has decided the range is plain file I/O.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Bytes of zeroes written at a time where an engine cannot zero. */
#define ZERO_CHUNK (1024 * 1024)

/* Whether [OFFSET, OFFSET+LENGTH) lies within F. */
static bool in_range(const struct fmt *f, uint64_t length, uint64_t offset)
{
  return offset <= f->size && length <= f->size - offset;
}

/* 0 if F can be changed over [OFFSET, OFFSET+LENGTH), else -errno. */
static int check_write(const struct fmt *f, uint64_t length, uint64_t offset)
{
  if (f->readonly || f->ops->pwrite == NULL)
    return -EROFS;
  return in_range(f, length, offset) ? 0 : -EINVAL;
}

bool fmt_map(struct fmt *f, enum fmt_map_dir dir, uint64_t offset, uint64_t length,
             struct fmt_map *m)
{
  if (f->ops->map == NULL || (dir != FMT_MAP_FLUSH && !in_range(f, length, offset)))
    return false;
  if (dir != FMT_MAP_READ && f->readonly)
    return false;
  if (!f->ops->map(f, dir, offset, length, m))
    return false;
  /* Only the image's own file: a base keeps its shared cache. */
  m->direct_fd = m->fd >= 0 && m->fd == f->fd ? f->direct_fd : -1;
  return true;
}

int fmt_pread(struct fmt *f, void *buf, uint64_t length, uint64_t offset)
{
  if (!in_range(f, length, offset))
    return -EINVAL;
  return length == 0 ? 0 : f->ops->pread(f, buf, length, offset);
}

int fmt_pwrite(struct fmt *f, const void *buf, uint64_t length, uint64_t offset, uint32_t flags)
{
  int r = check_write(f, length, offset);

  if (r < 0)
    return r;
  if (length == 0)
    return (flags & FMT_FUA) ? fmt_flush(f) : 0;
  return f->ops->pwrite(f, buf, length, offset, flags & FMT_FUA);
}

int fmt_preadv(struct fmt *f, const struct iovec *iov, unsigned n, uint64_t offset)
{
  for (unsigned i = 0; i < n; i++) {
    int r = fmt_pread(f, iov[i].iov_base, iov[i].iov_len, offset);

    if (r < 0)
      return r;
    offset += iov[i].iov_len;
  }
  return 0;
}

int fmt_pwritev(struct fmt *f, const struct iovec *iov, unsigned n, uint64_t offset,
                uint32_t flags)
{
  /* FUA on the last piece is enough: an engine's FUA makes every completed
   * write of the image durable, so it covers the earlier pieces too. */
  for (unsigned i = 0; i < n; i++) {
    int r = fmt_pwrite(f, iov[i].iov_base, iov[i].iov_len, offset,
                       i + 1 == n ? flags : flags & ~FMT_FUA);

    if (r < 0)
      return r;
    offset += iov[i].iov_len;
  }
  return 0;
}

int fmt_trim(struct fmt *f, uint64_t length, uint64_t offset, uint32_t flags)
{
  int r = check_write(f, length, offset);

  if (r < 0)
    return r;
  /* Trim is advisory: an engine without it keeps the data (NBD allows it). */
  if (f->ops->trim == NULL || length == 0)
    return (flags & FMT_FUA) ? fmt_flush(f) : 0;
  return f->ops->trim(f, length, offset, flags & FMT_FUA);
}

/* Writes zeroes over the range, a chunk at a time, for an engine that has
 * no ->zero. */
static int write_zeroes(struct fmt *f, uint64_t length, uint64_t offset, uint32_t flags)
{
  CLEANUP_FREE char *zeroes = calloc(1, length < ZERO_CHUNK ? length : ZERO_CHUNK);

  if (zeroes == NULL)
    return -ENOMEM;
  while (length > 0) {
    uint64_t n = length < ZERO_CHUNK ? length : ZERO_CHUNK;
    int r = f->ops->pwrite(f, zeroes, n, offset, n == length ? flags & FMT_FUA : 0);

    if (r < 0)
      return r;
    offset += n;
    length -= n;
  }
  return 0;
}

int fmt_zero(struct fmt *f, uint64_t length, uint64_t offset, uint32_t flags)
{
  int r = check_write(f, length, offset);

  if (r < 0)
    return r;
  if (length == 0)
    return (flags & FMT_FUA) ? fmt_flush(f) : 0;
  if (f->ops->zero != NULL)
    return f->ops->zero(f, length, offset, flags);
  if (flags & FMT_FAST_ZERO)
    return -ENOTSUP;
  return write_zeroes(f, length, offset, flags);
}

int fmt_flush(struct fmt *f)
{
  if (f->readonly || f->ops->flush == NULL)
    return 0;
  return f->ops->flush(f);
}

int fmt_extents(struct fmt *f, uint64_t length, uint64_t offset, fmt_extent_fn fn, void *opaque)
{
  if (!in_range(f, length, offset))
    return -EINVAL;
  if (length == 0)
    return 0;
  if (f->ops->extents == NULL || !f->can_extents) {
    fn(opaque, offset, length, 0);
    return 0;
  }
  return f->ops->extents(f, length, offset, fn, opaque);
}

/* What the fallback of fmt_layout_at passes on. */
struct layout_fallback {
  fmt_layout_fn fn; /* the caller's callback */
  void *opaque;     /* its argument */
  unsigned depth;   /* the image's depth in the chain */
};

/* ->extents callback of the fallback: each extent is the image's own. */
static int fallback_extent(void *opaque, uint64_t offset, uint64_t length, uint32_t type)
{
  struct layout_fallback *lf = opaque;
  struct fmt_layout l = { .offset = offset, .length = length, .present = true,
                          .depth = lf->depth };

  fmt_layout_type(&l, type);

  return lf->fn(lf->opaque, &l);
}

int fmt_layout_at(struct fmt *f, uint64_t length, uint64_t offset, unsigned depth,
                  fmt_layout_fn fn, void *opaque)
{
  struct layout_fallback lf = { fn, opaque, depth };

  if (length == 0)
    return 0;
  if (f->ops->layout != NULL)
    return f->ops->layout(f, length, offset, depth, fn, opaque);
  if (f->ops->extents == NULL || !f->can_extents) {
    fallback_extent(&lf, offset, length, 0);
    return 0;
  }
  return f->ops->extents(f, length, offset, fallback_extent, &lf);
}

int fmt_layout(struct fmt *f, uint64_t length, uint64_t offset, fmt_layout_fn fn, void *opaque)
{
  if (!in_range(f, length, offset))
    return -EINVAL;
  return fmt_layout_at(f, length, offset, 0, fn, opaque);
}

int fmt_cache(struct fmt *f, uint64_t length, uint64_t offset)
{
  if (!in_range(f, length, offset))
    return -EINVAL;
  return f->ops->cache == NULL || length == 0 ? 0 : f->ops->cache(f, length, offset);
}

int fmt_aio(struct fmt *f, enum fmt_aio_op op, const struct iovec *iov, unsigned n,
            uint64_t length, uint64_t offset, uint32_t flags, struct fmt_aio *a)
{
  /* FUA: for the engine to take on writes only (see ->aio). */
  if (f->ops->aio == NULL || ((flags & FMT_FUA) && op != FMT_AIO_WRITE))
    return -EAGAIN;
  switch (op) {
  case FMT_AIO_READ:
    if (length == 0 || !in_range(f, length, offset))
      return -EAGAIN;
    break;
  case FMT_AIO_FLUSH:
    /* Nothing to do, or a flush already failed: the synchronous call says so. */
    if (f->readonly || __atomic_load_n(&f->sync_error, __ATOMIC_ACQUIRE) != 0)
      return -EAGAIN;
    length = offset = 0;
    break;
  default:
    /* Changes to the head go through fmt_guard_head, synchronously. */
    if (length == 0 || check_write(f, length, offset) < 0 || offset < FMT_HEAD_BYTES)
      return -EAGAIN;
    break;
  }
  return f->ops->aio(f, op, iov, n, length, offset,
                     flags & (FMT_FUA | FMT_MAY_TRIM | FMT_FAST_ZERO), a);
}

bool fmt_is_zero(const void *buf, size_t len)
{
  const char *p = buf;
  /* Compare the buffer with itself shifted: after the first 16 bytes are
   * known zero, memcmp does the rest at memory speed. */
  size_t head = len < 16 ? len : 16;

  for (size_t i = 0; i < head; i++)
    if (p[i])
      return false;
  return len <= 16 || memcmp(p, p + 16, len - 16) == 0;
}

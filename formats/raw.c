/* raw: a sparse file, byte for byte the disk. The fast path. */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

struct raw {
  struct fmt fmt; /* common fields, first */
  int fd;         /* the file, O_RDWR unless read-only */
  bool ring_writes; /* map writes for io_uring (file_async_buffered_writes) */
};

static struct fmt *raw_open(int fd, const char *path, enum fmt_access access, char *err,
                            size_t errlen)
{
  bool readonly = access != FMT_WRITE;
  struct raw *r;
  struct stat st;
  char head[8];
  int e;

  if (fstat(fd, &st) == -1) {
    snprintf(err, errlen, "%s: stat: %s", path, strerror(errno));
    goto err;
  }
  if (!S_ISREG(st.st_mode)) {
    snprintf(err, errlen, "%s: not a regular file", path);
    goto err;
  }
  /* An overlay served as a raw disk would let its guest rewrite the
   * header, and with it the base the overlay names. */
  if (!readonly && pread(fd, head, sizeof head, 0) == (ssize_t)sizeof head &&
      memcmp(head, OVERLAY_MAGIC, sizeof head) == 0) {
    snprintf(err, errlen, "%s: is a blockd overlay: serve it with format=overlay (its container"
                          " as a raw disk only read-only)", path);
    goto err;
  }
  r = calloc(1, sizeof *r);
  if (r == NULL ||
      (e = fmt_init(&r->fmt, &fmt_raw_ops, fd, path, (uint64_t)st.st_size, readonly)) < 0) {
    free(r);
    snprintf(err, errlen, "%s: %s", path, strerror(ENOMEM));
    goto err;
  }
  r->fd = fd;
  r->ring_writes = file_async_buffered_writes(fd);
  r->fmt.can_trim = !readonly;
  r->fmt.can_zero = !readonly;
  r->fmt.can_fast_zero = !readonly;
  r->fmt.can_extents = true;
  /* One file, one page cache: fdatasync through any handle covers every write. */
  r->fmt.can_multi_conn = true;
  return &r->fmt;
err:
  close(fd);
  return NULL;
}

static void raw_close(struct fmt *f)
{
  struct raw *r = (struct raw *)f;

  close(r->fd);
  fmt_fini(f);
  free(r);
}

static bool raw_map(struct fmt *f, enum fmt_map_dir dir, uint64_t offset, uint64_t length,
                    struct fmt_map *m)
{
  struct raw *r = (struct raw *)f;

  /* With cache=none, aligned writes go O_DIRECT, which io_uring runs
   * asynchronously on every file system. */
  if (dir == FMT_MAP_WRITE && !r->ring_writes && f->direct_fd < 0)
    return false;
  /* Changes to the head go through fmt_guard_head. */
  if (dir != FMT_MAP_READ && dir != FMT_MAP_FLUSH && offset < FMT_HEAD_BYTES && length > 0)
    return false;
  m->fd = r->fd;
  m->offset = offset;
  return true;
}

static int raw_pread(struct fmt *f, void *buf, uint64_t length, uint64_t offset)
{
  return file_pread_full(file_data_fd(f, buf, length, offset), buf, length, offset);
}

static int do_pwrite(struct fmt *f, const void *buf, uint64_t length, uint64_t offset,
                     uint32_t flags)
{
  struct raw *r = (struct raw *)f;
  int e = file_pwrite_full(file_data_fd(f, buf, length, offset), buf, length, offset);

  if (e == 0 && (flags & FMT_FUA))
    e = fmt_fdatasync(f, r->fd);
  return e;
}

static int raw_pwrite(struct fmt *f, const void *buf, uint64_t length, uint64_t offset,
                      uint32_t flags)
{
  return fmt_guard_head(f, do_pwrite, buf, length, offset, flags);
}

static int do_trim(struct fmt *f, const void *buf, uint64_t length, uint64_t offset,
                   uint32_t flags)
{
  struct raw *r = (struct raw *)f;

  (void)buf;
  /* Trim only gives space back: where the file system cannot punch holes
   * it is a no-op rather than zeroes written (proto.md lets trimmed data
   * read back as before), so a discard never allocates. */
  if (fallocate(r->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset,
                (off_t)length) == -1 &&
      errno != EOPNOTSUPP && errno != ENOSYS)
    return -errno;
  return (flags & FMT_FUA) ? fmt_fdatasync(f, r->fd) : 0;
}

static int raw_trim(struct fmt *f, uint64_t length, uint64_t offset, uint32_t flags)
{
  return fmt_guard_head(f, do_trim, NULL, length, offset, flags);
}

static int do_zero(struct fmt *f, const void *buf, uint64_t length, uint64_t offset,
                   uint32_t flags)
{
  int fd = ((struct raw *)f)->fd;
  int e = file_zero(fd, length, offset, flags);

  (void)buf;
  return e == 0 && (flags & FMT_FUA) ? fmt_fdatasync(f, fd) : e;
}

static int raw_zero(struct fmt *f, uint64_t length, uint64_t offset, uint32_t flags)
{
  return fmt_guard_head(f, do_zero, NULL, length, offset, flags);
}

static int raw_flush(struct fmt *f)
{
  return fmt_fdatasync(f, ((struct raw *)f)->fd);
}

static int raw_extents(struct fmt *f, uint64_t length, uint64_t offset, fmt_extent_fn fn,
                       void *opaque)
{
  return file_extents(((struct raw *)f)->fd, f->size, length, offset, fn, opaque);
}

static int raw_layout(struct fmt *f, uint64_t length, uint64_t offset, unsigned depth,
                      fmt_layout_fn fn, void *opaque)
{
  return file_layout(((struct raw *)f)->fd, f->size, length, offset, 0, f->path, depth, fn,
                     opaque);
}

static int raw_cache(struct fmt *f, uint64_t length, uint64_t offset)
{
  return -posix_fadvise(((struct raw *)f)->fd, (off_t)offset, (off_t)length, POSIX_FADV_WILLNEED);
}

const struct fmt_ops fmt_raw_ops = {
  .name = "raw",
  .probe = NULL,
  .open = raw_open,
  .close = raw_close,
  .map = raw_map,
  .pread = raw_pread,
  .pwrite = raw_pwrite,
  .trim = raw_trim,
  .zero = raw_zero,
  .flush = raw_flush,
  .extents = raw_extents,
  .cache = raw_cache,
  .layout = raw_layout,
};

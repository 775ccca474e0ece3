/* Sparse-file primitives shared by the engines that sit on plain files. */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "internal.h"

int file_pread_full(int fd, void *buf, uint64_t length, uint64_t offset)
{
  char *p = buf;

  while (length > 0) {
    ssize_t n = pread(fd, p, length, (off_t)offset);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    if (n == 0) {
      /* Past the end of a file shorter than its virtual size: zeroes. */
      memset(p, 0, length);
      return 0;
    }
    p += n;
    length -= (uint64_t)n;
    offset += (uint64_t)n;
  }
  return 0;
}

int file_pwrite_full(int fd, const void *buf, uint64_t length, uint64_t offset)
{
  const char *p = buf;

  while (length > 0) {
    ssize_t n = pwrite(fd, p, length, (off_t)offset);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    p += n;
    length -= (uint64_t)n;
    offset += (uint64_t)n;
  }
  return 0;
}

/* Writes zeroes the slow way, in bounded chunks. */
static int write_zeroes(int fd, uint64_t length, uint64_t offset)
{
  const size_t chunk = 1024 * 1024;
  CLEANUP_FREE void *zeroes = calloc(1, chunk);

  if (zeroes == NULL)
    return -ENOMEM;
  while (length > 0) {
    uint64_t n = length < chunk ? length : chunk;
    int r = file_pwrite_full(fd, zeroes, n, offset);
    if (r < 0)
      return r;
    length -= n;
    offset += n;
  }
  return 0;
}

int file_zero(int fd, uint64_t length, uint64_t offset, uint32_t flags)
{
  int r;

  if (flags & FMT_MAY_TRIM) {
    /* PUNCH_HOLE zeroes partial blocks at the edges itself. */
    if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset,
                  (off_t)length) == 0)
      goto done;
    if (errno != EOPNOTSUPP && errno != ENOSYS)
      return -errno;
  }
  if (fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)length) == 0)
    goto done;
  if (errno != EOPNOTSUPP && errno != ENOSYS)
    return -errno;
  if (flags & FMT_FAST_ZERO)
    return -ENOTSUP;
  r = write_zeroes(fd, length, offset);
  if (r < 0)
    return r;
done:
  return 0;
}

int file_extents(int fd, uint64_t size, uint64_t length, uint64_t offset, fmt_extent_fn fn,
                 void *opaque)
{
  uint64_t end = offset + length;

  if (end > size)
    end = size;
  while (offset < end) {
    off_t data = lseek(fd, (off_t)offset, SEEK_DATA);
    uint64_t next;

    if (data == -1 && errno != ENXIO)
      return -errno;
    if (data == -1 || (uint64_t)data >= end) {
      /* ENXIO: no data after OFFSET, the rest of the file is a hole. */
      fn(opaque, offset, end - offset, FMT_EXTENT_HOLE | FMT_EXTENT_ZERO);
      return 0;
    }
    if ((uint64_t)data > offset) {
      if (fn(opaque, offset, (uint64_t)data - offset, FMT_EXTENT_HOLE | FMT_EXTENT_ZERO) < 0)
        return 0;
      offset = (uint64_t)data;
    }
    off_t hole = lseek(fd, (off_t)offset, SEEK_HOLE);
    if (hole == -1)
      return -errno;
    next = (uint64_t)hole < end ? (uint64_t)hole : end;
    if (fn(opaque, offset, next - offset, 0) < 0)
      return 0;
    offset = next;
  }
  return 0;
}

/* What file_layout passes on. */
struct file_layout_ctx {
  fmt_layout_fn fn;  /* the caller's callback */
  void *opaque;      /* its argument */
  uint64_t shift;    /* file offset - virtual offset */
  const char *name;  /* the file */
  unsigned depth;    /* its image's depth in the chain */
};

/* file_extents callback of file_layout. */
static int file_layout_extent(void *opaque, uint64_t offset, uint64_t length, uint32_t type)
{
  struct file_layout_ctx *c = opaque;
  struct fmt_layout l = {
    .offset = offset - c->shift, .length = length, .present = true,
    .depth = c->depth, .file = c->name, .file_offset = offset,
  };

  fmt_layout_type(&l, type);
  return c->fn(c->opaque, &l);
}

int file_layout(int fd, uint64_t size, uint64_t length, uint64_t offset, uint64_t shift,
                const char *name, unsigned depth, fmt_layout_fn fn, void *opaque)
{
  struct file_layout_ctx c = { fn, opaque, shift, name, depth };

  return file_extents(fd, size, length, offset, file_layout_extent, &c);
}

int64_t file_allocated(int fd)
{
  struct stat st;

  if (fstat(fd, &st) == -1)
    return -errno;
  return (int64_t)st.st_blocks * 512;
}

bool file_async_buffered_writes(int fd)
{
  struct statfs sfs;

  /* Buffered writes that cannot complete without blocking are punted by
   * io_uring to its per-thread io-wq, which runs writes to one inode one
   * at a time. XFS (Linux 6.0) and btrfs (6.1) take them without blocking;
   * ext4 does not, and there threads doing pwrite measured 1.6x faster
   * (bench/README.md). Unknown file systems take the safe side. */
  if (fstatfs(fd, &sfs) == -1)
    return false;
  switch ((unsigned long)sfs.f_type) {
  case 0x58465342: /* XFS_SUPER_MAGIC */
  case 0x9123683e: /* BTRFS_SUPER_MAGIC */
    return true;
  default:
    return false;
  }
}

int file_data_fd(const struct fmt *f, const void *buf, uint64_t length, uint64_t offset)
{
  if (f->direct_fd < 0 || ((uintptr_t)buf | length | offset) % FMT_DIRECT_ALIGN != 0)
    return f->fd;
  return f->direct_fd;
}

/* Opens PATH to become a new image: created, or with FMT_CREATE_FORCE an
 * existing file that nothing else holds (it is then truncated). Returns the
 * fd, locked for writing, or -1 with a message in ERR. *CREATED tells
 * whether the file is new (to remove it on a later failure). */
int fmt_create_file(const char *path, unsigned flags, bool *created, char *err, size_t errlen)
{
  int fd;

  *created = false;
  fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
  if (fd >= 0)
    *created = true;
  else if (errno == EEXIST && !(flags & FMT_CREATE_FORCE)) {
    snprintf(err, errlen, "%s: exists (use --force to overwrite it)", path);
    return -1;
  }
  else if (errno == EEXIST)
    fd = open(path, O_RDWR | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (fd == -1) {
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return -1;
  }
  if (!*created && basepath_check_fd(fd, path, err, errlen) < 0) {
    close(fd);
    return -1;
  }
  /* Never truncate an image a server or another tool has open. */
  if (lock_create(fd, path, err, errlen) < 0) {
    snprintf(err + strlen(err), errlen - strlen(err), ": not overwritten");
    close(fd);
    if (*created)
      unlink(path);
    return -1;
  }
  return fd;
}

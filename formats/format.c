/* Format registry, detection by content, and the common fields of an image. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

void fmt_vprint_line(FILE *f, const char *prefix, const char *fmt, va_list ap)
{
  static const char cut[] = "...";
  char msg[4096], line[8192];
  int saved = errno;
  size_t o = 0;

  vsnprintf(msg, sizeof msg, fmt, ap);
  for (const char *p = prefix; *p && o < 256; p++)
    line[o++] = *p;
  for (const char *p = msg; *p; p++) {
    unsigned char c = (unsigned char)*p;

    /* Room for this byte escaped, the cut mark and the newline. */
    if (o + 4 + sizeof cut + 1 > sizeof line) {
      memcpy(line + o, cut, sizeof cut - 1);
      o += sizeof cut - 1;
      break;
    }
    if (fmt_is_control(c))
      o += (size_t)snprintf(line + o, 5, "\\x%02x", c);
    else
      line[o++] = (char)c;
  }
  line[o++] = '\n';
  line[o] = '\0';
  fputs(line, f);
  errno = saved;
}

/* Prints one line on stderr: the default fmt_log. */
static void __attribute__((format(printf, 1, 2))) log_stderr(const char *fmt, ...)
{
  va_list ap;

  va_start(ap, fmt);
  fmt_vprint_line(stderr, "", fmt, ap);
  va_end(ap);
}

void (*fmt_log)(const char *fmt, ...) = log_stderr;

/* Every format built in; raw last because it accepts anything. */
static const struct fmt_ops *const formats[] = {
#ifdef HAVE_QCOW2
  &fmt_qcow2_ops,
#endif
#ifdef HAVE_OVERLAY
  &fmt_overlay_ops,
#endif
  &fmt_raw_ops,
};

const struct fmt_ops *fmt_lookup(const char *name)
{
  for (size_t i = 0; i < ARRAY_SIZE(formats); i++)
    if (strcmp(formats[i]->name, name) == 0)
      return formats[i];
  return NULL;
}

bool fmt_known(const char *name)
{
  return fmt_lookup(name) != NULL;
}

const char *fmt_name(const struct fmt *f)
{
  return f->ops->name;
}

const char *fmt_names(void)
{
  static char names[64];

  if (names[0] == '\0') {
    for (size_t i = ARRAY_SIZE(formats); i-- > 0;) {
      if (names[0] != '\0')
        strcat(names, ",");
      strcat(names, formats[i]->name);
    }
  }
  return names;
}

/* Opens PATH, an image the user named: non-blocking, so that a FIFO cannot
 * hang us, then checked on the open descriptor. Returns the fd or -1 with a
 * message in ERR. */
static int open_image(const char *path, bool readonly, char *err, size_t errlen)
{
  int fd = open(path, (readonly ? O_RDONLY : O_RDWR) | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);

  if (fd == -1) {
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return -1;
  }
  if (basepath_check_fd(fd, path, err, errlen) < 0) {
    close(fd);
    return -1;
  }
  return fd;
}

const struct fmt_ops *fmt_detect_fd(int fd, const char *path, char *err, size_t errlen)
{
  unsigned char head[4096];
  ssize_t n = pread(fd, head, sizeof head, 0);

  if (n < 0) {
    snprintf(err, errlen, "%s: read: %s", path, strerror(errno));
    return NULL;
  }
  /* An overlay's header is written by blockd-img and never by a guest (no
   * engine lets a guest write these bytes at offset 0: fmt_guard_head), so
   * it may be trusted. A qcow2 header may have been written by a guest into
   * its raw disk, naming another tenant's image as backing file: qcow2 is
   * never guessed. */
#ifdef HAVE_OVERLAY
  if (fmt_overlay_ops.probe((const void *)head, (size_t)n))
    return &fmt_overlay_ops;
#endif
  if (n >= 4 && memcmp(head, "QFI\xfb", 4) == 0) {
    snprintf(err, errlen,
             "%s: starts like a qcow2 image, which a guest can write into a raw disk: "
             "name the format (qcow2 or raw)", path);
    return NULL;
  }
  return &fmt_raw_ops;
}

const char *fmt_detect(const char *path, char *err, size_t errlen)
{
  const struct fmt_ops *ops;
  int fd = open_image(path, true, err, errlen);

  if (fd < 0)
    return NULL;
  ops = fmt_detect_fd(fd, path, err, errlen);
  close(fd);
  return ops != NULL ? ops->name : NULL;
}

void fmt_check_report(struct fmt_check *c, enum fmt_check_kind kind, const char *fmt, ...)
{
  char msg[PATH_MAX + 512];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (kind == FMT_CHECK_CORRUPTION)
    c->corruptions++;
  else if (kind == FMT_CHECK_ERROR)
    c->check_errors++;
  else if (kind == FMT_CHECK_UNSUPPORTED)
    c->unsupported = true;
  if (c->report != NULL)
    c->report(c->opaque, kind, msg);
}

struct fmt *fmt_open_fd(int fd, const char *path, const char *base_of, const struct fmt_ops *ops,
                        enum fmt_access access, char *err, size_t errlen)
{
  struct lock *l;
  struct fmt *f;

  if (ops->pwrite == NULL && access == FMT_WRITE)
    access = FMT_READ;
  /* Locked before the engine checks anything, so what it checks stays true. */
  if (lock_image(fd, path, base_of, access, &l, err, errlen) < 0) {
    close(fd);
    return NULL;
  }
  f = ops->open(fd, path, access, err, errlen);
  if (f == NULL)
    lock_forget(l);
  else
    f->lock = l;
  return f;
}

struct fmt *fmt_open_raw_fd(int fd, const char *path, char *err, size_t errlen)
{
  /* FD comes from fmt_create_file, locked already and more strictly. */
  return fmt_raw_ops.open(fd, path, FMT_WRITE, err, errlen);
}

/* fmt_open and fmt_open_shared: opens PATH as FORMAT for ACCESS. */
static struct fmt *open_path(const char *path, const char *format, enum fmt_access access,
                             char *err, size_t errlen)
{
  const struct fmt_ops *ops = NULL;
  int fd;

  if (format != NULL) {
    ops = fmt_lookup(format);
    if (ops == NULL) {
      snprintf(err, errlen, "%s: unknown format '%s' (built in: %s)", path, format, fmt_names());
      return NULL;
    }
  }
  fd = open_image(path, access != FMT_WRITE || (ops != NULL && ops->pwrite == NULL), err, errlen);
  if (fd < 0)
    return NULL;
  if (ops == NULL) {
    ops = fmt_detect_fd(fd, path, err, errlen);
    if (ops == NULL) {
      close(fd);
      return NULL;
    }
  }
  return fmt_open_fd(fd, path, NULL, ops, access, err, errlen);
}

struct fmt *fmt_open(const char *path, const char *format, bool readonly, char *err,
                     size_t errlen)
{
  return open_path(path, format, readonly ? FMT_READ : FMT_WRITE, err, errlen);
}

struct fmt *fmt_open_shared(const char *path, const char *format, char *err, size_t errlen)
{
  return open_path(path, format, FMT_SHARED, err, errlen);
}

#ifndef HAVE_RBD
/* Without librbd: every RBD operation says so. */
static int no_rbd(const char *path, char *err, size_t errlen)
{
  snprintf(err, errlen, "%s: built without Ceph RBD support (librbd)", path);
  return -1;
}

int fmt_rbd_create(const struct img_spec *s, uint64_t size, char *err, size_t errlen)
{
  (void)size;
  return no_rbd(s->path, err, errlen);
}

int fmt_rbd_clone(const struct img_spec *base, const struct img_spec *s, char *err,
                  size_t errlen)
{
  (void)base;
  return no_rbd(s->path, err, errlen);
}

int fmt_rbd_remove(const struct img_spec *s, char *err, size_t errlen)
{
  return no_rbd(s->path, err, errlen);
}

int fmt_rbd_protect(const struct img_spec *s, char *err, size_t errlen)
{
  return no_rbd(s->path, err, errlen);
}

int fmt_rbd_info(struct fmt *f, struct fmt_rbd_info *info)
{
  (void)f;
  (void)info;
  return -EINVAL;
}

bool fmt_rbd_connected(void)
{
  return false;
}
#endif

struct fmt *fmt_open_spec(const struct img_spec *s, bool readonly, char *err, size_t errlen)
{
  readonly = readonly || s->readonly;
  if (!spec_is_rbd(s->path))
    return fmt_open(s->path, s->format, readonly, err, errlen);
#ifdef HAVE_RBD
  return fmt_rbd_open(s->path, s->conf, s->id, false, readonly, err, errlen);
#else
  no_rbd(s->path, err, errlen);
  return NULL;
#endif
}

int fmt_sync_result(struct fmt *f, int r)
{
  int before = __atomic_load_n(&f->sync_error, __ATOMIC_ACQUIRE);

  if (r < 0 && r != -EROFS && before == 0 &&
      __atomic_compare_exchange_n(&f->sync_error, &before, -r, false, __ATOMIC_ACQ_REL,
                                  __ATOMIC_ACQUIRE))
    fmt_log("%s: making writes durable failed (%s): some may be lost, and every later flush of"
            " this image fails until it is opened again", f->path, strerror(-r));
  if (r == 0 && before != 0)
    return -EIO;
  return r;
}

int fmt_fdatasync(struct fmt *f, int fd)
{
  if (__atomic_load_n(&f->sync_error, __ATOMIC_ACQUIRE) != 0)
    return -EIO;
  return fmt_sync_result(f, fdatasync(fd) == -1 ? -errno : 0);
}

/* Whether [OFFSET, OFFSET+LEN) meets the disk's first FMT_HEAD_BYTES. */
static bool touches_head(uint64_t len, uint64_t offset)
{
  return offset < FMT_HEAD_BYTES && len > 0;
}

int fmt_guard_head(struct fmt *f, fmt_range_fn fn, const void *buf, uint64_t length,
                   uint64_t offset, uint32_t flags)
{
  unsigned char head[FMT_HEAD_BYTES];
  uint64_t n;
  int r;

  if (!touches_head(length, offset))
    return fn(f, buf, length, offset, flags);
  /* Serialized with every other write of the head, so two partial writes
   * cannot each pass the check and together spell the magic. */
  pthread_mutex_lock(&f->head_lock);
  r = f->size >= FMT_HEAD_BYTES ? f->ops->pread(f, head, FMT_HEAD_BYTES, 0) : -ENOSPC;
  if (r == 0) {
    n = FMT_HEAD_BYTES - offset < length ? FMT_HEAD_BYTES - offset : length;
    if (buf != NULL)
      memcpy(head + offset, buf, n);
    else
      memset(head + offset, 0, n); /* trim and zero: assume the worst, zeroes */
    if (memcmp(head, OVERLAY_MAGIC, FMT_HEAD_BYTES) == 0)
      r = -EPERM;
  }
  else if (r == -ENOSPC)
    r = 0; /* a disk of under 8 bytes cannot hold the magic */
  if (r == 0)
    r = fn(f, buf, length, offset, flags);
  else if (r == -EPERM && !f->head_refused) {
    f->head_refused = true;
    fmt_log("%s: refused a write that would put a blockd overlay header at the start of the disk",
            f->path);
  }
  pthread_mutex_unlock(&f->head_lock);
  return r;
}

void fmt_close(struct fmt *f)
{
  struct lock *l;

  if (f == NULL)
    return;
  l = f->lock;
  f->ops->close(f);
  lock_forget(l);
}

int fmt_init(struct fmt *f, const struct fmt_ops *ops, int fd, const char *path, uint64_t size,
             bool readonly)
{
  f->ops = ops;
  f->fd = fd;
  f->direct_fd = -1;
  pthread_mutex_init(&f->head_lock, NULL);
  f->path = strdup(path);
  if (f->path == NULL)
    return -errno;
  f->size = size;
  f->readonly = readonly;
  f->block_min = 1;
  f->block_pref = 4096;
  f->block_max = 32 * 1024 * 1024;
  return 0;
}

void fmt_fini(struct fmt *f)
{
  if (f->direct_fd >= 0)
    close(f->direct_fd);
  f->direct_fd = -1;
  free(f->path);
  f->path = NULL;
  pthread_mutex_destroy(&f->head_lock);
}

int fmt_set_cache_none(struct fmt *f, char *err, size_t errlen)
{
  char proc[64];
  struct stat a, b;
  int fd;

  if (f->direct_fd >= 0)
    return 0;
#ifdef HAVE_RBD
  /* An RBD image is not in the host's page cache, and librbd's own cache is
   * off (rbd.c): --cache=none has nothing to do there. */
  if (f->ops == &fmt_rbd_ops)
    return 0;
#endif
  if (f->ops->map == NULL) {
    snprintf(err, errlen, "%s: cache=none: not with format %s (read through its library, cached)",
             f->path, fmt_name(f));
    return -1;
  }
  /* The file already open, not its name again: the name may point at
   * another file by now. */
  snprintf(proc, sizeof proc, "/proc/self/fd/%d", f->fd);
  fd = open(proc, (f->readonly ? O_RDONLY : O_RDWR) | O_DIRECT | O_CLOEXEC);
  if (fd == -1) {
    if (errno == EINVAL)
      snprintf(err, errlen, "%s: cache=none: the file system does not support O_DIRECT", f->path);
    else
      snprintf(err, errlen, "%s: cache=none: %s", f->path, strerror(errno));
    return -1;
  }
  if (fstat(fd, &a) == -1 || fstat(f->fd, &b) == -1 || a.st_dev != b.st_dev || a.st_ino != b.st_ino) {
    snprintf(err, errlen, "%s: cache=none: could not reopen the same file", f->path);
    close(fd);
    return -1;
  }
  f->direct_fd = fd;
  if (f->block_pref < FMT_DIRECT_ALIGN)
    f->block_pref = FMT_DIRECT_ALIGN;
  return 0;
}

/* overlay-commit: writes an overlay's owned clusters into its base, then
 * empties the overlay and records the base's new identity, so the overlay
 * stays valid (and reads the same) over the changed base.
 *
 * Nothing else may use the base meanwhile: other overlays over it would see
 * it change under them. Locks say so (lock.c): the overlay and the base are
 * both locked for writing and refused to every other holder, readers that
 * let others write included (no blockd serves either, no overlay over
 * either is open, no QEMU or qemu-storage-daemon uses the base).
 *
 * Crash safety: the first write marks the header OVERLAY_INCOMPAT_COMMIT
 * (durable before the base is touched), so a commit killed midway leaves an
 * overlay that refuses to open, with its bitmap and data intact, over a base
 * holding a mix of old clusters and committed ones. Running commit again
 * finishes it: every step can be repeated, and the base identity check is
 * skipped while the mark is set. The overlay is emptied only once the base
 * is durable: bitmap cleared (and synced) before the data area goes, so a
 * crash there never makes a repeated commit copy punched (zero) clusters.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define COMMIT_CHUNK (1u << 20) /* bytes read and written at a time */
#define ZERO_GRAIN 4096u        /* smallest zero run left to fmt_zero */

/* One commit under way. */
struct commit {
  const char *path;          /* the overlay, as named */
  int fd;                    /* the overlay, open read-write */
  struct lock *lock;         /* its lock, for writing */
  struct overlay_header h;   /* its header, host order */
  struct fmt *base;          /* its base, open read-write, locked */
  char *buf;                 /* COMMIT_CHUNK bytes */
  fmt_progress_fn progress;  /* may be NULL */
  void *opaque;              /* PROGRESS's argument */
  uint64_t done, total;      /* bytes committed, bytes to commit */
  uint64_t data;             /* of DONE, bytes of data (not holes) */
};

/* Writes LEN bytes of BUF at OFFSET of the base, zero runs of ZERO_GRAIN
 * as fmt_zero (a hole in a sparse base). Returns 0 or -errno. */
static int put(struct commit *k, const char *buf, uint64_t len, uint64_t offset)
{
  uint64_t i = 0;

  while (i < len) {
    uint64_t j = i;
    bool zero = fmt_is_zero(buf + i, len - i < ZERO_GRAIN ? len - i : ZERO_GRAIN);
    while (j < len) {
      uint64_t n = len - j < ZERO_GRAIN ? len - j : ZERO_GRAIN;
      if (fmt_is_zero(buf + j, n) != zero)
        break;
      j += n;
    }
    int r = zero ? fmt_zero(k->base, j - i, offset + i, FMT_MAY_TRIM)
                 : fmt_pwrite(k->base, buf + i, j - i, offset + i, 0);
    if (r < 0)
      return r;
    i = j;
  }
  return 0;
}

/* Copies the virtual range [START, END) of owned clusters into the base:
 * holes of the data area as fmt_zero, data read and written. */
static int commit_run(struct commit *k, uint64_t start, uint64_t end)
{
  uint64_t pos = start;
  int r;

  while (pos < end) {
    off_t data = lseek(k->fd, (off_t)(k->h.data_offset + pos), SEEK_DATA);
    uint64_t dv, hv;

    if (data == -1 && errno != ENXIO)
      return -errno;
    dv = data == -1 ? end : (uint64_t)data - k->h.data_offset;
    if (dv > end)
      dv = end;
    if (dv > pos) {
      r = fmt_zero(k->base, dv - pos, pos, FMT_MAY_TRIM);
      if (r < 0)
        return r;
      k->done += dv - pos;
      if (k->progress != NULL)
        k->progress(k->opaque, k->done, k->total);
      pos = dv;
    }
    if (pos == end)
      break;
    off_t hole = lseek(k->fd, data, SEEK_HOLE);
    if (hole == -1)
      return -errno;
    hv = (uint64_t)hole - k->h.data_offset;
    if (hv > end)
      hv = end;
    while (pos < hv) {
      uint64_t n = hv - pos < COMMIT_CHUNK ? hv - pos : COMMIT_CHUNK;
      r = file_pread_full(k->fd, k->buf, n, k->h.data_offset + pos);
      if (r == 0)
        r = put(k, k->buf, n, pos);
      if (r < 0)
        return r;
      pos += n;
      k->done += n;
      k->data += n;
      if (k->progress != NULL)
        k->progress(k->opaque, k->done, k->total);
    }
  }
  return 0;
}

/* Copies every owned cluster of BM into the base. */
static int commit_clusters(struct commit *k, struct bitmap *bm, char *err, size_t errlen)
{
  uint64_t cs = 1ULL << k->h.cluster_bits;
  uint64_t size = k->h.virtual_size;
  int r;

  for (uint64_t c = 0; c < bm->nbits;) {
    bool set;
    uint64_t next = bitmap_run_end(bm, c, bm->nbits, &set);
    if (set) {
      uint64_t end = next * cs < size ? next * cs : size;
      r = commit_run(k, c * cs, end);
      if (r < 0) {
        snprintf(err, errlen, "%s: committing clusters %llu-%llu into %s: %s", k->path,
                 (unsigned long long)c, (unsigned long long)(next - 1), k->base->path,
                 strerror(-r));
        return -1;
      }
    }
    c = next;
  }
  return 0;
}

/* Writes the header and makes it durable. */
static int header_sync(struct commit *k)
{
  int r = overlay_header_write(k->fd, &k->h);

  if (r == 0 && fdatasync(k->fd) == -1)
    r = -errno;
  return r;
}

/* Opens the base for writing, locked: refused while anyone else holds it. */
static struct fmt *open_base(struct commit *k, char *err, size_t errlen)
{
  const struct fmt_ops *ops = fmt_lookup(k->h.base_format);
  char shown[PATH_MAX], berr[PATH_MAX + 256];
  struct fmt *base;
  int bfd;

  if (strcmp(k->h.base_format, "rbd") == 0) {
    snprintf(err, errlen, "%s: its base is an RBD snapshot, which cannot change: convert the"
             " chain instead (blockd-img convert, into a file or a new RBD image)", k->path);
    return NULL;
  }
  if (ops == NULL) {
    snprintf(err, errlen, "%s: base format '%s' unknown or not built in", k->path,
             k->h.base_format);
    return NULL;
  }
  if (ops->pwrite == NULL) {
    snprintf(err, errlen, "%s: its base is %s, which blockd cannot write: convert the chain"
             " instead (blockd-img convert)", k->path, ops->name);
    return NULL;
  }
  bfd = basepath_open_write(k->path, k->h.base_path, shown, sizeof shown, berr, sizeof berr);
  if (bfd < 0) {
    snprintf(err, errlen, "%s: cannot open base image for writing: %s", k->path, berr);
    return NULL;
  }
  base = fmt_open_fd(bfd, shown, k->path, ops, FMT_WRITE, berr, sizeof berr);
  /* Open for writing, the base is still shared with readers that let
   * others write (a QEMU or qemu-storage-daemon exporting it read-only):
   * those would see it change under them. Nobody else may hold it at all. */
  if (base != NULL && lock_create(base->fd, shown, berr, sizeof berr) < 0) {
    fmt_close(base);
    base = NULL;
  }
  if (base == NULL)
    snprintf(err, errlen, "%s: cannot write its base image: %s: not committed", k->path, berr);
  return base;
}

int overlay_commit(const char *path, fmt_progress_fn progress, void *opaque,
                   struct overlay_commit_result *res, char *err, size_t errlen)
{
  struct commit k = { .path = path, .fd = -1, .progress = progress, .opaque = opaque };
  struct bitmap bm = { 0 };
  struct stat st;
  int r, ret = -1;

  memset(res, 0, sizeof *res);
  k.fd = open(path, O_RDWR | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (k.fd == -1) {
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return -1;
  }
  if (basepath_check_fd(k.fd, path, err, errlen) < 0)
    goto out;
  if (fstat(k.fd, &st) == -1 || !S_ISREG(st.st_mode)) {
    snprintf(err, errlen, "%s: not a regular file", path);
    goto out;
  }
  /* Nobody else may hold the overlay either, a reader included. */
  if (lock_image(k.fd, path, NULL, FMT_WRITE, &k.lock, err, errlen) < 0 ||
      lock_create(k.fd, path, err, errlen) < 0) {
    snprintf(err + strlen(err), errlen - strlen(err), ": not committed");
    goto out;
  }
  if (overlay_header_read(k.fd, (uint64_t)st.st_size, path, &k.h, err, errlen) < 0)
    goto out;
  k.base = open_base(&k, err, errlen);
  if (k.base == NULL)
    goto out;
  snprintf(res->base, sizeof res->base, "%s", k.base->path);
  if (k.base->size != k.h.virtual_size) {
    snprintf(err, errlen, "%s: its virtual size (%llu) is not its base's (%llu): not committed",
             path, (unsigned long long)k.h.virtual_size, (unsigned long long)k.base->size);
    goto out;
  }
  /* A base that changed would take clusters over content the overlay was
   * not made on; unless our own interrupted commit changed it. */
  if (!(k.h.incompat & OVERLAY_INCOMPAT_COMMIT) &&
      overlay_header_check_base(&k.h, k.base, path, err, errlen) < 0)
    goto out;

  r = bitmap_init(&bm, (k.h.virtual_size + (1ULL << k.h.cluster_bits) - 1) >> k.h.cluster_bits);
  if (r == 0)
    r = bitmap_load(&bm, k.fd, k.h.bitmap_offset);
  k.buf = malloc(COMMIT_CHUNK);
  if (r == 0 && k.buf == NULL)
    r = -ENOMEM;
  if (r < 0) {
    snprintf(err, errlen, "%s: bitmap: %s", path, strerror(-r));
    goto out;
  }
  res->clusters = bitmap_count(&bm);
  k.total = res->clusters << k.h.cluster_bits;

  /* 1. Mark the overlay: from here the base stops matching its identity. */
  k.h.incompat |= OVERLAY_INCOMPAT_COMMIT;
  r = header_sync(&k);
  if (r < 0) {
    snprintf(err, errlen, "%s: writing the header: %s", path, strerror(-r));
    goto out;
  }
  /* 2. The owned clusters into the base, made durable. */
  if (commit_clusters(&k, &bm, err, errlen) < 0)
    goto out;
  r = fmt_flush(k.base);
  if (r < 0) {
    snprintf(err, errlen, "%s: flushing base image %s: %s", path, k.base->path, strerror(-r));
    goto out;
  }
  res->bytes = k.data;
  /* 3. Empty the overlay: bitmap first (durable), then the data area. */
  r = file_zero(k.fd, k.h.bitmap_size, k.h.bitmap_offset, FMT_MAY_TRIM);
  if (r == 0 && fdatasync(k.fd) == -1)
    r = -errno;
  if (r == 0 && (ftruncate(k.fd, (off_t)k.h.data_offset) == -1 ||
                 ftruncate(k.fd, (off_t)(k.h.data_offset + k.h.virtual_size)) == -1))
    r = -errno;
  /* 4. The base's new identity, and the mark removed. */
  if (r == 0)
    r = overlay_header_identify(&k.h, k.base);
  if (r == 0) {
    k.h.incompat &= ~OVERLAY_INCOMPAT_COMMIT;
    r = header_sync(&k);
  }
  if (r < 0) {
    snprintf(err, errlen, "%s: emptying the overlay after the commit: %s (%s)", path,
             strerror(-r), OVERLAY_COMMIT_INTERRUPTED);
    goto out;
  }
  ret = 0;
out:
  free(k.buf);
  bitmap_free(&bm);
  fmt_close(k.base);
  lock_forget(k.lock);
  close(k.fd);
  return ret;
}

/* overlay-rebase: records a base's identity again (the same file, touched
 * or copied without -p), or a new base (a copy of the old one), after
 * checking as much as can be checked that the overlay reads the same:
 * - the recorded base still there and unchanged (its identity matches) and
 *   NEWBASE a different file: every cluster the overlay does not own is
 *   compared between the two;
 * - otherwise the virtual size, the file size and the first 64 KiB the
 *   header recorded (the rest cannot be compared without the original);
 * - with OVERLAY_REBASE_UNSAFE only the virtual size (the user vouches).
 * Only the header changes: one 4 KiB write at offset 0, then fdatasync. A
 * crash that tears it leaves identity fields that match no base, so the
 * overlay is refused until rebase runs again; it never reads another base.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define COMPARE_CHUNK (1u << 20) /* bytes compared at a time */

/* Opens the base NAME of the overlay PATH under the base policy, read-only,
 * as FORMAT (NULL: recognised as fmt_open does). NULL with a message in ERR. */
static struct fmt *open_base(const char *path, const char *name, const char *format, char *err,
                             size_t errlen)
{
  const struct fmt_ops *ops = NULL;
  char shown[PATH_MAX], berr[PATH_MAX + 256];
  struct fmt *base;
  int bfd;

  if (format != NULL && (ops = fmt_lookup(format)) == NULL) {
    snprintf(err, errlen, "%s: base format '%s' unknown or not built in", path, format);
    return NULL;
  }
  bfd = basepath_open(path, name, shown, sizeof shown, berr, sizeof berr);
  if (bfd < 0) {
    snprintf(err, errlen, "%s: cannot open base image: %s", path, berr);
    return NULL;
  }
  if (ops == NULL && (ops = fmt_detect_fd(bfd, shown, berr, sizeof berr)) == NULL) {
    close(bfd);
    snprintf(err, errlen, "%s: %s", path, berr);
    return NULL;
  }
  base = fmt_open_fd(bfd, shown, path, ops, FMT_READ, berr, sizeof berr);
  if (base == NULL)
    snprintf(err, errlen, "%s: cannot open base image: %s", path, berr);
  return base;
}

/* Whether A and B are open on the same file. */
static bool same_file(int a, int b)
{
  struct stat sa, sb;

  return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
         sa.st_ino == sb.st_ino;
}

/* Compares OLD and NEW over every cluster BM does not own. Returns 0 if
 * they read the same, else -1 with a message in ERR. */
static int compare_unowned(const char *path, struct fmt *old, struct fmt *new,
                           const struct bitmap *bm, unsigned cluster_bits, char *err,
                           size_t errlen)
{
  CLEANUP_FREE char *a = malloc(COMPARE_CHUNK);
  CLEANUP_FREE char *b = malloc(COMPARE_CHUNK);
  uint64_t cs = 1ULL << cluster_bits;

  if (a == NULL || b == NULL) {
    snprintf(err, errlen, "%s: %s", path, strerror(ENOMEM));
    return -1;
  }
  for (uint64_t c = 0; c < bm->nbits;) {
    bool set;
    uint64_t next = bitmap_run_end(bm, c, bm->nbits, &set);
    uint64_t end = next * cs < old->size ? next * cs : old->size;

    for (uint64_t pos = c * cs; !set && pos < end;) {
      uint64_t n = end - pos < COMPARE_CHUNK ? end - pos : COMPARE_CHUNK;
      int r = fmt_pread(old, a, n, pos);
      if (r == 0)
        r = fmt_pread(new, b, n, pos);
      if (r < 0) {
        snprintf(err, errlen, "%s: comparing its bases at offset %llu: %s", path,
                 (unsigned long long)pos, strerror(-r));
        return -1;
      }
      if (memcmp(a, b, n) != 0) {
        uint64_t i = 0;
        while (a[i] == b[i])
          i++;
        snprintf(err, errlen, "%s: %s differs from the recorded base %s at offset %llu, in a"
                 " cluster the overlay reads from its base: not rebased", path, new->path,
                 old->path, (unsigned long long)(pos + i));
        return -1;
      }
      pos += n;
    }
    c = next;
  }
  return 0;
}

int overlay_rebase(const char *path, const char *newbase, const char *format, unsigned flags,
                   struct overlay_rebase_result *res, char *err, size_t errlen)
{
  struct overlay_header h, nh, id;
  struct fmt *old = NULL, *new = NULL;
  struct bitmap bm = { 0 };
  struct lock *lock = NULL;
  char real[PATH_MAX], oerr[PATH_MAX + 512];
  struct stat st;
  int fd, r, ret = -1;

  memset(res, 0, sizeof *res);
  fd = open(path, O_RDWR | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (fd == -1) {
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return -1;
  }
  if (basepath_check_fd(fd, path, err, errlen) < 0)
    goto out;
  if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
    snprintf(err, errlen, "%s: not a regular file", path);
    goto out;
  }
  if (lock_image(fd, path, NULL, FMT_WRITE, &lock, err, errlen) < 0) {
    snprintf(err + strlen(err), errlen - strlen(err), ": not rebased");
    goto out;
  }
  if (overlay_header_read(fd, (uint64_t)st.st_size, path, &h, err, errlen) < 0)
    goto out;
  if (h.incompat & OVERLAY_INCOMPAT_COMMIT) {
    snprintf(err, errlen, "%s: %s", path, OVERLAY_COMMIT_INTERRUPTED);
    goto out;
  }
  if (strcmp(h.base_format, "rbd") == 0) {
    /* Nothing to re-accept: a snapshot cannot be touched or copied. */
    snprintf(err, errlen, "%s: its base is an RBD snapshot, which rebase does not move", path);
    goto out;
  }
  nh = h;
  /* The recorded base, if it still opens: the original to compare with. */
  old = open_base(path, h.base_path, h.base_format, oerr, sizeof oerr);
  if (newbase != NULL) {
    if (overlay_header_set_base(&nh, path, newbase, real, sizeof real, err, errlen) < 0)
      goto out;
    /* By the name the overlay will use, so the base policy applies now. */
    new = open_base(path, nh.base_path, format, err, errlen);
  }
  else if (old != NULL) {
    new = old;
    old = NULL;
  }
  else
    snprintf(err, errlen, "%s", oerr);
  if (new == NULL)
    goto out;
  snprintf(res->base, sizeof res->base, "%s", new->path);
  if (same_file(new->fd, fd)) {
    snprintf(err, errlen, "%s: cannot be its own base", path);
    goto out;
  }
  if (new->size != h.base_virtual_size) {
    snprintf(err, errlen, "%s: %s is %llu bytes, the base the overlay was made on %llu: not"
             " rebased", path, new->path, (unsigned long long)new->size,
             (unsigned long long)h.base_virtual_size);
    goto out;
  }
  id = h;
  r = overlay_header_identify(&id, new);
  if (r < 0) {
    snprintf(err, errlen, "%s: %s", new->path, strerror(-r));
    goto out;
  }

  if (flags & OVERLAY_REBASE_UNSAFE)
    snprintf(res->verified, sizeof res->verified, "only its virtual size (-u)");
  else if (old != NULL && !same_file(old->fd, new->fd) &&
           overlay_header_check_base(&h, old, path, oerr, sizeof oerr) == 0) {
    r = bitmap_init(&bm, (h.virtual_size + (1ULL << h.cluster_bits) - 1) >> h.cluster_bits);
    if (r == 0)
      r = bitmap_load(&bm, fd, h.bitmap_offset);
    if (r < 0) {
      snprintf(err, errlen, "%s: bitmap: %s", path, strerror(-r));
      goto out;
    }
    if (compare_unowned(path, old, new, &bm, h.cluster_bits, err, errlen) < 0)
      goto out;
    snprintf(res->verified, sizeof res->verified, "every cluster it reads from its base, against"
             " the recorded base");
  }
  else {
    if (id.base_file_size != h.base_file_size || id.base_hash != h.base_hash) {
      snprintf(err, errlen, "%s: %s is not a copy of the base the overlay was made on (its %s"
               " differs) and that base is not there to compare with: not rebased (-u accepts"
               " it if you know it reads the same)", path, new->path,
               id.base_file_size != h.base_file_size ? "file size" : "first 64 KiB");
      goto out;
    }
    snprintf(res->verified, sizeof res->verified, "its virtual size, file size and first 64 KiB"
             " (the rest cannot be compared without the original)");
  }

  memcpy(nh.base_format, id.base_format, sizeof nh.base_format);
  nh.base_file_size = id.base_file_size;
  nh.base_mtime_sec = id.base_mtime_sec;
  nh.base_mtime_nsec = id.base_mtime_nsec;
  nh.base_virtual_size = id.base_virtual_size;
  nh.base_hash = id.base_hash;
  r = overlay_header_write(fd, &nh);
  if (r == 0 && fdatasync(fd) == -1)
    r = -errno;
  if (r < 0) {
    snprintf(err, errlen, "%s: writing the header: %s", path, strerror(-r));
    goto out;
  }
  ret = 0;
out:
  bitmap_free(&bm);
  fmt_close(old);
  fmt_close(new);
  lock_forget(lock);
  close(fd);
  return ret;
}

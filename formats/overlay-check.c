/* overlay-check: blockd-img check for overlays. Reads the file the way the
 * engine would, but reports what is wrong instead of refusing at the first
 * problem, counting as qemu-img check does: corruptions (the disk would read
 * wrongly or not at all), leaks (data the disk never reads: space only) and
 * checks that could not be made.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define MAX_LEAK_LINES 16 /* runs of leaked clusters named one by one */

/* The overlay being checked. */
struct ovl_check {
  const char *path;             /* as the user named it */
  int fd;                       /* open read-only, share-locked */
  struct overlay_header h;      /* decoded header */
  uint64_t file_size;           /* st_size */
  uint64_t clusters;            /* clusters in the virtual disk */
  unsigned char *bitmap;        /* the on-disk bitmap, h.bitmap_size bytes */
  struct fmt_check *c;          /* counters and report */
  uint64_t run_first, run_last; /* pending run of leaked clusters; run_last < run_first if none */
  uint64_t run_bytes;           /* bytes of data in that run */
  uint64_t last_leak;           /* last cluster counted as leaked, + 1 (0: none) */
  uint64_t runs;                /* runs of leaked clusters found */
};

/* Whether the bitmap owns cluster I. */
static bool owned(const struct ovl_check *k, uint64_t i)
{
  return (k->bitmap[i / 8] >> (i % 8)) & 1;
}

/* Reports the pending run of leaked clusters, if any. */
static void leak_flush(struct ovl_check *k)
{
  uint64_t cs = 1ULL << k->h.cluster_bits;

  if (k->run_last < k->run_first)
    return;
  if (++k->runs <= MAX_LEAK_LINES)
    fmt_check_report(k->c, FMT_CHECK_LEAK,
                     "%s: clusters %llu-%llu (virtual bytes %llu-%llu) are not owned but hold"
                     " %llu bytes of data, which nothing reads", k->path,
                     (unsigned long long)k->run_first, (unsigned long long)k->run_last,
                     (unsigned long long)(k->run_first * cs),
                     (unsigned long long)((k->run_last + 1) * cs - 1),
                     (unsigned long long)k->run_bytes);
  k->run_first = 1;
  k->run_last = 0;
  k->run_bytes = 0;
}

/* Records BYTES of data found in unowned cluster I. */
static void leak_add(struct ovl_check *k, uint64_t i, uint64_t bytes)
{
  if (k->last_leak != i + 1) {
    k->c->leaks++;
    k->last_leak = i + 1;
  }
  k->c->leaked_bytes += bytes;
  if (k->run_last >= k->run_first && i > k->run_last + 1)
    leak_flush(k);
  if (k->run_last < k->run_first)
    k->run_first = i;
  k->run_last = i;
  k->run_bytes += bytes;
}

/* Finds data (SEEK_DATA extents) in the data area of unowned clusters, and
 * past the data area's end. */
static void check_leaks(struct ovl_check *k)
{
  uint64_t cs = 1ULL << k->h.cluster_bits;
  uint64_t area_end = k->h.data_offset + k->h.virtual_size;
  uint64_t end = k->file_size < area_end ? k->file_size : area_end;
  uint64_t pos = k->h.data_offset;

  k->run_first = 1;
  k->run_last = 0;
  while (pos < end) {
    off_t data = lseek(k->fd, (off_t)pos, SEEK_DATA), hole;

    if (data == -1 && errno == ENXIO)
      break;
    if (data == -1 || (hole = lseek(k->fd, data, SEEK_HOLE)) == -1) {
      fmt_check_report(k->c, FMT_CHECK_ERROR, "%s: looking for leaked data: lseek: %s", k->path,
                       strerror(errno));
      return;
    }
    if ((uint64_t)data >= end)
      break;
    uint64_t v = (uint64_t)data - k->h.data_offset;
    uint64_t vend = ((uint64_t)hole < end ? (uint64_t)hole : end) - k->h.data_offset;
    while (v < vend) {
      uint64_t i = v / cs;
      uint64_t next = (i + 1) * cs < vend ? (i + 1) * cs : vend;
      if (!owned(k, i))
        leak_add(k, i, next - v);
      v = next;
    }
    pos = (uint64_t)hole;
  }
  leak_flush(k);
  if (k->runs > MAX_LEAK_LINES)
    fmt_check_report(k->c, FMT_CHECK_NOTE, "%s: %llu more runs of leaked clusters not listed",
                     k->path, (unsigned long long)(k->runs - MAX_LEAK_LINES));

  /* Past the data area nothing is ever read or written. */
  if (k->file_size > area_end) {
    off_t data = lseek(k->fd, (off_t)area_end, SEEK_DATA);
    if (data != -1) {
      uint64_t n = k->file_size - (uint64_t)data;
      k->c->leaks += (n + cs - 1) / cs;
      k->c->leaked_bytes += n;
      fmt_check_report(k->c, FMT_CHECK_LEAK, "%s: %llu bytes of data past the end of the data"
                       " area (file offset %llu), which nothing reads", k->path,
                       (unsigned long long)n, (unsigned long long)data);
    }
  }
}

/* Reads the bitmap and checks what the header cannot say about it. */
static int check_bitmap(struct ovl_check *k)
{
  uint64_t padding = 0, first_pad = 0;
  uint64_t cs = 1ULL << k->h.cluster_bits;
  int r;

  k->bitmap = malloc(k->h.bitmap_size);
  if (k->bitmap == NULL) {
    fmt_check_report(k->c, FMT_CHECK_ERROR, "%s: bitmap: %s", k->path, strerror(ENOMEM));
    return -1;
  }
  r = file_pread_full(k->fd, k->bitmap, k->h.bitmap_size, k->h.bitmap_offset);
  if (r < 0) {
    fmt_check_report(k->c, FMT_CHECK_ERROR, "%s: reading the bitmap: %s", k->path, strerror(-r));
    return -1;
  }
  for (uint64_t i = 0; i < k->clusters; i++)
    k->c->allocated_clusters += owned(k, i);
  /* blockd never sets the padding bits past the last cluster: set ones
   * mean the bitmap was written by something else, or damaged. */
  for (uint64_t i = k->clusters; i < k->h.bitmap_size * 8; i++)
    if (owned(k, i) && padding++ == 0)
      first_pad = i;
  if (padding > 0)
    fmt_check_report(k->c, FMT_CHECK_CORRUPTION, "%s: the bitmap has %llu bits set past its"
                     " last cluster (%llu), the first at bit %llu: damaged or not written by"
                     " blockd", k->path, (unsigned long long)padding,
                     (unsigned long long)(k->clusters - 1), (unsigned long long)first_pad);
  /* create sets the file's size to the data area's end: a shorter file
   * was truncated, and owned clusters past its end read as zeroes. */
  if (k->file_size < k->h.data_offset + k->h.virtual_size) {
    uint64_t lost = 0;
    uint64_t first = k->file_size <= k->h.data_offset ? 0
                     : (k->file_size - k->h.data_offset) / cs;
    for (uint64_t i = first; i < k->clusters; i++)
      lost += owned(k, i);
    fmt_check_report(k->c, FMT_CHECK_CORRUPTION, "%s: the file is %llu bytes, shorter than its"
                     " data area (%llu): truncated; %llu owned clusters lie past its end", k->path,
                     (unsigned long long)k->file_size,
                     (unsigned long long)(k->h.data_offset + k->h.virtual_size),
                     (unsigned long long)lost);
  }
  return 0;
}

/* Opens the base the header names, as the engine would, and checks its
 * identity. */
static void check_base(struct ovl_check *k)
{
  const struct fmt_ops *ops = fmt_lookup(k->h.base_format);
  char shown[PATH_MAX], err[PATH_MAX + 512], berr[PATH_MAX + 256];
  struct fmt *base;
  int bfd;

  if (strcmp(k->h.base_format, "rbd") == 0) {
    /* A snapshot in a Ceph cluster, as the engine opens it. */
    snprintf(shown, sizeof shown, "%s", k->h.base_path);
    base = basepath_open_rbd(k->path, k->h.base_path, berr, sizeof berr);
    if (base == NULL) {
      fmt_check_report(k->c, FMT_CHECK_CORRUPTION, "%s: cannot open base image: %s", k->path,
                       berr);
      return;
    }
    goto identity;
  }
  if (ops == NULL) {
    fmt_check_report(k->c, FMT_CHECK_CORRUPTION, "%s: base format '%s' unknown or not built in",
                     k->path, k->h.base_format);
    return;
  }
  bfd = basepath_open(k->path, k->h.base_path, shown, sizeof shown, berr, sizeof berr);
  if (bfd < 0) {
    fmt_check_report(k->c, FMT_CHECK_CORRUPTION, "%s: cannot open base image: %s", k->path, berr);
    return;
  }
  base = fmt_open_fd(bfd, shown, k->path, ops, FMT_READ, berr, sizeof berr);
  if (base == NULL) {
    fmt_check_report(k->c, FMT_CHECK_CORRUPTION, "%s: cannot open base image: %s", k->path, berr);
    return;
  }
identity:
  if (overlay_header_check_base(&k->h, base, k->path, err, sizeof err) < 0)
    fmt_check_report(k->c, FMT_CHECK_CORRUPTION, "%s", err);
  else
    fmt_check_report(k->c, FMT_CHECK_NOTE, "%s: base %s (%s): identity as recorded", k->path,
                     shown, k->h.base_format);
  fmt_close(base);
}

void overlay_check(const char *path, struct fmt_check *c)
{
  struct ovl_check k = { .path = path, .c = c };
  struct lock *lock = NULL;
  char err[PATH_MAX + 512];
  struct stat st;
  int r;

  k.fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (k.fd == -1) {
    fmt_check_report(c, FMT_CHECK_ERROR, "%s: %s", path, strerror(errno));
    return;
  }
  if (basepath_check_fd(k.fd, path, err, sizeof err) < 0 || fstat(k.fd, &st) == -1 ||
      !S_ISREG(st.st_mode)) {
    fmt_check_report(c, FMT_CHECK_ERROR, "%s: not a regular file", path);
    goto out;
  }
  k.file_size = (uint64_t)st.st_size;
  c->end_offset = k.file_size;
  /* A writer may have bits in memory that are not on disk yet, and punches
   * leftovers when it opens: what a check sees then proves nothing. */
  if (lock_image(k.fd, path, NULL, FMT_READ, &lock, err, sizeof err) < 0) {
    fmt_check_report(c, FMT_CHECK_ERROR, "%s (served? stop it, or check a copy)", err);
    goto out;
  }
  r = overlay_header_read(k.fd, k.file_size, path, &k.h, err, sizeof err);
  if (r < 0) {
    fmt_check_report(c, r == -ENOTSUP ? FMT_CHECK_UNSUPPORTED
                        : r == -EINVAL ? FMT_CHECK_CORRUPTION : FMT_CHECK_ERROR, "%s", err);
    goto out;
  }
  k.clusters = (k.h.virtual_size + (1ULL << k.h.cluster_bits) - 1) >> k.h.cluster_bits;
  c->total_clusters = k.clusters;
  if (check_bitmap(&k) == 0)
    check_leaks(&k);
  /* The base of an interrupted commit differs from its identity by design. */
  if (k.h.incompat & OVERLAY_INCOMPAT_COMMIT)
    fmt_check_report(c, FMT_CHECK_CORRUPTION, "%s: %s", path, OVERLAY_COMMIT_INTERRUPTED);
  else
    check_base(&k);
out:
  free(k.bitmap);
  lock_forget(lock);
  close(k.fd);
}

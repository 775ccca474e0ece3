/* overlay: a copy-on-write disk over a read-only base (raw, qcow2, overlay).
 *
 * One sparse file: a 4096-byte header, a bitmap of the clusters the overlay
 * owns, and a data area where virtual offset X lives at data_offset + X, so
 * owned I/O is offset arithmetic and holes stay holes (docs/overlay-format.md).
 * Unowned clusters read from the base.  Owning is one-way: a write, trim or
 * zero makes a cluster the overlay's for good, so base data never resurfaces.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/falloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define OVL_MAX_DEPTH 16      /* longest chain of overlays we follow */
#define OVL_LOCKS 64          /* copy-up lock stripes */

struct overlay {
  struct fmt fmt;              /* common fields, first */
  int fd;                      /* the overlay file, locked (lock.c) */
  struct fmt *base;            /* read-only base image */
  unsigned cluster_bits;       /* log2 of the cluster size */
  uint64_t clusters;           /* clusters in the virtual disk */
  uint64_t bitmap_offset;      /* file offset of the on-disk bitmap */
  uint64_t data_offset;        /* file offset of virtual byte 0 */
  struct bitmap bm;            /* owned clusters */
  bool ring_writes;            /* map writes for io_uring (file_async_buffered_writes) */
  pthread_mutex_t sync_lock;   /* serializes bitmap_sync */
  pthread_mutex_t copy_locks[OVL_LOCKS]; /* a cluster's first write, by index % OVL_LOCKS */
  char base_path[PATH_MAX];    /* base file: the header's path, resolved */
  char base_recorded[OVERLAY_HEADER_SIZE]; /* base path as the header records it */
  char base_format[16];        /* base format as recorded */
};

/* Index of the cluster holding byte OFFSET. */
static inline uint64_t cluster_of(const struct overlay *o, uint64_t offset)
{
  return offset >> o->cluster_bits;
}

/* Overlays opened by this thread's current fmt_open, to stop cycles. */
static __thread int open_depth;

/* Frees an overlay, opened or half opened. */
static void overlay_free(struct overlay *o)
{
  if (o->fd >= 0)
    close(o->fd);
  fmt_close(o->base);
  bitmap_free(&o->bm);
  pthread_mutex_destroy(&o->sync_lock);
  for (int i = 0; i < OVL_LOCKS; i++)
    pthread_mutex_destroy(&o->copy_locks[i]);
  fmt_fini(&o->fmt);
  free(o);
}

/* Punches the data area of unowned clusters that hold data: what writes
 * left there when a crash lost their bits before a flush. Only space is at
 * stake (unowned clusters read from the base), so errors are ignored. Costs
 * one lseek pair per allocated extent of the file. */
static void reclaim(struct overlay *o)
{
  uint64_t pos = o->data_offset, end = o->data_offset + o->fmt.size;

  while (pos < end) {
    off_t data = lseek(o->fd, (off_t)pos, SEEK_DATA), hole;
    if (data == -1 || (uint64_t)data >= end)
      return;
    hole = lseek(o->fd, data, SEEK_HOLE);
    if (hole == -1)
      return;
    uint64_t v = (uint64_t)data - o->data_offset;
    uint64_t vend = ((uint64_t)hole < end ? (uint64_t)hole : end) - o->data_offset;
    while (v < vend) {
      bool owned;
      uint64_t c = cluster_of(o, v);
      uint64_t next = bitmap_run_end(&o->bm, c, cluster_of(o, vend - 1) + 1, &owned)
                      << o->cluster_bits;
      if (next > vend)
        next = vend;
      if (!owned)
        fallocate(o->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)(o->data_offset + v),
                  (off_t)(next - v));
      v = next;
    }
    pos = (uint64_t)hole;
  }
}

static struct fmt *overlay_open(int fd, const char *path, enum fmt_access access, char *err,
                                size_t errlen)
{
  bool readonly = access != FMT_WRITE;
  struct overlay *o;
  struct overlay_header h;
  const struct fmt_ops *base_ops;
  struct stat st;
  char berr[1024];
  int r, bfd;

  o = calloc(1, sizeof *o);
  if (o == NULL) {
    snprintf(err, errlen, "%s: %s", path, strerror(ENOMEM));
    close(fd);
    return NULL;
  }
  o->fd = fd;
  pthread_mutex_init(&o->sync_lock, NULL);
  for (int i = 0; i < OVL_LOCKS; i++)
    pthread_mutex_init(&o->copy_locks[i], NULL);

  if (fstat(o->fd, &st) == -1 || !S_ISREG(st.st_mode)) {
    snprintf(err, errlen, "%s: not a regular file", path);
    goto err;
  }
  o->ring_writes = file_async_buffered_writes(o->fd);
  if (overlay_header_read(o->fd, (uint64_t)st.st_size, path, &h, err, errlen) < 0)
    goto err;
  if (h.incompat & OVERLAY_INCOMPAT_COMMIT) {
    snprintf(err, errlen, "%s: %s", path, OVERLAY_COMMIT_INTERRUPTED);
    goto err;
  }
  o->cluster_bits = h.cluster_bits;
  o->clusters = (h.virtual_size + (1ULL << h.cluster_bits) - 1) >> h.cluster_bits;
  o->bitmap_offset = h.bitmap_offset;
  o->data_offset = h.data_offset;
  memcpy(o->base_recorded, h.base_path, h.base_path_len + 1);
  memcpy(o->base_format, h.base_format, sizeof o->base_format);

  /* An RBD snapshot: a name in a cluster, not a file. */
  if (strcmp(o->base_format, "rbd") == 0) {
    o->base = basepath_open_rbd(path, h.base_path, berr, sizeof berr);
    if (o->base == NULL) {
      snprintf(err, errlen, "%s: cannot open base image: %s", path, berr);
      goto err;
    }
    snprintf(o->base_path, sizeof o->base_path, "%s", h.base_path);
    goto check_base;
  }
  /* The base's format is the one recorded at creation, never guessed from
   * its contents; where it may live is basepath.c's policy. */
  base_ops = fmt_lookup(o->base_format);
  if (base_ops == NULL) {
    snprintf(err, errlen, "%s: base format '%s' unknown or not built in", path, o->base_format);
    goto err;
  }
  if (open_depth >= OVL_MAX_DEPTH) {
    snprintf(err, errlen, "%s: chain of overlays deeper than %d (a loop?)", path, OVL_MAX_DEPTH);
    goto err;
  }
  bfd = basepath_open(path, h.base_path, o->base_path, sizeof o->base_path, berr, sizeof berr);
  if (bfd < 0) {
    snprintf(err, errlen, "%s: cannot open base image: %s", path, berr);
    goto err;
  }
  open_depth++;
  /* A base is read, and locked so that nobody writes it meanwhile. */
  o->base = fmt_open_fd(bfd, o->base_path, path, base_ops,
                        access == FMT_SHARED ? FMT_SHARED : FMT_READ, berr, sizeof berr);
  open_depth--;
  if (o->base == NULL) {
    snprintf(err, errlen, "%s: cannot open base image: %s", path, berr);
    goto err;
  }
check_base:
  if (overlay_header_check_base(&h, o->base, path, err, errlen) < 0)
    goto err;

  r = bitmap_init(&o->bm, o->clusters);
  if (r == 0)
    r = bitmap_load(&o->bm, o->fd, o->bitmap_offset);
  if (r < 0) {
    snprintf(err, errlen, "%s: bitmap: %s", path, strerror(-r));
    goto err;
  }
  r = fmt_init(&o->fmt, &fmt_overlay_ops, o->fd, path, h.virtual_size, readonly);
  if (r < 0) {
    snprintf(err, errlen, "%s: %s", path, strerror(-r));
    goto err;
  }
  if (!readonly)
    reclaim(o);
  o->fmt.can_trim = !readonly;
  o->fmt.can_zero = !readonly;
  o->fmt.can_fast_zero = !readonly;
  o->fmt.can_extents = true;
  /* One handle per open image, shared by every connection. */
  o->fmt.can_multi_conn = true;
  return &o->fmt;
err:
  overlay_free(o);
  return NULL;
}

/* Reads [OFFSET, OFFSET+LEN) of the base. An overlay may be larger than
 * its base (made so, or crafted): past the base's end it reads zeroes, and
 * the base is never asked for a range it does not have. */
static int base_pread(struct overlay *o, void *buf, uint64_t len, uint64_t offset)
{
  uint64_t n = offset < o->base->size ? o->base->size - offset : 0;
  int r;

  if (n > len)
    n = len;
  if (n > 0 && (r = o->base->ops->pread(o->base, buf, n, offset)) < 0)
    return r;
  memset((char *)buf + n, 0, len - n);
  return 0;
}

static void overlay_close(struct fmt *f)
{
  overlay_free((struct overlay *)f);
}

static bool overlay_probe(const void *head, size_t len)
{
  return len >= 8 && memcmp(head, OVERLAY_MAGIC, 8) == 0;
}

static bool overlay_map(struct fmt *f, enum fmt_map_dir dir, uint64_t offset, uint64_t length,
                        struct fmt_map *m)
{
  struct overlay *o = (struct overlay *)f;
  uint64_t first, last;

  if (dir == FMT_MAP_FLUSH) {
    /* Flushing is a plain fdatasync only when the bitmap has nothing new. */
    if (!bitmap_clean(&o->bm))
      return false;
    m->fd = o->fd;
    m->offset = 0;
    return true;
  }
  if (length == 0 || offset + length > f->size)
    return false;
  first = cluster_of(o, offset);
  last = cluster_of(o, offset + length - 1);
  switch (dir) {
  case FMT_MAP_READ:
    if (__atomic_load_n(&f->sync_error, __ATOMIC_RELAXED) != 0)
      return false; /* overlay_pread decides what still reads */
    if (bitmap_all(&o->bm, first, last, false))
      break;
    if (bitmap_none(&o->bm, first, last) && o->base->ops->map != NULL &&
        length <= o->base->size && offset <= o->base->size - length)
      return o->base->ops->map(o->base, FMT_MAP_READ, offset, length, m);
    return false;
  case FMT_MAP_WRITE:
    /* Only clusters whose bit is on disk: a FUA write must not depend on
     * a bitmap page that a crash could still lose. Writes of the head go
     * through fmt_guard_head. */
    if ((o->ring_writes || f->direct_fd >= 0) && offset >= FMT_HEAD_BYTES &&
        bitmap_all(&o->bm, first, last, true))
      break;
    return false;
  default:
    /* Trim and zero must mark clusters owned: synchronous path. */
    return false;
  }
  m->fd = o->fd;
  m->offset = o->data_offset + offset;
  return true;
}

static int overlay_pread(struct fmt *f, void *buf, uint64_t length, uint64_t offset)
{
  struct overlay *o = (struct overlay *)f;
  char *p = buf;

  while (length > 0) {
    uint64_t c = cluster_of(o, offset);
    bool owned;
    /* Decide owned or not once per run: re-testing the bit could find a
     * cluster just copied up and read the rest of an unowned run from the
     * data area. */
    uint64_t end = bitmap_run_end(&o->bm, c, cluster_of(o, offset + length - 1) + 1, &owned);
    uint64_t n = (end << o->cluster_bits) - offset;
    int r;

    if (n > length)
      n = length;
    /* After a failed sync the file system may have dropped what was
     * written since the last good one: a cluster owned since then could
     * read as neither the base nor the write. Say so rather than guess. */
    if (owned && __atomic_load_n(&f->sync_error, __ATOMIC_ACQUIRE) != 0 &&
        !bitmap_all(&o->bm, c, cluster_of(o, offset + n - 1), true))
      return -EIO;
    if (owned)
      r = file_pread_full(file_data_fd(f, p, n, o->data_offset + offset), p, n,
                          o->data_offset + offset);
    else
      r = base_pread(o, p, n, offset);
    if (r < 0)
      return r;
    p += n;
    offset += n;
    length -= n;
  }
  return 0;
}

/* What a range operation does to the clusters it covers. */
enum op { OP_WRITE, OP_TRIM, OP_ZERO };

/* Does OP on [OFFSET, OFFSET+LEN) of the data area, all in owned clusters
 * or whole clusters about to be owned. */
static int do_owned(struct overlay *o, enum op op, const char *buf, uint64_t len,
                    uint64_t offset, uint32_t flags)
{
  switch (op) {
  case OP_WRITE:
    return file_pwrite_full(file_data_fd(&o->fmt, buf, len, o->data_offset + offset), buf, len,
                            o->data_offset + offset);
  case OP_TRIM:
    return file_zero(o->fd, len, o->data_offset + offset, FMT_MAY_TRIM);
  case OP_ZERO:
    return file_zero(o->fd, len, o->data_offset + offset, flags & (FMT_MAY_TRIM | FMT_FAST_ZERO));
  }
  return -EINVAL;
}

/* Copies unowned cluster C up from the base with [OFFSET, OFFSET+LEN) replaced
 * by BUF (OP_WRITE) or zeroes, then owns it. Caller holds C's copy lock. */
static int copy_up(struct overlay *o, uint64_t c, enum op op, const char *buf, uint64_t len,
                   uint64_t offset)
{
  uint64_t start = c << o->cluster_bits;
  uint64_t clen = 1ULL << o->cluster_bits;
  CLEANUP_FREE char *tmp = NULL;
  int r;

  if (start + clen > o->fmt.size)
    clen = o->fmt.size - start;
  /* Aligned, so that cache=none writes it around the page cache. */
  tmp = aligned_alloc(FMT_DIRECT_ALIGN, (clen + FMT_DIRECT_ALIGN - 1) / FMT_DIRECT_ALIGN * FMT_DIRECT_ALIGN);
  if (tmp == NULL)
    return -ENOMEM;
  r = base_pread(o, tmp, clen, start);
  if (r < 0)
    return r;
  if (op == OP_WRITE)
    memcpy(tmp + (offset - start), buf, len);
  else
    memset(tmp + (offset - start), 0, len);
  r = file_pwrite_full(file_data_fd(&o->fmt, tmp, clen, o->data_offset + start), tmp, clen,
                       o->data_offset + start);
  if (r < 0)
    return r;
  bitmap_set(&o->bm, c);
  return 0;
}

/* Does OP on one unowned cluster C's part [OFFSET, OFFSET+LEN), owning it. */
static int do_unowned(struct overlay *o, uint64_t c, enum op op, const char *buf, uint64_t len,
                      uint64_t offset, uint32_t flags)
{
  pthread_mutex_t *lock = &o->copy_locks[c % OVL_LOCKS];
  uint64_t start = c << o->cluster_bits;
  uint64_t clen = 1ULL << o->cluster_bits;
  int r;

  if (start + clen > o->fmt.size)
    clen = o->fmt.size - start;
  /* The first write of a cluster is serialized with any other, so two
   * copy-ups never clobber each other's bytes with base data. */
  pthread_mutex_lock(lock);
  if (bitmap_test(&o->bm, c))
    r = do_owned(o, op, buf, len, offset, flags);
  else if (len == clen) {
    /* Whole cluster: nothing of the base survives, no copy needed. For
     * trim and zero the data area must still be zeroed: an unflushed
     * write before a crash may have left bytes there. */
    r = do_owned(o, op, buf, len, offset, op == OP_TRIM ? FMT_MAY_TRIM : flags);
    if (r == 0)
      bitmap_set(&o->bm, c);
  }
  else
    r = copy_up(o, c, op, buf, len, offset);
  pthread_mutex_unlock(lock);
  return r;
}

/* Does OP on COUNT whole unowned clusters from C ([OFFSET, OFFSET+LEN)) in
 * one call, owning them: a 4 GiB discard is one fallocate, not 65536. */
static int do_unowned_run(struct overlay *o, uint64_t c, uint64_t count, enum op op,
                          const char *buf, uint64_t len, uint64_t offset, uint32_t flags)
{
  uint64_t stripes = count < OVL_LOCKS ? count : OVL_LOCKS;
  int r;

  /* Lock in ascending stripe order (do_unowned holds one at a time, so no
   * deadlock). Whole clusters need no recheck: writing or zeroing all of a
   * cluster is the same operation whether it is owned yet or not. */
  bool take[OVL_LOCKS] = { false };
  for (uint64_t k = 0; k < stripes; k++)
    take[(c + k) % OVL_LOCKS] = true;
  for (int i = 0; i < OVL_LOCKS; i++)
    if (take[i])
      pthread_mutex_lock(&o->copy_locks[i]);
  r = do_owned(o, op, buf, len, offset, op == OP_TRIM ? FMT_MAY_TRIM : flags);
  if (r == 0)
    for (uint64_t k = 0; k < count; k++)
      bitmap_set(&o->bm, c + k);
  for (int i = OVL_LOCKS - 1; i >= 0; i--)
    if (take[i])
      pthread_mutex_unlock(&o->copy_locks[i]);
  return r;
}

static int overlay_flush(struct fmt *f);

/* Applies OP to [OFFSET, OFFSET+LENGTH): owned runs in one call, unowned
 * clusters one by one. */
static int do_range(struct overlay *o, enum op op, const char *buf, uint64_t length,
                    uint64_t offset, uint32_t flags)
{
  uint64_t cs = 1ULL << o->cluster_bits;
  int r;

  if (o->fmt.readonly)
    return -EROFS;
  if (length == 0)
    return (flags & FMT_FUA) ? overlay_flush(&o->fmt) : 0;
  if (op == OP_ZERO && (flags & FMT_FAST_ZERO)) {
    /* A partial unowned cluster at either edge needs a copy-up: not fast. */
    uint64_t a = cluster_of(o, offset), b = cluster_of(o, offset + length - 1);
    if ((offset % cs != 0 && !bitmap_test(&o->bm, a)) ||
        ((offset + length) % cs != 0 && offset + length != o->fmt.size &&
         !bitmap_test(&o->bm, b)))
      return -ENOTSUP;
  }
  while (length > 0) {
    uint64_t c = cluster_of(o, offset);
    uint64_t n;

    bool owned;
    uint64_t end = bitmap_run_end(&o->bm, c, cluster_of(o, offset + length - 1) + 1, &owned);
    /* Whole clusters from C on: up to the range's end, or the disk's. */
    uint64_t whole = offset % cs != 0 ? 0
                     : offset + length == o->fmt.size ? end - c
                     : ((offset + length) >> o->cluster_bits) - c;

    if (whole > end - c)
      whole = end - c;
    if (owned) {
      n = (end << o->cluster_bits) - offset;
      if (n > length)
        n = length;
      r = do_owned(o, op, buf, n, offset, flags);
    }
    else if (whole > 1) {
      n = (whole << o->cluster_bits) < length ? whole << o->cluster_bits : length;
      r = do_unowned_run(o, c, whole, op, buf, n, offset, flags);
    }
    else {
      n = ((c + 1) << o->cluster_bits) - offset;
      if (n > length)
        n = length;
      r = do_unowned(o, c, op, buf, n, offset, flags);
    }
    if (r < 0)
      return r;
    if (buf != NULL)
      buf += n;
    offset += n;
    length -= n;
  }
  /* FUA covers the data and the bitmap bits that make it visible. */
  if (flags & FMT_FUA)
    return overlay_flush(&o->fmt);
  return 0;
}

static int range_write(struct fmt *f, const void *buf, uint64_t length, uint64_t offset,
                       uint32_t flags)
{
  return do_range((struct overlay *)f, OP_WRITE, buf, length, offset, flags);
}

static int range_trim(struct fmt *f, const void *buf, uint64_t length, uint64_t offset,
                      uint32_t flags)
{
  (void)buf;
  return do_range((struct overlay *)f, OP_TRIM, NULL, length, offset, flags);
}

static int range_zero(struct fmt *f, const void *buf, uint64_t length, uint64_t offset,
                      uint32_t flags)
{
  (void)buf;
  return do_range((struct overlay *)f, OP_ZERO, NULL, length, offset, flags);
}

/* The disk an overlay presents can be flattened into a raw file (blockd-img
 * convert, or any NBD client): its head is guarded like a raw disk's. */
static int overlay_pwrite(struct fmt *f, const void *buf, uint64_t length, uint64_t offset,
                          uint32_t flags)
{
  return fmt_guard_head(f, range_write, buf, length, offset, flags);
}

static int overlay_trim(struct fmt *f, uint64_t length, uint64_t offset, uint32_t flags)
{
  return fmt_guard_head(f, range_trim, NULL, length, offset, flags);
}

static int overlay_zero(struct fmt *f, uint64_t length, uint64_t offset, uint32_t flags)
{
  return fmt_guard_head(f, range_zero, NULL, length, offset, flags);
}

static int overlay_flush(struct fmt *f)
{
  struct overlay *o = (struct overlay *)f;
  int r;

  if (f->readonly)
    return 0;
  if (__atomic_load_n(&f->sync_error, __ATOMIC_ACQUIRE) != 0)
    return -EIO;
  pthread_mutex_lock(&o->sync_lock);
  r = bitmap_sync(&o->bm, o->fd, o->bitmap_offset);
  pthread_mutex_unlock(&o->sync_lock);
  return fmt_sync_result(f, r);
}

/* Merges adjacent extents of one type before passing them on. */
struct merge {
  fmt_extent_fn fn;    /* the caller's callback */
  void *opaque;        /* its argument */
  uint64_t shift;      /* subtracted from offsets (data area -> virtual) */
  uint64_t offset;     /* pending extent, length 0 if none */
  uint64_t length;     /* pending extent length */
  uint32_t type;       /* pending extent type */
  bool stopped;        /* the callback asked to stop */
};

/* Queues one extent, emitting the pending one when the type changes. */
static int merge_add(void *opaque, uint64_t offset, uint64_t length, uint32_t type)
{
  struct merge *mg = opaque;

  if (mg->stopped)
    return -1;
  offset -= mg->shift;
  if (mg->length > 0 && mg->type == type && mg->offset + mg->length == offset) {
    mg->length += length;
    return 0;
  }
  if (mg->length > 0 && mg->fn(mg->opaque, mg->offset, mg->length, mg->type) < 0) {
    mg->stopped = true;
    return -1;
  }
  mg->offset = offset;
  mg->length = length;
  mg->type = type;
  return 0;
}

static int overlay_extents(struct fmt *f, uint64_t length, uint64_t offset, fmt_extent_fn fn,
                           void *opaque)
{
  struct overlay *o = (struct overlay *)f;
  struct merge mg = { .fn = fn, .opaque = opaque };
  uint64_t end;
  int r = 0;

  if (offset >= f->size)
    return 0;
  if (length > f->size - offset)
    length = f->size - offset;
  end = offset + length;
  while (offset < end && !mg.stopped) {
    uint64_t c = cluster_of(o, offset);
    bool owned;
    uint64_t cend = bitmap_run_end(&o->bm, c, cluster_of(o, end - 1) + 1, &owned);
    uint64_t n = (cend << o->cluster_bits) - offset;

    if (n > end - offset)
      n = end - offset;
    if (owned) {
      /* Owned: the overlay file's own holes are zeroes. */
      mg.shift = o->data_offset;
      r = file_extents(o->fd, o->data_offset + f->size, n, o->data_offset + offset, merge_add,
                       &mg);
    }
    else if (offset >= o->base->size) {
      /* Past the base's end: zeroes (base_pread). */
      mg.shift = 0;
      r = merge_add(&mg, offset, n, FMT_EXTENT_HOLE | FMT_EXTENT_ZERO);
    }
    else if (o->base->ops->extents != NULL) {
      mg.shift = 0;
      if (n > o->base->size - offset)
        n = o->base->size - offset;
      r = o->base->ops->extents(o->base, n, offset, merge_add, &mg);
    }
    else {
      mg.shift = 0;
      r = merge_add(&mg, offset, n, 0);
    }
    if (r < 0 && !mg.stopped)
      return r;
    /* An engine may report less than asked: stop at the first gap. */
    if (!mg.stopped && mg.offset + mg.length < offset + n)
      break;
    offset += n;
  }
  if (!mg.stopped && mg.length > 0)
    fn(opaque, mg.offset, mg.length, mg.type);
  return 0;
}

/* Passes extents on to the caller of overlay_layout, noting how far they
 * reached and whether the caller asked to stop. */
struct layout_pass {
  fmt_layout_fn fn; /* the caller's callback */
  void *opaque;     /* its argument */
  uint64_t next;    /* end of the last extent passed on */
  bool stopped;     /* the callback asked to stop */
};

/* fmt_layout_fn of overlay_layout. */
static int layout_pass(void *opaque, const struct fmt_layout *l)
{
  struct layout_pass *lp = opaque;

  if (lp->stopped)
    return -1;
  lp->next = l->offset + l->length;
  if (lp->fn(lp->opaque, l) < 0) {
    lp->stopped = true;
    return -1;
  }
  return 0;
}

static int overlay_layout(struct fmt *f, uint64_t length, uint64_t offset, unsigned depth,
                          fmt_layout_fn fn, void *opaque)
{
  struct overlay *o = (struct overlay *)f;
  struct layout_pass lp = { .fn = fn, .opaque = opaque };
  uint64_t end;

  if (offset >= f->size)
    return 0;
  if (length > f->size - offset)
    length = f->size - offset;
  end = offset + length;
  while (offset < end && !lp.stopped) {
    uint64_t c = cluster_of(o, offset);
    bool owned;
    uint64_t cend = bitmap_run_end(&o->bm, c, cluster_of(o, end - 1) + 1, &owned);
    uint64_t n = (cend << o->cluster_bits) - offset;
    int r;

    if (n > end - offset)
      n = end - offset;
    lp.next = offset;
    if (owned)
      /* The overlay's own bytes: its file's holes are zeroes it owns. */
      r = file_layout(o->fd, o->data_offset + f->size, n, o->data_offset + offset,
                      o->data_offset, f->path, depth, layout_pass, &lp);
    else if (offset >= o->base->size) {
      /* Past the base's end no image holds it (base_pread gives zeroes). */
      struct fmt_layout l = { .offset = offset, .length = n, .zero = true, .depth = depth };
      layout_pass(&lp, &l);
      r = 0;
    }
    else
      r = fmt_layout_at(o->base, n < o->base->size - offset ? n : o->base->size - offset,
                        offset, depth + 1, layout_pass, &lp);
    if (r < 0)
      return r;
    /* An engine may report less than asked: go on from where it stopped. */
    if (lp.next <= offset)
      break;
    offset = lp.next;
  }
  return 0;
}

static int overlay_cache(struct fmt *f, uint64_t length, uint64_t offset)
{
  struct overlay *o = (struct overlay *)f;

  while (length > 0) {
    uint64_t c = cluster_of(o, offset);
    bool owned;
    uint64_t end = bitmap_run_end(&o->bm, c, cluster_of(o, offset + length - 1) + 1, &owned);
    uint64_t n = (end << o->cluster_bits) - offset;
    int r = 0;

    if (n > length)
      n = length;
    if (owned)
      r = -posix_fadvise(o->fd, (off_t)(o->data_offset + offset), (off_t)n, POSIX_FADV_WILLNEED);
    else if (o->base->ops->cache != NULL && offset < o->base->size)
      r = o->base->ops->cache(o->base, n < o->base->size - offset ? n : o->base->size - offset,
                              offset);
    if (r < 0)
      return r;
    offset += n;
    length -= n;
  }
  return 0;
}

int overlay_get_info(struct fmt *f, struct overlay_info *info)
{
  struct overlay *o = (struct overlay *)f;

  if (f->ops != &fmt_overlay_ops)
    return -EINVAL;
  info->version = OVERLAY_VERSION;
  info->cluster_size = 1u << o->cluster_bits;
  info->clusters = o->clusters;
  info->owned = bitmap_count(&o->bm);
  info->base_path = o->base_recorded;
  info->base_format = o->base_format;
  info->base = o->base;
  return 0;
}

const struct fmt_ops fmt_overlay_ops = {
  .name = "overlay",
  .probe = overlay_probe,
  .open = overlay_open,
  .close = overlay_close,
  .map = overlay_map,
  .pread = overlay_pread,
  .pwrite = overlay_pwrite,
  .trim = overlay_trim,
  .zero = overlay_zero,
  .flush = overlay_flush,
  .extents = overlay_extents,
  .cache = overlay_cache,
  .layout = overlay_layout,
};

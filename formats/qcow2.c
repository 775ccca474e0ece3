/* qcow2: read-only base images, read by blockd itself (the format is
 * qemu's docs/interop/qcow2.txt).
 *
 * Base images come from elsewhere and are hostile input: every header
 * field, table entry and offset is checked before it is used. Reads walk
 * the chain's L1/L2 tables with plain preads (no lock: they are
 * thread-safe) and go straight to the data clusters; compressed clusters
 * are inflated with zlib and must fill a whole cluster. Backing files must
 * be qcow2 too and lie where basepath.c allows. Encrypted images, external
 * data files, extended L2 entries and zstd compression are refused by name.
 *
 * libqcow (20201213, what this engine used before) hangs on an image larger
 * than its backing file and reads past its buffers on truncated or crafted
 * images (tests/fuzz/crashes), hence a reader of our own.
 */
#include <endian.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "internal.h"

#define QCOW2_MAX_CHAIN 16             /* backing files we follow */
#define QCOW2_MAX_L1_BYTES (32u << 20) /* qemu's limit on an L1 table */
#define QCOW2_MAX_SIZE (1ULL << 56)    /* largest virtual size accepted */
#define QCOW2_MIN_CLUSTER_BITS 9       /* 512 bytes */
#define QCOW2_MAX_CLUSTER_BITS 21      /* 2 MiB */
#define QCOW2_MAX_BACKING_NAME 1023    /* qemu's limit */

#define ENTRY_OFFSET_MASK 0x00fffffffffffe00ULL /* host offset bits of L1/L2 entries */
#define ENTRY_COPIED (1ULL << 63)               /* refcount 1: irrelevant to reads */
#define L2_COMPRESSED (1ULL << 62)              /* compressed cluster */
#define L2_ZERO 1ULL                            /* v3: cluster reads as zeroes */
#define L1_RESERVED (~(ENTRY_OFFSET_MASK | ENTRY_COPIED))
#define L2_RESERVED (~(ENTRY_OFFSET_MASK | ENTRY_COPIED | L2_ZERO))
/* Incompatible features: dirty and corrupt are harmless to a reader. */
#define INCOMPAT_KNOWN 0x3ULL

/* One image of the chain. */
struct level {
  int fd;                /* the image file, read-only */
  char *path;            /* its name, for messages and blockd-img map (owned) */
  uint64_t file_size;    /* its size */
  unsigned cluster_bits; /* log2 of its cluster size */
  uint32_t version;      /* 2 or 3: only v3 has the zero flag */
  uint64_t size;         /* its virtual size */
  uint64_t *l1;          /* L1 table, host order */
  uint32_t l1_size;      /* entries in l1 */
  struct lock *lock;     /* a backing file's lock (lock.c); the image's own is its fmt's */
};

struct qcow2 {
  struct fmt fmt;                       /* common fields, first */
  struct level levels[QCOW2_MAX_CHAIN]; /* the image, then its backing chain */
  int nfiles;                           /* levels used */
  char backing[QCOW2_MAX_BACKING_NAME + 1]; /* the image's backing file, "" if none */
};

/* How a run of the chain reads. */
enum state {
  ST_NONE,       /* no level holds it: zeroes */
  ST_ZERO,       /* zeroes, by LV's zero flag (HOST: its preallocated cluster, or 0) */
  ST_DATA,       /* HOST, a file offset of level LV */
  ST_COMPRESSED, /* the compressed cluster whose L2 entry is HOST, of LV */
};

/* Reads the header of the image PATH, open as FD (LV takes it), and its L1
 * table; the backing file's name goes into BACKING. Returns 0, or -1 with a
 * message in ERR. */
static int level_open(struct level *lv, int fd, const char *path, char *backing,
                      size_t backing_len, char *err, size_t errlen)
{
  unsigned char h[112];
  uint64_t l1_offset, l1_bytes, incompat = 0, backing_offset;
  uint32_t backing_size, header_length = 72;
  struct stat st;
  int r;

  lv->fd = fd;
  lv->path = strdup(path);
  if (lv->path == NULL) {
    snprintf(err, errlen, "%s: %s", path, strerror(ENOMEM));
    return -1;
  }
  if (fstat(fd, &st) == -1) {
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return -1;
  }
  lv->file_size = (uint64_t)st.st_size;
  if (lv->file_size < 72) {
    snprintf(err, errlen, "%s: too short for a qcow2 image", path);
    return -1;
  }
  r = file_pread_full(lv->fd, h, sizeof h, 0);
  if (r < 0) {
    snprintf(err, errlen, "%s: read: %s", path, strerror(-r));
    return -1;
  }
  if (memcmp(h, "QFI\xfb", 4) != 0) {
    snprintf(err, errlen, "%s: not a qcow2 image", path);
    return -1;
  }
  lv->version = be32toh(*(uint32_t *)(h + 4));
  if (lv->version != 2 && lv->version != 3) {
    snprintf(err, errlen, "%s: qcow2 version %u not supported", path, lv->version);
    return -1;
  }
  backing_offset = be64toh(*(uint64_t *)(h + 8));
  backing_size = be32toh(*(uint32_t *)(h + 16));
  lv->cluster_bits = be32toh(*(uint32_t *)(h + 20));
  lv->size = be64toh(*(uint64_t *)(h + 24));
  lv->l1_size = be32toh(*(uint32_t *)(h + 36));
  l1_offset = be64toh(*(uint64_t *)(h + 40));
  if (lv->version >= 3) {
    incompat = be64toh(*(uint64_t *)(h + 72));
    header_length = be32toh(*(uint32_t *)(h + 100));
  }
  if (be32toh(*(uint32_t *)(h + 32)) != 0) {
    snprintf(err, errlen, "%s: encrypted qcow2 images are not supported", path);
    return -1;
  }
  if (incompat & ~INCOMPAT_KNOWN) {
    /* External data files, zstd, extended L2 entries. */
    snprintf(err, errlen, "%s: qcow2 features 0x%llx not supported (try qemu-img convert -O raw)",
             path, (unsigned long long)(incompat & ~INCOMPAT_KNOWN));
    return -1;
  }
  if (lv->cluster_bits < QCOW2_MIN_CLUSTER_BITS || lv->cluster_bits > QCOW2_MAX_CLUSTER_BITS ||
      header_length < 72 || lv->size > QCOW2_MAX_SIZE)
    goto corrupt;
  /* The L1 table is read whole: it must lie inside the file and within
   * qemu's own limit, so a few KiB of header cannot make us allocate
   * gigabytes (a sparse file can be large, hence the cap as well), and it
   * must cover the virtual size. */
  l1_bytes = (uint64_t)lv->l1_size * 8;
  if (l1_bytes > QCOW2_MAX_L1_BYTES || l1_offset % (1ULL << lv->cluster_bits) != 0 ||
      l1_offset > lv->file_size || l1_bytes > lv->file_size - l1_offset)
    goto corrupt;
  if (((lv->size + (1ULL << lv->cluster_bits) - 1) >> lv->cluster_bits) >
      (uint64_t)lv->l1_size << (lv->cluster_bits - 3))
    goto corrupt;
  backing[0] = '\0';
  if (backing_offset != 0) {
    if (backing_size == 0 || backing_size > QCOW2_MAX_BACKING_NAME ||
        backing_size >= backing_len || backing_offset > lv->file_size ||
        backing_size > lv->file_size - backing_offset)
      goto corrupt;
    r = file_pread_full(lv->fd, backing, backing_size, backing_offset);
    if (r < 0) {
      snprintf(err, errlen, "%s: backing file name: %s", path, strerror(-r));
      return -1;
    }
    backing[backing_size] = '\0';
    if (strlen(backing) != backing_size)
      goto corrupt;
  }
  lv->l1 = calloc(lv->l1_size ? lv->l1_size : 1, sizeof *lv->l1);
  if (lv->l1 == NULL) {
    snprintf(err, errlen, "%s: %s", path, strerror(ENOMEM));
    return -1;
  }
  r = file_pread_full(lv->fd, lv->l1, l1_bytes, l1_offset);
  if (r < 0) {
    snprintf(err, errlen, "%s: L1 table: %s", path, strerror(-r));
    return -1;
  }
  /* Each L1 entry: no reserved bit, an L2 table at a cluster boundary. */
  for (uint32_t i = 0; i < lv->l1_size; i++) {
    lv->l1[i] = be64toh(lv->l1[i]);
    if ((lv->l1[i] & L1_RESERVED) ||
        (lv->l1[i] & ENTRY_OFFSET_MASK) % (1ULL << lv->cluster_bits) != 0)
      goto corrupt;
  }
  return 0;
corrupt:
  snprintf(err, errlen, "%s: corrupt qcow2 header", path);
  return -1;
}

/* Frees LV. */
static void level_close(struct level *lv)
{
  if (lv->fd >= 0)
    close(lv->fd);
  lock_forget(lv->lock);
  free(lv->path);
  free(lv->l1);
}

/* Reads the L2 entries of COUNT clusters from FIRST, all in one L2 table. */
static int l2_entries(const struct level *lv, uint64_t first, uint64_t count, uint64_t *out)
{
  unsigned l2_bits = lv->cluster_bits - 3;
  uint64_t l1i = first >> l2_bits;
  uint64_t l2_offset = l1i < lv->l1_size ? lv->l1[l1i] & ENTRY_OFFSET_MASK : 0;
  int r;

  if (l2_offset == 0) {
    memset(out, 0, count * 8);
    return 0;
  }
  /* A table past the end of the file reads as zeroes: unallocated. */
  r = file_pread_full(lv->fd, out, count * 8, l2_offset + (first & ((1ULL << l2_bits) - 1)) * 8);
  if (r < 0)
    return r;
  for (uint64_t i = 0; i < count; i++)
    out[i] = be64toh(out[i]);
  return 0;
}

/* Called by walk() for each run of one state; HOST and LV as enum state
 * says. Returns 0 to go on, 1 to stop, or -errno. */
typedef int (*walk_fn)(void *opaque, uint64_t offset, uint64_t length, enum state st,
                       const struct level *lv, uint64_t host);

/* Reports how [OFFSET, OFFSET+LENGTH) reads through the chain from level I:
 * data wherever some level has data first, zero where a level says zero
 * first, none where no level holds it: past the last level, or past a
 * backing file's virtual size (reported as the level above's, as qemu does).
 * Returns 0, 1 if FN stopped it, or -errno (-EIO for a corrupt table entry). */
static int walk(const struct qcow2 *q, int i, uint64_t offset, uint64_t length, walk_fn fn,
                void *opaque)
{
  const struct level *lv = &q->levels[i];
  unsigned cb = lv->cluster_bits;
  uint64_t per_table = 1ULL << (cb - 3);
  CLEANUP_FREE uint64_t *e = NULL;
  int r;

  if (offset >= lv->size)
    return fn(opaque, offset, length, ST_NONE, i > 0 ? lv - 1 : lv, 0);
  if (length > lv->size - offset) {
    r = walk(q, i, offset, lv->size - offset, fn, opaque);
    return r != 0 ? r
                  : fn(opaque, lv->size, offset + length - lv->size, ST_NONE, i > 0 ? lv - 1 : lv,
                       0);
  }
  e = malloc(per_table * 8);
  if (e == NULL)
    return -ENOMEM;
  while (length > 0) {
    uint64_t c = offset >> cb;
    uint64_t last = (offset + length - 1) >> cb;
    uint64_t count = per_table - (c & (per_table - 1));

    if (count > last - c + 1)
      count = last - c + 1;
    r = l2_entries(lv, c, count, e);
    if (r < 0)
      return r;
    for (uint64_t k = 0; k < count; k++) {
      uint64_t end = (c + k + 1) << cb;
      uint64_t n = (end < offset + length ? end : offset + length) - offset;
      uint64_t host = e[k] & ENTRY_OFFSET_MASK;

      if (e[k] & L2_COMPRESSED)
        r = fn(opaque, offset, n, ST_COMPRESSED, lv, e[k]);
      else if (e[k] & L2_RESERVED || host % (1ULL << cb) != 0)
        return -EIO; /* a corrupt entry: never guess where data is */
      else if (lv->version >= 3 && (e[k] & L2_ZERO))
        r = fn(opaque, offset, n, ST_ZERO, lv, host ? host + (offset & ((1ULL << cb) - 1)) : 0);
      else if (host != 0)
        r = fn(opaque, offset, n, ST_DATA, lv, host + (offset & ((1ULL << cb) - 1)));
      else if (i + 1 == q->nfiles)
        r = fn(opaque, offset, n, ST_NONE, lv, 0);
      else
        r = walk(q, i + 1, offset, n, fn, opaque);
      if (r != 0)
        return r;
      offset += n;
      length -= n;
    }
  }
  return 0;
}

/* Inflates the compressed cluster whose L2 entry is ENTRY, of LV, into OUT
 * (one cluster). Returns 0, or -EIO if it is corrupt or does not fill the
 * whole cluster. */
static int inflate_cluster(const struct level *lv, uint64_t entry, unsigned char *out)
{
  unsigned cb = lv->cluster_bits;
  unsigned x = 62 - (cb - 8);  /* bits of the host offset in a compressed entry */
  uint64_t host = entry & ((1ULL << x) - 1);
  uint64_t sectors = ((entry & ~L2_COMPRESSED & ~ENTRY_COPIED) >> x) + 1;
  uint64_t len = sectors * 512 - (host & 511);
  CLEANUP_FREE unsigned char *in = NULL;
  z_stream z = { 0 };
  int r;

  /* The compressed bytes may run past the end of the file (qemu's own
   * images end mid-sector): take what is there. */
  if (host >= lv->file_size)
    return -EIO;
  if (len > lv->file_size - host)
    len = lv->file_size - host;
  in = malloc(len);
  if (in == NULL)
    return -ENOMEM;
  r = file_pread_full(lv->fd, in, len, host);
  if (r < 0)
    return r;
  /* Raw deflate, a 4 KiB window: qemu's compression type 0. */
  if (inflateInit2(&z, -12) != Z_OK)
    return -ENOMEM;
  z.next_in = in;
  z.avail_in = (uInt)len;
  z.next_out = out;
  z.avail_out = 1u << cb;
  r = inflate(&z, Z_FINISH);
  inflateEnd(&z);
  /* A cluster that inflates short would leave bytes nobody wrote. */
  if ((r != Z_STREAM_END && r != Z_BUF_ERROR) || z.avail_out != 0)
    return -EIO;
  return 0;
}

/* Where a read lands, for read_run(). */
struct read_ctx {
  char *buf;      /* the read buffer */
  uint64_t start; /* virtual offset of buf[0] */
};

/* walk() callback: reads one run into the buffer. */
static int read_run(void *opaque, uint64_t offset, uint64_t length, enum state st,
                    const struct level *lv, uint64_t host)
{
  struct read_ctx *rc = opaque;
  char *dst = rc->buf + (offset - rc->start);
  CLEANUP_FREE unsigned char *cluster = NULL;
  int r;

  switch (st) {
  case ST_NONE:
  case ST_ZERO:
    memset(dst, 0, length);
    return 0;
  case ST_DATA:
    /* Past the end of the file reads zeroes (file_pread_full). */
    return file_pread_full(lv->fd, dst, length, host);
  case ST_COMPRESSED:
    cluster = malloc(1u << lv->cluster_bits);
    if (cluster == NULL)
      return -ENOMEM;
    r = inflate_cluster(lv, host, cluster);
    if (r < 0)
      return r;
    memcpy(dst, cluster + (offset & ((1ULL << lv->cluster_bits) - 1)), length);
    return 0;
  }
  return -EIO;
}

static int qcow2_pread(struct fmt *f, void *buf, uint64_t length, uint64_t offset)
{
  struct read_ctx rc = { buf, offset };
  int r = walk((struct qcow2 *)f, 0, offset, length, read_run, &rc);

  return r < 0 ? r : 0;
}

/* Passes walk()'s runs to an fmt_extent_fn. */
struct extents_ctx {
  fmt_extent_fn fn; /* the caller's callback */
  void *opaque;     /* its argument */
};

/* walk() callback for ->extents: stops the walk when the caller has enough. */
static int extents_run(void *opaque, uint64_t offset, uint64_t length, enum state st,
                       const struct level *lv, uint64_t host)
{
  struct extents_ctx *x = opaque;

  (void)lv;
  (void)host;
  return x->fn(x->opaque, offset, length,
               st == ST_ZERO || st == ST_NONE ? FMT_EXTENT_HOLE | FMT_EXTENT_ZERO : 0) < 0 ? 1 : 0;
}

static int qcow2_extents(struct fmt *f, uint64_t length, uint64_t offset, fmt_extent_fn fn,
                         void *opaque)
{
  struct extents_ctx x = { fn, opaque };
  int r;

  if (offset >= f->size)
    return 0;
  if (length > f->size - offset)
    length = f->size - offset;
  r = walk((struct qcow2 *)f, 0, offset, length, extents_run, &x);
  return r < 0 ? r : 0;
}

/* Passes walk()'s runs to a fmt_layout_fn. */
struct layout_ctx {
  const struct qcow2 *q; /* the image */
  unsigned depth;        /* its depth in the chain */
  fmt_layout_fn fn;      /* the caller's callback */
  void *opaque;          /* its argument */
};

/* A data run of ->layout, split by the holes of its file: allocated, but
 * reading as zeroes there (and past the file's end), as qemu-img map shows
 * preallocated clusters. */
struct data_run {
  struct layout_ctx *x;  /* the walk's context */
  struct fmt_layout l;   /* the run, from which each piece is cut */
  bool stopped;          /* the caller asked to stop */
};

/* file_extents callback: reports one piece of a data run. */
static int data_piece(void *opaque, uint64_t offset, uint64_t length, uint32_t type)
{
  struct data_run *d = opaque;
  struct fmt_layout l = d->l;

  l.offset += offset - d->l.file_offset;
  l.file_offset = offset;
  l.length = length;
  l.zero = type & FMT_EXTENT_ZERO;
  if (d->x->fn(d->x->opaque, &l) < 0) {
    d->stopped = true;
    return -1;
  }
  return 0;
}

/* walk() callback for ->layout. */
static int layout_run(void *opaque, uint64_t offset, uint64_t length, enum state st,
                      const struct level *lv, uint64_t host)
{
  struct layout_ctx *x = opaque;
  struct data_run d = {
    .x = x,
    .l = {
      .offset = offset, .length = length, .present = st != ST_NONE,
      .data = st == ST_DATA || st == ST_COMPRESSED, .zero = st == ST_ZERO || st == ST_NONE,
      .depth = x->depth + (unsigned)(lv - x->q->levels),
      /* Compressed clusters are nowhere as plain bytes. */
      .file = (st == ST_DATA || (st == ST_ZERO && host != 0)) ? lv->path : NULL,
      .file_offset = host,
    },
  };
  uint64_t in_file;
  int r;

  if (st != ST_DATA)
    return x->fn(x->opaque, &d.l) < 0 ? 1 : 0;
  in_file = host < lv->file_size ? lv->file_size - host : 0;
  if (in_file > length)
    in_file = length;
  if (in_file > 0) {
    r = file_extents(lv->fd, lv->file_size, in_file, host, data_piece, &d);
    if (r < 0)
      return r;
    if (d.stopped)
      return 1;
  }
  if (in_file < length) {
    d.l.offset += in_file;
    d.l.length -= in_file;
    d.l.file_offset += in_file;
    d.l.zero = true;
    return x->fn(x->opaque, &d.l) < 0 ? 1 : 0;
  }
  return 0;
}

static int qcow2_layout(struct fmt *f, uint64_t length, uint64_t offset, unsigned depth,
                        fmt_layout_fn fn, void *opaque)
{
  struct layout_ctx x = { (struct qcow2 *)f, depth, fn, opaque };
  int r;

  if (offset >= f->size)
    return 0;
  if (length > f->size - offset)
    length = f->size - offset;
  r = walk((struct qcow2 *)f, 0, offset, length, layout_run, &x);
  return r < 0 ? r : 0;
}

static bool qcow2_probe(const void *head, size_t len)
{
  return len >= 4 && memcmp(head, "QFI\xfb", 4) == 0;
}

static void qcow2_close(struct fmt *f)
{
  struct qcow2 *q = (struct qcow2 *)f;

  for (int i = 0; i < q->nfiles; i++)
    level_close(&q->levels[i]);
  fmt_fini(f);
  free(q);
}

static struct fmt *qcow2_open(int fd, const char *path, enum fmt_access access, char *err,
                              size_t errlen)
{
  struct qcow2 *q;
  char name[QCOW2_MAX_BACKING_NAME + 1], cur[PATH_MAX], next[PATH_MAX], berr[PATH_MAX + 256];
  struct lock *lock = NULL;
  int r;

  /* Read-only whatever was asked: a qcow2 is a base, never written. Its
   * backing files are locked as it is. */
  if (access == FMT_WRITE)
    access = FMT_READ;
  q = calloc(1, sizeof *q);
  if (q == NULL) {
    snprintf(err, errlen, "%s: %s", path, strerror(ENOMEM));
    close(fd);
    return NULL;
  }
  snprintf(cur, sizeof cur, "%s", path);
  for (;;) {
    q->nfiles++;
    q->levels[q->nfiles - 1].lock = lock;
    if (level_open(&q->levels[q->nfiles - 1], fd, cur, name, sizeof name, err, errlen) < 0)
      goto err;
    if (q->nfiles == 1)
      snprintf(q->backing, sizeof q->backing, "%s", name);
    if (name[0] == '\0')
      break;
    if (q->nfiles == QCOW2_MAX_CHAIN) {
      snprintf(err, errlen, "%s: backing chain longer than %d", path, QCOW2_MAX_CHAIN);
      goto err;
    }
    /* Backing files follow the same policy as overlay bases. */
    fd = basepath_open(cur, name, next, sizeof next, berr, sizeof berr);
    if (fd < 0) {
      snprintf(err, errlen, "%s: cannot open backing file: %s", cur, berr);
      goto err;
    }
    if (lock_image(fd, next, cur, access, &lock, berr, sizeof berr) < 0) {
      snprintf(err, errlen, "%s: cannot open backing file: %s", cur, berr);
      close(fd);
      goto err;
    }
    {
      char magic[4];

      if (pread(fd, magic, sizeof magic, 0) != (ssize_t)sizeof magic ||
          memcmp(magic, "QFI\xfb", 4) != 0) {
        snprintf(err, errlen, "%s: backing file %s is not a qcow2 image (not supported)", cur,
                 next);
        close(fd);
        lock_forget(lock);
        goto err;
      }
    }
    memcpy(cur, next, sizeof cur);
  }
  r = fmt_init(&q->fmt, &fmt_qcow2_ops, q->levels[0].fd, path, q->levels[0].size, true);
  if (r < 0) {
    snprintf(err, errlen, "%s: %s", path, strerror(-r));
    goto err;
  }
  q->fmt.can_extents = true;
  /* Read-only: no write for a flush to miss, so connections may multiply. */
  q->fmt.can_multi_conn = true;
  return &q->fmt;
err:
  qcow2_close(&q->fmt);
  return NULL;
}

bool qcow2_holds_file(struct fmt *f, uint64_t dev, uint64_t ino)
{
  struct qcow2 *q = (struct qcow2 *)f;
  struct stat st;

  if (f->ops != &fmt_qcow2_ops)
    return false;
  for (int i = 0; i < q->nfiles; i++)
    if (fstat(q->levels[i].fd, &st) == 0 && (uint64_t)st.st_dev == dev &&
        (uint64_t)st.st_ino == ino)
      return true;
  return false;
}

const char *qcow2_backing(struct fmt *f)
{
  struct qcow2 *q = (struct qcow2 *)f;

  if (f->ops != &fmt_qcow2_ops || q->backing[0] == '\0')
    return NULL;
  return q->backing;
}

const struct fmt_ops fmt_qcow2_ops = {
  .name = "qcow2",
  .probe = qcow2_probe,
  .open = qcow2_open,
  .close = qcow2_close,
  .map = NULL,
  .pread = qcow2_pread,
  .pwrite = NULL,
  .trim = NULL,
  .zero = NULL,
  .flush = NULL,
  .extents = qcow2_extents,
  .cache = NULL,
  .layout = qcow2_layout,
};

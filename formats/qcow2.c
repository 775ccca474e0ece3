/* qcow2: read-only base images through libqcow (libyal).
 *
 * libqcow reads block and keeps per-file caches without locks of its own, so
 * every call on an image is serialized by one mutex.  ->map is absent: blockd
 * sends every read to its blocking pool, never to a worker's event loop.
 * Backing files are followed when they are qcow2 too (libqcow's parent file);
 * compressed clusters are decoded by libqcow.
 *
 * libqcow (20201213) ignores the qcow2 v3 "reads as zero" flag of an L2
 * entry and reads such clusters from the backing file.  So this file also
 * reads the L1/L2 tables itself (plain preads, no lock): reads are patched
 * with zeroes where the chain says zero, and ->extents reports real holes.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <libqcow.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define QCOW2_MAX_CHAIN 16 /* backing files we follow */
#define QCOW2_MAX_L1_BYTES (32u << 20) /* qemu's limit on an L1 table */
#define QCOW2_MAX_SIZE (1ULL << 56)    /* largest virtual size accepted */

#define L2_OFFSET_MASK 0x00fffffffffffe00ULL /* host offset bits of L1/L2 entries */
#define L2_COMPRESSED (1ULL << 62)             /* compressed cluster */
#define L2_ZERO 1ULL                           /* v3: cluster reads as zeroes */
#define INCOMPAT_KNOWN 0x3ULL                  /* dirty, corrupt: harmless for reads */

/* One image of the chain, for our own L1/L2 lookups. */
struct level {
  int fd;                /* the image file, read-only */
  unsigned cluster_bits; /* log2 of its cluster size */
  uint32_t version;      /* 2 or 3: only v3 has the zero flag */
  uint64_t size;         /* its virtual size */
  uint64_t *l1;          /* L1 table, host order */
  uint32_t l1_size;      /* entries in l1 */
};

/* How a range of the chain reads. */
enum state { ST_DATA, ST_ZERO };

struct qcow2 {
  struct fmt fmt;                        /* common fields, first */
  pthread_mutex_t lock;                  /* serializes every libqcow call */
  libqcow_file_t *files[QCOW2_MAX_CHAIN]; /* the image, then its backing chain */
  struct level levels[QCOW2_MAX_CHAIN];  /* the same chain, for L2 lookups */
  int nfiles;                            /* entries used in files[] and levels[] */
  unsigned min_cluster_bits;             /* smallest cluster size in the chain (log2) */
  char backing[PATH_MAX];                /* the image's backing file, "" if none */
};

/* Reads the tables of the image PATH, open as FD (LV takes it), into LV.
 * Returns 0, or -1 with a message in ERR. */
static int level_open(struct level *lv, int fd, const char *path, char *err, size_t errlen)
{
  unsigned char h[104];
  uint64_t l1_offset, l1_bytes, incompat = 0;
  struct stat st;
  int r;

  lv->fd = fd;
  if (fstat(fd, &st) == -1) {
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
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
  lv->cluster_bits = be32toh(*(uint32_t *)(h + 20));
  lv->size = be64toh(*(uint64_t *)(h + 24));
  lv->l1_size = be32toh(*(uint32_t *)(h + 36));
  l1_offset = be64toh(*(uint64_t *)(h + 40));
  if (lv->version >= 3)
    incompat = be64toh(*(uint64_t *)(h + 72));
  if (lv->cluster_bits < 9 || lv->cluster_bits > 21)
    goto corrupt;
  /* The L1 table is read whole: it must lie inside the file and within
   * qemu's own limit, so a few KiB of header cannot make us allocate
   * gigabytes (a sparse file can be large, hence the cap as well). */
  l1_bytes = (uint64_t)lv->l1_size * 8;
  if (l1_bytes > QCOW2_MAX_L1_BYTES || l1_offset % (1ULL << lv->cluster_bits) != 0 ||
      l1_offset > (uint64_t)st.st_size || l1_bytes > (uint64_t)st.st_size - l1_offset)
    goto corrupt;
  if (lv->size > QCOW2_MAX_SIZE)
    goto corrupt;
  if (incompat & ~INCOMPAT_KNOWN) {
    /* External data files, zstd, extended L2 entries: libqcow cannot. */
    snprintf(err, errlen, "%s: qcow2 features 0x%llx not supported (try qemu-img convert -O raw)",
             path, (unsigned long long)(incompat & ~INCOMPAT_KNOWN));
    return -1;
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
  for (uint32_t i = 0; i < lv->l1_size; i++)
    lv->l1[i] = be64toh(lv->l1[i]);
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
  free(lv->l1);
}

/* Reads the L2 entries of COUNT clusters from FIRST, all in one L2 table. */
static int l2_entries(const struct level *lv, uint64_t first, uint64_t count, uint64_t *out)
{
  unsigned l2_bits = lv->cluster_bits - 3;
  uint64_t l1i = first >> l2_bits;
  uint64_t l2_offset = l1i < lv->l1_size ? lv->l1[l1i] & L2_OFFSET_MASK : 0;
  int r;

  if (l2_offset == 0) {
    memset(out, 0, count * 8);
    return 0;
  }
  r = file_pread_full(lv->fd, out, count * 8,
                      l2_offset + (first & ((1ULL << l2_bits) - 1)) * 8);
  if (r < 0)
    return r;
  for (uint64_t i = 0; i < count; i++)
    out[i] = be64toh(out[i]);
  return 0;
}

/* Called by walk() for each run of one state. */
typedef int (*walk_fn)(void *opaque, uint64_t offset, uint64_t length, enum state st);

/* Reports how [OFFSET, OFFSET+LENGTH) reads through the chain from level I:
 * data wherever some level has data first, zero where a level says zero first
 * or nothing does. Returns 0 or -errno. */
static int walk(const struct qcow2 *q, int i, uint64_t offset, uint64_t length, walk_fn fn,
                void *opaque)
{
  const struct level *lv = &q->levels[i];
  unsigned cb = lv->cluster_bits;
  uint64_t per_table = 1ULL << (cb - 3);
  CLEANUP_FREE uint64_t *e = NULL;
  int r;

  if (offset >= lv->size)
    return fn(opaque, offset, length, ST_ZERO);
  if (offset + length > lv->size) {
    r = walk(q, i, offset, lv->size - offset, fn, opaque);
    return r < 0 ? r : fn(opaque, lv->size, offset + length - lv->size, ST_ZERO);
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
      bool zero = lv->version >= 3 && !(e[k] & L2_COMPRESSED) && (e[k] & L2_ZERO);
      bool data = (e[k] & L2_COMPRESSED) || (!zero && (e[k] & L2_OFFSET_MASK) != 0);

      if (data)
        r = fn(opaque, offset, n, ST_DATA);
      else if (zero || i + 1 == q->nfiles)
        r = fn(opaque, offset, n, ST_ZERO);
      else
        r = walk(q, i + 1, offset, n, fn, opaque);
      if (r < 0)
        return r;
      offset += n;
      length -= n;
    }
  }
  return 0;
}

/* Writes "PATH: WHAT: libqcow's message" into ERR and frees E. */
static void qcow_error(char *err, size_t errlen, const char *path, const char *what,
                       libqcow_error_t **e)
{
  char msg[512] = "";

  if (e != NULL && *e != NULL) {
    libqcow_error_sprint(*e, msg, sizeof msg);
    libqcow_error_free(e);
    /* libqcow's messages span lines: keep the first, it names the cause. */
    msg[strcspn(msg, "\n")] = '\0';
  }
  snprintf(err, errlen, "%s: %s%s%s", path, what, msg[0] ? ": " : "", msg);
}

static bool qcow2_probe(const void *head, size_t len)
{
  return len >= 4 && memcmp(head, "QFI\xfb", 4) == 0;
}

/* Opens one file of the chain, PATH, open as FD, read-only in libqcow. */
static libqcow_file_t *open_one(int fd, const char *path, char *err, size_t errlen)
{
  libqcow_file_t *file = NULL;
  libqcow_error_t *e = NULL;
  uint32_t method = 0;
  char self[64];

  /* libqcow opens by name: give it our open file's name in /proc, so that
   * it reads the very file we checked, whatever PATH names meanwhile. */
  snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
  if (libqcow_file_initialize(&file, &e) != 1) {
    qcow_error(err, errlen, path, "libqcow", &e);
    return NULL;
  }
  if (libqcow_file_open(file, self, LIBQCOW_OPEN_READ, &e) != 1) {
    qcow_error(err, errlen, path, "cannot open qcow2 image", &e);
    libqcow_file_free(&file, NULL);
    return NULL;
  }
  if (libqcow_file_get_encryption_method(file, &method, &e) != 1 || method != 0) {
    libqcow_error_free(&e);
    snprintf(err, errlen, "%s: encrypted qcow2 images are not supported", path);
    libqcow_file_close(file, NULL);
    libqcow_file_free(&file, NULL);
    return NULL;
  }
  return file;
}

/* Reads FILE's backing file name into NAME ("" if none). */
static int get_backing(libqcow_file_t *file, char *name, size_t namelen)
{
  size_t size = 0;

  name[0] = '\0';
  if (libqcow_file_get_utf8_backing_filename_size(file, &size, NULL) != 1 || size <= 1)
    return 0;
  if (size > namelen)
    return -ENAMETOOLONG;
  if (libqcow_file_get_utf8_backing_filename(file, (uint8_t *)name, namelen, NULL) != 1)
    return -EIO;
  return 0;
}

static void qcow2_close(struct fmt *f)
{
  struct qcow2 *q = (struct qcow2 *)f;

  for (int i = 0; i < q->nfiles; i++) {
    if (q->files[i] != NULL) {
      libqcow_file_close(q->files[i], NULL);
      libqcow_file_free(&q->files[i], NULL);
    }
    level_close(&q->levels[i]);
  }
  pthread_mutex_destroy(&q->lock);
  fmt_fini(f);
  free(q);
}

static struct fmt *qcow2_open(int fd, const char *path, bool readonly, char *err, size_t errlen)
{
  struct qcow2 *q;
  libqcow_error_t *e = NULL;
  size64_t size = 0;
  char name[PATH_MAX], cur[PATH_MAX], next[PATH_MAX], berr[PATH_MAX + 256];
  int r;

  /* Read-only whatever was asked: a qcow2 is a base, never written. */
  (void)readonly;
  q = calloc(1, sizeof *q);
  if (q == NULL) {
    snprintf(err, errlen, "%s: %s", path, strerror(ENOMEM));
    close(fd);
    return NULL;
  }
  pthread_mutex_init(&q->lock, NULL);
  snprintf(cur, sizeof cur, "%s", path);
  for (;;) {
    /* Our own header check first: it names unsupported features, where
     * libqcow only says it cannot open the file. */
    q->nfiles++;
    if (level_open(&q->levels[q->nfiles - 1], fd, cur, err, errlen) < 0)
      goto err;
    q->files[q->nfiles - 1] = open_one(fd, cur, err, errlen);
    if (q->files[q->nfiles - 1] == NULL)
      goto err;
    libqcow_file_t *file = q->files[q->nfiles - 1];
    if (q->nfiles > 1 &&
        libqcow_file_set_parent_file(q->files[q->nfiles - 2], file, &e) != 1) {
      qcow_error(err, errlen, cur, "cannot use as backing file", &e);
      goto err;
    }
    r = get_backing(file, name, sizeof name);
    if (r < 0) {
      snprintf(err, errlen, "%s: backing file name: %s", cur, strerror(-r));
      goto err;
    }
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
    {
      char magic[4];

      if (pread(fd, magic, sizeof magic, 0) != (ssize_t)sizeof magic ||
          memcmp(magic, "QFI\xfb", 4) != 0) {
        /* libqcow follows qcow2 chains only. */
        snprintf(err, errlen, "%s: backing file %s is not a qcow2 image (not supported)", cur,
                 next);
        close(fd);
        goto err;
      }
    }
    memcpy(cur, next, sizeof cur);
  }
  if (libqcow_file_get_media_size(q->files[0], &size, &e) != 1) {
    qcow_error(err, errlen, path, "size", &e);
    goto err;
  }
  r = fmt_init(&q->fmt, &fmt_qcow2_ops, q->levels[0].fd, path, size, true);
  if (r < 0) {
    snprintf(err, errlen, "%s: %s", path, strerror(-r));
    goto err;
  }
  q->fmt.can_extents = true;
  /* Read-only: no write for a flush to miss, so connections may multiply. */
  q->fmt.can_multi_conn = true;
  q->min_cluster_bits = q->levels[0].cluster_bits;
  for (int i = 1; i < q->nfiles; i++)
    if (q->levels[i].cluster_bits < q->min_cluster_bits)
      q->min_cluster_bits = q->levels[i].cluster_bits;
  return &q->fmt;
err:
  qcow2_close(&q->fmt);
  return NULL;
}

/* Where a read landed, for zero_patch(). */
struct zero_patch {
  char *buf;      /* the read buffer */
  uint64_t start; /* virtual offset of buf[0] */
};

/* walk() callback: zeroes the parts of a read that the chain says are zero. */
static int zero_patch(void *opaque, uint64_t offset, uint64_t length, enum state st)
{
  struct zero_patch *zp = opaque;

  if (st == ST_ZERO)
    memset(zp->buf + (offset - zp->start), 0, length);
  return 0;
}

static int qcow2_pread(struct fmt *f, void *buf, uint64_t length, uint64_t offset)
{
  struct qcow2 *q = (struct qcow2 *)f;
  struct zero_patch zp = { buf, offset };
  uint64_t start = offset, total = length;
  char *p = buf;
  int r = 0;

  pthread_mutex_lock(&q->lock);
  while (length > 0) {
    /* libqcow 20201213 goes wrong when one call starts in a cluster served
     * by the backing file and runs into one the image holds (it keeps
     * reading the backing file): never let a call cross a cluster boundary
     * of any image in the chain. */
    uint64_t grain = 1ULL << q->min_cluster_bits;
    size_t n = (size_t)(grain - (offset & (grain - 1)));
    if (n > length)
      n = (size_t)length;
    ssize_t got = libqcow_file_read_buffer_at_offset(q->files[0], p, n, (off64_t)offset, NULL);
    if (got < 0) {
      r = -EIO;
      break;
    }
    if (got == 0) {
      /* Past the end of the media: zeroes, like a short raw file. */
      memset(p, 0, length);
      break;
    }
    p += got;
    offset += (uint64_t)got;
    length -= (uint64_t)got;
  }
  pthread_mutex_unlock(&q->lock);
  if (r == 0)
    r = walk(q, 0, start, total, zero_patch, &zp);
  return r;
}

/* Passes walk()'s runs to an fmt_extent_fn. */
struct extents_ctx {
  fmt_extent_fn fn; /* the caller's callback */
  void *opaque;     /* its argument */
  bool stopped;     /* it asked to stop */
};

/* walk() callback for ->extents. */
static int extents_run(void *opaque, uint64_t offset, uint64_t length, enum state st)
{
  struct extents_ctx *x = opaque;

  if (x->stopped)
    return 0;
  if (x->fn(x->opaque, offset, length, st == ST_ZERO ? FMT_EXTENT_HOLE | FMT_EXTENT_ZERO : 0) < 0)
    x->stopped = true;
  return 0;
}

static int qcow2_extents(struct fmt *f, uint64_t length, uint64_t offset, fmt_extent_fn fn,
                         void *opaque)
{
  struct qcow2 *q = (struct qcow2 *)f;
  struct extents_ctx x = { fn, opaque, false };

  if (offset >= f->size)
    return 0;
  if (length > f->size - offset)
    length = f->size - offset;
  return walk(q, 0, offset, length, extents_run, &x);
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
};

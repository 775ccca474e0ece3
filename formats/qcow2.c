/* qcow2: read-only base images through libqcow (libyal).
 *
 * libqcow reads block and keeps per-file caches without locks of its own, so
 * every call on an image is serialized by one mutex.  ->map is absent: blockd
 * sends every read to its blocking pool, never to a worker's event loop.
 * Backing files are followed when they are qcow2 too (libqcow's parent file);
 * compressed clusters are decoded by libqcow.
 */
#include <errno.h>
#include <libgen.h>
#include <libqcow.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "format.h"

#define QCOW2_MAX_CHAIN 16 /* backing files we follow */

struct qcow2 {
  struct fmt fmt;                        /* common fields, first */
  pthread_mutex_t lock;                  /* serializes every libqcow call */
  libqcow_file_t *files[QCOW2_MAX_CHAIN]; /* the image, then its backing chain */
  int nfiles;                            /* entries used in files[] */
  char backing[PATH_MAX];                /* the image's backing file, "" if none */
};

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

/* Resolves NAME, a backing file as written in the image at PATH: relative
 * names are relative to the image's directory, as qemu does. */
static void backing_path(const char *path, const char *name, char *out, size_t outlen)
{
  CLEANUP_FREE char *copy = strdup(path);

  if (name[0] == '/' || copy == NULL)
    snprintf(out, outlen, "%s", name);
  else
    snprintf(out, outlen, "%s/%s", dirname(copy), name);
}

/* Opens one file of the chain read-only. */
static libqcow_file_t *open_one(const char *path, char *err, size_t errlen)
{
  libqcow_file_t *file = NULL;
  libqcow_error_t *e = NULL;
  uint32_t method = 0;

  if (libqcow_file_initialize(&file, &e) != 1) {
    qcow_error(err, errlen, path, "libqcow", &e);
    return NULL;
  }
  if (libqcow_file_open(file, path, LIBQCOW_OPEN_READ, &e) != 1) {
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
    libqcow_file_close(q->files[i], NULL);
    libqcow_file_free(&q->files[i], NULL);
  }
  pthread_mutex_destroy(&q->lock);
  fmt_fini(f);
  free(q);
}

static struct fmt *qcow2_open(const char *path, bool readonly, char *err, size_t errlen)
{
  struct qcow2 *q;
  libqcow_error_t *e = NULL;
  size64_t size = 0;
  char name[PATH_MAX], cur[PATH_MAX], next[PATH_MAX];
  int r;

  /* Read-only whatever was asked: a qcow2 is a base, never written. */
  (void)readonly;
  q = calloc(1, sizeof *q);
  if (q == NULL) {
    snprintf(err, errlen, "%s: %s", path, strerror(ENOMEM));
    return NULL;
  }
  pthread_mutex_init(&q->lock, NULL);
  snprintf(cur, sizeof cur, "%s", path);
  for (;;) {
    libqcow_file_t *file = open_one(cur, err, errlen);
    if (file == NULL)
      goto err;
    q->files[q->nfiles++] = file;
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
    backing_path(cur, name, next, sizeof next);
    if (libqcow_check_file_signature(next, &e) != 1) {
      libqcow_error_free(&e);
      snprintf(err, errlen, "%s: backing file %s is not a qcow2 image (not supported)", cur, next);
      goto err;
    }
    if (q->nfiles == QCOW2_MAX_CHAIN) {
      snprintf(err, errlen, "%s: backing chain longer than %d", path, QCOW2_MAX_CHAIN);
      goto err;
    }
    memcpy(cur, next, sizeof cur);
  }
  if (libqcow_file_get_media_size(q->files[0], &size, &e) != 1) {
    qcow_error(err, errlen, path, "size", &e);
    goto err;
  }
  r = fmt_init(&q->fmt, &fmt_qcow2_ops, path, size, true);
  if (r < 0) {
    snprintf(err, errlen, "%s: %s", path, strerror(-r));
    goto err;
  }
  return &q->fmt;
err:
  qcow2_close(&q->fmt);
  return NULL;
}

static int qcow2_pread(struct fmt *f, void *buf, uint64_t length, uint64_t offset)
{
  struct qcow2 *q = (struct qcow2 *)f;
  char *p = buf;
  int r = 0;

  pthread_mutex_lock(&q->lock);
  while (length > 0) {
    /* libqcow takes size_t counts but reads at most a cluster at a time
     * internally; bound each call so a short read is easy to resume. */
    size_t n = length > (1u << 24) ? (1u << 24) : (size_t)length;
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
  return r;
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
  .extents = NULL,
  .cache = NULL,
};

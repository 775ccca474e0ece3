/* The table of exports: open images and the flags advertised for them. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static struct export *exports;
static size_t nr_exports;

/* Transmission flags for an image. */
static uint16_t eflags_for(const struct fmt *f)
{
  uint16_t flags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_DF | NBD_FLAG_SEND_CACHE;

  if (f->readonly)
    flags |= NBD_FLAG_READ_ONLY;
  else {
    flags |= NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_WRITE_ZEROES |
             NBD_FLAG_SEND_FAST_ZERO;
    if (f->can_trim)
      flags |= NBD_FLAG_SEND_TRIM;
  }
  /* CAN_MULTI_CONN promises that a flush on any connection covers writes
   * completed on all of them (proto.md); every connection to an export
   * shares the one open image, so it holds when the engine says so. */
  if (f->can_multi_conn)
    flags |= NBD_FLAG_CAN_MULTI_CONN;
  return flags;
}

/* Adds an open image as export NAME. Returns 0 or -errno. */
static int add(struct fmt *f, const char *name, const char *format)
{
  struct export *n = realloc(exports, (nr_exports + 1) * sizeof *n);
  struct export *e;

  if (n == NULL)
    return -ENOMEM;
  exports = n;
  e = &exports[nr_exports];
  e->fmt = f;
  e->name = strdup(name);
  /* Every client may read this: the host path of the image is none of
   * its business. */
  if (asprintf(&e->description, "%s disk%s", format, f->readonly ? ", read-only" : "") < 0)
    e->description = NULL;
  if (e->name == NULL || e->description == NULL) {
    free(e->name);
    free(e->description);
    return -ENOMEM;
  }
  e->eflags = eflags_for(f);
  nr_exports++;
  return 0;
}

/* Opens every export of O; on failure prints a message and returns -1. */
int exports_open(const struct options *o)
{
  for (size_t i = 0; i < o->nr_exports; i++) {
    const struct export_spec *s = &o->exports[i];
    char err[512];
    struct fmt *f = fmt_open(s->path, s->format, s->readonly, err, sizeof err);

    if (f == NULL) {
      nbd_log("%s", err);
      return -1;
    }
    if (add(f, s->name, f->ops->name) < 0) {
      fmt_close(f);
      nbd_log("out of memory");
      return -1;
    }
    debug("export '%s': %s, %s, %" PRIu64 " bytes", s->name, s->path, f->ops->name, f->size);
  }
  return 0;
}

/* Registers a single already-open image as the only export (tests, fuzzer). */
int exports_set_single(struct fmt *f, const char *name)
{
  return add(f, name, f->ops->name);
}

/* Returns the export named NAME, or NULL. */
struct export *export_find(const char *name, size_t len)
{
  for (size_t i = 0; i < nr_exports; i++)
    if (strlen(exports[i].name) == len && memcmp(exports[i].name, name, len) == 0)
      return &exports[i];
  return NULL;
}

/* Number of exports, and the I-th one, for NBD_OPT_LIST. */
size_t exports_count(void)
{
  return nr_exports;
}

/* Returns the I-th export, or NULL past the end. */
struct export *exports_get(size_t i)
{
  return i < nr_exports ? &exports[i] : NULL;
}

/* Flushes every writable export. Returns 0 or -1 after logging. */
int exports_flush_all(void)
{
  int ret = 0;

  for (size_t i = 0; i < nr_exports; i++) {
    struct fmt *f = exports[i].fmt;
    int r;

    if (f->readonly || f->ops->flush == NULL)
      continue;
    r = f->ops->flush(f);
    if (r < 0) {
      errno = -r;
      nbd_log("%s: flush: %m", f->path);
      ret = -1;
    }
  }
  return ret;
}

/* Closes every export. */
void exports_close(void)
{
  for (size_t i = 0; i < nr_exports; i++) {
    fmt_close(exports[i].fmt);
    free(exports[i].name);
    free(exports[i].description);
  }
  free(exports);
  exports = NULL;
  nr_exports = 0;
}

/* nbdkit-blockd-plugin: the blockd formats (raw, qcow2, overlay) as an nbdkit plugin.
 *
 *   nbdkit nbdkit-blockd-plugin.so file=FILE [format=raw|qcow2|overlay] [readonly=true]
 *   nbdkit nbdkit-blockd-plugin.so file=rbd:POOL/IMAGE[@SNAP] [conf=FILE] [id=USER]
 *
 * One engine, two front ends: this file only translates nbdkit's callbacks
 * into the synchronous operations of formats/format.h.  The image is opened
 * once per nbdkit instance, in .get_ready, and every connection shares that
 * one handle: an overlay opened for writing holds an exclusive lock, so a
 * second open from a second connection would fail, and sharing the handle is
 * also what makes multi-conn true (see plugin_can_multi_conn).
 *
 * An image in a Ceph cluster (an rbd: name, or an overlay over an RBD
 * snapshot) is the exception: librados runs threads, which nbdkit's fork
 * into the background would lose. It is opened in .get_ready to check it,
 * closed, and opened again for good in .after_fork.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "format.h"

/* Every callback may run on many threads at once: the engines' synchronous
 * operations are thread-safe (format.h) and the handle is shared. */
#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

static char *filename;        /* file= (absolute; nbdkit may chdir before serving),
                               * or an rbd: name */
static char *format;          /* format= or NULL to detect from the contents */
static char *conf;            /* conf=: Ceph configuration file, or NULL */
static char *id;              /* id=: Ceph user, or NULL */
static bool readonly;         /* readonly= */
static bool open_after_fork;  /* the image needs librados: open it in .after_fork */
static struct fmt *image;     /* the image, open from .get_ready (or .after_fork) to .cleanup */

/* Frees the configuration when the plugin is unloaded. */
static void plugin_unload(void)
{
  free(filename);
  free(format);
  free(conf);
  free(id);
}

/* Prints the plugin's facts for `nbdkit --dump-plugin`. */
static void plugin_dump_plugin(void)
{
  printf("blockd_version=%s\n", BLOCKD_VERSION);
  printf("blockd_formats=%s\n", fmt_names());
}

/* Engine messages go to nbdkit's log. */
static void __attribute__((format(printf, 1, 2))) plugin_log(const char *fmt, ...)
{
  va_list ap;

  va_start(ap, fmt);
  nbdkit_verror(fmt, ap);
  va_end(ap);
}

/* Parses one KEY=VALUE parameter. */
static int plugin_config(const char *key, const char *value)
{
  fmt_log = plugin_log;
  if (strcmp(key, "file") == 0) {
    free(filename);
    /* An rbd: name is not a path; a file named so is given as ./rbd:... */
    filename = spec_is_rbd(value) ? strdup(value) : nbdkit_realpath(value);
    if (filename == NULL)
      return -1;
  }
  else if (strcmp(key, "conf") == 0 || strcmp(key, "id") == 0) {
    char **p = key[0] == 'c' ? &conf : &id;

    free(*p);
    *p = key[0] == 'c' ? nbdkit_realpath(value) : strdup(value);
    if (*p == NULL)
      return -1;
  }
  else if (strcmp(key, "format") == 0) {
    if (!fmt_known(value)) {
      nbdkit_error("unknown format '%s' (built in: %s)", value, fmt_names());
      return -1;
    }
    free(format);
    format = strdup(value);
    if (format == NULL) {
      nbdkit_error("strdup: %m");
      return -1;
    }
  }
  else if (strcmp(key, "allow-base-dir") == 0) {
    int r = basepath_allow(value);
    if (r < 0) {
      nbdkit_error("allow-base-dir=%s: %s", value, strerror(-r));
      return -1;
    }
  }
  else if (strcmp(key, "readonly") == 0) {
    int r = nbdkit_parse_bool(value);
    if (r == -1)
      return -1;
    readonly = r;
  }
  else {
    nbdkit_error("unknown parameter '%s' (see --help)", key);
    return -1;
  }
  return 0;
}

/* Checks that the required parameters were given. */
static int plugin_config_complete(void)
{
  if (filename == NULL) {
    nbdkit_error("you must supply the file=FILE parameter after the plugin name");
    return -1;
  }
  if (!spec_is_rbd(filename) && (conf != NULL || id != NULL)) {
    nbdkit_error("conf= and id= are for rbd: images");
    return -1;
  }
  if (spec_is_rbd(filename) && format != NULL) {
    nbdkit_error("an rbd: image takes no format=");
    return -1;
  }
  return 0;
}

#define plugin_config_help \
  "file=FILE (required)           The image: raw, qcow2 (read-only) or overlay.\n" \
  "format=raw|qcow2|overlay       Override detection from the file's contents\n" \
  "                               (qcow2 is never detected: name it).\n" \
  "allow-base-dir=DIR             Bases may live beneath DIR too (repeatable;\n" \
  "                               rbd:POOL: snapshots in that Ceph pool).\n" \
  "readonly=true                  Open the image read-only (no lock for writing).\n" \
  "file=rbd:POOL/IMAGE[@SNAP]     A Ceph RBD image (if built with librbd), with\n" \
  "conf=FILE                      the cluster's configuration ($CEPH_CONF or\n" \
  "id=USER                        /etc/ceph/ceph.conf) and Ceph user (admin)."

/* Opens the image as configured. Returns 0, or -1 after nbdkit_error. */
static int open_image(void)
{
  struct img_spec s = { .path = filename, .format = format, .conf = conf, .id = id };
  char err[512];

  s.readonly = readonly;
  /* Like nbdkit-file-plugin: a file we may not write is served read-only
   * rather than refused, so `nbdkit -r` and --filter=cow work on it. */
  if (!s.readonly && !spec_is_rbd(filename) && access(filename, W_OK) == -1 &&
      (errno == EACCES || errno == EROFS)) {
    nbdkit_debug("%s: not writable, opening read-only", filename);
    s.readonly = true;
  }
  image = fmt_open_spec(&s, false, err, sizeof err);
  if (image == NULL) {
    nbdkit_error("%s", err);
    return -1;
  }
  nbdkit_debug("%s: format %s, size %" PRIu64 ", %s", filename, fmt_name(image), image->size,
               image->readonly ? "read-only" : "read-write");
  return 0;
}

/* Opens the image once for the whole server, while errors still reach the user. */
static int plugin_get_ready(void)
{
  if (open_image() < 0)
    return -1;
  /* The image stays open across nbdkit's fork into the background: the
   * descriptors and the open-file-description locks the engines take are
   * inherited by the child, which is the process that serves. Threads are
   * not: an image that connected to a Ceph cluster is closed now (which
   * stops librados' threads) and opened again after the fork. */
  if (fmt_rbd_connected()) {
    fmt_close(image);
    image = NULL;
    open_after_fork = true;
  }
  return 0;
}

/* In the process that serves: opens an image that needs librados. */
static int plugin_after_fork(void)
{
  return open_after_fork ? open_image() : 0;
}

/* Flushes and closes the image after the last connection. */
static void plugin_cleanup(void)
{
  int r;

  if (image == NULL)
    return;
  if ((r = fmt_flush(image)) < 0)
    nbdkit_error("%s: flush: %s", image->path, strerror(-r));
  fmt_close(image);
  image = NULL;
}

/* Every connection shares the one image: the handle is the image itself. */
static void *plugin_open(int conn_readonly)
{
  (void)conn_readonly; /* nbdkit enforces -r itself; can_write reports the image's mode */
  return image;
}

/* Connections share the image, so closing one leaves it open. */
static void plugin_close(void *handle)
{
  (void)handle;
}

/* Returns the virtual size. */
static int64_t plugin_get_size(void *handle)
{
  struct fmt *f = handle;

  return (int64_t)f->size;
}

/* Reports the engine's block size constraints. */
static int plugin_block_size(void *handle, uint32_t *minimum, uint32_t *preferred,
                             uint32_t *maximum)
{
  struct fmt *f = handle;

  *minimum = f->block_min;
  *preferred = f->block_pref;
  *maximum = f->block_max;
  return 0;
}

/* Writable unless the image was opened read-only. */
static int plugin_can_write(void *handle)
{
  struct fmt *f = handle;

  return !f->readonly;
}

/* Flush always succeeds: engines without ->flush have nothing to flush. */
static int plugin_can_flush(void *handle)
{
  (void)handle;
  return 1;
}

/* Trim is advertised only where it returns space to the host. */
static int plugin_can_trim(void *handle)
{
  struct fmt *f = handle;

  return !f->readonly && f->can_trim;
}

/* Zeroes always go to fmt_zero, which writes them itself where the engine
 * cannot zero. */
static int plugin_can_zero(void *handle)
{
  struct fmt *f = handle;

  return !f->readonly;
}

/* A fast zero is answered quickly either way: done cheaply, or ENOTSUP at
 * once (fmt_zero never falls back to writing under FMT_FAST_ZERO). */
static int plugin_can_fast_zero(void *handle)
{
  struct fmt *f = handle;

  return !f->readonly;
}

/* Extents only where the engine knows real holes; nbdkit reports all data otherwise. */
static int plugin_can_extents(void *handle)
{
  struct fmt *f = handle;

  return f->can_extents;
}

/* Every engine honours FMT_FUA on writes, trims and zeroes. */
static int plugin_can_fua(void *handle)
{
  (void)handle;
  return NBDKIT_FUA_NATIVE;
}

/* Prefetch: fmt_cache does what the engine can (nothing for qcow2). */
static int plugin_can_cache(void *handle)
{
  (void)handle;
  return NBDKIT_CACHE_NATIVE;
}

/* Multi-conn: every connection shares one engine handle, and ->flush makes
 * every completed write through that handle durable (format.h), so a flush
 * on any connection covers writes made on all of them, whatever the engine
 * would promise for separately opened handles (fmt->can_multi_conn). */
static int plugin_can_multi_conn(void *handle)
{
  (void)handle;
  return 1;
}

/* Turns an engine's -errno into nbdkit's error convention: message, errno, -1. */
static int engine_error(struct fmt *f, const char *op, int r)
{
  errno = -r;
  nbdkit_error("%s: %s: %m", f->path, op);
  return -1;
}

/* Reads COUNT bytes at OFFSET. */
static int plugin_pread(void *handle, void *buf, uint32_t count, uint64_t offset, uint32_t flags)
{
  struct fmt *f = handle;
  int r;

  (void)flags;
  r = fmt_pread(f, buf, count, offset);
  return r < 0 ? engine_error(f, "pread", r) : 0;
}

/* Writes COUNT bytes at OFFSET, durably before returning under FUA. */
static int plugin_pwrite(void *handle, const void *buf, uint32_t count, uint64_t offset,
                         uint32_t flags)
{
  struct fmt *f = handle;
  int r;

  r = fmt_pwrite(f, buf, count, offset, (flags & NBDKIT_FLAG_FUA) ? FMT_FUA : 0);
  return r < 0 ? engine_error(f, "pwrite", r) : 0;
}

/* Makes every completed write durable. */
static int plugin_flush(void *handle, uint32_t flags)
{
  struct fmt *f = handle;
  int r;

  (void)flags;
  r = fmt_flush(f);
  return r < 0 ? engine_error(f, "flush", r) : 0;
}

/* Discards a range: it reads as zeroes afterwards and its space goes back to the host. */
static int plugin_trim(void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  struct fmt *f = handle;
  int r;

  r = fmt_trim(f, count, offset, (flags & NBDKIT_FLAG_FUA) ? FMT_FUA : 0);
  return r < 0 ? engine_error(f, "trim", r) : 0;
}

/* Zeroes a range, punching holes when the client allows it. */
static int plugin_zero(void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  struct fmt *f = handle;
  uint32_t fflags = 0;
  int r;

  if (flags & NBDKIT_FLAG_FUA)
    fflags |= FMT_FUA;
  if (flags & NBDKIT_FLAG_MAY_TRIM)
    fflags |= FMT_MAY_TRIM;
  if (flags & NBDKIT_FLAG_FAST_ZERO)
    fflags |= FMT_FAST_ZERO;
  r = fmt_zero(f, count, offset, fflags);
  /* ENOTSUP is the expected answer to a fast zero the engine cannot do
   * cheaply, and without FAST_ZERO nbdkit then falls back to writing
   * zeroes: neither is worth an error message. */
  if (r == -ENOTSUP || r == -EOPNOTSUPP) {
    errno = -r;
    return -1;
  }
  return r < 0 ? engine_error(f, "zero", r) : 0;
}

/* State of one extents request while the engine reports. */
struct extents_ctx {
  struct nbdkit_extents *extents; /* where nbdkit collects them */
  bool req_one;                   /* NBDKIT_FLAG_REQ_ONE: the first extent is enough */
  int err;                        /* errno from nbdkit_add_extent, 0 if none */
};

/* Hands one engine extent to nbdkit. */
static int add_extent(void *opaque, uint64_t offset, uint64_t length, uint32_t type)
{
  struct extents_ctx *ctx = opaque;
  uint32_t t = 0;

  if (type & FMT_EXTENT_HOLE)
    t |= NBDKIT_EXTENT_HOLE;
  if (type & FMT_EXTENT_ZERO)
    t |= NBDKIT_EXTENT_ZERO;
  if (nbdkit_add_extent(ctx->extents, offset, length, t) == -1) {
    ctx->err = errno ? errno : EINVAL;
    return -1;
  }
  return ctx->req_one ? -1 : 0;
}

/* Reports allocation and zero status of a range. */
static int plugin_extents(void *handle, uint32_t count, uint64_t offset, uint32_t flags,
                          struct nbdkit_extents *extents)
{
  struct fmt *f = handle;
  struct extents_ctx ctx = { .extents = extents, .req_one = flags & NBDKIT_FLAG_REQ_ONE };
  int r;

  r = fmt_extents(f, count, offset, add_extent, &ctx);
  if (r < 0)
    return engine_error(f, "extents", r);
  if (ctx.err) {
    /* nbdkit_add_extent has already said why. */
    errno = ctx.err;
    return -1;
  }
  return 0;
}

/* Prefetches a range. */
static int plugin_cache(void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  struct fmt *f = handle;
  int r;

  (void)flags;
  r = fmt_cache(f, count, offset);
  return r < 0 ? engine_error(f, "cache", r) : 0;
}

static struct nbdkit_plugin plugin = {
  .name = "blockd",
  .longname = "blockd formats (raw, qcow2, overlay)",
  .version = BLOCKD_VERSION,
  .description = "Serves raw, read-only qcow2 and copy-on-write overlay images of blockd.",
  .unload = plugin_unload,
  .dump_plugin = plugin_dump_plugin,
  .config = plugin_config,
  .config_complete = plugin_config_complete,
  .config_help = plugin_config_help,
  .magic_config_key = "file",
  .get_ready = plugin_get_ready,
  .after_fork = plugin_after_fork,
  .cleanup = plugin_cleanup,
  .open = plugin_open,
  .close = plugin_close,
  .get_size = plugin_get_size,
  .block_size = plugin_block_size,
  .can_write = plugin_can_write,
  .can_flush = plugin_can_flush,
  .can_trim = plugin_can_trim,
  .can_zero = plugin_can_zero,
  .can_fast_zero = plugin_can_fast_zero,
  .can_extents = plugin_can_extents,
  .can_fua = plugin_can_fua,
  .can_cache = plugin_can_cache,
  .can_multi_conn = plugin_can_multi_conn,
  .pread = plugin_pread,
  .pwrite = plugin_pwrite,
  .flush = plugin_flush,
  .trim = plugin_trim,
  .zero = plugin_zero,
  .extents = plugin_extents,
  .cache = plugin_cache,
  .errno_is_preserved = 1,
};

NBDKIT_REGISTER_PLUGIN(plugin)

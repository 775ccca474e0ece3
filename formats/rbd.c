/* rbd: a Ceph RBD image, through librbd.
 *
 * The image is not a file, so nothing maps (no ->map). blockd starts reads,
 * writes, flushes, trims and zeroes through ->aio, librbd's asynchronous
 * calls, whose completions come back on a librbd thread and go to the
 * request's worker (fmt_aio); what ->aio declines (FUA, FAST_ZERO, the disk's
 * head) and block status run librbd's synchronous calls on the blocking
 * pool, as the nbdkit plugin and blockd-img would.
 *
 * One cluster connection (rados_t) per process and cluster (conf file and
 * user), shared by every image opened from it: a connection carries its own
 * threads and sockets, and the cluster sees one client.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <rados/librados.h>
#include <rbd/librbd.h>

#include "internal.h"

/* librbd takes at most INT_MAX bytes per read, write, discard or zero. */
#define RBD_IO_MAX (1u << 30)

/* Our defaults where the user's configuration and CEPH_ARGS leave librados'
 * own: a missing cluster is an error at start after RBD_CONNECT_TIMEOUT
 * seconds, not a hang of 5 minutes, and a request to a cluster that stopped
 * answering fails after RBD_OP_TIMEOUT seconds instead of waiting for ever. */
#define RBD_CONNECT_TIMEOUT "10"
#define RBD_OP_TIMEOUT "30"

/* Sets OPTION of R to VALUE unless it differs from LIBRADOS_DEFAULT, that is
 * the user chose it (rados_conf_set would override any choice). Returns 0
 * or -errno. */
static int set_default(rados_t r, const char *option, double librados_default, const char *value)
{
  char buf[64];
  int e = rados_conf_get(r, option, buf, sizeof buf);

  if (e < 0)
    return e;
  if (strtod(buf, NULL) != librados_default)
    return 0;
  return rados_conf_set(r, option, value);
}

/* One connection to a cluster, shared by the images opened from it. */
struct cluster {
  char *conf;           /* conf=, or NULL for librados' default search */
  char *id;             /* id=, or NULL for "admin" */
  rados_t rados;        /* connected handle */
  unsigned refs;        /* images open through it */
  struct cluster *next; /* in clusters */
};

static pthread_mutex_t clusters_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cluster *clusters; /* connected clusters, under clusters_lock */

/* An open pool of a cluster. */
struct pool {
  struct cluster *cluster; /* the connection, shared */
  rados_ioctx_t io;        /* the pool */
};

struct rbd {
  struct fmt fmt;           /* common fields, first */
  struct pool pool;         /* its pool */
  rbd_image_t image;        /* the open image (or snapshot) */
  bool durable_writes;      /* librbd's cache is off for this image: a completed
                             * write is durable, so FUA needs no flush */
};

/* Whether two optional strings are equal. */
static bool same(const char *a, const char *b)
{
  return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* Connects to the cluster CONF/ID. Returns the handle or NULL with a message
 * naming PATH in ERR; FROM_HEADER: PATH is an overlay's base, whose name
 * takes no conf=, so the message does not suggest it. */
static rados_t connect_cluster(const char *path, const char *conf, const char *id,
                               bool from_header, char *err, size_t errlen)
{
  rados_t r;
  int e;

  e = rados_create(&r, id);
  if (e < 0) {
    snprintf(err, errlen, "%s: rados_create: %s", path, strerror(-e));
    return NULL;
  }
  e = rados_conf_read_file(r, conf);
  if (e < 0) {
    if (conf != NULL)
      snprintf(err, errlen, "%s: conf=%s: %s", path, conf, strerror(-e));
    else if (from_header)
      snprintf(err, errlen, "%s: no Ceph configuration (/etc/ceph/ceph.conf or $CEPH_CONF), "
                            "which an overlay's RBD base is read with: set CEPH_CONF", path);
    else
      snprintf(err, errlen, "%s: no Ceph configuration (/etc/ceph/ceph.conf or $CEPH_CONF): "
                            "give conf=FILE", path);
    goto err;
  }
  e = rados_conf_parse_env(r, NULL); /* CEPH_ARGS */
  if (e < 0) {
    snprintf(err, errlen, "%s: CEPH_ARGS: %s", path, strerror(-e));
    goto err;
  }
  /* librbd's cache stays off, whatever the configuration says: it completes
   * writes before the cluster has them and reports a failed write-back to
   * one flush only, so a flush running beside that one succeeds with the
   * data lost (seen with a frozen OSD). Without it a write completes once
   * the OSD has it, and a flush covers every completed write. The guest's
   * page cache is the cache. librados' own log lines stay off stderr: we
   * report errors in one line. */
  if ((e = set_default(r, "client_mount_timeout", 300, RBD_CONNECT_TIMEOUT)) < 0 ||
      (e = set_default(r, "rados_mon_op_timeout", 0, RBD_OP_TIMEOUT)) < 0 ||
      (e = set_default(r, "rados_osd_op_timeout", 0, RBD_OP_TIMEOUT)) < 0 ||
      (e = rados_conf_set(r, "rbd_cache", "false")) < 0 ||
      (e = rados_conf_set(r, "log_to_stderr", "false")) < 0 ||
      (e = rados_conf_set(r, "err_to_stderr", "false")) < 0) {
    snprintf(err, errlen, "%s: configuration: %s", path, strerror(-e));
    goto err;
  }
  e = rados_connect(r);
  if (e < 0) {
    snprintf(err, errlen, "%s: cannot connect to the Ceph cluster as client.%s: %s%s", path,
             id ? id : "admin", strerror(-e),
             e == -ETIMEDOUT ? " (no monitor answered)" : "");
    goto err;
  }
  return r;
err:
  rados_shutdown(r);
  return NULL;
}

/* Returns the connection to CONF/ID, made now or shared, with a reference
 * taken; NULL with a message in ERR (FROM_HEADER: see connect_cluster). */
static struct cluster *cluster_get(const char *path, const char *conf, const char *id,
                                   bool from_header, char *err, size_t errlen)
{
  struct cluster *c;

  pthread_mutex_lock(&clusters_lock);
  for (c = clusters; c != NULL; c = c->next)
    if (same(c->conf, conf) && same(c->id, id))
      break;
  if (c == NULL) {
    c = calloc(1, sizeof *c);
    if (c == NULL || (conf && (c->conf = strdup(conf)) == NULL) ||
        (id && (c->id = strdup(id)) == NULL)) {
      snprintf(err, errlen, "%s: %s", path, strerror(ENOMEM));
      goto err;
    }
    c->rados = connect_cluster(path, conf, id, from_header, err, errlen);
    if (c->rados == NULL)
      goto err;
    c->next = clusters;
    clusters = c;
  }
  c->refs++;
  pthread_mutex_unlock(&clusters_lock);
  return c;
err:
  if (c != NULL) {
    free(c->conf);
    free(c->id);
    free(c);
  }
  pthread_mutex_unlock(&clusters_lock);
  return NULL;
}

/* Drops a reference to C; the last one disconnects. */
static void cluster_put(struct cluster *c)
{
  struct cluster **p;

  pthread_mutex_lock(&clusters_lock);
  if (--c->refs == 0) {
    for (p = &clusters; *p != c; p = &(*p)->next)
      ;
    *p = c->next;
    rados_shutdown(c->rados);
    free(c->conf);
    free(c->id);
    free(c);
  }
  pthread_mutex_unlock(&clusters_lock);
}

/* Whether librbd's cache is off for IMAGE: connect_cluster turns it off,
 * but a pool's or the image's own settings (rbd config image set) win.
 * False if librbd cannot say. */
static bool cache_off(rbd_image_t image)
{
  rbd_config_option_t *opts;
  int max = 0, e;
  bool off = false;

  e = rbd_config_image_list(image, NULL, &max);
  if (e != -ERANGE || max <= 0 || (opts = calloc((size_t)max, sizeof *opts)) == NULL)
    return false;
  if (rbd_config_image_list(image, opts, &max) == 0) {
    for (int i = 0; i < max; i++)
      if (strcmp(opts[i].name, "rbd_cache") == 0)
        off = strcmp(opts[i].value, "false") == 0;
    rbd_config_image_list_cleanup(opts, max);
  }
  free(opts);
  return off;
}

/* Checks that CONF is a regular file we can read: librados would otherwise
 * report a FIFO as a hang and a directory as an empty configuration. */
static int check_conf(const char *path, const char *conf, char *err, size_t errlen)
{
  struct stat st;
  int fd = open(conf, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);

  if (fd == -1) {
    snprintf(err, errlen, "%s: conf=%s: %s", path, conf, strerror(errno));
    return -1;
  }
  if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
    snprintf(err, errlen, "%s: conf=%s: not a regular file", path, conf);
    close(fd);
    return -1;
  }
  close(fd);
  return 0;
}

/* Opens POOL of the cluster CONF/ID (the rbd: name PATH, for messages) into
 * P. Returns 0, or -1 with a message in ERR (FROM_HEADER: see connect_cluster). */
static int pool_open(const char *path, const char *conf, const char *id, bool from_header,
                     const char *pool, struct pool *p, char *err, size_t errlen)
{
  int e;

  if (conf != NULL && check_conf(path, conf, err, errlen) < 0)
    return -1;
  p->cluster = cluster_get(path, conf, id, from_header, err, errlen);
  if (p->cluster == NULL)
    return -1;
  e = rados_ioctx_create(p->cluster->rados, pool, &p->io);
  if (e < 0) {
    snprintf(err, errlen, "%s: pool '%s': %s", path, pool,
             e == -ENOENT ? "no such pool" : strerror(-e));
    cluster_put(p->cluster);
    return -1;
  }
  return 0;
}

static void pool_close(struct pool *p)
{
  rados_ioctx_destroy(p->io);
  cluster_put(p->cluster);
}

struct fmt *fmt_rbd_open(const char *path, const char *conf, const char *id, bool from_header,
                         bool readonly, char *err, size_t errlen)
{
  struct spec_rbd name;
  struct rbd *r;
  uint64_t size;
  int e;

  if (spec_rbd_parse(path, &name, err, errlen) < 0)
    return NULL;
  /* A snapshot cannot change: saying so beats EROFS on the first write. */
  if (name.snap[0] != '\0' && !readonly) {
    snprintf(err, errlen, "%s: a snapshot is read-only: add ,readonly", path);
    return NULL;
  }
  r = calloc(1, sizeof *r);
  if (r == NULL) {
    snprintf(err, errlen, "%s: %s", path, strerror(ENOMEM));
    return NULL;
  }
  if (pool_open(path, conf, id, from_header, name.pool, &r->pool, err, errlen) < 0)
    goto err_free;
  if (readonly)
    e = rbd_open_read_only(r->pool.io, name.image, &r->image, name.snap[0] ? name.snap : NULL);
  else
    e = rbd_open(r->pool.io, name.image, &r->image, NULL);
  if (e < 0) {
    if (e == -ENOENT && name.snap[0] != '\0')
      snprintf(err, errlen, "%s: no such image or snapshot in pool '%s'", path, name.pool);
    else if (e == -ENOENT)
      snprintf(err, errlen, "%s: no image '%s' in pool '%s'", path, name.image, name.pool);
    else
      snprintf(err, errlen, "%s: open: %s", path, strerror(-e));
    goto err_pool;
  }
  /* One writer, like raw's file lock: a lock taken this way is not handed
   * to the next client that asks, as librbd's automatic one is, so a second
   * blockd (or any other writer) is refused instead of taking turns. */
  if (!readonly) {
    e = rbd_lock_acquire(r->image, RBD_LOCK_MODE_EXCLUSIVE);
    if (e == -EINVAL)
      fmt_log("%s: no exclusive-lock feature: nothing keeps a second writer out", path);
    else if (e == -EROFS || e == -EBUSY || e == -EAGAIN) {
      snprintf(err, errlen, "%s: in use by another client (it holds the image's exclusive lock)",
               path);
      goto err_image;
    }
    else if (e < 0) {
      snprintf(err, errlen, "%s: exclusive lock: %s", path, strerror(-e));
      goto err_image;
    }
  }
  r->durable_writes = cache_off(r->image);
  if (!readonly && !r->durable_writes)
    fmt_log("%s: librbd's cache is on for this image (its own or its pool's settings): FUA and"
            " flushes wait for write-back", path);
  e = rbd_get_size(r->image, &size);
  if (e < 0) {
    snprintf(err, errlen, "%s: size: %s", path, strerror(-e));
    goto err_image;
  }
  e = fmt_init(&r->fmt, &fmt_rbd_ops, -1, path, size, readonly);
  if (e < 0) {
    snprintf(err, errlen, "%s: %s", path, strerror(-e));
    goto err_image;
  }
  /* Discards free whole objects, zeroes are metadata operations, and the
   * object map answers block status. */
  r->fmt.can_trim = !readonly;
  r->fmt.can_zero = !readonly;
  r->fmt.can_fast_zero = !readonly;
  r->fmt.can_extents = true;
  /* One image handle for every connection: rbd_flush covers them all. */
  r->fmt.can_multi_conn = true;
  return &r->fmt;
err_image:
  rbd_close(r->image);
err_pool:
  pool_close(&r->pool);
err_free:
  free(r);
  return NULL;
}

static void rbdimg_close(struct fmt *f)
{
  struct rbd *r = (struct rbd *)f;

  rbd_close(r->image);
  pool_close(&r->pool);
  fmt_fini(f);
  free(r);
}

static int rbdimg_pread(struct fmt *f, void *buf, uint64_t length, uint64_t offset)
{
  struct rbd *r = (struct rbd *)f;
  char *p = buf;

  while (length > 0) {
    size_t n = length < RBD_IO_MAX ? (size_t)length : RBD_IO_MAX;
    ssize_t got = rbd_read(r->image, offset, n, p);

    if (got < 0)
      return (int)got;
    if (got == 0)
      return -EIO; /* within the image librbd reads every byte */
    p += got;
    offset += (uint64_t)got;
    length -= (uint64_t)got;
  }
  return 0;
}

static int rbdimg_flush(struct fmt *f)
{
  if (__atomic_load_n(&f->sync_error, __ATOMIC_ACQUIRE) != 0)
    return -EIO;
  return fmt_sync_result(f, rbd_flush(((struct rbd *)f)->image));
}

static int do_pwrite(struct fmt *f, const void *buf, uint64_t length, uint64_t offset,
                     uint32_t flags)
{
  struct rbd *r = (struct rbd *)f;
  const char *p = buf;

  while (length > 0) {
    size_t n = length < RBD_IO_MAX ? (size_t)length : RBD_IO_MAX;
    ssize_t put = rbd_write(r->image, offset, n, p);

    if (put < 0)
      return (int)put;
    if (put == 0)
      return -EIO;
    p += put;
    offset += (uint64_t)put;
    length -= (uint64_t)put;
  }
  /* With librbd's cache off a completed write is already durable. */
  return (flags & FMT_FUA) && !r->durable_writes ? rbdimg_flush(f) : 0;
}

static int rbdimg_pwrite(struct fmt *f, const void *buf, uint64_t length, uint64_t offset,
                      uint32_t flags)
{
  /* An RBD image's bytes are never probed for a format, but an `rbd export`
   * of it may be served as a raw file one day: the same guard as raw. */
  return fmt_guard_head(f, do_pwrite, buf, length, offset, flags);
}

static int do_trim(struct fmt *f, const void *buf, uint64_t length, uint64_t offset,
                   uint32_t flags)
{
  struct rbd *r = (struct rbd *)f;

  (void)buf;
  /* rbd_discard removes the objects the range covers whole and zeroes
   * within the others, except pieces smaller than rbd_discard_granularity_bytes
   * (64 KiB), which it leaves as they were: NBD lets trimmed data read back
   * either way. */
  while (length > 0) {
    uint64_t n = length < RBD_IO_MAX ? length : RBD_IO_MAX;
    int e = rbd_discard(r->image, offset, n);

    if (e < 0)
      return e;
    offset += n;
    length -= n;
  }
  return (flags & FMT_FUA) ? rbdimg_flush(f) : 0;
}

static int rbdimg_trim(struct fmt *f, uint64_t length, uint64_t offset, uint32_t flags)
{
  return fmt_guard_head(f, do_trim, NULL, length, offset, flags);
}

static int do_zero(struct fmt *f, const void *buf, uint64_t length, uint64_t offset,
                   uint32_t flags)
{
  struct rbd *r = (struct rbd *)f;
  /* Without MAY_TRIM (NBD's NO_HOLE) the zeroes must be allocated: librbd
   * then writes them, which is not fast. With it, whole objects are removed
   * and the rest zeroed in place: metadata work on the OSDs. */
  int zflags = (flags & FMT_MAY_TRIM) ? 0 : RBD_WRITE_ZEROES_FLAG_THICK_PROVISION;

  (void)buf;
  if (!(flags & FMT_MAY_TRIM) && (flags & FMT_FAST_ZERO))
    return -ENOTSUP;
  while (length > 0) {
    size_t n = length < RBD_IO_MAX ? (size_t)length : RBD_IO_MAX;
    ssize_t e = rbd_write_zeroes(r->image, offset, n, zflags, 0);

    if (e < 0)
      return (int)e;
    offset += n;
    length -= n;
  }
  return (flags & FMT_FUA) ? rbdimg_flush(f) : 0;
}

static int rbdimg_zero(struct fmt *f, uint64_t length, uint64_t offset, uint32_t flags)
{
  return fmt_guard_head(f, do_zero, NULL, length, offset, flags);
}

/* State of one rbdimg_extents walk. */
struct walk {
  uint64_t pos;       /* reported up to here */
  uint64_t end;       /* end of the range asked about */
  fmt_extent_fn fn;   /* the caller's callback */
  void *opaque;       /* its argument */
};

/* Reports [W->pos, END) as TYPE. Returns 0, or -ECANCELED if the caller stopped. */
static int walk_emit(struct walk *w, uint64_t end, uint32_t type)
{
  if (end <= w->pos)
    return 0;
  if (w->fn(w->opaque, w->pos, end - w->pos, type) < 0)
    return -ECANCELED;
  w->pos = end;
  return 0;
}

/* rbd_diff_iterate2's callback: one allocated extent. */
static int walk_data(uint64_t offset, size_t length, int exists, void *arg)
{
  struct walk *w = arg;
  uint64_t end = offset + length < w->end ? offset + length : w->end;
  int e;

  /* From the beginning of time (no snapshot to compare with) librbd
   * reports allocated extents only; whole objects may start before the
   * range. Anything else is treated as data, which is always safe. */
  (void)exists;
  if (offset > w->pos && (e = walk_emit(w, offset < w->end ? offset : w->end,
                                        FMT_EXTENT_HOLE | FMT_EXTENT_ZERO)) < 0)
    return e;
  return walk_emit(w, end, 0);
}

static int rbdimg_extents(struct fmt *f, uint64_t length, uint64_t offset, fmt_extent_fn fn,
                       void *opaque)
{
  struct walk w = { .pos = offset, .end = offset + length, .fn = fn, .opaque = opaque };
  /* Whole objects: with the object map (a default feature) librbd answers
   * from it without asking the OSDs; whole objects only overstate data. */
  int e = rbd_diff_iterate2(((struct rbd *)f)->image, NULL, offset, length, 1, 1, walk_data, &w);

  if (e == -ECANCELED)
    return 0;
  if (e < 0)
    return e;
  /* Past the last allocated extent: a hole (a clone's parent data counts as
   * allocated: include_parent). */
  e = walk_emit(&w, w.end, FMT_EXTENT_HOLE | FMT_EXTENT_ZERO);
  return e == -ECANCELED ? 0 : e;
}

/* librbd's completion of an ->aio operation, on a librbd thread. */
static void aio_complete(rbd_completion_t c, void *arg)
{
  struct fmt_aio *a = arg;
  ssize_t r = rbd_aio_get_return_value(c);

  rbd_aio_release(c);
  a->done(a, r < 0 ? (int)r : 0);
}

static int rbdimg_aio(struct fmt *f, enum fmt_aio_op op, const struct iovec *iov, unsigned n,
                      uint64_t length, uint64_t offset, uint32_t flags, struct fmt_aio *a)
{
  rbd_image_t image = ((struct rbd *)f)->image;
  rbd_completion_t c;
  int e;

  if (n > IOV_MAX || length > RBD_IO_MAX)
    return -EAGAIN;
  /* FUA is the write alone where it completes only once durable. */
  if ((flags & FMT_FUA) && !(op == FMT_AIO_WRITE && ((struct rbd *)f)->durable_writes))
    return -EAGAIN;
  /* Zeroes that must be allocated are written: not fast (do_zero says so). */
  if (op == FMT_AIO_ZERO && (flags & FMT_FAST_ZERO) && !(flags & FMT_MAY_TRIM))
    return -EAGAIN;
  if (rbd_aio_create_completion(a, aio_complete, &c) < 0)
    return -EAGAIN;
  /* rbd_non_blocking_aio (on by default) queues these for librbd's own
   * thread: none waits for the cluster or for librbd's cache. */
  switch (op) {
  case FMT_AIO_READ:
    e = rbd_aio_readv(image, iov, (int)n, offset, c);
    break;
  case FMT_AIO_WRITE:
    e = rbd_aio_writev(image, iov, (int)n, offset, c);
    break;
  case FMT_AIO_FLUSH:
    e = rbd_aio_flush(image, c);
    break;
  case FMT_AIO_TRIM:
    e = rbd_aio_discard(image, offset, length, c);
    break;
  case FMT_AIO_ZERO:
    e = rbd_aio_write_zeroes(image, offset, (size_t)length, c,
                             (flags & FMT_MAY_TRIM) ? 0 : RBD_WRITE_ZEROES_FLAG_THICK_PROVISION,
                             0);
    break;
  default:
    e = -EINVAL;
    break;
  }
  if (e < 0) {
    /* Not started: the synchronous call will meet the same error and say so. */
    rbd_aio_release(c);
    return -EAGAIN;
  }
  return 0;
}

const struct fmt_ops fmt_rbd_ops = {
  .name = "rbd",
  .probe = NULL,
  .open = NULL, /* not a file: fmt_rbd_open */
  .close = rbdimg_close,
  .map = NULL,
  .pread = rbdimg_pread,
  .pwrite = rbdimg_pwrite,
  .trim = rbdimg_trim,
  .zero = rbdimg_zero,
  .flush = rbdimg_flush,
  .extents = rbdimg_extents,
  .cache = NULL,
  .aio = rbdimg_aio,
};

/* What blockd-img does to RBD images besides reading and writing them. */

/* Opens the pool of the rbd: name in S (split into N), with S's conf= and id=.
 * Returns 0, or -1 with a message in ERR. */
static int spec_pool_open(const struct img_spec *s, struct spec_rbd *n, struct pool *p,
                          char *err, size_t errlen)
{
  if (spec_rbd_parse(s->path, n, err, errlen) < 0)
    return -1;
  return pool_open(s->path, s->conf, s->id, false, n->pool, p, err, errlen);
}

/* The message for E, an error creating the image N at PATH. */
static void create_error(const char *path, const struct spec_rbd *n, int e, char *err,
                         size_t errlen)
{
  if (e == -EEXIST)
    snprintf(err, errlen, "%s: image '%s' already exists in pool '%s' (blockd-img never"
                          " replaces an RBD image: remove it with 'rbd rm' first)",
             path, n->image, n->pool);
  else
    snprintf(err, errlen, "%s: create: %s", path, strerror(-e));
}

int fmt_rbd_create(const struct img_spec *s, uint64_t size, char *err, size_t errlen)
{
  struct spec_rbd n;
  struct pool p;
  int order = 0; /* the cluster's default object size */
  int e;

  if (spec_pool_open(s, &n, &p, err, errlen) < 0)
    return -1;
  if (n.snap[0] != '\0') {
    snprintf(err, errlen, "%s: a snapshot cannot be created as an image (make it with"
                          " 'rbd snap create')", s->path);
    pool_close(&p);
    return -1;
  }
  /* Format 2 with the cluster's default features (layering, exclusive
   * lock, object map, ...): what 'rbd create' makes. */
  e = rbd_create(p.io, n.image, size, &order);
  if (e < 0)
    create_error(s->path, &n, e, err, errlen);
  pool_close(&p);
  return e < 0 ? -1 : 0;
}

int fmt_rbd_remove(const struct img_spec *s, char *err, size_t errlen)
{
  struct spec_rbd n;
  struct pool p;
  int e;

  if (spec_pool_open(s, &n, &p, err, errlen) < 0)
    return -1;
  e = rbd_remove(p.io, n.image);
  if (e < 0)
    snprintf(err, errlen, "%s: remove: %s", s->path, strerror(-e));
  pool_close(&p);
  return e < 0 ? -1 : 0;
}

/* Protects snapshot N->snap of N->image in P, for a format 1 clone. Returns 0
 * or -errno. */
static int protect_snap(struct pool *p, const struct spec_rbd *n)
{
  rbd_image_t image;
  int prot = 0;
  int e = rbd_open(p->io, n->image, &image, NULL);

  if (e < 0)
    return e;
  e = rbd_snap_is_protected(image, n->snap, &prot);
  if (e == 0 && !prot)
    e = rbd_snap_protect(image, n->snap);
  rbd_close(image);
  return e;
}

int fmt_rbd_clone(const struct img_spec *base, const struct img_spec *s, char *err,
                  size_t errlen)
{
  struct spec_rbd bn, n;
  struct pool bp, p;
  rbd_image_options_t opts;
  int e;

  if (!same(base->conf, s->conf) && base->conf != NULL) {
    snprintf(err, errlen, "%s: a clone lives in its base's cluster: give the same conf= to both",
             s->path);
    return -1;
  }
  if (!same(base->id, s->id) && base->id != NULL) {
    snprintf(err, errlen, "%s: one Ceph user makes the clone: give the same id= to both", s->path);
    return -1;
  }
  if (spec_rbd_parse(base->path, &bn, err, errlen) < 0)
    return -1;
  if (bn.snap[0] == '\0') {
    snprintf(err, errlen, "%s: a clone's base is a snapshot: rbd:%s/%s@SNAP (make one with"
                          " 'rbd snap create')", base->path, bn.pool, bn.image);
    return -1;
  }
  /* Both names in the target's cluster. */
  struct img_spec b = *base;
  b.conf = s->conf;
  b.id = s->id;
  if (spec_pool_open(&b, &bn, &bp, err, errlen) < 0)
    return -1;
  if (spec_pool_open(s, &n, &p, err, errlen) < 0) {
    pool_close(&bp);
    return -1;
  }
  if (n.snap[0] != '\0') {
    snprintf(err, errlen, "%s: a clone is an image, not a snapshot", s->path);
    e = -EINVAL;
    goto out;
  }
  rbd_image_options_create(&opts);
  e = rbd_clone3(bp.io, bn.image, bn.snap, p.io, n.image, opts);
  /* Format 1 clones (the default while the cluster admits clients older
   * than Mimic) need the snapshot protected first; format 2 ones do not,
   * and a snapshot is not protected unless a clone needs it. */
  if (e == -EINVAL && protect_snap(&bp, &bn) == 0)
    e = rbd_clone3(bp.io, bn.image, bn.snap, p.io, n.image, opts);
  rbd_image_options_destroy(opts);
  if (e == -ENOENT)
    snprintf(err, errlen, "%s: no such image or snapshot in pool '%s'", base->path, bn.pool);
  else if (e < 0)
    create_error(s->path, &n, e, err, errlen);
out:
  pool_close(&p);
  pool_close(&bp);
  return e < 0 ? -1 : 0;
}

/* rbd_diff_iterate2's callback for fmt_rbd_info: adds up allocated bytes. */
static int add_allocated(uint64_t offset, size_t length, int exists, void *arg)
{
  (void)offset;
  if (exists)
    *(uint64_t *)arg += length;
  return 0;
}

int fmt_rbd_info(struct fmt *f, struct fmt_rbd_info *info)
{
  struct rbd *r = (struct rbd *)f;
  rbd_linked_image_spec_t parent;
  rbd_snap_spec_t snap;
  char tag[8], clients[8], cookies[8], addrs[8];
  size_t taglen = sizeof tag, clientslen = sizeof clients, cookieslen = sizeof cookies,
         addrslen = sizeof addrs;
  int exclusive, e;

  if (f->ops != &fmt_rbd_ops)
    return -EINVAL;
  memset(info, 0, sizeof *info);
  /* The image's own objects, whole ones, not its parent's (as rbd du). */
  e = rbd_diff_iterate2(r->image, NULL, 0, f->size, 0, 1, add_allocated, &info->allocated);
  if (e < 0)
    return e;
  if (rbd_get_parent(r->image, &parent, &snap) == 0) {
    snprintf(info->parent, sizeof info->parent, "rbd:%s/%s@%s", parent.pool_name,
             parent.image_name, snap.name);
    rbd_linked_image_spec_cleanup(&parent);
    rbd_snap_spec_cleanup(&snap);
  }
  /* The exclusive lock is listed with the others (as rbd lock ls shows
   * it); owners cannot be asked through a read-only handle. Buffers too
   * short for any locker's name: -ERANGE, with the bytes the names need.
   * The lock stays listed once released, with its tag ("internal", too
   * long for TAG) and no holder: only a holder's name means in use. */
  e = rbd_list_lockers(r->image, &exclusive, tag, &taglen, clients, &clientslen, cookies,
                       &cookieslen, addrs, &addrslen);
  info->locked = e > 0 || (e == -ERANGE && clientslen > 0);
  return 0;
}

int fmt_rbd_identity(struct fmt *f, uint64_t *snap_id, char *id, size_t len)
{
  struct rbd *r = (struct rbd *)f;
  struct spec_rbd n;
  char err[512];
  int e;

  if (f->ops != &fmt_rbd_ops || spec_rbd_parse(f->path, &n, err, sizeof err) < 0 ||
      n.snap[0] == '\0')
    return -EINVAL;
  e = rbd_snap_get_id(r->image, n.snap, snap_id);
  if (e == 0)
    e = rbd_get_id(r->image, id, len);
  return e;
}

bool fmt_rbd_connected(void)
{
  bool connected;

  pthread_mutex_lock(&clusters_lock);
  connected = clusters != NULL;
  pthread_mutex_unlock(&clusters_lock);
  return connected;
}

int fmt_rbd_protect(const struct img_spec *s, char *err, size_t errlen)
{
  struct spec_rbd n;
  struct pool p;
  int e;

  if (spec_pool_open(s, &n, &p, err, errlen) < 0)
    return -1;
  e = n.snap[0] != '\0' ? protect_snap(&p, &n) : -EINVAL;
  if (e < 0)
    snprintf(err, errlen, "%s: protecting the snapshot: %s", s->path, strerror(-e));
  pool_close(&p);
  return e < 0 ? -1 : 0;
}

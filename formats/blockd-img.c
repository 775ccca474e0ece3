/* blockd-img: create, inspect and convert blockd disk images.
 *
 *   blockd-img create -s SIZE FILE       sparse raw
 *   blockd-img create -b BASE FILE       copy-on-write overlay, O(1)
 *   blockd-img info [--json] FILE        format, sizes, owned clusters, base chain
 *   blockd-img convert SRC DST           any format -> flattened sparse raw
 *   blockd-img map [--json] FILE         where each range comes from, through the chain
 *   blockd-img check [--json] FILE       an overlay's consistency (img-check.c)
 *   blockd-img commit [-p] OVERLAY       owned clusters into the base (img-commit.c)
 *   blockd-img rebase [-b NEWBASE] OVERLAY  a copied or touched base accepted again
 *
 * Exit status: 0 ok, 1 runtime error, 2 usage error (check: qemu-img check's);
 * every error is one line naming the file.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "format.h"
#include "img.h"
#include "progress.h"

#define COPY_CHUNK (1u << 20)     /* bytes read and written at a time */
#define ZERO_GRAIN 4096u          /* smallest zero run convert leaves as a hole */

/* Prints the help text on STREAM. */
static void usage(FILE *stream)
{
  fprintf(stream,
          "Usage: %s COMMAND [OPTIONS] ARGS\n"
          "Create, inspect, check, convert and commit blockd disk images.\n"
          "\n"
          "Commands:\n"
          "  create [--force] -s SIZE FILE  create a sparse raw image of SIZE bytes\n"
          "                                 (suffixes K, M, G, T: binary units)\n"
          "  create [--force] -b BASE [-F FORMAT] [-c SIZE] FILE\n"
          "                                 create a copy-on-write overlay over BASE\n"
          "                                 (raw, qcow2 or overlay), in constant time;\n"
          "                                 -F: BASE's format; -c: cluster size, 4K to\n"
          "                                 16M (default 64K)\n"
          "  info [-f FORMAT] [--json] FILE show format, virtual size, allocated bytes,\n"
          "                                 owned clusters, the base chain, and whether\n"
          "                                 another process has FILE open (it takes no\n"
          "                                 lock, so works on an image in use)\n"
          "  convert [--force] [-f FORMAT] SRC DST\n"
          "                                 write SRC flattened into a new sparse raw DST,\n"
          "                                 keeping zeroes as holes; a progress bar is\n"
          "                                 drawn when stderr is a terminal\n"
          "  map [-f FORMAT] [--json] FILE  show where each range of FILE comes from:\n"
          "                                 owned (the image itself), base (a base, DEPTH\n"
          "                                 images down) or none (reads as zeroes); data or\n"
          "                                 zero; the file and offset holding it. --json:\n"
          "                                 the fields of qemu-img map's JSON\n"
          "  check [-f FORMAT] [--json] FILE\n"
          "                                 check an overlay: header, bitmap, data left in\n"
          "                                 clusters it does not own (leaks), its base's\n"
          "                                 identity. Exit status as qemu-img check: 0 ok,\n"
          "                                 1 check not completed (or bad usage),\n"
          "                                 2 corruptions, 3 leaks only, 63 nothing to\n"
          "                                 check (raw, qcow2) or an unknown version;\n"
          "                                 --json: qemu-img check's counters\n"
          "  commit [-p] OVERLAY            write OVERLAY's owned clusters into its base\n"
          "                                 (raw or overlay) and empty OVERLAY, which then\n"
          "                                 reads the same through the changed base.\n"
          "                                 Refused while OVERLAY or its base is in use\n"
          "                                 (served, or the base of an overlay in use);\n"
          "                                 other overlays of that base become invalid.\n"
          "                                 Progress bar on a terminal, always with -p.\n"
          "                                 If interrupted, OVERLAY refuses to open until\n"
          "                                 commit is run on it again\n"
          "  rebase [-b NEWBASE [-F FORMAT]] [-u] OVERLAY\n"
          "                                 accept OVERLAY's base again after it was\n"
          "                                 touched or copied (cp without -p), or make\n"
          "                                 NEWBASE, a copy of it, the base. Checked first:\n"
          "                                 every cluster OVERLAY reads from its base\n"
          "                                 against the recorded base when that is still\n"
          "                                 there unchanged, else the virtual size, file\n"
          "                                 size and first 64 KiB recorded at creation;\n"
          "                                 -u: the virtual size only (you vouch for the\n"
          "                                 rest)\n"
          "\n"
          "Ceph RBD images (when built with librbd): FILE, SRC and DST may name one,\n"
          "rbd:POOL/IMAGE[@SNAP][,conf=FILE][,id=USER] (conf: the cluster's\n"
          "configuration, default $CEPH_CONF or /etc/ceph/ceph.conf; id: the Ceph user,\n"
          "default admin):\n"
          "  create -s SIZE rbd:POOL/IMAGE  create an RBD image of SIZE bytes\n"
          "  create -b rbd:POOL/IMAGE@SNAP rbd:POOL/CLONE\n"
          "                                 create CLONE as an RBD clone of the snapshot,\n"
          "                                 in constant time (the snapshot is protected\n"
          "                                 where the cluster's clone format needs it)\n"
          "  create -b rbd:POOL/IMAGE@SNAP FILE\n"
          "                                 create a local overlay over the snapshot: its\n"
          "                                 writes stay in FILE, unwritten ranges are read\n"
          "                                 from the cluster (serve it with\n"
          "                                 --allow-base-dir rbd:POOL); the snapshot is\n"
          "                                 protected so that it is not removed under it\n"
          "  convert SRC rbd:POOL/IMAGE     import SRC into a new RBD image, writing its\n"
          "                                 data only (removed again if the copy fails)\n"
          "  convert rbd:... DST, info rbd:...\n"
          "                                 export, and inspect (size, space in the\n"
          "                                 cluster, a clone's parent, in use)\n"
          "blockd-img never replaces an RBD image (--force is refused); 'rbd rm' does.\n"
          "\n"
          "Options:\n"
          "  --force                        overwrite an existing FILE or DST (never one\n"
          "                                 that a server or another tool holds open)\n"
          "  --allow-base-dir DIR           bases may also live beneath DIR (repeatable;\n"
          "                                 by default only beneath the image's directory);\n"
          "                                 rbd:POOL: snapshots in that Ceph pool may be\n"
          "                                 bases\n"
          "  -h, --help                     show this help and exit\n"
          "  -V, --version                  show the version and exit\n"
          "\n"
          "Formats are detected by content, never by file name, and qcow2 only when\n"
          "named (-f/-F qcow2): a guest can write a qcow2 header into its raw disk.\n"
          "Built in: %s.\n"
          "Exit status: 0 success, 1 runtime error, 2 usage error (check: see above).\n",
          "blockd-img", fmt_names());
}

/* What info says of an image beside its format's fields. */
struct facts {
  int64_t allocated;    /* bytes it takes on disk or in the cluster, or -1 */
  enum lock_use use;    /* how other processes use it */
  struct fmt_rbd_info rbd; /* an RBD image's facts (parent "" otherwise) */
};

/* Fills X for F. */
static void facts_of(struct fmt *f, struct facts *x)
{
  struct stat st;

  x->allocated = -1;
  if (fmt_rbd_info(f, &x->rbd) == 0) {
    x->allocated = (int64_t)x->rbd.allocated;
    x->use = x->rbd.locked ? LOCK_WRITTEN : LOCK_UNUSED;
    return;
  }
  x->rbd.parent[0] = '\0';
  if (stat(f->path, &st) == 0)
    x->allocated = (int64_t)st.st_blocks * 512;
  x->use = lock_in_use(f);
}

/* lock_in_use's answers, as info --json names them. */
static const char *const use_names[] = {
  [LOCK_UNUSED] = "no", [LOCK_IN_USE] = "read", [LOCK_WRITTEN] = "write",
};

/* Prints one image of a chain as a JSON object, its base nested inside. */
static void info_json(struct fmt *f, int depth)
{
  struct overlay_info oi;
  struct facts x;
  const char *backing = NULL;

  facts_of(f, &x);
#ifdef HAVE_QCOW2
  backing = qcow2_backing(f);
#endif
  if (x.rbd.parent[0] != '\0')
    backing = x.rbd.parent;
  printf("{\n%*s\"filename\": ", depth * 2 + 2, "");
  img_json_string(f->path);
  printf(",\n%*s\"format\": ", depth * 2 + 2, "");
  img_json_string(fmt_name(f));
  printf(",\n%*s\"virtual-size\": %" PRIu64, depth * 2 + 2, "", f->size);
  printf(",\n%*s\"allocated-bytes\": %" PRId64, depth * 2 + 2, "", x.allocated);
  if (depth == 0)
    printf(",\n  \"in-use\": \"%s\"", use_names[x.use]);
  if (backing != NULL) {
    printf(",\n%*s\"backing-filename\": ", depth * 2 + 2, "");
    img_json_string(backing);
  }
  if (overlay_get_info(f, &oi) == 0) {
    printf(",\n%*s\"overlay-version\": %u", depth * 2 + 2, "", oi.version);
    printf(",\n%*s\"cluster-size\": %u", depth * 2 + 2, "", oi.cluster_size);
    printf(",\n%*s\"clusters\": %" PRIu64, depth * 2 + 2, "", oi.clusters);
    printf(",\n%*s\"owned-clusters\": %" PRIu64, depth * 2 + 2, "", oi.owned);
    printf(",\n%*s\"base-filename\": ", depth * 2 + 2, "");
    img_json_string(oi.base_path);
    printf(",\n%*s\"base\": ", depth * 2 + 2, "");
    info_json(oi.base, depth + 1);
  }
  printf("\n%*s}", depth * 2, "");
}

/* Prints F's facts as text. */
static void info_text(struct fmt *f)
{
  struct overlay_info oi;
  struct facts x;
  const char *backing = NULL;
  char b1[32], b2[32];

  facts_of(f, &x);
#ifdef HAVE_QCOW2
  backing = qcow2_backing(f);
#endif
  /* Names may come from a file (a qcow2's backing name): escaped. */
  printf("image: ");
  img_print_name(f->path);
  printf("\nformat: %s\n", fmt_name(f));
  printf("virtual size: %s (%" PRIu64 " bytes)\n", img_human(f->size, b1, sizeof b1), f->size);
  printf("allocated: %s (%" PRId64 " bytes)\n",
         img_human((uint64_t)(x.allocated < 0 ? 0 : x.allocated), b2, sizeof b2), x.allocated);
  if (backing != NULL) {
    printf("backing file: ");
    img_print_name(backing);
    printf("\n");
  }
  if (x.rbd.parent[0] != '\0') {
    printf("clone of: ");
    img_print_name(x.rbd.parent);
    printf("\n");
  }
  switch (x.use) {
  case LOCK_UNUSED: break;
  case LOCK_IN_USE: printf("in use: open read-only by another process\n"); break;
  case LOCK_WRITTEN:
    printf("in use: open for writing by another %s (these figures may be changing)\n",
           x.rbd.locked ? "client, which holds its exclusive lock" : "process");
    break;
  }
  if (overlay_get_info(f, &oi) == 0) {
    printf("overlay version: %u\n", oi.version);
    printf("cluster size: %u\n", oi.cluster_size);
    printf("owned clusters: %" PRIu64 " of %" PRIu64 "\n", oi.owned, oi.clusters);
    printf("base: ");
    img_print_name(oi.base_path);
    printf(" (%s)\nbase chain: ", oi.base_format);
    img_print_name(f->path);
    printf(" (%s)", fmt_name(f));
    for (struct fmt *b = oi.base; b != NULL;) {
      printf(" -> ");
      img_print_name(b->path);
      printf(" (%s)", fmt_name(b));
      b = overlay_get_info(b, &oi) == 0 ? oi.base : NULL;
    }
    printf("\n");
  }
}

/* Opens ARG, a file (as FORMAT; SHARED: taking no lock) or an rbd: name (read
 * only, which takes no lock), for COMMAND to read. NULL with a message in ERR. */
static struct fmt *open_source(const char *command, const char *arg, const char *format,
                               bool shared, char *err, size_t errlen)
{
  struct img_spec s;
  struct fmt *f;

  if (!spec_is_rbd(arg))
    return shared ? fmt_open_shared(arg, format, err, errlen)
                  : fmt_open(arg, format, true, err, errlen);
  if (format != NULL)
    img_die(EXIT_USAGE, "%s: -f does not apply to an rbd: image", command);
  img_rbd_spec(arg, &s);
  f = fmt_open_spec(&s, true, err, errlen);
  spec_free(&s);
  return f;
}

/* blockd-img info [-f FORMAT] [--json] FILE */
static int cmd_info(int argc, char **argv)
{
  static const struct option opts[] = {
    { "json", no_argument, NULL, 'j' },
    { "format", required_argument, NULL, 'f' },
    { "allow-base-dir", required_argument, NULL, OPT_ALLOW_BASE_DIR },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  const char *format = NULL;
  bool json = false;
  char err[2048];
  struct fmt *f;
  int c;

  while ((c = getopt_long(argc, argv, "+f:h", opts, NULL)) != -1) {
    switch (c) {
    case 'j': json = true; break;
    case 'f': format = img_format_arg("info -f", optarg, EXIT_USAGE); break;
    case OPT_ALLOW_BASE_DIR: img_allow_base_dir(optarg, EXIT_USAGE); break;
    case 'h': usage(stdout); return 0;
    default: img_die(EXIT_USAGE, "info: unknown option or missing argument: %s", argv[optind - 1]);
    }
  }
  if (argc - optind != 1)
    img_die(EXIT_USAGE, "info: expected one FILE");
  /* Locks nothing, so that a served image can be looked at, as qemu-img
   * info -U does. */
  f = open_source("info", argv[optind], format, true, err, sizeof err);
  if (f == NULL)
    img_die(EXIT_FAILURE, "%s", err);
  if (json) {
    info_json(f, 0);
    printf("\n");
  }
  else
    info_text(f);
  fmt_close(f);
  return 0;
}

/* Creates a sparse raw image of SIZE bytes at PATH (FLAGS: FMT_CREATE_FORCE). */
static void create_raw(const char *path, uint64_t size, unsigned flags)
{
  char err[2048];
  bool created;
  int fd = fmt_create_file(path, flags, &created, err, sizeof err);

  if (fd < 0)
    img_die(EXIT_FAILURE, "%s", err);
  if (ftruncate(fd, 0) == -1 || ftruncate(fd, (off_t)size) == -1 || fsync(fd) == -1) {
    int e = errno;
    if (created)
      unlink(path);
    img_die(EXIT_FAILURE, "%s: %s", path, strerror(e));
  }
  if (close(fd) == -1)
    img_die(EXIT_FAILURE, "%s: %s", path, strerror(errno));
}

/* Parses a cluster size: a power of two from 4 KiB to 16 MiB. Returns its log2 or -1. */
static int cluster_bits_of(const char *s)
{
  uint64_t v;

  if (size_parse(s, &v) < 0 || v < 4096 || v > (1u << 24) || (v & (v - 1)) != 0)
    return -1;
  return __builtin_ctzll(v);
}

/* Creates the RBD image TARGET, of SIZE bytes (SIZE_ARG given) or as a clone of BASE:
 * blockd-img create -s SIZE rbd:... or -b rbd:...@SNAP rbd:... */
static int create_rbd(const char *target, const char *size_arg, uint64_t size, const char *base)
{
  struct img_spec s, b;
  char err[2048];
  int r;

  img_rbd_spec(target, &s);
  if (size_arg != NULL)
    r = fmt_rbd_create(&s, size, err, sizeof err);
  else {
    if (!spec_is_rbd(base))
      img_die(EXIT_USAGE, "create: an RBD image's base is an RBD snapshot (rbd:POOL/IMAGE@SNAP);"
                          " to copy %s into the cluster: blockd-img convert %s %s", base, base,
              target);
    img_rbd_spec(base, &b);
    r = fmt_rbd_clone(&b, &s, err, sizeof err);
    spec_free(&b);
  }
  spec_free(&s);
  if (r < 0)
    img_die(EXIT_FAILURE, "%s", err);
  return 0;
}

/* blockd-img create [--force] (-s SIZE | -b BASE [-F FORMAT] [-c SIZE]) FILE */
static int cmd_create(int argc, char **argv)
{
  static const struct option opts[] = {
    { "size", required_argument, NULL, 's' },
    { "base", required_argument, NULL, 'b' },
    { "base-format", required_argument, NULL, 'F' },
    { "cluster-size", required_argument, NULL, 'c' },
    { "force", no_argument, NULL, OPT_FORCE },
    { "allow-base-dir", required_argument, NULL, OPT_ALLOW_BASE_DIR },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  const char *size_arg = NULL, *base = NULL, *base_format = NULL;
  int bits = OVERLAY_DEFAULT_CLUSTER_BITS;
  bool bits_given = false;
  unsigned flags = 0;
  char err[2048];
  uint64_t size = 0;
  int c;

  while ((c = getopt_long(argc, argv, "+s:b:F:c:h", opts, NULL)) != -1) {
    switch (c) {
    case 's': size_arg = optarg; break;
    case 'b': base = optarg; break;
    case 'F': base_format = img_format_arg("create -F", optarg, EXIT_USAGE); break;
    case OPT_FORCE: flags |= FMT_CREATE_FORCE; break;
    case OPT_ALLOW_BASE_DIR: img_allow_base_dir(optarg, EXIT_USAGE); break;
    case 'c':
      bits = cluster_bits_of(optarg);
      if (bits < 0)
        img_die(EXIT_USAGE, "create: invalid cluster size '%s' (a power of two, 4K to 16M)", optarg);
      bits_given = true;
      break;
    case 'h': usage(stdout); return 0;
    default: img_die(EXIT_USAGE, "create: unknown option or missing argument: %s", argv[optind - 1]);
    }
  }
  if (argc - optind != 1)
    img_die(EXIT_USAGE, "create: expected one FILE");
  if ((size_arg == NULL) == (base == NULL))
    img_die(EXIT_USAGE, "create: give exactly one of -s SIZE (raw) or -b BASE (overlay)");
  if (base_format != NULL && base == NULL)
    img_die(EXIT_USAGE, "create: -F FORMAT goes with -b BASE");
  if (size_arg != NULL && (size_parse(size_arg, &size) < 0 || size > (uint64_t)INT64_MAX))
    img_die(EXIT_USAGE, "create: invalid size '%s'", size_arg);
  if (spec_is_rbd(argv[optind])) {
    /* The cluster's own copy-on-write: no overlay options. */
    if (flags & FMT_CREATE_FORCE)
      img_die(EXIT_USAGE, "create: --force: blockd-img never replaces an RBD image");
    if (bits_given || base_format != NULL)
      img_die(EXIT_USAGE, "create: %s are for overlays: an RBD clone keeps its parent's objects",
              bits_given ? "-c" : "-F");
    return create_rbd(argv[optind], size_arg, size, base);
  }
  if (base != NULL && spec_is_rbd(base) && base_format != NULL)
    img_die(EXIT_USAGE, "create: -F: an rbd: base has no format to name");
  if (size_arg != NULL) {
    create_raw(argv[optind], size, flags);
    return 0;
  }
  if (overlay_create(argv[optind], base, base_format, (unsigned)bits, flags, err, sizeof err) < 0)
    img_die(EXIT_FAILURE, "%s", err);
  /* Servers follow a base only beneath the overlay's directory unless told
   * otherwise: say so now rather than when the workspace fails to start. */
  {
    struct fmt *f = fmt_open(argv[optind], "overlay", true, err, sizeof err);

    if (f == NULL) {
      img_warn("note: %s", err);
      img_warn("note: serve it with --allow-base-dir naming the base's %s",
               spec_is_rbd(base) ? "pool (rbd:POOL)" : "directory");
    }
    fmt_close(f);
  }
  return 0;
}

/* Writes the non-zero ZERO_GRAIN blocks of BUF at OFFSET of DST: zero blocks
 * stay holes in the freshly truncated file. */
static int write_nonzero(struct fmt *dst, const char *buf, size_t len, uint64_t offset)
{
  size_t i = 0;

  while (i < len) {
    size_t n = len - i < ZERO_GRAIN ? len - i : ZERO_GRAIN;
    if (fmt_is_zero(buf + i, n)) {
      i += n;
      continue;
    }
    size_t j = i + n;
    while (j < len) {
      size_t m = len - j < ZERO_GRAIN ? len - j : ZERO_GRAIN;
      if (fmt_is_zero(buf + j, m))
        break;
      j += m;
    }
    int r = fmt_pwrite(dst, buf + i, j - i, offset + i, 0);
    if (r < 0)
      return r;
    i = j;
  }
  return 0;
}

/* One extent as reported by ->extents. */
struct extent {
  uint64_t offset; /* virtual offset */
  uint64_t length; /* bytes */
  uint32_t type;   /* FMT_EXTENT_* */
};

/* A growing list of extents. */
struct extent_list {
  struct extent *v; /* entries */
  size_t n;         /* used */
  size_t cap;       /* allocated */
};

/* ->extents callback: appends to the list. */
static int extent_add(void *opaque, uint64_t offset, uint64_t length, uint32_t type)
{
  struct extent_list *l = opaque;

  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 64;
    struct extent *v = realloc(l->v, cap * sizeof *v);
    if (v == NULL)
      return -1;
    l->v = v;
    l->cap = cap;
  }
  l->v[l->n++] = (struct extent){ offset, length, type };
  return 0;
}

/* Copies the data of SRC into DST, skipping zero extents and zero blocks,
 * and makes it durable. Returns 0, or -1 with a message in ERR. */
static int copy_image(struct fmt *src, struct fmt *dst, char *err, size_t errlen)
{
  CLEANUP_FREE char *buf = malloc(COPY_CHUNK);
  struct extent_list l = { NULL, 0, 0 };
  struct progress bar;
  uint64_t offset = 0;
  int r = 0;

  if (buf == NULL) {
    snprintf(err, errlen, "%s", strerror(ENOMEM));
    return -1;
  }
  progress_start(&bar, src->size, false);
  while (offset < src->size && r == 0) {
    uint64_t want = src->size - offset < EXTENT_WINDOW ? src->size - offset : EXTENT_WINDOW;

    l.n = 0;
    r = fmt_extents(src, want, offset, extent_add, &l);
    if (r < 0) {
      snprintf(err, errlen, "%s: extents: %s", src->path, strerror(-r));
      break;
    }
    if (l.n == 0 || l.v[0].offset != offset) {
      snprintf(err, errlen, "%s: extents: no extent at offset %" PRIu64, src->path, offset);
      r = -1;
      break;
    }
    for (size_t i = 0; i < l.n && r == 0; i++) {
      struct extent *e = &l.v[i];
      if (e->type & FMT_EXTENT_ZERO) {
        offset = e->offset + e->length;
        progress_update(&bar, offset);
        continue;
      }
      for (uint64_t done = 0; done < e->length;) {
        size_t n = e->length - done < COPY_CHUNK ? (size_t)(e->length - done) : COPY_CHUNK;
        r = fmt_pread(src, buf, n, e->offset + done);
        if (r < 0) {
          snprintf(err, errlen, "%s: read at %" PRIu64 ": %s", src->path, e->offset + done,
                   strerror(-r));
          break;
        }
        r = write_nonzero(dst, buf, n, e->offset + done);
        if (r < 0) {
          snprintf(err, errlen, "%s: write: %s", dst->path, strerror(-r));
          break;
        }
        done += n;
        progress_update(&bar, e->offset + done);
      }
      offset = e->offset + e->length;
    }
  }
  progress_end(&bar, r == 0);
  free(l.v);
  if (r == 0 && (r = fmt_flush(dst)) < 0)
    snprintf(err, errlen, "%s: %s", dst->path, strerror(-r));
  return r < 0 ? -1 : 0;
}

/* Returns true if PATH is the file of F or of any image under it. */
static bool in_chain(struct fmt *f, const struct stat *st)
{
  struct overlay_info oi;
  struct stat fst;

  for (; f != NULL; f = overlay_get_info(f, &oi) == 0 ? oi.base : NULL) {
    if (stat(f->path, &fst) == 0 && fst.st_dev == st->st_dev && fst.st_ino == st->st_ino)
      return true;
#ifdef HAVE_QCOW2
    if (qcow2_holds_file(f, st->st_dev, st->st_ino))
      return true;
#endif
  }
  return false;
}

/* convert SRC rbd:...: imports SRC (open) into a new RBD image DST, which
 * is removed again if the copy fails. */
static int convert_to_rbd(struct fmt *src, const char *dst)
{
  struct img_spec s;
  struct fmt *out = NULL;
  char err[2048], err2[1024];

  img_rbd_spec(dst, &s);
  if (fmt_rbd_create(&s, src->size, err, sizeof err) < 0) {
    fmt_close(src);
    img_die(EXIT_FAILURE, "%s", err);
  }
  /* A new image reads as zeroes: only data is written, so the import takes
   * as much of the cluster as SRC has data. */
  out = fmt_open_spec(&s, false, err, sizeof err);
  if (out == NULL || copy_image(src, out, err, sizeof err) < 0)
    goto fail;
  fmt_close(out);
  fmt_close(src);
  spec_free(&s);
  return 0;
fail:
  fmt_close(out);
  /* A half-imported image looks complete: do not leave it behind. */
  if (fmt_rbd_remove(&s, err2, sizeof err2) < 0)
    img_warn("%s (left in the cluster: remove it with 'rbd rm')", err2);
  fmt_close(src);
  spec_free(&s);
  img_die(EXIT_FAILURE, "%s", err);
}

/* blockd-img convert [--force] [-f FORMAT] SRC DST */
static int cmd_convert(int argc, char **argv)
{
  static const struct option opts[] = {
    { "format", required_argument, NULL, 'f' },
    { "force", no_argument, NULL, OPT_FORCE },
    { "allow-base-dir", required_argument, NULL, OPT_ALLOW_BASE_DIR },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  const char *format = NULL, *srcpath, *dst;
  unsigned flags = 0;
  char err[2048];
  struct stat st;
  struct fmt *src, *out = NULL;
  bool created;
  int c, fd;

  while ((c = getopt_long(argc, argv, "+f:h", opts, NULL)) != -1) {
    switch (c) {
    case 'f': format = img_format_arg("convert -f", optarg, EXIT_USAGE); break;
    case OPT_FORCE: flags |= FMT_CREATE_FORCE; break;
    case OPT_ALLOW_BASE_DIR: img_allow_base_dir(optarg, EXIT_USAGE); break;
    case 'h': usage(stdout); return 0;
    default: img_die(EXIT_USAGE, "convert: unknown option or missing argument: %s", argv[optind - 1]);
    }
  }
  if (argc - optind != 2)
    img_die(EXIT_USAGE, "convert: expected SRC and DST");
  srcpath = argv[optind];
  dst = argv[optind + 1];
  if (spec_is_rbd(dst) && (flags & FMT_CREATE_FORCE))
    img_die(EXIT_USAGE, "convert: --force: blockd-img never replaces an RBD image");
  src = open_source("convert", srcpath, format, false, err, sizeof err);
  if (src == NULL)
    img_die(EXIT_FAILURE, "%s", err);
  if (spec_is_rbd(dst))
    return convert_to_rbd(src, dst);
  /* Truncating DST must never destroy what we are about to read. */
  if (stat(dst, &st) == 0 && in_chain(src, &st))
    img_die(EXIT_FAILURE, "%s: is the source image or one of its bases", dst);
  fd = fmt_create_file(dst, flags, &created, err, sizeof err);
  if (fd < 0) {
    fmt_close(src);
    img_die(EXIT_FAILURE, "%s", err);
  }
  if (ftruncate(fd, 0) == -1 || ftruncate(fd, (off_t)src->size) == -1) {
    snprintf(err, sizeof err, "%s: %s", dst, strerror(errno));
    close(fd);
    goto fail;
  }
  /* The copy goes through the raw engine, with its guards (a flattened
   * overlay is a raw disk a guest wrote). */
  out = fmt_open_raw_fd(fd, dst, err, sizeof err);
  if (out == NULL)
    goto fail;
  if (copy_image(src, out, err, sizeof err) < 0)
    goto fail;
  fmt_close(out);
  fmt_close(src);
  return 0;
fail:
  fmt_close(out);
  /* A half-written copy looks complete: do not leave it behind. */
  unlink(dst);
  fmt_close(src);
  img_die(EXIT_FAILURE, "%s", err);
}

int main(int argc, char **argv)
{
  static const struct option opts[] = {
    { "help", no_argument, NULL, 'h' },
    { "version", no_argument, NULL, 'V' },
    { NULL, 0, NULL, 0 },
  };
  const char *cmd;
  int c;

  opterr = 0; /* our own one-line messages */
  /* '+': stop at the command; its options are parsed by the command. */
  while ((c = getopt_long(argc, argv, "+hV", opts, NULL)) != -1) {
    switch (c) {
    case 'h': usage(stdout); return 0;
    case 'V': printf("blockd-img %s\n", BLOCKD_VERSION); return 0;
    default: img_die(EXIT_USAGE, "unknown option: %s", argv[optind - 1]);
    }
  }
  if (optind >= argc)
    img_die(EXIT_USAGE, "missing COMMAND (create, info, convert, map, check, commit or rebase)");
  cmd = argv[optind];
  argc -= optind;
  argv += optind;
  optind = 1;
  if (strcmp(cmd, "create") == 0)
    return cmd_create(argc, argv);
  if (strcmp(cmd, "info") == 0)
    return cmd_info(argc, argv);
  if (strcmp(cmd, "convert") == 0)
    return cmd_convert(argc, argv);
  if (strcmp(cmd, "map") == 0)
    return img_map(argc, argv);
  if (strcmp(cmd, "check") == 0)
    return img_check(argc, argv);
  if (strcmp(cmd, "commit") == 0)
    return img_commit(argc, argv);
  if (strcmp(cmd, "rebase") == 0)
    return img_rebase(argc, argv);
  img_die(EXIT_USAGE, "unknown command '%s' (create, info, convert, map, check, commit or rebase)",
          cmd);
}

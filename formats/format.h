/* blockd formats: the storage engines' public API.
 *
 * Three front ends use this header: the blockd server, the blockd-img tool and
 * the nbdkit plugin.  An image offers two paths:
 *
 *  - the map path (fmt_map): a non-blocking translation of a virtual range
 *    into one file range.  blockd's workers use it to issue the I/O themselves
 *    on their io_uring, so raw files and the owned clusters of an overlay never
 *    leave the event loop;
 *  - the synchronous path (fmt_pread, fmt_pwrite, ...): plain blocking calls,
 *    safe to call from several threads at once.  blockd runs them on its
 *    blocking pool, the nbdkit plugin and blockd-img call them directly.  They
 *    are the one entry point: each checks the range and the mode once, and the
 *    fallbacks (zeroes written where an engine cannot zero, one data extent
 *    where it cannot tell) live there, not in each front end.
 *
 * Every operation returns 0 on success, -errno on failure.  The engines
 * themselves, and the helpers they share, are in internal.h.
 */
#ifndef BLOCKD_FORMAT_H
#define BLOCKD_FORMAT_H

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/uio.h>

struct fmt_ops;
struct lock;

/* Flags for fmt_pwrite, fmt_trim and fmt_zero. */
#define FMT_FUA       (1u << 0) /* durable before returning */
#define FMT_MAY_TRIM  (1u << 1) /* fmt_zero may punch a hole (NBD: no NO_HOLE flag) */
#define FMT_FAST_ZERO (1u << 2) /* fmt_zero fails with -ENOTSUP rather than write zeroes */

/* Extent types reported by fmt_extents, as in NBD base:allocation. */
#define FMT_EXTENT_HOLE (1u << 0) /* not allocated */
#define FMT_EXTENT_ZERO (1u << 1) /* reads as zeroes */

/* What the caller wants to do with a mapped range. */
enum fmt_map_dir {
  FMT_MAP_READ,  /* pread (and fadvise WILLNEED) on the file range */
  FMT_MAP_WRITE, /* pwrite on the file range */
  FMT_MAP_TRIM,  /* fallocate(PUNCH_HOLE|KEEP_SIZE) on the file range */
  FMT_MAP_ZERO,  /* fallocate(PUNCH_HOLE or ZERO_RANGE) on the file range */
  FMT_MAP_FLUSH, /* fdatasync of the file: offset and length unused */
};

/* One file range that a virtual range maps onto. */
struct fmt_map {
  int fd;          /* file to operate on; -1: the range reads as zeroes */
  uint64_t offset; /* file offset of the first byte */
  int direct_fd;   /* the same file opened O_DIRECT (cache=none), or -1: for
                    * I/O whose offset, length and buffers are FMT_DIRECT_ALIGN
                    * aligned; the rest goes through fd and the page cache */
};
/* What O_DIRECT I/O is aligned to: a page, which covers 512-byte and 4 KiB
 * logical blocks and the memory alignment every Linux file system asks. */
#define FMT_DIRECT_ALIGN 4096u

/* Called by fmt_extents once per extent, in order. Returns 0, or -1 to stop early. */
typedef int (*fmt_extent_fn)(void *opaque, uint64_t offset, uint64_t length, uint32_t type);

/* Where the bytes of one virtual range come from, through a chain of images
 * (blockd-img map; the fields of qemu-img map's JSON). */
struct fmt_layout {
  uint64_t offset;      /* virtual offset */
  uint64_t length;      /* bytes */
  bool data;            /* stored somewhere: not a hole, nor a zero cluster */
  bool zero;            /* reads as zeroes (data may be true too: an
                         * allocated range that is a hole in its file) */
  bool present;         /* the image at DEPTH holds the range; false: no image of
                         * the chain does, and it reads as zeroes */
  unsigned depth;       /* that image: 0 the image itself, 1 its base, ... */
  const char *file;     /* file holding the range as plain bytes at FILE_OFFSET,
                         * or NULL (compressed, or nowhere) */
  uint64_t file_offset; /* where in FILE */
};

/* Called by fmt_layout once per extent, in order. Returns 0, or -1 to stop early. */
typedef int (*fmt_layout_fn)(void *opaque, const struct fmt_layout *l);

/* Fields every open image has; engines embed it first in their own struct. */
struct fmt {
  const struct fmt_ops *ops; /* the engine (internal.h) */
  char *path;                /* file name as given, for messages (owned) */
  uint64_t size;             /* virtual size in bytes */
  bool readonly;             /* opened read-only: no pwrite, trim, zero */
  bool can_trim;             /* trim returns space to the host */
  bool can_zero;             /* zero is efficient (no data written) */
  bool can_fast_zero;        /* zero honours FMT_FAST_ZERO cheaply */
  bool can_extents;          /* extents reports real holes */
  bool can_multi_conn;       /* a flush on one handle covers writes on all */
  uint32_t block_min;        /* NBD block size constraints */
  uint32_t block_pref;
  uint32_t block_max;
  /* Kept by the formats library, not for callers: */
  int fd;                    /* the image's own file, for identity checks (the engine owns it);
                              * -1 where the image is not a file (rbd) */
  struct lock *lock;         /* its entry among the process's locked files (lock.c) */
  int direct_fd;             /* that file opened O_DIRECT (cache=none), or -1 (ours) */
  pthread_mutex_t head_lock; /* serializes writes of the first FMT_HEAD_BYTES */
  bool head_refused;         /* a forged header was refused (logged once) */
  int sync_error;            /* errno of the first failed sync, 0 if none (atomic) */
};

/* format.c: opening images */
/* Where engines report what no caller asked about (a refused forgery, a
 * failed sync): one line, no newline. Defaults to stderr; programs point it
 * at their logger. */
extern void (*fmt_log)(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Whether C is a control byte (below 0x20, or 0x7f), which no name may carry
 * raw into a message or a terminal. */
static inline bool fmt_is_control(unsigned char c)
{
  return c < 0x20 || c == 0x7f;
}
/* Writes PREFIX and the message FMT/AP to F as one line in one write, every
 * control byte (below 0x20, and 0x7f) as \xHH: a message may quote a name
 * from an image's header, a client or a command line, and none may move a
 * terminal's cursor or forge a second line. Keeps errno (for %m in FMT). */
void fmt_vprint_line(FILE *f, const char *prefix, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
/* Whether NAME ("raw", "qcow2", "overlay") is a format built in. */
bool fmt_known(const char *name);
/* Names of the formats built in, comma-separated, for --help and --dump-plugin. */
const char *fmt_names(void);
/* Opens PATH as FORMAT. Without a FORMAT, an overlay is recognised by its
 * header and anything else is raw: qcow2 is never guessed (a guest could
 * have written a qcow2 header into its raw disk). NULL with a one-line
 * message in ERR on failure. */
struct fmt *fmt_open(const char *path, const char *format, bool readonly, char *err, size_t errlen);
/* Opens PATH as fmt_open does, read-only and taking no lock, bases too, as
 * qemu-img -U does: another process may be writing it, so what is read may
 * be changing. For looking at an image in use (blockd-img info). */
struct fmt *fmt_open_shared(const char *path, const char *format, char *err, size_t errlen);
/* cache=none: from now on, aligned I/O that fmt_map sends to F's own file
 * bypasses the host's page cache (a guest caches its own disk; the host need
 * not keep a second copy). Ranges an overlay reads from its base stay cached,
 * shared by every overlay of that base, and so does what the engine does
 * itself (copy-ups, metadata, unaligned requests). Returns 0, or -1 with a
 * one-line message in ERR (a file system that refuses O_DIRECT). */
int fmt_set_cache_none(struct fmt *f, char *err, size_t errlen);
/* The format of the image PATH as fmt_open would pick it without a FORMAT
 * ("overlay" by its header, else "raw"), without opening it as an image.
 * NULL with a message in ERR if PATH cannot be read or starts like qcow2. */
const char *fmt_detect(const char *path, char *err, size_t errlen);
/* Closes F (NULL is fine). Does not flush: call fmt_flush first if it matters. */
void fmt_close(struct fmt *f);
/* The format's name: "raw", "qcow2" or "overlay". */
const char *fmt_name(const struct fmt *f);
/* Records R, the result (0 or -errno) of making F's writes durable by other
 * means than fmt_flush (blockd's own fsync on io_uring). After a failure
 * every later sync of F fails too, with -EIO: Linux reports a writeback
 * error once per open file and may drop the unwritten pages, so a retry that
 * succeeds proves nothing (PostgreSQL's "fsyncgate"). The first failure is
 * logged. Returns R, or -EIO once F has failed before. */
int fmt_sync_result(struct fmt *f, int r);

/* io.c: the synchronous operations, checked once here */
/* Non-blocking: maps [OFFSET, OFFSET+LENGTH) for DIR onto one file range.
 * Returns true and fills M when the whole range maps and doing DIR on M is
 * the complete operation; false when the caller must use the synchronous
 * operation instead. Never blocks, takes a lock held across I/O, or
 * allocates. M->fd stays open until fmt_close. */
bool fmt_map(struct fmt *f, enum fmt_map_dir dir, uint64_t offset, uint64_t length,
             struct fmt_map *m);
/* Reads LENGTH bytes at OFFSET into BUF. */
int fmt_pread(struct fmt *f, void *buf, uint64_t length, uint64_t offset);
/* Writes LENGTH bytes of BUF at OFFSET. FLAGS: FMT_FUA. */
int fmt_pwrite(struct fmt *f, const void *buf, uint64_t length, uint64_t offset, uint32_t flags);
/* The same, scattered over the N buffers of IOV (LENGTH bytes in all). */
int fmt_preadv(struct fmt *f, const struct iovec *iov, unsigned n, uint64_t offset);
int fmt_pwritev(struct fmt *f, const struct iovec *iov, unsigned n, uint64_t offset,
                uint32_t flags);
/* Gives the range's space back. FLAGS: FMT_FUA. Afterwards the range reads
 * as zeroes, except on raw files whose file system cannot punch holes,
 * where it reads as before, and in the pieces under 64 KiB that librbd
 * leaves as they were (NBD allows either). */
int fmt_trim(struct fmt *f, uint64_t length, uint64_t offset, uint32_t flags);
/* Makes the range read as zeroes. FLAGS: FMT_FUA, FMT_MAY_TRIM, FMT_FAST_ZERO.
 * Where the engine cannot zero efficiently it writes zeroes, or under
 * FMT_FAST_ZERO fails at once with -ENOTSUP. */
int fmt_zero(struct fmt *f, uint64_t length, uint64_t offset, uint32_t flags);
/* Makes every completed write durable. */
int fmt_flush(struct fmt *f);
/* Reports extents covering at least [OFFSET, OFFSET+1) and at most the
 * range, in order and contiguous (one data extent where the engine cannot
 * tell). */
int fmt_extents(struct fmt *f, uint64_t length, uint64_t offset, fmt_extent_fn fn,
                void *opaque);
/* Reports where the bytes of the range come from, through the base chain:
 * extents covering at least [OFFSET, OFFSET+1) and at most the range, in
 * order and contiguous (one present data extent where the engine cannot
 * tell). For tools: it may read metadata and take its time. */
int fmt_layout(struct fmt *f, uint64_t length, uint64_t offset, fmt_layout_fn fn, void *opaque);
/* Prefetches the range into the page cache (nothing where the engine cannot). */
int fmt_cache(struct fmt *f, uint64_t length, uint64_t offset);
/* The asynchronous path, for engines whose library completes I/O itself
 * (rbd): no thread of ours waits while an operation runs. */
enum fmt_aio_op {
  FMT_AIO_READ,  /* into the buffers */
  FMT_AIO_WRITE, /* from the buffers */
  FMT_AIO_FLUSH, /* every completed write durable: offset and length unused */
  FMT_AIO_TRIM,  /* as fmt_trim */
  FMT_AIO_ZERO,  /* as fmt_zero; flags: FMT_MAY_TRIM, FMT_FAST_ZERO */
};
/* One asynchronous operation, embedded in the caller's request. */
struct fmt_aio {
  /* Called exactly once with 0 or -errno, on a thread of the engine's
   * library: it must not block or call the engine, only hand the result to
   * the caller's own thread. */
  void (*done)(struct fmt_aio *a, int res);
};
/* Starts OP on [OFFSET, OFFSET+LENGTH) (READ and WRITE: the N buffers of IOV,
 * LENGTH bytes in all, untouched until A->done) and returns 0; A->done then
 * reports the result, on another thread, possibly before fmt_aio has
 * returned (set up everything it needs first). Returns -EAGAIN, having
 * started nothing, where the caller must make the synchronous call instead:
 * an engine without this path, FMT_FUA (taken on writes where the engine's
 * writes complete once durable), the disk's first bytes
 * (fmt_guard_head), a range or mode the synchronous call refuses (it says
 * why), a zero the engine could not make fast under FMT_FAST_ZERO (the
 * synchronous call fails it at once). Never blocks for I/O. */
int fmt_aio(struct fmt *f, enum fmt_aio_op op, const struct iovec *iov, unsigned n,
            uint64_t length, uint64_t offset, uint32_t flags, struct fmt_aio *a);

/* Whether LEN bytes at BUF are all zero. */
bool fmt_is_zero(const void *buf, size_t len);

/* Creating image files (file.c) */
/* fmt_create_file: overwrite an existing file (not held by anyone). */
#define FMT_CREATE_FORCE 1u
/* Opens PATH to become a new image: created, or with FMT_CREATE_FORCE an
 * existing regular file no other process holds. Returns an fd locked for
 * writing, or -1 with a message in ERR; *CREATED says whether it is new. */
int fmt_create_file(const char *path, unsigned flags, bool *created, char *err, size_t errlen);
/* Opens the raw image PATH, already open as FD (taken over), for writing:
 * how a tool writes a new raw image through the engine's guards. */
struct fmt *fmt_open_raw_fd(int fd, const char *path, char *err, size_t errlen);

/* lock.c: images are locked as QEMU locks them, so each sees what the
 * other does: a writer refuses other writers and readers that refuse
 * writers; a reader refuses writers; bases are readers. */
/* Checks, without locking anything, that PATH (open as FD) could now be
 * opened READONLY or for writing beside what other processes hold. Returns
 * 0, or -1 with a one-line message in ERR. */
int lock_check(int fd, const char *path, bool readonly, char *err, size_t errlen);
/* How other opens of F's file use it, as their locks say. */
enum lock_use {
  LOCK_UNUSED,  /* no lock: nobody, or only readers that take none (qemu-img -U) */
  LOCK_IN_USE,  /* locked, not for writing: a reader, such as an overlay's server */
  LOCK_WRITTEN, /* held for writing (QEMU's "write" permission): what is read may be changing */
};
enum lock_use lock_in_use(const struct fmt *f);

/* spec.c: image specs on command lines: FILE[,readonly][,format=FMT][,cache=none][,serial=ID][,queues=N], as
 * blockd --export and --vhost-user-blk (after NAME= or SOCKET=) and blockd-launch --disk take it;
 * ",," in FILE stands for ','. With SPEC_RBD, FILE may also be rbd:POOL/IMAGE[@SNAP] with
 * [,conf=FILE][,id=USER] (and no format= or cache=none). */
struct img_spec {
  char *path;    /* the file, or the rbd: name */
  char *format;  /* format=, or NULL */
  bool readonly; /* readonly (or ro) */
  bool cache_none; /* cache=none (cache=default: false) */
  char *serial;  /* serial=, or NULL (only with SPEC_SERIAL) */
  char *conf;    /* conf=: Ceph configuration file, or NULL (rbd: only) */
  char *id;      /* id=: Ceph user without "client.", or NULL (rbd: only) */
  long queues;   /* queues=, at most 1000000, or -1 if not given (only with SPEC_QUEUES) */
};
#define SPEC_SERIAL 1u /* serial=ID is allowed */
#define SPEC_QUEUES 2u /* queues=N is allowed; its range is the caller's to check */
#define SPEC_RBD    4u /* rbd: names (and conf=, id=) are allowed */
/* Whether PATH is an rbd: name rather than a file. */
bool spec_is_rbd(const char *path);
/* An RBD image, rbd:POOL/IMAGE[@SNAP], split. */
#define RBD_NAME_MAX 255 /* bytes of a pool, image or snapshot name */
struct spec_rbd {
  char pool[RBD_NAME_MAX + 1];  /* the pool */
  char image[RBD_NAME_MAX + 1]; /* the image in it */
  char snap[RBD_NAME_MAX + 1];  /* the snapshot, "" for the image itself */
};
/* Splits the rbd: name PATH into N. Returns 0, or -1 with a one-line
 * message in ERR. */
int spec_rbd_parse(const char *path, struct spec_rbd *n, char *err, size_t errlen);
/* Opens the image S names, read-only if S says so or READONLY: an RBD image
 * for an rbd: name (with S's conf= and id=), else the file as fmt_open. */
struct fmt *fmt_open_spec(const struct img_spec *s, bool readonly, char *err, size_t errlen);
/* Parses TEXT into S, taking the options ALLOWED permits. Returns 0, or -1
 * with a one-line message in ERR (quoting TEXT, listing the valid options). */
int spec_parse(const char *text, unsigned allowed, struct img_spec *s, char *err, size_t errlen);
/* Frees what spec_parse allocated. */
void spec_free(struct img_spec *s);
/* PATH with every ',' doubled (malloc'd, NULL if out of memory): how a file
 * name goes into a spec, and into a QEMU option value. */
char *spec_escape(const char *path);

/* rbd.c: what blockd-img does to RBD images besides I/O. Without librbd
 * each fails with a message saying so. All return 0, or -1 with a one-line
 * message in ERR. */
/* Creates the image S names (rbd:POOL/IMAGE, with S's conf= and id=) of
 * SIZE bytes, with the cluster's default features; never replaces one. */
int fmt_rbd_create(const struct img_spec *s, uint64_t size, char *err, size_t errlen);
/* Creates S as an RBD clone of the snapshot BASE (rbd:POOL/IMAGE@SNAP, in
 * S's cluster), in constant time, protecting the snapshot where the
 * cluster's clone format needs it. */
int fmt_rbd_clone(const struct img_spec *base, const struct img_spec *s, char *err,
                  size_t errlen);
/* Protects the snapshot S names (rbd:POOL/IMAGE@SNAP), so that rbd snap rm
 * refuses it while something depends on it; protected already is fine. */
int fmt_rbd_protect(const struct img_spec *s, char *err, size_t errlen);
/* Removes the image S names (what a failed import leaves). */
int fmt_rbd_remove(const struct img_spec *s, char *err, size_t errlen);
/* What blockd-img info shows of an RBD image. */
struct fmt_rbd_info {
  uint64_t allocated; /* bytes of the image's own objects (whole objects, as rbd du) */
  char parent[3 * RBD_NAME_MAX + 8]; /* a clone's parent, rbd:POOL/IMAGE@SNAP, or "" */
  bool locked;        /* a client holds its exclusive lock: someone writes it */
};
/* Fills INFO if F is an RBD image; returns -EINVAL if not, or -errno. */
int fmt_rbd_info(struct fmt *f, struct fmt_rbd_info *info);
/* Whether this process is connected to a Ceph cluster now (an RBD image,
 * or an overlay over an RBD base, is open): librados runs threads for it,
 * which a fork would not carry over. */
bool fmt_rbd_connected(void);

/* basepath.c: where the files an image names (bases, backing files) may be */
/* Adds DIR to the directories beneath which bases may live, besides the
 * directory of the image that names them. Returns 0 or -errno. */
int basepath_allow(const char *dir);
/* Forgets every allowed directory. */
void basepath_reset(void);

/* size.c */
/* Parses "4096", "10M", "1.5G", "2T" (binary units, optional B/iB).
 * Returns 0 and sets *OUT, or -EINVAL / -ERANGE. */
int size_parse(const char *s, uint64_t *out);

/* Overlays (overlay.c, overlay-header.c; docs/overlay-format.md) */
#define OVERLAY_DEFAULT_CLUSTER_BITS 16 /* 64 KiB */
/* Creates overlay PATH over BASE, of BASE_FORMAT (NULL: recognised as
 * fmt_open does), opened read-only to record its identity, with clusters of
 * 2^CLUSTER_BITS bytes. O(1) in the base's size. FLAGS: FMT_CREATE_FORCE.
 * Returns 0, or -1 with a one-line message in ERR. */
int overlay_create(const char *path, const char *base, const char *base_format,
                   unsigned cluster_bits, unsigned flags, char *err, size_t errlen);
/* What blockd-img info shows about an overlay. */
struct overlay_info {
  uint32_t version;         /* on-disk format version */
  uint32_t cluster_size;    /* bytes per cluster */
  uint64_t clusters;        /* clusters in the virtual disk */
  uint64_t owned;           /* clusters the overlay owns */
  const char *base_path;    /* base path as recorded: relative to the overlay's directory
                             * unless absolute (owned by the image) */
  const char *base_format;  /* base format as recorded */
  struct fmt *base;         /* the open base image */
};
/* Fills INFO if F is an overlay; returns -EINVAL otherwise. */
int overlay_get_info(struct fmt *f, struct overlay_info *info);

/* Reports the progress of a long operation: DONE of TOTAL bytes. */
typedef void (*fmt_progress_fn)(void *opaque, uint64_t done, uint64_t total);
/* What overlay_commit did. */
struct overlay_commit_result {
  uint64_t clusters;   /* owned clusters written into the base */
  uint64_t bytes;      /* bytes of data among them (the rest were holes) */
  char base[4096];     /* the base, as shown to the user */
};
/* Writes the owned clusters of the overlay PATH into its base (raw or
 * overlay), then empties the overlay and records the base's new identity:
 * the overlay reads the same before and after, now through its base.
 * Refused while anything else holds the overlay or the base (locks). A
 * commit that was killed leaves the overlay refusing to open until
 * overlay_commit runs again and finishes it (overlay-commit.c). PROGRESS
 * may be NULL. Returns 0, or -1 with a one-line message in ERR. */
int overlay_commit(const char *path, fmt_progress_fn progress, void *opaque,
                   struct overlay_commit_result *res, char *err, size_t errlen);

/* overlay_rebase flags. UNSAFE: check only the virtual size (-u). */
#define OVERLAY_REBASE_UNSAFE 1u
/* What overlay_rebase did. */
struct overlay_rebase_result {
  char base[4096];     /* the base now recorded, as shown to the user */
  char verified[160];  /* what was checked, for the user */
};
/* Records the identity of the base of the overlay PATH again: of NEWBASE
 * (NULL: the recorded base) as FORMAT (NULL: recognised as fmt_open does),
 * once it is shown to read as the recorded base did (overlay-rebase.c says
 * how far that can be checked). For a base that was touched, or copied
 * without keeping its mtime. Refused while PATH is in use. Returns 0, or -1
 * with a one-line message in ERR. */
int overlay_rebase(const char *path, const char *newbase, const char *format, unsigned flags,
                   struct overlay_rebase_result *res, char *err, size_t errlen);

/* What a consistency check found (blockd-img check; qemu-img check's counters). */
enum fmt_check_kind {
  FMT_CHECK_CORRUPTION,  /* the image reads wrongly, or will not open */
  FMT_CHECK_LEAK,        /* space holds data nothing reads: waste, no harm */
  FMT_CHECK_ERROR,       /* a check could not be made */
  FMT_CHECK_UNSUPPORTED, /* a version or feature this checker does not know */
  FMT_CHECK_NOTE,        /* what the user should know; not a problem */
};
struct fmt_check {
  uint64_t corruptions;        /* findings of kind FMT_CHECK_CORRUPTION */
  uint64_t leaks;              /* clusters holding leaked data */
  uint64_t leaked_bytes;       /* bytes allocated to leaked data */
  uint64_t check_errors;       /* checks that could not be made */
  bool unsupported;            /* the image is of a version this checker does not know */
  uint64_t total_clusters;     /* clusters of the virtual disk */
  uint64_t allocated_clusters; /* clusters the image itself holds (overlay: owns) */
  uint64_t end_offset;         /* the file's size */
  /* Called once per finding with a one-line message naming the file. */
  void (*report)(void *opaque, enum fmt_check_kind kind, const char *msg);
  void *opaque;                /* REPORT's argument */
};
/* Reports a finding of KIND through C and counts it (not leaks: the caller
 * counts clusters and bytes). */
void fmt_check_report(struct fmt_check *c, enum fmt_check_kind kind, const char *fmt, ...)
  __attribute__((format(printf, 3, 4)));

/* overlay-check.c */
/* Checks the overlay at PATH read-only, as a reader (a writer holding it
 * makes the check fail): header fields, the bitmap against the cluster
 * count, the file's size, data in clusters the bitmap does not own
 * (leaked), and its base's identity. Works on overlays the engine refuses:
 * every finding goes through C. */
void overlay_check(const char *path, struct fmt_check *c);

/* qcow2.c */
/* Returns F's backing file name if F is a qcow2 image with one, else NULL. */
const char *qcow2_backing(struct fmt *f);
/* Returns true if F is a qcow2 image whose chain (itself or a backing file)
 * is the file DEV/INO. */
bool qcow2_holds_file(struct fmt *f, uint64_t dev, uint64_t ino);

#endif

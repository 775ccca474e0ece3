/* blockd formats: the table of operations every storage engine implements.
 *
 * Three front ends use this header: the blockd server, the blockd-img tool and
 * the nbdkit plugin.  An engine offers two paths:
 *
 *  - the map path (->map): a non-blocking translation of a virtual range into
 *    one file range.  blockd's workers use it to issue the I/O themselves on
 *    their io_uring, so raw files and the owned clusters of an overlay never
 *    leave the event loop;
 *  - the synchronous path (->pread, ->pwrite, ...): plain blocking calls, safe
 *    to call from several threads at once.  blockd runs them on its blocking
 *    pool (pool.c), the nbdkit plugin and blockd-img call them directly.
 *
 * Every operation returns 0 or a positive count on success, -errno on failure.
 */
#ifndef BLOCKD_FORMAT_H
#define BLOCKD_FORMAT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct fmt;

/* Flags for ->pwrite, ->trim and ->zero. */
#define FMT_FUA       (1u << 0) /* durable before returning */
#define FMT_MAY_TRIM  (1u << 1) /* ->zero may punch a hole (NBD: no NO_HOLE flag) */
#define FMT_FAST_ZERO (1u << 2) /* ->zero fails with -ENOTSUP rather than write zeroes */

/* Extent types reported by ->extents, as in NBD base:allocation. */
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
};

/* Called by ->extents once per extent, in order. Returns 0, or -1 to stop early. */
typedef int (*fmt_extent_fn)(void *opaque, uint64_t offset, uint64_t length, uint32_t type);

struct fmt_ops {
  /* Format name as written on command lines: "raw", "qcow2", "overlay". */
  const char *name;

  /* Returns true if HEAD (the first LEN bytes of a file, LEN >= 512 unless the
   * file is shorter) is this format's magic. NULL for raw, the fallback. */
  bool (*probe)(const void *head, size_t len);

  /* Opens the image PATH, already open as FD (a regular file or block
   * device, blocking, read-write unless READONLY) and owned by the engine
   * from here on, also on failure. Every check is made on FD, never on the
   * name again. On failure returns NULL and writes a one-line message naming
   * the file and the cause into ERR (no trailing newline). */
  struct fmt *(*open)(int fd, const char *path, bool readonly, char *err, size_t errlen);

  /* Closes and frees. Does not flush: call ->flush first if it matters. */
  void (*close)(struct fmt *f);

  /* Non-blocking: maps [OFFSET, OFFSET+LENGTH) for DIR onto one file range.
   * Returns true and fills M when the whole range maps and doing DIR on M is
   * the complete operation; returns false when the caller must use the
   * synchronous operation instead.  May be NULL (always false).  Must not
   * block, take a lock that a synchronous operation holds across I/O, or
   * allocate.  M->fd stays open until ->close. */
  bool (*map)(struct fmt *f, enum fmt_map_dir dir, uint64_t offset, uint64_t length,
              struct fmt_map *m);

  /* Synchronous operations; all thread-safe, all return 0 or -errno.
   * Engines run writes, trims and zeroes that touch the disk's first
   * FMT_HEAD_BYTES through fmt_guard_head, and never map them. */
  int (*pread)(struct fmt *f, void *buf, uint64_t length, uint64_t offset);
  /* May be NULL on read-only formats. flags: FMT_FUA. */
  int (*pwrite)(struct fmt *f, const void *buf, uint64_t length, uint64_t offset, uint32_t flags);
  /* May be NULL. flags: FMT_FUA. Gives the range's space back. After success
   * the range reads as zeroes, except on raw files whose file system cannot
   * punch holes, where it reads as before (NBD allows either). */
  int (*trim)(struct fmt *f, uint64_t length, uint64_t offset, uint32_t flags);
  /* May be NULL. flags: FMT_FUA, FMT_MAY_TRIM, FMT_FAST_ZERO.
   * Returns -ENOTSUP under FMT_FAST_ZERO when only a slow write would do. */
  int (*zero)(struct fmt *f, uint64_t length, uint64_t offset, uint32_t flags);
  /* May be NULL when there is nothing to flush. Makes every completed write durable. */
  int (*flush)(struct fmt *f);
  /* Reports extents covering at least [OFFSET, OFFSET+1) and at most the
   * range, in order and contiguous.  May be NULL: all data. */
  int (*extents)(struct fmt *f, uint64_t length, uint64_t offset, fmt_extent_fn fn, void *opaque);
  /* May be NULL. Prefetches the range into the page cache. */
  int (*cache)(struct fmt *f, uint64_t length, uint64_t offset);
};

/* Fields every open image has; engines embed it first in their own struct. */
struct fmt {
  const struct fmt_ops *ops; /* the engine */
  char *path;                /* file name as given, for messages (owned) */
  int fd;                    /* the image's own file, for identity checks (the engine owns it) */
  pthread_mutex_t head_lock; /* serializes writes of the first FMT_HEAD_BYTES */
  bool head_refused;         /* a forged header was refused (logged once) */
  int sync_error;            /* errno of the first failed sync, 0 if none (atomic) */
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
};

/* format.c */
/* Where engines report what no caller asked about (a refused forgery): one
 * line, no newline. Defaults to stderr; programs point it at their logger. */
extern void (*fmt_log)(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
extern const struct fmt_ops fmt_raw_ops;
extern const struct fmt_ops fmt_qcow2_ops;   /* only if built with libqcow */
extern const struct fmt_ops fmt_overlay_ops;

/* Finds a format by name ("raw", "qcow2", "overlay"); NULL if unknown or not built. */
const struct fmt_ops *fmt_lookup(const char *name);
/* Names of the formats built in, comma-separated, for --help and --dump-plugin. */
const char *fmt_names(void);
/* The format of the image open as FD, from bytes a guest cannot have written:
 * an overlay's header, else raw. A qcow2 header is refused (say format=qcow2):
 * a guest could have written it into its raw disk. Returns NULL and a message
 * in ERR if FD cannot be read or looks like qcow2. */
const struct fmt_ops *fmt_detect_fd(int fd, const char *path, char *err, size_t errlen);
/* Opens PATH as FORMAT (NULL: detect, as above). NULL with a message in ERR
 * on failure. */
struct fmt *fmt_open(const char *path, const char *format, bool readonly, char *err, size_t errlen);
/* Opens the image PATH, already open as FD (given to the engine), as OPS. */
struct fmt *fmt_open_fd(int fd, const char *path, const struct fmt_ops *ops, bool readonly,
                        char *err, size_t errlen);
/* Closes F (NULL is fine). */
void fmt_close(struct fmt *f);
/* Fills the common fields of a freshly allocated image. Returns 0 or -errno. */
int fmt_init(struct fmt *f, const struct fmt_ops *ops, int fd, const char *path, uint64_t size,
             bool readonly);
/* Frees the common fields. */
void fmt_fini(struct fmt *f);

/* Records R, the result (0 or -errno) of making F's writes durable. After a
 * failure every later sync of F fails too, with -EIO: Linux reports a
 * writeback error once per open file and may drop the unwritten pages, so a
 * retry that succeeds proves nothing (PostgreSQL's "fsyncgate"). The first
 * failure is logged. Returns R, or -EIO once F has failed before. */
int fmt_sync_result(struct fmt *f, int r);
/* fdatasync(FD) on behalf of F, through fmt_sync_result. */
int fmt_fdatasync(struct fmt *f, int fd);

/* Bytes at the start of every disk that no write may turn into OVERLAY_MAGIC:
 * a raw disk whose guest wrote an overlay header there would be opened as
 * that overlay next time, serving whatever base the guest named. */
#define FMT_HEAD_BYTES 8
/* A write (BUF), or a trim or zero (BUF NULL), of a range of F. */
typedef int (*fmt_range_fn)(struct fmt *f, const void *buf, uint64_t length, uint64_t offset,
                            uint32_t flags);
/* Runs FN unless the range touches the head and the result would spell
 * OVERLAY_MAGIC there (-EPERM). Returns FN's result or -errno. */
int fmt_guard_head(struct fmt *f, fmt_range_fn fn, const void *buf, uint64_t length,
                   uint64_t offset, uint32_t flags);

/* spec.c: FILE[,readonly][,format=FMT][,serial=ID], as blockd --export (after
 * NAME=) and blockd-launch --disk take it; ",," in FILE stands for ','. */
struct img_spec {
  char *path;    /* the file */
  char *format;  /* format=, or NULL */
  bool readonly; /* readonly (or ro) */
  char *serial;  /* serial=, or NULL (only with SPEC_SERIAL) */
};
#define SPEC_SERIAL 1u /* serial=ID is allowed */
/* Parses TEXT into S, taking the options ALLOWED permits. Returns 0, or -1
 * with a one-line message in ERR (quoting TEXT, listing the valid options). */
int spec_parse(const char *text, unsigned allowed, struct img_spec *s, char *err, size_t errlen);
/* Frees what spec_parse allocated. */
void spec_free(struct img_spec *s);
/* PATH with every ',' doubled (malloc'd, NULL if out of memory): how a file
 * name goes into a spec, and into a QEMU option value. */
char *spec_escape(const char *path);

/* basepath.c: where the files an image names (bases, backing files) may be */
/* Adds DIR to the directories beneath which bases may live, besides the
 * directory of the image that names them. Returns 0 or -errno. */
int basepath_allow(const char *dir);
/* Forgets every allowed directory. */
void basepath_reset(void);
/* Opens NAME, named by the image at REFERRER, read-only, if it lies beneath
 * REFERRER's directory or an allowed one (kernel-enforced: no "..", no
 * symlink out). The resolved path goes into OUT. Returns a blocking fd of
 * a regular file or block device, or -1 with a message in ERR. */
int basepath_open(const char *referrer, const char *name, char *out, size_t outlen, char *err,
                  size_t errlen);
/* Whether NAME, named by REFERRER, can be opened under that policy. */
bool basepath_allowed(const char *referrer, const char *name);
/* Checks FD, open as PATH, is a regular file or block device, and clears
 * O_NONBLOCK. Returns 0 or -1 with a message in ERR. */
int basepath_check_fd(int fd, const char *path, char *err, size_t errlen);

/* size.c */
/* Parses "4096", "10M", "1.5G", "2T" (binary units, optional B/iB).
 * Returns 0 and sets *OUT, or -EINVAL / -ERANGE. */
int size_parse(const char *s, uint64_t *out);

/* file.c: helpers for engines that sit on sparse files */
/* Punches a hole, falling back to ZERO_RANGE then to writing zeroes as the
 * file system allows and FLAGS permits (FMT_MAY_TRIM, FMT_FAST_ZERO; FUA is
 * the caller's: fmt_fdatasync). Returns 0 or -errno. */
int file_zero(int fd, uint64_t length, uint64_t offset, uint32_t flags);
/* Reports SEEK_DATA/SEEK_HOLE extents of FD within [OFFSET, OFFSET+LENGTH),
 * clipped to SIZE. Returns 0 or -errno. */
int file_extents(int fd, uint64_t size, uint64_t length, uint64_t offset, fmt_extent_fn fn,
                 void *opaque);
/* pread/pwrite loops that finish short transfers; reads past EOF give zeroes. */
int file_pread_full(int fd, void *buf, uint64_t length, uint64_t offset);
int file_pwrite_full(int fd, const void *buf, uint64_t length, uint64_t offset);
/* Returns the allocated bytes of the file behind FD (st_blocks * 512) or -errno. */
int64_t file_allocated(int fd);
/* Whether FD's file system takes buffered writes from io_uring without
 * punting them to a serialising worker (see file.c). */
bool file_async_buffered_writes(int fd);
/* file_create: overwrite an existing file (not held by anyone). */
#define FILE_CREATE_FORCE 1u
/* Opens PATH to become a new image: created, or with FILE_CREATE_FORCE an
 * existing regular file no other process holds. Returns an fd locked for
 * writing, or -1 with a message in ERR; *CREATED says whether it is new. */
int file_create(const char *path, unsigned flags, bool *created, char *err, size_t errlen);
/* Takes an OFD lock on the whole file behind FD: exclusive for a writer,
 * shared for a reader. Returns 0, -EAGAIN if another open holds a
 * conflicting lock, or another -errno. */
int file_lock(int fd, bool exclusive);

/* bitmap.c: the overlay's owned-cluster map (lock-free reads, ordered sync) */
struct bitmap {
  uint64_t *live;      /* bits set so far; atomic loads and ORs */
  uint64_t *durable;   /* bits known to be on disk; atomic loads */
  uint64_t *stage;     /* snapshot being written by bitmap_sync */
  unsigned char *dirty; /* per 4096-byte page: set since the last sync */
  unsigned char *snap; /* per page: part of the running sync's snapshot */
  uint64_t nbits;      /* number of bits (clusters) */
  uint64_t bytes;      /* on-disk size: whole 4096-byte pages */
  uint64_t pages;      /* bytes / 4096 */
  uint64_t set_gen;    /* bumped by every bit newly set */
  uint64_t synced_gen; /* set_gen covered by the last successful sync */
};
/* Bytes of an on-disk bitmap of NBITS bits (whole 4096-byte pages). */
uint64_t bitmap_bytes(uint64_t nbits);
int bitmap_init(struct bitmap *bm, uint64_t nbits);
void bitmap_free(struct bitmap *bm);
int bitmap_load(struct bitmap *bm, int fd, uint64_t offset);
bool bitmap_test(const struct bitmap *bm, uint64_t i);
bool bitmap_all(const struct bitmap *bm, uint64_t first, uint64_t last, bool durable);
bool bitmap_none(const struct bitmap *bm, uint64_t first, uint64_t last);
uint64_t bitmap_run_end(const struct bitmap *bm, uint64_t i, uint64_t end, bool *set);
void bitmap_set(struct bitmap *bm, uint64_t i);
bool bitmap_clean(const struct bitmap *bm);
uint64_t bitmap_count(const struct bitmap *bm);
int bitmap_sync(struct bitmap *bm, int fd, uint64_t offset);

/* overlay-header.c: the overlay's on-disk header, base identity, lock, creation */
#define OVERLAY_MAGIC "BLKDOVL\0"
#define OVERLAY_VERSION 1
#define OVERLAY_HEADER_SIZE 4096u
/* Largest virtual disk and cluster count an overlay may have: the bitmap is
 * held in memory (2^28 clusters: 32 MiB a copy; 16 TiB at 64 KiB clusters). */
#define OVERLAY_MAX_VIRTUAL_SIZE (1ULL << 56)
#define OVERLAY_MAX_CLUSTERS (1ULL << 28)
/* The header as stored: little-endian, at offset 0. */
struct overlay_header {
  char magic[8];             /* OVERLAY_MAGIC */
  uint32_t version;          /* OVERLAY_VERSION */
  uint32_t header_size;      /* OVERLAY_HEADER_SIZE */
  uint64_t incompat;         /* feature bits a reader must know; 0 in version 1 */
  uint32_t cluster_bits;     /* log2 of the cluster size, 12..24 */
  uint32_t reserved0;        /* 0 */
  uint64_t virtual_size;     /* disk size in bytes */
  uint64_t bitmap_offset;    /* file offset of the owned-cluster bitmap */
  uint64_t bitmap_size;      /* bytes, a multiple of 4096 */
  uint64_t data_offset;      /* file offset of virtual byte 0, cluster aligned */
  uint64_t base_file_size;   /* identity: st_size of the base file */
  int64_t base_mtime_sec;    /* identity: st_mtime of the base file */
  uint32_t base_mtime_nsec;  /* identity: nanoseconds of st_mtime */
  uint32_t reserved1;        /* 0 */
  uint64_t base_virtual_size; /* identity: the base's virtual size */
  uint64_t base_hash;        /* identity: FNV-1a 64 of the base file's first 64 KiB */
  char base_format[16];      /* "raw", "qcow2" or "overlay", NUL padded */
  uint32_t base_path_len;    /* bytes of base_path before its NUL */
  uint32_t reserved2;        /* 0 */
  char base_path[OVERLAY_HEADER_SIZE - 128]; /* the base: absolute, or relative to the
                                              * overlay's directory; NUL terminated */
} __attribute__((packed));
/* Reads and checks the header of the overlay at PATH (open as FD, FILE_SIZE
 * bytes) into H, host order. Returns 0, or -1 with a message in ERR. */
int overlay_header_read(int fd, uint64_t file_size, const char *path, struct overlay_header *h,
                        char *err, size_t errlen);
/* Checks that BASE (opened from the resolved base path) is the image H
 * recorded, on BASE's open file. Returns 0, or -1 with a message naming PATH
 * and the base in ERR. */
int overlay_header_check_base(const struct overlay_header *h, const struct fmt *base,
                              const char *path, char *err, size_t errlen);
#define OVERLAY_DEFAULT_CLUSTER_BITS 16 /* 64 KiB */
/* Creates overlay PATH over BASE, of BASE_FORMAT (NULL: detect, as
 * fmt_open), opened read-only to record its identity, with clusters of
 * 2^CLUSTER_BITS bytes. O(1) in the base's size. FLAGS: FILE_CREATE_FORCE.
 * Returns 0, or -1 with a one-line message in ERR. */
int overlay_create(const char *path, const char *base, const char *base_format,
                   unsigned cluster_bits, unsigned flags, char *err, size_t errlen);

/* overlay.c: copy-on-write over a read-only base (docs/overlay-format.md) */
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

/* qcow2.c */
/* Returns F's backing file name if F is a qcow2 image with one, else NULL. */
const char *qcow2_backing(struct fmt *f);
/* Returns true if F is a qcow2 image whose chain (itself or a backing file)
 * is the file DEV/INO. */
bool qcow2_holds_file(struct fmt *f, uint64_t dev, uint64_t ino);

#endif

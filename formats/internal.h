/* formats' private header: the engine table, and what the engines share,
 * file by file. Callers use format.h only. */
#ifndef BLOCKD_FORMATS_INTERNAL_H
#define BLOCKD_FORMATS_INTERNAL_H

#include "cleanup.h"
#include "format.h"

/* How an image is opened, which decides the locks it takes (lock.c). */
enum fmt_access {
  FMT_WRITE,  /* read and write; nobody else may write or resize meanwhile */
  FMT_READ,   /* read only; nobody may write or resize meanwhile */
  FMT_SHARED, /* read only, no lock: anything may change it meanwhile */
};

/* One storage engine. Every synchronous operation is thread-safe and
 * returns 0 or -errno; io.c has checked the range and the mode and applied
 * the fallbacks before an engine is called. */
struct fmt_ops {
  /* Format name as written on command lines: "raw", "qcow2", "overlay". */
  const char *name;

  /* Returns true if HEAD (the first LEN bytes of a file, LEN >= 512 unless the
   * file is shorter) is this format's magic. NULL for raw, the fallback. */
  bool (*probe)(const void *head, size_t len);

  /* Opens the image PATH, already open as FD (a regular file or block
   * device, blocking, read-write if ACCESS is FMT_WRITE), locked for ACCESS
   * by fmt_open_fd, and owned by the engine from here on, also on failure.
   * Files the engine opens itself (bases, backing files) it opens and locks
   * with the same ACCESS, FMT_WRITE made FMT_READ. Every check is made on
   * FD, never on the name again. On failure returns NULL and writes a
   * one-line message naming the file and the cause into ERR (no trailing
   * newline). NULL for an engine whose images are not files (rbd:
   * fmt_rbd_open). */
  struct fmt *(*open)(int fd, const char *path, enum fmt_access access, char *err, size_t errlen);

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
   * punch holes, where it reads as before, and in pieces of RBD images under
   * librbd's discard granularity, left as they were (NBD allows either). */
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

  /* Reports where the range's bytes come from, as extents covering at least
   * [OFFSET, OFFSET+1) and at most the range, in order and contiguous, with
   * DEPTH added to each one's depth (the engine is DEPTH images down a
   * chain); a base is asked through fmt_layout_at with DEPTH + 1. Returns 0
   * (also when FN stopped it) or -errno. May be NULL: one present extent of
   * what ->extents says. */
  int (*layout)(struct fmt *f, uint64_t length, uint64_t offset, unsigned depth,
                fmt_layout_fn fn, void *opaque);

  /* May be NULL. Starts OP asynchronously (fmt_aio, whose checks io.c has
   * made: the range is in the image and not empty, the image writable for
   * all but READ, FUA on WRITE only, not the disk's head). Returns 0 once
   * started, -EAGAIN if the synchronous call must do it (an engine takes a
   * FUA write only if it completes once durable). */
  int (*aio)(struct fmt *f, enum fmt_aio_op op, const struct iovec *iov, unsigned n,
             uint64_t length, uint64_t offset, uint32_t flags, struct fmt_aio *a);
};

/* format.c */
extern const struct fmt_ops fmt_raw_ops;
extern const struct fmt_ops fmt_qcow2_ops;   /* only if built with zlib */
extern const struct fmt_ops fmt_overlay_ops;
/* Finds a format by name; NULL if unknown or not built. */
const struct fmt_ops *fmt_lookup(const char *name);
/* The format of the image open as FD, from bytes a guest cannot have written:
 * an overlay's header, else raw. A qcow2 header is refused (say format=qcow2):
 * a guest could have written it into its raw disk. Returns NULL and a message
 * in ERR if FD cannot be read or looks like qcow2. */
const struct fmt_ops *fmt_detect_fd(int fd, const char *path, char *err, size_t errlen);
/* Locks PATH, already open as FD (given to the engine), for ACCESS
 * (FMT_READ if OPS cannot write) and opens it as OPS. BASE_OF names the
 * image whose base PATH is, NULL for an image the user named. */
struct fmt *fmt_open_fd(int fd, const char *path, const char *base_of, const struct fmt_ops *ops,
                        enum fmt_access access, char *err, size_t errlen);
/* Fills the common fields of a freshly allocated image. Returns 0 or -errno. */
int fmt_init(struct fmt *f, const struct fmt_ops *ops, int fd, const char *path, uint64_t size,
             bool readonly);
/* Frees the common fields. */
void fmt_fini(struct fmt *f);

/* io.c */
/* Sets L's data and zero from an extent TYPE (FMT_EXTENT_*), as NBD means it. */
static inline void fmt_layout_type(struct fmt_layout *l, uint32_t type)
{
  l->data = !(type & FMT_EXTENT_HOLE);
  l->zero = type & FMT_EXTENT_ZERO;
}
/* fmt_layout for an image DEPTH levels down a chain, with its fallback;
 * the range is the caller's to check. */
int fmt_layout_at(struct fmt *f, uint64_t length, uint64_t offset, unsigned depth,
                  fmt_layout_fn fn, void *opaque);

/* rbd.c (only if built with librbd) */
extern const struct fmt_ops fmt_rbd_ops;
/* Opens the RBD image named PATH (rbd:POOL/IMAGE[@SNAP]) through the cluster
 * that CONF and ID (NULL: librados' defaults) name, connecting once per
 * process and cluster. A snapshot must be opened READONLY. NULL with a
 * one-line message in ERR on failure. FROM_HEADER: PATH comes from an
 * overlay's header, where no conf= can be given (messages say so). */
struct fmt *fmt_rbd_open(const char *path, const char *conf, const char *id, bool from_header,
                         bool readonly, char *err, size_t errlen);
/* An overlay's record of its RBD base F: the snapshot's id and the image's
 * id (into ID, LEN bytes), which a snapshot re-created under the same names
 * does not have. Returns 0 or -errno (-EINVAL: F is not a snapshot). */
int fmt_rbd_identity(struct fmt *f, uint64_t *snap_id, char *id, size_t len);

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

/* basepath.c */
/* Opens NAME, named by the image at REFERRER, read-only, if it lies beneath
 * REFERRER's directory or an allowed one (kernel-enforced: no "..", no
 * symlink out). The name to show for it goes into OUT. Returns a blocking fd
 * of a regular file or block device, or -1 with a message in ERR. */
int basepath_open(const char *referrer, const char *name, char *out, size_t outlen, char *err,
                  size_t errlen);
/* The same, for reading and writing: committing an overlay into its base. */
int basepath_open_write(const char *referrer, const char *name, char *out, size_t outlen,
                        char *err, size_t errlen);
/* Opens NAME (rbd:POOL/IMAGE@SNAP), the base of the overlay REFERRER, read-only,
 * if its pool is allowed (--allow-base-dir rbd:POOL). NULL with a message in ERR. */
struct fmt *basepath_open_rbd(const char *referrer, const char *name, char *err, size_t errlen);
/* Whether NAME, named by REFERRER, can be opened under that policy. */
bool basepath_allowed(const char *referrer, const char *name);
/* Checks FD, open as PATH, is a regular file or block device, and clears
 * O_NONBLOCK. Returns 0 or -1 with a message in ERR. */
int basepath_check_fd(int fd, const char *path, char *err, size_t errlen);

/* file.c: helpers for engines that sit on sparse files */
/* Punches a hole, falling back to ZERO_RANGE then to writing zeroes as the
 * file system allows and FLAGS permits (FMT_MAY_TRIM, FMT_FAST_ZERO; FUA is
 * the caller's: fmt_fdatasync). Returns 0 or -errno. */
int file_zero(int fd, uint64_t length, uint64_t offset, uint32_t flags);
/* Reports SEEK_DATA/SEEK_HOLE extents of FD within [OFFSET, OFFSET+LENGTH),
 * clipped to SIZE. Returns 0 or -errno. */
int file_extents(int fd, uint64_t size, uint64_t length, uint64_t offset, fmt_extent_fn fn,
                 void *opaque);
/* Reports the SEEK_DATA/SEEK_HOLE extents of FD within [OFFSET, OFFSET+LENGTH),
 * clipped to SIZE, as fmt_layout extents at DEPTH: present, in file NAME,
 * at virtual offset (file offset - SHIFT). Returns 0 or -errno. */
int file_layout(int fd, uint64_t size, uint64_t length, uint64_t offset, uint64_t shift,
                const char *name, unsigned depth, fmt_layout_fn fn, void *opaque);
/* pread/pwrite loops that finish short transfers; reads past EOF give zeroes. */
int file_pread_full(int fd, void *buf, uint64_t length, uint64_t offset);
/* The descriptor of F's own file to move LENGTH bytes at file OFFSET from or
 * to BUF through: the O_DIRECT one (cache=none) where all three are aligned
 * for it, else the cached one. */
int file_data_fd(const struct fmt *f, const void *buf, uint64_t length, uint64_t offset);
int file_pwrite_full(int fd, const void *buf, uint64_t length, uint64_t offset);
/* Returns the allocated bytes of the file behind FD (st_blocks * 512) or -errno. */
int64_t file_allocated(int fd);
/* Whether FD's file system takes buffered writes from io_uring without
 * punting them to a serialising worker (see file.c). */
bool file_async_buffered_writes(int fd);

/* lock.c: image locks in QEMU's protocol, and the process's own list */
/* Locks NAME, open as FD, for ACCESS (nothing for FMT_SHARED), unless an
 * open of this process (given twice) or another process conflicts. BASE_OF
 * names the image whose base NAME is, NULL for one the user named. Returns
 * 0 with *OUT to give lock_forget (NULL for FMT_SHARED), or -1 with a
 * message in ERR. */
int lock_image(int fd, const char *name, const char *base_of, enum fmt_access access,
               struct lock **out, char *err, size_t errlen);
/* Takes the file out of the process's list (NULL is fine). The kernel drops
 * the locks themselves when the file is closed. */
void lock_forget(struct lock *l);
/* Locks PATH, open as FD, to be overwritten: refused while any other open
 * holds a lock on it. Returns 0, or -1 with a message in ERR. */
int lock_create(int fd, const char *path, char *err, size_t errlen);

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
/* incompat bits. COMMIT: blockd-img commit is writing the overlay's owned
 * clusters into its base, which no longer matches its recorded identity:
 * only commit may open it (to finish). */
#define OVERLAY_INCOMPAT_COMMIT (1ULL << 0)
#define OVERLAY_INCOMPAT_KNOWN OVERLAY_INCOMPAT_COMMIT
/* What an overlay left with OVERLAY_INCOMPAT_COMMIT says, after its name. */
#define OVERLAY_COMMIT_INTERRUPTED \
  "a commit into its base was interrupted (the base holds part of it): run" \
  " 'blockd-img commit' on it again to finish"
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
 * bytes) into H, host order. Returns 0, or with a message in ERR naming
 * the field: -ENOTSUP for a version or feature this reader does not know,
 * -EINVAL for a corrupt header, another -errno if it cannot be read. */
int overlay_header_read(int fd, uint64_t file_size, const char *path, struct overlay_header *h,
                        char *err, size_t errlen);
/* Writes the host-order header H at offset 0 of FD (no sync). Returns 0 or -errno. */
int overlay_header_write(int fd, const struct overlay_header *h);
/* Records in H (host order) the identity of BASE, read from its open file:
 * file size, mtime, virtual size, head hash, format. Returns 0 or -errno. */
int overlay_header_identify(struct overlay_header *h, const struct fmt *base);
/* Records in H BASE (a path the user gave) as the base of the overlay at
 * PATH, as create -b does: absolute stays absolute, relative becomes
 * relative to PATH's directory. BASE's canonical path goes into REAL
 * (PATH_MAX bytes). Returns 0, or -1 with a message in ERR. */
int overlay_header_set_base(struct overlay_header *h, const char *path, const char *base,
                            char *real, size_t reallen, char *err, size_t errlen);
/* Checks that BASE (opened from the resolved base path) is the image H
 * recorded, on BASE's open file. Returns 0, or -1 with a message naming PATH
 * and the base in ERR. */
int overlay_header_check_base(const struct overlay_header *h, const struct fmt *base,
                              const char *path, char *err, size_t errlen);
#endif

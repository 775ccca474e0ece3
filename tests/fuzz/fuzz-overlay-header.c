/* libFuzzer entry point for the overlay header and what follows from it.
 *
 * Each input is the start of an overlay file, then an 8-byte trailer (little
 * endian) that the file does not contain:
 *
 *   bits  0..31  size to extend the file to, sparse (a header may declare a
 *                bitmap far beyond the bytes given: the engine checks it lies
 *                inside the file, so the trailer decides whether it does)
 *   bits 32..39  flags: 1 read-only, 2 FUA writes, 4 MAY_TRIM zeroes,
 *                8 FAST_ZERO zeroes
 *   bits 40..63  three operations, one byte each: bits 0-1 read, write, trim,
 *                zero; bits 2-4 where (offset_for); bits 5-7 how much
 *                (length_for)
 *
 * The file is opened as an overlay in a directory of our own that also holds
 * small bases of every format (base.raw, small.raw, base.qcow2, base.ovl),
 * with contents and mtimes make-corpus.py reproduces: corpus headers name
 * them with their true identity, so inputs get past the identity check into
 * the bitmap load, the reads and the copy-ups. blockd-img check's reader
 * runs on every input first, and must not pass what the engine refuses.
 * Everything goes through the public API (format.h), as blockd and
 * blockd-img use it.
 */
#include <endian.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "format.h"
#include "fuzz-util.h"

#define TRAILER 8
#define MAX_IO (1024 * 1024)         /* bytes read or written by one operation */
#define MAX_RANGE (64ULL << 20)      /* bytes trimmed or zeroed by one operation */
#define MAX_EXTENTS 512              /* extents taken from one fmt_extents */

static const char *dir;       /* private directory: the bases and the overlay */
static char ovl_path[PATH_MAX]; /* DIR/top.ovl, rewritten for every input */
static char *iobuf;           /* MAX_IO bytes, for reads and writes */

/* Prints why an input got no further, with BLOCKD_FUZZ_VERBOSE. */
static void note(const char *what, const char *msg)
{
  if (fuzz_verbose())
    fprintf(stderr, "fuzz-overlay-header: %s: %s\n", what, msg);
}

/* Creates the bases, once. Exits on failure: no input can mean anything then. */
static void setup(void)
{
  uint8_t *raw = malloc(FUZZ_RAW_DATA);
  uint8_t qcow2[FUZZ_QCOW2_FILE_SIZE];
  char cwd[PATH_MAX], err[PATH_MAX + 256];
  int r;

  iobuf = malloc(MAX_IO);
  if (raw == NULL || iobuf == NULL)
    abort();
  dir = fuzz_private_dir("fuzz-ovl");
  snprintf(ovl_path, sizeof ovl_path, "%s/top.ovl", dir);
  for (size_t i = 0; i < FUZZ_RAW_DATA; i++)
    raw[i] = fuzz_pattern(i);
  r = fuzz_write_file(dir, "base.raw", raw, FUZZ_RAW_DATA, FUZZ_RAW_SIZE, true);
  if (r == 0)
    r = fuzz_write_file(dir, "small.raw", raw, FUZZ_SMALL_SIZE, 0, true);
  free(raw);
  if (r == 0 && fmt_known("qcow2")) {
    fuzz_qcow2_image(qcow2);
    r = fuzz_write_file(dir, "base.qcow2", qcow2, sizeof qcow2, 0, true);
  }
  if (r < 0) {
    fprintf(stderr, "fuzz-overlay-header: %s: %s\n", dir, strerror(-r));
    exit(1);
  }
  /* base.ovl records its base by a name relative to its own directory, as
   * blockd-img create does when given one: so its bytes (and the identity
   * a header records for it) do not depend on where DIR is. */
  if (getcwd(cwd, sizeof cwd) == NULL || chdir(dir) == -1) {
    perror("fuzz-overlay-header: chdir");
    exit(1);
  }
  r = overlay_create("base.ovl", "base.raw", "raw", 12, 0, err, sizeof err);
  if (chdir(cwd) == -1 || r < 0 || fuzz_set_mtime(dir, "base.ovl") < 0) {
    fprintf(stderr, "fuzz-overlay-header: base.ovl: %s\n", r < 0 ? err : strerror(errno));
    exit(1);
  }
}

/* Offset choice W (0..7) on a disk of SIZE bytes in clusters of CS over a
 * base of BASE bytes: edges of clusters, of the base and of the disk, and
 * one past the end (io.c must refuse it). */
static uint64_t offset_for(unsigned w, uint64_t size, uint64_t cs, uint64_t base)
{
  switch (w) {
  case 0: return 0;
  case 1: return 1;
  case 2: return cs - 1;
  case 3: return cs;
  case 4: return base > 0 ? base - 1 : 0;
  case 5: return size / 2;
  case 6: return size > 0 ? size - 1 : 0;
  default: return size;
  }
}

/* Length choice W (0..7) from OFFSET on a disk of SIZE bytes in clusters of CS. */
static uint64_t length_for(unsigned w, uint64_t offset, uint64_t size, uint64_t cs)
{
  switch (w) {
  case 0: return 0;
  case 1: return 1;
  case 2: return 511;
  case 3: return cs;
  case 4: return cs + 1;
  case 5: return 2 * cs + 3;
  case 6: return 65536 + 7;
  default: return offset < size ? size - offset : 4096; /* to the end, or past it */
  }
}

/* fmt_extents callback: takes MAX_EXTENTS, then asks to stop. */
static int count_extent(void *opaque, uint64_t offset, uint64_t length, uint32_t type)
{
  unsigned *n = opaque;

  (void)offset;
  (void)length;
  (void)type;
  return ++*n < MAX_EXTENTS ? 0 : -1;
}

/* Runs operation OP (a trailer byte) on F, FLAGS from the trailer. Results
 * are not checked: any errno is a fine answer, only crashes count. */
static void run_op(struct fmt *f, unsigned op, unsigned flags, uint64_t cs, uint64_t base)
{
  uint64_t offset = offset_for((op >> 2) & 7, f->size, cs, base);
  uint64_t length = length_for(op >> 5, offset, f->size, cs);
  uint64_t io = length < MAX_IO ? length : MAX_IO;
  uint32_t zflags = ((flags & 4) ? FMT_MAY_TRIM : 0) | ((flags & 8) ? FMT_FAST_ZERO : 0);
  struct fmt_map m;

  switch (op & 3) {
  case 0:
    fmt_map(f, FMT_MAP_READ, offset, io, &m);
    fmt_pread(f, iobuf, io, offset);
    break;
  case 1:
    for (uint64_t i = 0; i < io; i++)
      iobuf[i] = (char)(i * 7 + op);
    fmt_map(f, FMT_MAP_WRITE, offset, io, &m);
    fmt_pwrite(f, iobuf, io, offset, (flags & 2) ? FMT_FUA : 0);
    break;
  case 2:
    fmt_map(f, FMT_MAP_TRIM, offset, length, &m);
    fmt_trim(f, length < MAX_RANGE ? length : MAX_RANGE, offset, 0);
    break;
  default:
    fmt_map(f, FMT_MAP_ZERO, offset, length, &m);
    fmt_zero(f, length < MAX_RANGE ? length : MAX_RANGE, offset, zflags);
    break;
  }
}

/* libFuzzer calls this once per input. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  static bool ready;
  uint64_t trailer = 0, file_size;
  char err[PATH_MAX + 256];
  struct fmt_check check = { 0 };
  struct overlay_info info;
  struct fmt *f;
  unsigned flags, n = 0;
  int r;

  if (!ready) {
    setup();
    ready = true;
  }
  if (size >= TRAILER) {
    memcpy(&trailer, data + size - TRAILER, TRAILER);
    trailer = le64toh(trailer);
    size -= TRAILER;
  }
  file_size = trailer & 0xffffffffu; /* at most 4 GiB, and sparse */
  flags = (unsigned)(trailer >> 32) & 0xff;
  r = fuzz_write_file(dir, "top.ovl", data, size, file_size, false);
  if (r < 0) {
    fprintf(stderr, "fuzz-overlay-header: %s: %s\n", ovl_path, strerror(-r));
    abort();
  }
  /* blockd-img check reads the same hostile bytes; what it passes as
   * sound, the engine must open. */
  overlay_check(ovl_path, &check);
  if (check.allocated_clusters > check.total_clusters)
    abort();
  f = fmt_open(ovl_path, "overlay", flags & 1, err, sizeof err);
  if (f == NULL) {
    note("open", err);
    if (check.corruptions == 0 && check.check_errors == 0 && !check.unsupported) {
      fprintf(stderr, "fuzz-overlay-header: check found nothing wrong, but: %s\n", err);
      abort();
    }
    return 0;
  }
  /* Counts the owned clusters too: a walk of the whole bitmap. */
  if (overlay_get_info(f, &info) < 0 || info.owned > info.clusters)
    abort(); /* not an overlay after fmt_open(..., "overlay"), or a bitmap gone wrong */
  for (unsigned k = 0; k < 3; k++)
    run_op(f, (unsigned)(trailer >> (40 + 8 * k)) & 0xff, flags, info.cluster_size,
           info.base->size);
  fmt_extents(f, f->size, 0, count_extent, &n);
  n = 0;
  fmt_extents(f, f->size - f->size / 2, f->size / 2, count_extent, &n);
  fmt_cache(f, f->size < MAX_IO ? f->size : MAX_IO, 0);
  fmt_flush(f);
  fmt_close(f);
  return 0;
}

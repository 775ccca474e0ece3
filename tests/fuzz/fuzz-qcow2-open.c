/* libFuzzer entry point for the qcow2 engine: our header and L1/L2 checks,
 * and libqcow behind them.
 *
 * Each input is a whole qcow2 file. It is written as img.qcow2 into a
 * directory of our own that also holds backing.qcow2 (a tiny valid qcow2,
 * which make-corpus.py reproduces for its qemu-img images to name) and
 * backing.raw (a backing file the engine must refuse: libqcow follows qcow2
 * chains only). If the image opens, a few ranges are read and the extents
 * walked, through the public API (format.h) as blockd does.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format.h"
#include "fuzz-util.h"

#define READ_MAX (64 * 1024)     /* bytes of one read */
#define EXTENTS_SPAN (16ULL << 20) /* bytes asked of one fmt_extents */
#define MAX_EXTENTS 512          /* extents taken from one fmt_extents */
#define LIBQCOW_OFFSET_MASK 0x3fffffffffffffffULL /* what libqcow keeps of L1/L2 entries */
#define L2_COMPRESSED (1ULL << 62)           /* compressed cluster */

static const char *dir;         /* private directory: the image and its backing files */
static char img_path[PATH_MAX]; /* DIR/img.qcow2, rewritten for every input */
static char *buf;               /* READ_MAX bytes */

/* Creates the backing files, once. */
static void setup(void)
{
  uint8_t qcow2[FUZZ_QCOW2_FILE_SIZE], raw[4096];
  int r;

  buf = malloc(READ_MAX);
  if (buf == NULL)
    abort();
  dir = fuzz_private_dir("fuzz-qcow2");
  snprintf(img_path, sizeof img_path, "%s/img.qcow2", dir);
  fuzz_qcow2_image(qcow2);
  for (size_t i = 0; i < sizeof raw; i++)
    raw[i] = fuzz_pattern(i);
  r = fuzz_write_file(dir, "backing.qcow2", qcow2, sizeof qcow2, 0, true);
  if (r == 0)
    r = fuzz_write_file(dir, "backing.raw", raw, sizeof raw, 0, true);
  if (r < 0) {
    fprintf(stderr, "fuzz-qcow2-open: %s: %s\n", dir, strerror(-r));
    exit(1);
  }
}

/* The big-endian 32 bits at P (inputs carry no alignment). */
static uint32_t be32_at(const uint8_t *p)
{
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The big-endian 64 bits at P. */
static uint64_t be64_at(const uint8_t *p)
{
  return (uint64_t)be32_at(p) << 32 | be32_at(p + 4);
}

/* Whether libqcow would read an uncompressed data cluster of the image DATA
 * (SIZE bytes) that runs past the end of the file. libqcow 20201213 sizes its
 * buffer for such a cluster by the bytes the file has left, then copies a
 * whole cluster out of it: a heap over-read whose bytes reach the caller
 * (crashes/qcow2-cluster-past-eof). It is judged as libqcow reads the
 * tables, which is not as the engine does: libqcow masks L1 and L2 entries
 * with LIBQCOW_OFFSET_MASK only, so reserved and unaligned bits move its
 * tables and clusters where the engine sees none (an L1 entry of 0x80 makes
 * the header its L2 table, and the virtual size a cluster offset:
 * crashes/qcow2-l1-unaligned-header-as-l2). The engine does not guard
 * against it yet, so such images are opened and walked but never read,
 * unless BLOCKD_FUZZ_NO_WORKAROUNDS is set. */
static bool cluster_past_eof(const uint8_t *data, size_t size)
{
  uint64_t cs, l1_size, l1_offset;
  uint32_t cb;

  if (size < 48 || getenv("BLOCKD_FUZZ_NO_WORKAROUNDS") != NULL)
    return false;
  cb = be32_at(data + 20);
  if (cb < 9 || cb > 21)
    return false; /* the engine refuses it */
  cs = 1ULL << cb;
  l1_size = be32_at(data + 36);
  l1_offset = be64_at(data + 40);
  for (uint64_t i = 0; i < l1_size && l1_offset <= size && 8 * (i + 1) <= size - l1_offset; i++) {
    /* libqcow fetches tables through a vector of cluster-sized elements:
     * an unaligned offset gives the table at the cluster below, even when
     * that is offset 0, the header. */
    uint64_t entry = be64_at(data + l1_offset + 8 * i) & LIBQCOW_OFFSET_MASK;
    uint64_t l2 = entry & ~(cs - 1);

    for (uint64_t k = 0; entry != 0 && k < cs / 8 && l2 <= size && 8 * (k + 1) <= size - l2;
         k++) {
      uint64_t e = be64_at(data + l2 + 8 * k);
      uint64_t host = e & LIBQCOW_OFFSET_MASK;

      if (!(e & L2_COMPRESSED) && host != 0 && (host > size || cs > size - host))
        return true;
    }
  }
  return false;
}

/* Bytes of F that may be read without hanging in libqcow. libqcow 20201213
 * loops forever reading a cluster the image leaves to its backing file past
 * the backing file's end (its parent read returns 0 bytes and the loop does
 * not advance: crashes/qcow2-backing-smaller-hang). The engine does not
 * guard against it yet, so reads stop at backing.qcow2's size, the only
 * backing file a chain here can end in, unless BLOCKD_FUZZ_NO_WORKAROUNDS
 * is set (to reproduce it). */
static uint64_t readable(struct fmt *f)
{
  if (qcow2_backing(f) == NULL || getenv("BLOCKD_FUZZ_NO_WORKAROUNDS") != NULL)
    return f->size;
  return f->size < FUZZ_QCOW2_VIRTUAL_SIZE ? f->size : FUZZ_QCOW2_VIRTUAL_SIZE;
}

/* Reads [OFFSET, OFFSET+LENGTH) of F, clipped to what may be read and to
 * READ_MAX. */
static void read_range(struct fmt *f, uint64_t offset, uint64_t length)
{
  uint64_t end = readable(f);

  if (offset >= end)
    return;
  if (length > end - offset)
    length = end - offset;
  if (length > READ_MAX)
    length = READ_MAX;
  fmt_pread(f, buf, length, offset);
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

/* libFuzzer calls this once per input. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  static bool ready;
  char err[PATH_MAX + 256];
  struct fmt *f;
  uint64_t span;
  unsigned n = 0;
  int r;

  if (!ready) {
    setup();
    ready = true;
  }
  r = fuzz_write_file(dir, "img.qcow2", data, size, 0, false);
  if (r < 0) {
    fprintf(stderr, "fuzz-qcow2-open: %s: %s\n", img_path, strerror(-r));
    abort();
  }
  f = fmt_open(img_path, "qcow2", true, err, sizeof err);
  if (f == NULL) {
    if (fuzz_verbose())
      fprintf(stderr, "fuzz-qcow2-open: %s\n", err);
    return 0;
  }
  if (!cluster_past_eof(data, size)) {
    /* The start, runs across 512-byte cluster edges, the middle, the end. */
    read_range(f, 0, READ_MAX);
    read_range(f, 1000, 3000);
    read_range(f, 65536 - 100, 5000);
    read_range(f, f->size / 2, 4096);
    read_range(f, f->size > 4096 ? f->size - 4096 : 0, 4096);
    fmt_pread(f, buf, 1, f->size); /* past the end: io.c refuses it */
  }
  /* Extents are our own L1/L2 walk, never libqcow: no clipping to readable(). */
  span = f->size < EXTENTS_SPAN ? f->size : EXTENTS_SPAN;
  fmt_extents(f, span, 0, count_extent, &n);
  n = 0;
  fmt_extents(f, span, f->size - span, count_extent, &n);
  fmt_close(f);
  return 0;
}

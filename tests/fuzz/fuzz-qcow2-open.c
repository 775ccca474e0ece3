/* libFuzzer entry point for the qcow2 engine: header, tables, chains,
 * compressed clusters.
 *
 * Each input is a whole qcow2 file. It is written as img.qcow2 into a
 * directory of our own that also holds backing.qcow2 (a tiny valid qcow2,
 * which make-corpus.py reproduces for its qemu-img images to name) and
 * backing.raw (a backing file the engine must refuse: it follows qcow2
 * chains only). If the image opens, a few ranges are read and the extents
 * and the layout (blockd-img map) walked, through the public API (format.h).
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

/* Reads [OFFSET, OFFSET+LENGTH) of F, clipped to its size and to READ_MAX. */
static void read_range(struct fmt *f, uint64_t offset, uint64_t length)
{
  if (offset >= f->size)
    return;
  if (length > f->size - offset)
    length = f->size - offset;
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

/* fmt_layout callback: takes MAX_EXTENTS, then asks to stop. */
static int count_layout(void *opaque, const struct fmt_layout *l)
{
  unsigned *n = opaque;

  (void)l;
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
  /* The start, runs across 512-byte cluster edges, the middle, the end. */
  read_range(f, 0, READ_MAX);
  read_range(f, 1000, 3000);
  read_range(f, 65536 - 100, 5000);
  read_range(f, f->size / 2, 4096);
  read_range(f, f->size > 4096 ? f->size - 4096 : 0, 4096);
  fmt_pread(f, buf, 1, f->size); /* past the end: io.c refuses it */
  span = f->size < EXTENTS_SPAN ? f->size : EXTENTS_SPAN;
  fmt_extents(f, span, 0, count_extent, &n);
  n = 0;
  fmt_extents(f, span, f->size - span, count_extent, &n);
  n = 0;
  fmt_layout(f, span, 0, count_layout, &n);
  fmt_close(f);
  return 0;
}

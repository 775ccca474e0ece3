/* Overlay engine against a reference model, through the synchronous and map
 * paths: random aligned and unaligned writes, trims and zeroes straddling
 * clusters; reopen; extents; copy-up races; locks; base identity; chains.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "internal.h"

#define SIZE (8u << 20) /* virtual size of the test disks */
#define CB 14           /* 16 KiB clusters: many clusters, fast */
#define CS (1u << CB)

static char dir[256];
static char base_path[300], ovl_path[300];
static unsigned char *base_data; /* what the base holds */

/* xorshift64*: deterministic random numbers. */
static uint64_t rnd_state = 0x9e3779b97f4a7c15ULL;
static uint64_t rnd(void)
{
  rnd_state ^= rnd_state >> 12;
  rnd_state ^= rnd_state << 25;
  rnd_state ^= rnd_state >> 27;
  return rnd_state * 0x2545f4914f6cdd1dULL;
}

/* Writes SIZE bytes of DATA to a new file PATH. */
static void write_file(const char *path, const void *data, size_t size)
{
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

  assert_true(fd >= 0);
  assert_int_equal(file_pwrite_full(fd, data, size, 0), 0);
  close(fd);
}

/* Makes a base with random data and holes, and an overlay over it. */
static int setup(void **state)
{
  (void)state;
  char err[1024];

  snprintf(dir, sizeof dir, "%s/overlay-model.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  if (mkdtemp(dir) == NULL)
    return -1;
  snprintf(base_path, sizeof base_path, "%s/base.img", dir);
  snprintf(ovl_path, sizeof ovl_path, "%s/ws.ovl", dir);
  base_data = calloc(1, SIZE);
  for (size_t i = 0; i < SIZE; i += 8) {
    /* Every fourth 64 KiB stays zero: a hole once written sparsely. */
    if ((i >> 16) % 4 == 3)
      continue;
    uint64_t v = rnd();
    memcpy(base_data + i, &v, 8);
  }
  int fd = open(base_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0 || ftruncate(fd, SIZE) < 0)
    return -1;
  for (size_t i = 0; i < SIZE; i += 65536)
    if ((i >> 16) % 4 != 3 && file_pwrite_full(fd, base_data + i, 65536, i) < 0)
      return -1;
  close(fd);
  if (overlay_create(ovl_path, base_path, NULL, CB, FMT_CREATE_FORCE, err, sizeof err) < 0) {
    fprintf(stderr, "%s\n", err);
    return -1;
  }
  return 0;
}

/* Removes the test directory. */
static int teardown(void **state)
{
  (void)state;
  char cmd[400];

  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  free(base_data);
  return system(cmd) == 0 ? 0 : -1;
}

/* Opens the overlay or fails the test. */
static struct fmt *open_ovl(const char *path, bool readonly)
{
  char err[1024];
  struct fmt *f = fmt_open(path, NULL, readonly, err, sizeof err);

  if (f == NULL)
    fail_msg("%s", err);
  return f;
}

/* Creates a fresh overlay NAME over the base and opens it for writing. */
static struct fmt *fresh_ovl(const char *name)
{
  char path[320], err[1024];

  snprintf(path, sizeof path, "%s/%s", dir, name);
  if (overlay_create(path, base_path, NULL, CB, FMT_CREATE_FORCE, err, sizeof err) < 0)
    fail_msg("%s", err);
  return open_ovl(path, false);
}

/* Checks that F reads exactly MODEL, through pread and through map. */
static void check_contents(struct fmt *f, const unsigned char *model)
{
  unsigned char *buf = malloc(SIZE);

  assert_int_equal(f->ops->pread(f, buf, SIZE, 0), 0);
  for (size_t i = 0; i < SIZE; i++)
    if (buf[i] != model[i])
      fail_msg("byte %zu: read %#x, model %#x", i, buf[i], model[i]);
  /* Where map succeeds, the mapped file must hold the same bytes. */
  for (int k = 0; k < 200; k++) {
    uint64_t off = rnd() % SIZE, len = 1 + rnd() % (3 * CS);
    struct fmt_map m;
    if (off + len > SIZE)
      len = SIZE - off;
    if (!f->ops->map(f, FMT_MAP_READ, off, len, &m))
      continue;
    assert_true(m.fd >= 0);
    assert_int_equal(file_pread_full(m.fd, buf, len, m.offset), 0);
    assert_memory_equal(buf, model + off, len);
  }
  free(buf);
}

/* ->extents callback: checks zero extents read as zeroes in the model. */
static int check_extent(void *opaque, uint64_t offset, uint64_t length, uint32_t type)
{
  const unsigned char *model = opaque;
  static uint64_t expect;

  if (offset == 0)
    expect = 0;
  assert_int_equal(offset, expect);
  expect = offset + length;
  if (type & FMT_EXTENT_ZERO)
    for (uint64_t i = offset; i < offset + length; i++)
      if (model[i] != 0)
        fail_msg("extent %llu+%llu says zero, model has %#x at %llu",
                 (unsigned long long)offset, (unsigned long long)length, model[i],
                 (unsigned long long)i);
  return 0;
}

/* Random writes (aligned and not, straddling clusters), trims and zeroes;
 * the overlay must equal the model, before and after reopening, and the
 * base must be untouched. */
static void test_overlay_model_random(void **state)
{
  (void)state;
  unsigned char *model = malloc(SIZE), *buf = malloc(4 * CS + 4096);
  struct fmt *f = open_ovl(ovl_path, false);

  memcpy(model, base_data, SIZE);
  for (int op = 0; op < 3000; op++) {
    uint64_t len, off;
    int kind = (int)(rnd() % 10);

    if (rnd() % 2) {
      /* Cluster aligned, one to three clusters. */
      off = (rnd() % (SIZE / CS)) * CS;
      len = CS * (1 + rnd() % 3);
    }
    else {
      off = rnd() % SIZE;
      len = 1 + rnd() % (2 * CS + 100);
    }
    if (off + len > SIZE)
      len = SIZE - off;
    if (kind < 6) {
      for (uint64_t i = 0; i < len; i++)
        buf[i] = (unsigned char)rnd();
      assert_int_equal(f->ops->pwrite(f, buf, len, off, rnd() % 8 == 0 ? FMT_FUA : 0), 0);
      memcpy(model + off, buf, len);
    }
    else if (kind < 8) {
      assert_int_equal(f->ops->trim(f, len, off, 0), 0);
      memset(model + off, 0, len);
    }
    else {
      uint32_t flags = rnd() % 2 ? FMT_MAY_TRIM : 0;
      int r = f->ops->zero(f, len, off, flags | (rnd() % 3 == 0 ? FMT_FAST_ZERO : 0));
      if (r == -ENOTSUP)
        r = f->ops->zero(f, len, off, flags);
      assert_int_equal(r, 0);
      memset(model + off, 0, len);
    }
    if (op % 500 == 0)
      assert_int_equal(f->ops->flush(f), 0);
    if (op % 250 == 0) {
      uint64_t o2 = rnd() % SIZE;
      assert_int_equal(f->ops->pread(f, buf, 1000 < SIZE - o2 ? 1000 : SIZE - o2, o2), 0);
      assert_memory_equal(buf, model + o2, 1000 < SIZE - o2 ? 1000 : SIZE - o2);
    }
  }
  check_contents(f, model);
  assert_int_equal(f->ops->extents(f, SIZE, 0, check_extent, model), 0);
  assert_int_equal(f->ops->flush(f), 0);
  fmt_close(f);

  f = open_ovl(ovl_path, true);
  check_contents(f, model);
  assert_int_equal(f->ops->extents(f, SIZE, 0, check_extent, model), 0);
  fmt_close(f);

  int fd = open(base_path, O_RDONLY);
  assert_int_equal(file_pread_full(fd, buf, 4096, 0), 0);
  unsigned char *b = malloc(SIZE);
  assert_int_equal(file_pread_full(fd, b, SIZE, 0), 0);
  assert_memory_equal(b, base_data, SIZE);
  close(fd);
  free(b);
  free(model);
  free(buf);
}

/* Arguments of one racing writer thread. */
struct racer {
  struct fmt *f; /* the overlay */
  int slot;      /* which 1 KiB of every cluster this thread owns */
};

/* Writes slot SLOT of each of 256 clusters, a different pattern each. */
static void *race_writer(void *arg)
{
  struct racer *r = arg;
  unsigned char buf[1024];

  memset(buf, 0xa0 + r->slot, sizeof buf);
  for (uint64_t c = 0; c < 256; c++)
    if (r->f->ops->pwrite(r->f, buf, sizeof buf, (128 + c) * CS + (uint64_t)r->slot * 1024, 0) < 0)
      return (void *)1;
  return NULL;
}

/* Sixteen threads write disjoint parts of the same unowned clusters: each
 * copy-up must keep the others' bytes. */
static void test_overlay_copyup_race(void **state)
{
  (void)state;
  struct fmt *f = fresh_ovl("race.ovl");
  pthread_t t[16];
  struct racer r[16];
  unsigned char *buf = malloc(CS);

  for (int i = 0; i < 16; i++) {
    r[i] = (struct racer){ f, i };
    pthread_create(&t[i], NULL, race_writer, &r[i]);
  }
  for (int i = 0; i < 16; i++) {
    void *ret;
    pthread_join(t[i], &ret);
    assert_null(ret);
  }
  for (uint64_t c = 0; c < 256; c++) {
    assert_int_equal(f->ops->pread(f, buf, CS, (128 + c) * CS), 0);
    for (int s = 0; s < 16; s++)
      for (int i = 0; i < 1024; i++)
        if (buf[s * 1024 + i] != 0xa0 + s)
          fail_msg("cluster %llu slot %d byte %d lost: %#x", (unsigned long long)(128 + c), s,
                   i, buf[s * 1024 + i]);
  }
  fmt_close(f);
  free(buf);
}

/* map: base fd for unowned reads, overlay fd only for durable writes, and
 * FLUSH on the map path only when the bitmap has nothing new. */
static void test_overlay_map_durable(void **state)
{
  (void)state;
  struct fmt *f = fresh_ovl("map.ovl");
  struct fmt_map m;
  unsigned char buf[100] = { 1 };
  uint64_t off = 300 * (uint64_t)CS;

  assert_int_equal(f->ops->flush(f), 0);
  assert_true(f->ops->map(f, FMT_MAP_FLUSH, 0, 0, &m));
  assert_true(f->ops->map(f, FMT_MAP_READ, off, CS, &m));
  assert_int_equal(m.offset, off); /* the raw base's own offset */
  assert_false(f->ops->map(f, FMT_MAP_WRITE, off, 10, &m));
  assert_false(f->ops->map(f, FMT_MAP_TRIM, off, 10, &m));
  assert_int_equal(f->ops->pwrite(f, buf, sizeof buf, off + 7, 0), 0);
  assert_false(f->ops->map(f, FMT_MAP_FLUSH, 0, 0, &m));
  assert_false(f->ops->map(f, FMT_MAP_WRITE, off, 10, &m)); /* owned, not durable */
  assert_true(f->ops->map(f, FMT_MAP_READ, off, CS, &m));
  assert_true(m.offset != off);
  assert_false(f->ops->map(f, FMT_MAP_READ, off, CS + 1, &m)); /* straddles owned/unowned */
  assert_int_equal(f->ops->flush(f), 0);
  assert_true(f->ops->map(f, FMT_MAP_FLUSH, 0, 0, &m));
  /* Durable now; mapped for io_uring only where the file system takes
   * buffered writes without blocking (file_async_buffered_writes). */
  assert_int_equal(f->ops->map(f, FMT_MAP_WRITE, off, 10, &m),
                   file_async_buffered_writes(m.fd));
  assert_int_equal(f->ops->zero(f, 10, off + CS + 5, FMT_FAST_ZERO), -ENOTSUP);
  fmt_close(f);
}

/* A second writer, or a reader beside a writer, is refused; in one process
 * that is a file given twice (test-lock.c has the other cases). */
static void test_overlay_lock_exclusive(void **state)
{
  (void)state;
  char err[1024];
  struct fmt *w = open_ovl(ovl_path, false), *x;

  x = fmt_open(ovl_path, NULL, false, err, sizeof err);
  assert_null(x);
  assert_non_null(strstr(err, "ws.ovl: given twice"));
  x = fmt_open(ovl_path, NULL, true, err, sizeof err);
  assert_null(x);
  fmt_close(w);
  struct fmt *r1 = open_ovl(ovl_path, true), *r2 = open_ovl(ovl_path, true);
  x = fmt_open(ovl_path, NULL, false, err, sizeof err);
  assert_null(x);
  fmt_close(r1);
  fmt_close(r2);
}

/* Three overlays deep: each level's writes show through, the others' don't leak down. */
static void test_overlay_chain_three(void **state)
{
  (void)state;
  char p1[320], p2[320], p3[320], err[1024];
  unsigned char *model = malloc(SIZE), buf[5000];
  struct fmt *f;
  const char *paths[3] = { p1, p2, p3 };

  snprintf(p1, sizeof p1, "%s/c1.ovl", dir);
  snprintf(p2, sizeof p2, "%s/c2.ovl", dir);
  snprintf(p3, sizeof p3, "%s/c3.ovl", dir);
  memcpy(model, base_data, SIZE);
  for (int level = 0; level < 3; level++) {
    if (overlay_create(paths[level], level == 0 ? base_path : paths[level - 1], NULL,
                       12 + level * 2, FMT_CREATE_FORCE,
                       err, sizeof err) < 0)
      fail_msg("%s", err);
    f = open_ovl(paths[level], false);
    for (int k = 0; k < 50; k++) {
      uint64_t off = rnd() % (SIZE - sizeof buf), len = 1 + rnd() % sizeof buf;
      memset(buf, 0x11 * (level + 1) + k, len);
      if (k % 5 == 4) {
        assert_int_equal(f->ops->trim(f, len, off, 0), 0);
        memset(model + off, 0, len);
      }
      else {
        assert_int_equal(f->ops->pwrite(f, buf, len, off, 0), 0);
        memcpy(model + off, buf, len);
      }
    }
    assert_int_equal(f->ops->flush(f), 0);
    fmt_close(f);
  }
  f = open_ovl(p3, true);
  check_contents(f, model);
  assert_int_equal(f->ops->extents(f, SIZE, 0, check_extent, model), 0);
  fmt_close(f);
  /* A base in use by a reader cannot be opened for writing. */
  f = open_ovl(p3, true);
  assert_null(fmt_open(p2, NULL, false, err, sizeof err));
  assert_non_null(strstr(err, "c2.ovl: given twice (same file as "));
  assert_non_null(strstr(err, "c2.ovl, the base of "));
  fmt_close(f);
  free(model);
}

/* A changed or missing base is refused with a message naming it. */
static void test_overlay_base_changed(void **state)
{
  (void)state;
  char b[320], o[320], err[1024], cmd[700];
  struct fmt *f;

  snprintf(b, sizeof b, "%s/small.img", dir);
  snprintf(o, sizeof o, "%s/small.ovl", dir);
  write_file(b, base_data, 1 << 20);
  assert_int_equal(overlay_create(o, b, NULL, 16, FMT_CREATE_FORCE, err, sizeof err), 0);
  f = open_ovl(o, false);
  fmt_close(f);
  /* Same size, one byte different. */
  unsigned char x = base_data[10] ^ 0xff;
  int fd = open(b, O_WRONLY);
  assert_int_equal(file_pwrite_full(fd, &x, 1, 10), 0);
  close(fd);
  assert_null(fmt_open(o, NULL, false, err, sizeof err));
  assert_non_null(strstr(err, "small.img changed since the overlay was created"));
  snprintf(cmd, sizeof cmd, "rm -f '%s'", b);
  assert_int_equal(system(cmd), 0);
  assert_null(fmt_open(o, NULL, true, err, sizeof err));
  assert_non_null(strstr(err, "small.img: No such file or directory"));
  assert_non_null(strstr(err, "small.ovl"));
}

/* A base whose size is not a multiple of the cluster size (nor of 512):
 * the last, short cluster copies up, trims and reads like the others. */
static void test_overlay_odd_size(void **state)
{
  (void)state;
  const size_t size = 100000;
  char b[320], o[320], err[1024];
  unsigned char model[100000], buf[100000];
  struct fmt *f;

  snprintf(b, sizeof b, "%s/odd.img", dir);
  snprintf(o, sizeof o, "%s/odd.ovl", dir);
  write_file(b, base_data, size);
  memcpy(model, base_data, size);
  assert_int_equal(overlay_create(o, b, NULL, 12, FMT_CREATE_FORCE, err, sizeof err), 0);
  f = open_ovl(o, false);
  assert_int_equal(f->size, size);
  for (int k = 0; k < 300; k++) {
    uint64_t off = size - 1 - rnd() % 9000, len = 1 + rnd() % (size - off);
    if (k % 3 == 0) {
      memset(buf, k, len);
      assert_int_equal(f->ops->pwrite(f, buf, len, off, 0), 0);
      memset(model + off, k, len);
    }
    else {
      assert_int_equal(k % 3 == 1 ? f->ops->trim(f, len, off, 0)
                                  : f->ops->zero(f, len, off, FMT_MAY_TRIM), 0);
      memset(model + off, 0, len);
    }
  }
  assert_int_equal(f->ops->pread(f, buf, size, 0), 0);
  assert_memory_equal(buf, model, size);
  assert_int_equal(f->ops->extents(f, size, 0, check_extent, model), 0);
  assert_int_equal(f->ops->flush(f), 0);
  fmt_close(f);
  f = open_ovl(o, true);
  assert_int_equal(f->ops->pread(f, buf, size, 0), 0);
  assert_memory_equal(buf, model, size);
  fmt_close(f);
}

/* A truncated or garbled overlay is refused with a message naming it. */
static void test_overlay_header_corrupt(void **state)
{
  (void)state;
  char b[320], o[320], err[1024];
  int fd;

  snprintf(b, sizeof b, "%s/hdr.img", dir);
  snprintf(o, sizeof o, "%s/hdr.ovl", dir);
  write_file(b, base_data, 1 << 20);
  assert_int_equal(overlay_create(o, b, NULL, 12, FMT_CREATE_FORCE, err, sizeof err), 0);
  assert_int_equal(truncate(o, 4096), 0);
  assert_null(fmt_open(o, NULL, true, err, sizeof err));
  assert_non_null(strstr(err, "hdr.ovl: corrupt overlay header"));
  assert_int_equal(overlay_create(o, b, NULL, 12, FMT_CREATE_FORCE, err, sizeof err), 0);
  fd = open(o, O_WRONLY);
  assert_int_equal(file_pwrite_full(fd, "\x07", 1, 8), 0); /* version 7 */
  close(fd);
  assert_null(fmt_open(o, NULL, true, err, sizeof err));
  assert_non_null(strstr(err, "hdr.ovl: overlay format version 7 not supported"));
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_overlay_model_random),
    cmocka_unit_test(test_overlay_copyup_race),
    cmocka_unit_test(test_overlay_map_durable),
    cmocka_unit_test(test_overlay_lock_exclusive),
    cmocka_unit_test(test_overlay_chain_three),
    cmocka_unit_test(test_overlay_base_changed),
    cmocka_unit_test(test_overlay_odd_size),
    cmocka_unit_test(test_overlay_header_corrupt),
  };

  return cmocka_run_group_tests(tests, setup, teardown);
}

/* Image locks (formats/lock.c): the bytes each kind of open holds, seen from
 * another open file description as QEMU sees them; conflicts with locks
 * another opener took; files given twice in one process; create.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "internal.h"

static char dir[256];
static char raw_path[300], base_path[300], ovl_path[300], link_path[300], sym_path[300];

/* Makes a raw image, a base with an overlay over it, a hard link to and a
 * symbolic link to the raw image. */
static int setup(void **state)
{
  (void)state;
  char err[1024];
  int fd;

  snprintf(dir, sizeof dir, "%s/lock.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  if (mkdtemp(dir) == NULL)
    return -1;
  snprintf(raw_path, sizeof raw_path, "%s/ws.img", dir);
  snprintf(base_path, sizeof base_path, "%s/base.img", dir);
  snprintf(ovl_path, sizeof ovl_path, "%s/ws.ovl", dir);
  snprintf(link_path, sizeof link_path, "%s/hard.img", dir);
  snprintf(sym_path, sizeof sym_path, "%s/sym.img", dir);
  for (int i = 0; i < 2; i++) {
    fd = open(i == 0 ? raw_path : base_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || ftruncate(fd, 1 << 20) < 0 || close(fd) < 0)
      return -1;
  }
  if (link(raw_path, link_path) < 0 || symlink("ws.img", sym_path) < 0)
    return -1;
  if (overlay_create(ovl_path, base_path, NULL, 16, 0, err, sizeof err) < 0) {
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
  return system(cmd) == 0 ? 0 : -1;
}

/* The lock bytes of PATH that some open other than a fresh one holds, as
 * QEMU tests them (F_OFD_GETLK for a write lock): bit i for byte 100 + i,
 * bit 4 + i for byte 200 + i. Bytes outside 100-103 and 200-203 must be free. */
static unsigned held_bytes(const char *path)
{
  static const int outside[] = { 0, 1, 99, 104, 199, 204, 4096 };
  unsigned held = 0;
  int fd = open(path, O_RDONLY);

  assert_true(fd >= 0);
  for (int i = 0; i < 8; i++) {
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_len = 1,
                        .l_start = (i < 4 ? 100 : 196) + i };
    assert_int_equal(fcntl(fd, F_OFD_GETLK, &fl), 0);
    if (fl.l_type != F_UNLCK)
      held |= 1u << i;
  }
  for (size_t i = 0; i < sizeof outside / sizeof outside[0]; i++) {
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_len = 1,
                        .l_start = outside[i] };
    assert_int_equal(fcntl(fd, F_OFD_GETLK, &fl), 0);
    assert_int_equal(fl.l_type, F_UNLCK);
  }
  close(fd);
  return held;
}

/* Byte masks of held_bytes: QEMU's permissions held, and refused to others. */
#define HOLDS(p) (p)
#define REFUSES(p) ((p) << 4)
#define CONSISTENT_READ 1u
#define WRITE 2u
#define WRITE_UNCHANGED 4u
#define RESIZE 8u

/* Opens PATH as fmt_open does, or fails the test. */
static struct fmt *open_ok(const char *path, bool readonly)
{
  char err[1024];
  struct fmt *f = fmt_open(path, NULL, readonly, err, sizeof err);

  if (f == NULL)
    fail_msg("%s", err);
  return f;
}

/* fmt_open of PATH must fail with a message containing WANT. */
static void open_refused(const char *path, bool readonly, const char *want)
{
  char err[1024] = "";
  struct fmt *f = fmt_open(path, NULL, readonly, err, sizeof err);

  if (f != NULL || strstr(err, want) == NULL)
    fail_msg("open %s %s: got '%s', want '%s'", path, readonly ? "ro" : "rw",
             f != NULL ? "success" : err, want);
}

/* Takes a shared lock on byte OFF of PATH on an open of its own, as another
 * process (QEMU) would. Returns the fd holding it. */
static int foreign_lock(const char *path, int off)
{
  int fd = open(path, O_RDONLY);
  struct flock fl = { .l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = off, .l_len = 1 };

  assert_true(fd >= 0);
  assert_int_equal(fcntl(fd, F_OFD_SETLK, &fl), 0);
  return fd;
}

/* A writer holds what a QEMU writer holds: consistent read and write,
 * refusing write and resize; a reader holds consistent read and refuses the
 * same; a shared open takes nothing. All go when the image is closed. */
static void test_lock_bytes(void **state)
{
  (void)state;
  char err[1024];
  struct fmt *f;

  f = open_ok(raw_path, false);
  assert_int_equal(held_bytes(raw_path),
                   HOLDS(CONSISTENT_READ | WRITE) | REFUSES(WRITE | RESIZE));
  fmt_close(f);
  assert_int_equal(held_bytes(raw_path), 0);

  f = open_ok(raw_path, true);
  assert_int_equal(held_bytes(raw_path), HOLDS(CONSISTENT_READ) | REFUSES(WRITE | RESIZE));
  fmt_close(f);

  f = fmt_open_shared(raw_path, NULL, err, sizeof err);
  assert_non_null(f);
  assert_int_equal(held_bytes(raw_path), 0);
  assert_int_equal(lock_in_use(f), LOCK_UNUSED);
  fmt_close(f);

  /* An overlay's base is a reader, whatever the overlay is. */
  f = open_ok(ovl_path, false);
  assert_int_equal(held_bytes(ovl_path),
                   HOLDS(CONSISTENT_READ | WRITE) | REFUSES(WRITE | RESIZE));
  assert_int_equal(held_bytes(base_path), HOLDS(CONSISTENT_READ) | REFUSES(WRITE | RESIZE));
  fmt_close(f);
  assert_int_equal(held_bytes(ovl_path) | held_bytes(base_path), 0);

  f = fmt_open_shared(ovl_path, NULL, err, sizeof err);
  assert_non_null(f);
  assert_int_equal(held_bytes(ovl_path) | held_bytes(base_path), 0);
  fmt_close(f);
}

/* Locks another opener holds: each refuses exactly what QEMU's rules say. */
static void test_lock_foreign(void **state)
{
  (void)state;
  char err[1024];
  struct fmt *f;
  int fd;

  /* A reader that refuses writers (QEMU reading a backing file). */
  fd = foreign_lock(raw_path, 201);
  open_refused(raw_path, false, "ws.img: locked by another process that refuses writers");
  fmt_close(open_ok(raw_path, true));
  close(fd);

  /* A writer (QEMU, qemu-storage-daemon). */
  fd = foreign_lock(raw_path, 101);
  open_refused(raw_path, false, "ws.img: locked by another process that writes it");
  open_refused(raw_path, true, "ws.img: locked by another process that writes it");
  f = fmt_open_shared(raw_path, NULL, err, sizeof err);
  assert_non_null(f);
  assert_int_equal(lock_in_use(f), LOCK_WRITTEN);
  fmt_close(f);
  close(fd);

  /* One that refuses readers (a QEMU mirror target): nobody may read. */
  fd = foreign_lock(raw_path, 200);
  open_refused(raw_path, true, "ws.img: locked by another process that refuses readers");
  close(fd);

  /* One that resizes: a writer and a reader both refuse it. */
  fd = foreign_lock(raw_path, 103);
  open_refused(raw_path, true, "ws.img: locked by another process that resizes it");
  close(fd);

  /* A reader that lets others write (qemu-img -U, qemu-io -r) holds only
   * byte 100: a writer and a reader may open beside it. */
  fd = foreign_lock(raw_path, 100);
  f = open_ok(raw_path, false);
  assert_int_equal(lock_in_use(f), LOCK_IN_USE);
  fmt_close(f);
  fmt_close(open_ok(raw_path, true));
  close(fd);

  /* A refused open leaves none of its bytes behind. */
  fd = foreign_lock(raw_path, 101);
  open_refused(raw_path, false, "writes it");
  close(fd);
  assert_int_equal(held_bytes(raw_path), 0);
}

/* lock_check tests without taking; lock_in_use sees a reader. */
static void test_lock_check(void **state)
{
  (void)state;
  char err[1024];
  struct fmt *f = open_ok(raw_path, true), *g;
  int fd = open(raw_path, O_RDONLY);

  assert_true(fd >= 0);
  assert_int_equal(lock_check(fd, raw_path, true, err, sizeof err), 0);
  assert_int_equal(lock_check(fd, raw_path, false, err, sizeof err), -1);
  assert_non_null(strstr(err, "ws.img: locked by another process that refuses writers"));
  assert_int_equal(held_bytes(raw_path), HOLDS(CONSISTENT_READ) | REFUSES(WRITE | RESIZE));
  g = fmt_open_shared(raw_path, NULL, err, sizeof err);
  assert_non_null(g);
  assert_int_equal(lock_in_use(g), LOCK_IN_USE);
  fmt_close(g);
  fmt_close(f);
  assert_int_equal(lock_check(fd, raw_path, false, err, sizeof err), 0);
  close(fd);
}

/* One file opened twice by this process, under any name, with a writer
 * among the opens, is a file given twice; two readers share it. */
static void test_lock_given_twice(void **state)
{
  (void)state;
  char want[1400];
  struct fmt *f, *g;

  f = open_ok(raw_path, false);
  snprintf(want, sizeof want, "%s: given twice (same file as %s)", link_path, raw_path);
  open_refused(link_path, false, want);
  snprintf(want, sizeof want, "%s: given twice (same file as %s)", sym_path, raw_path);
  open_refused(sym_path, true, want);
  fmt_close(f);

  f = open_ok(raw_path, true);
  g = open_ok(link_path, true);
  snprintf(want, sizeof want, "%s: given twice (same file as %s)", sym_path, raw_path);
  open_refused(sym_path, false, want);
  fmt_close(f);
  fmt_close(g);

  /* An overlay's base, given again for writing, or the other way round. */
  f = open_ok(ovl_path, true);
  snprintf(want, sizeof want, "%s: given twice (same file as %s, the base of %s)", base_path,
           base_path, ovl_path);
  open_refused(base_path, false, want);
  fmt_close(open_ok(base_path, true));
  fmt_close(f);
  f = open_ok(base_path, false);
  snprintf(want, sizeof want, "%s: cannot open base image: %s: given twice", ovl_path, base_path);
  open_refused(ovl_path, true, want);
  fmt_close(f);

  /* Everything closed: the process's list is empty again. */
  fmt_close(open_ok(ovl_path, false));
  fmt_close(open_ok(base_path, false));
}

/* A file being created or overwritten refuses, and is refused by, any
 * other holder. */
static void test_lock_create(void **state)
{
  (void)state;
  char err[1024], want[1400];
  bool created;
  struct fmt *f = open_ok(raw_path, true);
  int fd;

  assert_int_equal(fmt_create_file(raw_path, FMT_CREATE_FORCE, &created, err, sizeof err), -1);
  snprintf(want, sizeof want, "%s: locked by another process that reads it: not overwritten",
           raw_path);
  assert_string_equal(err, want);
  fmt_close(f);
  fd = fmt_create_file(raw_path, FMT_CREATE_FORCE, &created, err, sizeof err);
  assert_true(fd >= 0);
  assert_false(created);
  assert_int_equal(held_bytes(raw_path), 0xff);
  open_refused(raw_path, true, "ws.img: locked by another process that writes it");
  close(fd);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_lock_bytes),
    cmocka_unit_test(test_lock_foreign),
    cmocka_unit_test(test_lock_check),
    cmocka_unit_test(test_lock_given_twice),
    cmocka_unit_test(test_lock_create),
  };

  return cmocka_run_group_tests(tests, setup, teardown);
}

/* Unit tests: the one-line message writer (fmt_vprint_line, formats/format.c). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "format.h"

/* The line fmt_vprint_line writes for PREFIX and FMT; the caller frees it. */
static char *__attribute__((format(printf, 2, 3))) line_of(const char *prefix, const char *fmt, ...)
{
  int saved = errno; /* for %m, whatever open_memstream does to it */
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  va_list ap;

  assert_non_null(f);
  errno = saved;
  va_start(ap, fmt);
  fmt_vprint_line(f, prefix, fmt, ap);
  va_end(ap);
  fclose(f);
  return buf;
}

static void test_control_bytes(void **state)
{
  char *s;

  (void)state;
  s = line_of("p: ", "%s: %s", "a\x1b]0;x\x07" "b", "tab\there");
  assert_string_equal(s, "p: a\\x1b]0;x\\x07b: tab\\x09here\n");
  free(s);
  /* DEL too, a newline inside cannot forge a second line, UTF-8 stays. */
  s = line_of("", "%s", "del\x7f nl\nforged caf\xc3\xa9");
  assert_string_equal(s, "del\\x7f nl\\x0aforged caf\xc3\xa9\n");
  free(s);
}

static void test_errno_kept(void **state)
{
  char *s;

  (void)state;
  errno = ENOENT;
  s = line_of("blockd: ", "open: %m");
  assert_int_equal(errno, ENOENT);
  assert_string_equal(s, "blockd: open: No such file or directory\n");
  free(s);
}

static void test_long_line_cut(void **state)
{
  char msg[6000], *s;
  size_t n;

  (void)state;
  /* Every byte escaped to four: the line is cut, still one line. */
  memset(msg, '\x01', sizeof msg - 1);
  msg[sizeof msg - 1] = '\0';
  s = line_of("p: ", "%s", msg);
  n = strlen(s);
  assert_true(n < 8192);
  assert_memory_equal(s, "p: \\x01\\x01", 11);
  assert_string_equal(s + n - 4, "...\n");
  for (size_t i = 0; i + 1 < n; i++)
    assert_true(s[i] >= 0x20 && s[i] != 0x7f);
  free(s);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_control_bytes),
    cmocka_unit_test(test_errno_kept),
    cmocka_unit_test(test_long_line_cut),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}

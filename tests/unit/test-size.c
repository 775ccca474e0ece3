/* Unit tests: human-readable sizes (formats/size.c). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "format.h"

static void test_size_parse(void **state)
{
  uint64_t v;

  (void)state;
  assert_int_equal(size_parse("4096", &v), 0);
  assert_true(v == 4096);
  assert_int_equal(size_parse("64M", &v), 0);
  assert_true(v == 64ULL << 20);
  assert_int_equal(size_parse("1.5G", &v), 0);
  assert_true(v == 3ULL << 29);
  assert_int_equal(size_parse("2TiB", &v), 0);
  assert_true(v == 2ULL << 40);
  assert_int_equal(size_parse("10k", &v), 0);
  assert_true(v == 10240);
  assert_int_equal(size_parse("", &v), -EINVAL);
  assert_int_equal(size_parse("-1", &v), -EINVAL);
  assert_int_equal(size_parse("12Q", &v), -EINVAL);
  assert_int_equal(size_parse("0.3", &v), -EINVAL);
  assert_int_equal(size_parse("100E", &v), -ERANGE);
}

int main(void)
{
  const struct CMUnitTest tests[] = { cmocka_unit_test(test_size_parse) };

  return cmocka_run_group_tests(tests, NULL, NULL);
}

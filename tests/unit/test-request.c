/* Unit tests: request validation and errno mapping (request.c). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "nbd.h"

static struct fmt rw_fmt = { .size = 1 << 20, .can_trim = true };
static struct fmt ro_fmt = { .size = 1 << 20, .readonly = true };
static struct export rw = { .name = (char *)"", .fmt = &rw_fmt };
static struct export ro = { .name = (char *)"", .fmt = &ro_fmt };

/* Validates a request built from its fields on a structured, meta connection. */
static int check(struct export *e, uint16_t type, uint16_t flags, uint64_t offset, uint32_t count)
{
  struct nbd_request r = { .magic = NBD_REQUEST_MAGIC, .type = type, .flags = flags,
                           .offset = offset, .count = count };

  return request_validate(e, &r, true, true);
}

static void test_request_in_range(void **state)
{
  (void)state;
  assert_int_equal(check(&rw, NBD_CMD_READ, 0, 0, 4096), 0);
  assert_int_equal(check(&rw, NBD_CMD_WRITE, NBD_CMD_FLAG_FUA, (1 << 20) - 1, 1), 0);
  assert_int_equal(check(&rw, NBD_CMD_TRIM, 0, 0, 1 << 20), 0);
  assert_int_equal(check(&rw, NBD_CMD_WRITE_ZEROES,
                         NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO | NBD_CMD_FLAG_FUA, 0, 1), 0);
  assert_int_equal(check(&rw, NBD_CMD_BLOCK_STATUS, NBD_CMD_FLAG_REQ_ONE, 0, 1 << 20), 0);
  assert_int_equal(check(&rw, NBD_CMD_CACHE, 0, 4096, 4096), 0);
  assert_int_equal(check(&rw, NBD_CMD_FLUSH, 0, 0, 0), 0);
  assert_int_equal(check(&rw, NBD_CMD_READ, NBD_CMD_FLAG_DF, 0, 65536), 0);
}

static void test_request_out_of_range(void **state)
{
  (void)state;
  assert_int_equal(check(&rw, NBD_CMD_READ, 0, 1 << 20, 1), EINVAL);
  assert_int_equal(check(&rw, NBD_CMD_READ, 0, UINT64_MAX, 2), EINVAL);
  assert_int_equal(check(&rw, NBD_CMD_WRITE, 0, (1 << 20) - 1, 2), ENOSPC);
  assert_int_equal(check(&rw, NBD_CMD_WRITE_ZEROES, 0, 1 << 21, 1), ENOSPC);
  assert_int_equal(check(&rw, NBD_CMD_TRIM, 0, UINT64_MAX - 1, 4), EINVAL);
  assert_int_equal(check(&rw, NBD_CMD_BLOCK_STATUS, 0, 1 << 20, 1), EINVAL);
}

static void test_request_bad_flags_and_fields(void **state)
{
  (void)state;
  /* FUA is valid on every command of a writable export (proto.md)... */
  assert_int_equal(check(&rw, NBD_CMD_READ, NBD_CMD_FLAG_FUA, 0, 1), 0);
  assert_int_equal(check(&rw, NBD_CMD_FLUSH, NBD_CMD_FLAG_FUA, 0, 0), 0);
  assert_int_equal(check(&rw, NBD_CMD_CACHE, NBD_CMD_FLAG_FUA, 0, 1), 0);
  /* ...and not advertised, so refused, on a read-only one. */
  assert_int_equal(check(&ro, NBD_CMD_READ, NBD_CMD_FLAG_FUA, 0, 1), EINVAL);
  assert_int_equal(check(&rw, NBD_CMD_WRITE, NBD_CMD_FLAG_NO_HOLE, 0, 1), EINVAL);
  assert_int_equal(check(&rw, NBD_CMD_READ, 1 << 9, 0, 1), EINVAL);
  assert_int_equal(check(&rw, 42, 0, 0, 1), EINVAL);
  assert_int_equal(check(&rw, NBD_CMD_FLUSH, 0, 0, 1), EINVAL);
  assert_int_equal(check(&rw, NBD_CMD_FLUSH, 0, 512, 0), EINVAL);
  assert_int_equal(check(&rw, NBD_CMD_READ, 0, 0, 0), EINVAL);
  assert_int_equal(check(&rw, NBD_CMD_READ, NBD_CMD_FLAG_DF, 0, 65537), EOVERFLOW);
}

static void test_request_readonly(void **state)
{
  (void)state;
  assert_int_equal(check(&ro, NBD_CMD_WRITE, 0, 0, 1), EPERM);
  assert_int_equal(check(&ro, NBD_CMD_TRIM, 0, 0, 1), EPERM);
  assert_int_equal(check(&ro, NBD_CMD_WRITE_ZEROES, 0, 0, 1), EPERM);
  assert_int_equal(check(&ro, NBD_CMD_READ, 0, 0, 1), 0);
  assert_int_equal(check(&ro, NBD_CMD_WRITE, NBD_CMD_FLAG_FUA, 0, 1), EPERM);
}

static void test_request_block_status_needs_negotiation(void **state)
{
  struct nbd_request r = { .magic = NBD_REQUEST_MAGIC, .type = NBD_CMD_BLOCK_STATUS,
                           .count = 512 };

  (void)state;
  assert_int_equal(request_validate(&rw, &r, false, false), EINVAL);
  assert_int_equal(request_validate(&rw, &r, true, false), EINVAL);
  assert_int_equal(request_validate(&rw, &r, true, true), 0);
}

static void test_request_framing(void **state)
{
  struct nbd_request r = { .magic = NBD_REQUEST_MAGIC, .type = NBD_CMD_WRITE,
                           .count = BLOCKD_MAX_PAYLOAD };

  (void)state;
  assert_int_equal(request_check_framing(&r), 0);
  r.count++;
  assert_int_equal(request_check_framing(&r), -1);
  r.type = NBD_CMD_TRIM; /* no payload: any length frames fine */
  assert_int_equal(request_check_framing(&r), 0);
  r.magic = 0x12345678;
  assert_int_equal(request_check_framing(&r), -1);
}

static void test_request_nbd_errno(void **state)
{
  (void)state;
  assert_int_equal(nbd_errno(0), 0);
  assert_int_equal(nbd_errno(EPERM), NBD_EPERM);
  assert_int_equal(nbd_errno(EROFS), NBD_EPERM);
  assert_int_equal(nbd_errno(EINVAL), NBD_EINVAL);
  assert_int_equal(nbd_errno(ENOSPC), NBD_ENOSPC);
  assert_int_equal(nbd_errno(EDQUOT), NBD_ENOSPC);
  assert_int_equal(nbd_errno(EOVERFLOW), NBD_EOVERFLOW);
  assert_int_equal(nbd_errno(ENOTSUP), NBD_ENOTSUP);
  assert_int_equal(nbd_errno(ENOMEM), NBD_ENOMEM);
  assert_int_equal(nbd_errno(EBADF), NBD_EIO);
}

/* Options are logged by name; an unknown one by its number. */
static void test_request_opt_name(void **state)
{
  char buf[NBD_OPT_NAME_MAX];

  (void)state;
  assert_string_equal(nbd_opt_name(NBD_OPT_GO, buf, sizeof buf), "NBD_OPT_GO");
  assert_string_equal(nbd_opt_name(NBD_OPT_SET_META_CONTEXT, buf, sizeof buf),
                      "NBD_OPT_SET_META_CONTEXT");
  assert_string_equal(nbd_opt_name(NBD_OPT_STARTTLS, buf, sizeof buf), "NBD_OPT_STARTTLS");
  assert_string_equal(nbd_opt_name(4294967295u, buf, sizeof buf), "unknown option 4294967295");
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_request_in_range),
    cmocka_unit_test(test_request_out_of_range),
    cmocka_unit_test(test_request_bad_flags_and_fields),
    cmocka_unit_test(test_request_readonly),
    cmocka_unit_test(test_request_block_status_needs_negotiation),
    cmocka_unit_test(test_request_framing),
    cmocka_unit_test(test_request_nbd_errno),
    cmocka_unit_test(test_request_opt_name),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests: reply encoding on the wire (reply.c reply_encode) and the
 * layout of the protocol structs (protocol.h). */
#include <endian.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "nbd.h"


/* Flattens a request's encoded reply into BUF; returns its length. */
static size_t flatten(const struct nbd_req *req, unsigned char *buf)
{
  size_t n = 0;

  for (int i = 0; i < req->niov; i++) {
    memcpy(buf + n, req->iov[i].iov_base, req->iov[i].iov_len);
    n += req->iov[i].iov_len;
  }
  assert_int_equal(n, req->reply_len);
  return n;
}

static uint32_t get32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return be32toh(v); }
static uint16_t get16(const unsigned char *p) { uint16_t v; memcpy(&v, p, 2); return be16toh(v); }
static uint64_t get64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return be64toh(v); }

static void test_reply_struct_sizes(void **state)
{
  (void)state;
  assert_int_equal(sizeof(struct nbd_new_handshake), 18);
  assert_int_equal(sizeof(struct nbd_new_option), 16);
  assert_int_equal(sizeof(struct nbd_fixed_new_option_reply), 20);
  assert_int_equal(sizeof(struct nbd_export_name_reply), 10);
  assert_int_equal(sizeof(struct nbd_info_export), 12);
  assert_int_equal(sizeof(struct nbd_info_block_size), 14);
  assert_int_equal(sizeof(struct nbd_request), 28);
  assert_int_equal(sizeof(struct nbd_simple_reply), 16);
  assert_int_equal(sizeof(struct nbd_structured_reply), 20);
  assert_int_equal(sizeof(struct nbd_chunk_offset_hole), 12);
  assert_int_equal(sizeof(struct nbd_chunk_error), 6);
  assert_int_equal(sizeof(struct nbd_block_descriptor), 8);
}

static void test_reply_simple_read(void **state)
{
  char data[5] = "abcd";
  struct nbd_req req = { .buf = data,
                         .h = { .type = NBD_CMD_READ, .cookie = 0x1122334455667788, .count = 4 } };
  unsigned char buf[64];

  (void)state;
  reply_encode(&req, false);
  assert_int_equal(flatten(&req, buf), 16 + 4);
  assert_int_equal(get32(buf), NBD_SIMPLE_REPLY_MAGIC);
  assert_int_equal(get32(buf + 4), 0);
  assert_true(get64(buf + 8) == 0x1122334455667788);
  assert_memory_equal(buf + 16, "abcd", 4);
}

static void test_reply_simple_error_has_no_data(void **state)
{
  struct nbd_req req = { .err = ENOSPC,
                         .h = { .type = NBD_CMD_WRITE, .cookie = 7, .count = 4 } };
  unsigned char buf[64];

  (void)state;
  reply_encode(&req, false);
  assert_int_equal(flatten(&req, buf), 16);
  assert_int_equal(get32(buf + 4), NBD_ENOSPC);
}

static void test_reply_structured_read_data(void **state)
{
  char data[4] = { 1, 2, 3, 4 };
  struct nbd_req req = { .buf = data,
                         .h = { .type = NBD_CMD_READ, .cookie = 9, .offset = 4096, .count = 4 } };
  unsigned char buf[64];

  (void)state;
  reply_encode(&req, true);
  assert_int_equal(flatten(&req, buf), 20 + 8 + 4);
  assert_int_equal(get32(buf), NBD_STRUCTURED_REPLY_MAGIC);
  assert_int_equal(get16(buf + 4), NBD_REPLY_FLAG_DONE);
  assert_int_equal(get16(buf + 6), NBD_REPLY_TYPE_OFFSET_DATA);
  assert_true(get64(buf + 8) == 9);
  assert_int_equal(get32(buf + 16), 8 + 4);
  assert_true(get64(buf + 20) == 4096);
  assert_memory_equal(buf + 28, data, 4);
}

static void test_reply_structured_read_hole(void **state)
{
  struct nbd_req req = { .hole = true,
                         .h = { .type = NBD_CMD_READ, .cookie = 9, .offset = 512, .count = 65536 } };
  unsigned char buf[64];

  (void)state;
  reply_encode(&req, true);
  assert_int_equal(flatten(&req, buf), 20 + 12);
  assert_int_equal(get16(buf + 6), NBD_REPLY_TYPE_OFFSET_HOLE);
  assert_int_equal(get32(buf + 16), 12);
  assert_true(get64(buf + 20) == 512);
  assert_int_equal(get32(buf + 28), 65536);
}

static void test_reply_structured_error(void **state)
{
  struct nbd_req req = { .err = EINVAL,
                         .h = { .type = NBD_CMD_READ, .cookie = 3, .count = 1 } };
  unsigned char buf[64];

  (void)state;
  reply_encode(&req, true);
  assert_int_equal(flatten(&req, buf), 20 + 6);
  assert_int_equal(get16(buf + 6), NBD_REPLY_TYPE_ERROR);
  assert_int_equal(get32(buf + 16), 6);
  assert_int_equal(get32(buf + 20), NBD_EINVAL);
  assert_int_equal(get16(buf + 24), 0);
}

static void test_reply_structured_write_ok_is_simple(void **state)
{
  struct nbd_req req = { .h = { .type = NBD_CMD_WRITE, .cookie = 5 } };
  unsigned char buf[64];

  (void)state;
  reply_encode(&req, true);
  assert_int_equal(flatten(&req, buf), 16);
  assert_int_equal(get32(buf), NBD_SIMPLE_REPLY_MAGIC);
}

static void test_reply_block_status(void **state)
{
  struct nbd_block_descriptor d[2] = {
    { htobe32(4096), htobe32(0) },
    { htobe32(8192), htobe32(NBD_STATE_HOLE | NBD_STATE_ZERO) },
  };
  struct nbd_req req = { .extents = d, .nr_extents = 2,
                         .h = { .type = NBD_CMD_BLOCK_STATUS, .cookie = 1, .count = 12288 } };
  unsigned char buf[64];

  (void)state;
  reply_encode(&req, true);
  assert_int_equal(flatten(&req, buf), 20 + 4 + 16);
  assert_int_equal(get16(buf + 6), NBD_REPLY_TYPE_BLOCK_STATUS);
  assert_int_equal(get32(buf + 16), 4 + 16);
  assert_int_equal(get32(buf + 20), META_BASE_ALLOCATION_ID);
  assert_int_equal(get32(buf + 24), 4096);
  assert_int_equal(get32(buf + 36), 3);
  req.extents = NULL; /* on the stack */
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_reply_struct_sizes),
    cmocka_unit_test(test_reply_simple_read),
    cmocka_unit_test(test_reply_simple_error_has_no_data),
    cmocka_unit_test(test_reply_structured_read_data),
    cmocka_unit_test(test_reply_structured_read_hole),
    cmocka_unit_test(test_reply_structured_error),
    cmocka_unit_test(test_reply_structured_write_ok_is_simple),
    cmocka_unit_test(test_reply_block_status),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests: blockd's command line (options.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "blockd.h"

/* Parses a NULL-terminated argument list. */
static enum options_result parse(struct options *o, char *err, const char *const *args)
{
  char *argv[32];
  int argc = 0;

  argv[argc++] = (char *)"blockd";
  while (*args)
    argv[argc++] = (char *)*args++;
  argv[argc] = NULL;
  return options_parse(o, argc, argv, 0, err, 256);
}

static void test_options_lone_file(void **state)
{
  struct options o;
  char err[256];
  const char *args[] = { "--unix", "/tmp/s", "disk.img", NULL };

  (void)state;
  assert_int_equal(parse(&o, err, args), OPTIONS_RUN);
  assert_string_equal(o.unix_path, "/tmp/s");
  assert_int_equal(o.nr_exports, 1);
  assert_string_equal(o.exports[0].name, "");
  assert_string_equal(o.exports[0].path, "disk.img");
  assert_null(o.exports[0].format);
  assert_false(o.exports[0].readonly);
  assert_true(o.threads >= 1);
  options_free(&o);
}

static void test_options_exports(void **state)
{
  struct options o;
  char err[256];
  const char *args[] = { "--export", "a=x.img,readonly", "--export", "b=y.ovl,format=overlay",
                         "--threads", "3", "--listen", ":10900", "--listen", "[::1]:10900",
                         "--max-connections", "9", "--max-memory", "1G", "--idle-timeout", "30",
                         NULL };

  (void)state;
  assert_int_equal(parse(&o, err, args), OPTIONS_RUN);
  assert_int_equal(o.nr_exports, 2);
  assert_string_equal(o.exports[0].name, "a");
  assert_true(o.exports[0].readonly);
  assert_string_equal(o.exports[1].path, "y.ovl");
  assert_string_equal(o.exports[1].format, "overlay");
  assert_int_equal(o.threads, 3);
  assert_int_equal(o.nr_listens, 2);
  assert_string_equal(o.listens[0].host, "127.0.0.1");
  assert_string_equal(o.listens[0].port, "10900");
  assert_string_equal(o.listens[1].host, "::1");
  assert_null(o.unix_path);
  assert_int_equal(o.max_connections, 9);
  assert_int_equal(o.max_memory, 1u << 30);
  assert_int_equal(o.idle_timeout, 30);
  options_free(&o);
}

/* ",," in FILE is a comma; "ro" is "readonly", as for blockd-launch --disk. */
static void test_options_export_commas(void **state)
{
  struct options o;
  char err[256];
  const char *args[] = { "--export", "a=d,,x=1/f,,.img,ro,format=raw", NULL };

  (void)state;
  assert_int_equal(parse(&o, err, args), OPTIONS_RUN);
  assert_string_equal(o.exports[0].path, "d,x=1/f,.img");
  assert_string_equal(o.exports[0].format, "raw");
  assert_true(o.exports[0].readonly);
  options_free(&o);
}

/* --vhost-user-blk takes the same spec as --export, and queues=N. */
static void test_options_vhost_spec(void **state)
{
  struct options o;
  char err[256];
  const char *args[] = { "--vhost-user-blk", "v.sock=d,,queues=2.img,queues=3,ro,serial=s1",
                         "--vhost-user-blk", "w.sock=e.img,readonly", NULL };

  (void)state;
  assert_int_equal(parse(&o, err, args), OPTIONS_RUN);
  assert_int_equal(o.nr_vhosts, 2);
  assert_string_equal(o.vhosts[0].path, "v.sock");
  assert_string_equal(o.vhosts[0].file, "d,queues=2.img");
  assert_int_equal(o.vhosts[0].queues, 3);
  assert_true(o.vhosts[0].readonly);
  assert_string_equal(o.vhosts[0].serial, "s1");
  assert_int_equal(o.vhosts[1].queues, VHOST_DEFAULT_QUEUES);
  assert_true(o.vhosts[1].readonly);
  options_free(&o);
}

/* rbd: names keep conf= and id=; the parser splits the name into pool,
 * image and snapshot and refuses what the cluster could misread. */
static void test_options_export_rbd(void **state)
{
  struct options o;
  char err[256];
  const char *args[] = { "--unix", "/tmp/s", "--export", "a=rbd:p,,1/img@s1,ro,conf=/c.conf,id=bd",
                         "--export", "b=rbd:p/img", NULL };
  struct spec_rbd n;

  (void)state;
  assert_int_equal(parse(&o, err, args), OPTIONS_RUN);
  assert_string_equal(o.exports[0].path, "rbd:p,1/img@s1");
  assert_string_equal(o.exports[0].conf, "/c.conf");
  assert_string_equal(o.exports[0].id, "bd");
  assert_true(o.exports[0].readonly);
  assert_null(o.exports[1].conf);
  assert_null(o.exports[1].id);
  assert_int_equal(spec_rbd_parse(o.exports[0].path, &n, err, sizeof err), 0);
  assert_string_equal(n.pool, "p,1");
  assert_string_equal(n.image, "img");
  assert_string_equal(n.snap, "s1");
  assert_int_equal(spec_rbd_parse(o.exports[1].path, &n, err, sizeof err), 0);
  assert_string_equal(n.snap, "");
  options_free(&o);
}

static void test_options_export_rbd_refused(void **state)
{
  static const char *const bad[] = {
    "a=rbd:", "a=rbd:p", "a=rbd:/i", "a=rbd:p/", "a=rbd:p/n/i", "a=rbd:p@x/i", "a=rbd:p/i@",
    "a=rbd:p/i@s@t", "a=rbd:p/i g", "a=rbd:p/i\x01", "a=rbd:p/i,format=raw",
    "a=rbd:p/i,id=client.admin", "a=rbd:p/i,id=", "a=rbd:p/i,id=a/b", "a=x.img,conf=/c",
    "a=x.img,id=admin", "a=rbd:p/i,serial=x", "a=rbd:p/i,cache=none",
  };
  char longname[300 + 16] = "a=rbd:p/";

  (void)state;
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    struct options o;
    char err[256];
    const char *args[] = { "--unix", "/tmp/s", "--export", bad[i], NULL };

    if (parse(&o, err, args) != OPTIONS_USAGE)
      fail_msg("'%s' was accepted", bad[i]);
    options_free(&o);
  }
  memset(longname + 8, 'x', 300);
  longname[308] = '\0';
  {
    struct options o;
    char err[256];
    const char *args[] = { "--unix", "/tmp/s", "--export", longname, NULL };

    assert_int_equal(parse(&o, err, args), OPTIONS_USAGE);
    assert_non_null(strstr(err, "longer than 255 bytes"));
    options_free(&o);
  }
}

static void test_options_readonly_applies_to_all(void **state)
{
  struct options o;
  char err[256];
  const char *args[] = { "--readonly", "--export", "a=x", "f", NULL };

  (void)state;
  assert_int_equal(parse(&o, err, args), OPTIONS_RUN);
  assert_true(o.exports[0].readonly);
  assert_true(o.exports[1].readonly);
  options_free(&o);
}

/* No TCP unless asked: the default is a unix socket in the runtime directory. */
static void test_options_default_listen(void **state)
{
  struct options o;
  char err[256];
  const char *args[] = { "f", NULL };

  (void)state;
  setenv("XDG_RUNTIME_DIR", "/run/user/4242", 1);
  assert_int_equal(parse(&o, err, args), OPTIONS_RUN);
  assert_string_equal(o.unix_path, "/run/user/4242/blockd.sock");
  assert_int_equal(o.nr_listens, 0);
  assert_int_equal(o.max_connections, OPTIONS_DEFAULT_MAX_CONNECTIONS);
  assert_int_equal(o.idle_timeout, 0);
  options_free(&o);
}

/* Each bad command line is refused with a message naming the problem. */
static void test_options_usage_errors(void **state)
{
  static const struct {
    const char *args[6];
    const char *msg;
  } cases[] = {
    { { "--bogus", "f" }, "unknown option '--bogus'" },
    { { "--threads", "0", "f" }, "--threads '0'" },
    { { "--threads", "x", "f" }, "--threads 'x'" },
    { { "--export", "noequals" }, "expected NAME=FILE" },
    { { "--export", "a=" }, "missing FILE" },
    { { "--export", "a=f,what" }, "unknown option 'what' (valid: readonly (or ro), format=" },
    { { "--export", "a=f,serial=x" }, "unknown option 'serial=x'" },
    { { "--export", "a=f,format=vmdk" }, "unknown format 'vmdk'" },
    { { "--export", "a=f", "--export", "a=g" }, "given twice" },
    { { "--export", "a=f,queues=2" }, "unknown option 'queues=2'" },
    { { "--vhost-user-blk", "v.sock=f,what" },
      "unknown option 'what' (valid: readonly (or ro), format=raw|qcow2|overlay, cache=default|none, serial=ID, queues=N; for rbd: conf=FILE, id=USER)" },
    { { "--vhost-user-blk", "v.sock=f,queues=0" }, "queues must be 1 to 64" },
    { { "--vhost-user-blk", "v.sock=f,queues=99999999999" }, "queues must be 1 to 64" },
    { { "--vhost-user-blk", "v.sock=f,queues=-2" }, "queues=-2 is not a number" },
    { { "--vhost-user-blk", "v.sock=f,queues=" }, "queues= is not a number" },
    { { "--listen", "nohost" }, "expected HOST:PORT" },
    { { "--listen", "h:99999", "f" }, "bad port" },
    { { "--unix", "s", "--listen", ":1", "f" }, "cannot be used together" },
    { { "a", "b" }, "one FILE at most" },
    { { NULL }, "nothing to serve" },
    { { "--unix" }, "needs an argument" },
    { { "--max-connections", "0", "f" }, "--max-connections '0'" },
    { { "--max-memory", "1M", "f" }, "--max-memory '1M'" },
    { { "--idle-timeout", "-1", "f" }, "--idle-timeout '-1'" },
  };

  (void)state;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    struct options o;
    char err[256] = "";

    assert_int_equal(parse(&o, err, cases[i].args), OPTIONS_USAGE);
    if (strstr(err, cases[i].msg) == NULL)
      fail_msg("case %zu: message '%s' lacks '%s'", i, err, cases[i].msg);
    options_free(&o);
  }
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_options_lone_file),
    cmocka_unit_test(test_options_exports),
    cmocka_unit_test(test_options_export_commas),
    cmocka_unit_test(test_options_vhost_spec),
    cmocka_unit_test(test_options_export_rbd),
    cmocka_unit_test(test_options_export_rbd_refused),
    cmocka_unit_test(test_options_readonly_applies_to_all),
    cmocka_unit_test(test_options_default_listen),
    cmocka_unit_test(test_options_usage_errors),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}

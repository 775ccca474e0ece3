/* Unit tests: socket activation (activation.c), with real sockets put where
 * a service manager puts them, descriptors 3 and up. */
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "blockd.h"

/* Puts a new socket of TYPE in FAMILY at descriptor FD, listening if
 * LISTENING (unix sockets get an abstract name of the kernel's choosing;
 * IP ones bind 127.0.0.1:0). */
static void put_socket(int fd, int family, int type, bool listening)
{
  int s = socket(family, type, 0);

  assert_true(s >= 0);
  if (family == AF_INET) {
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };

    assert_int_equal(bind(s, (struct sockaddr *)&sin, sizeof sin), 0);
  }
  else {
    struct sockaddr_un sun = { .sun_family = AF_UNIX };

    assert_int_equal(bind(s, (struct sockaddr *)&sun, sizeof(sa_family_t)), 0);
  }
  if (listening)
    assert_int_equal(listen(s, 1), 0);
  if (s != fd) {
    assert_int_equal(dup2(s, fd), fd);
    close(s);
  }
}

/* Sets LISTEN_PID to our pid (or PID if nonzero) and LISTEN_FDS to FDS. */
static void set_env(long pid, const char *fds)
{
  char buf[32];

  snprintf(buf, sizeof buf, "%ld", pid ? pid : (long)getpid());
  setenv("LISTEN_PID", buf, 1);
  setenv("LISTEN_FDS", fds, 1);
  setenv("LISTEN_FDNAMES", "nbd", 1);
}

/* Checks that every variable of the protocol is gone. */
static void assert_env_unset(void)
{
  assert_null(getenv("LISTEN_PID"));
  assert_null(getenv("LISTEN_FDS"));
  assert_null(getenv("LISTEN_FDNAMES"));
}

static void cleanup_fds(void)
{
  for (int fd = 3; fd < 8; fd++)
    close(fd);
}

/* Nothing passed: nothing taken, no error. */
static void test_activation_none(void **state)
{
  int fds[16];
  char err[256];

  (void)state;
  unsetenv("LISTEN_PID");
  unsetenv("LISTEN_FDS");
  assert_int_equal(activation_take(fds, 16, err, sizeof err), 0);
}

/* A listening unix socket and a listening TCP socket are taken, in order,
 * non-blocking and close-on-exec, and the variables are gone. */
static void test_activation_unix_and_tcp(void **state)
{
  int fds[16] = { 0 };
  char err[256];

  (void)state;
  put_socket(3, AF_UNIX, SOCK_STREAM, true);
  put_socket(4, AF_INET, SOCK_STREAM, true);
  set_env(0, "2");
  assert_int_equal(activation_take(fds, 16, err, sizeof err), 2);
  assert_int_equal(fds[0], 3);
  assert_int_equal(fds[1], 4);
  for (int i = 0; i < 2; i++) {
    assert_true(fcntl(fds[i], F_GETFL) & O_NONBLOCK);
    assert_true(fcntl(fds[i], F_GETFD) & FD_CLOEXEC);
  }
  assert_env_unset();
  cleanup_fds();
}

/* Variables meant for another process (our parent's pid) are not ours, and
 * are unset all the same. */
static void test_activation_other_pid(void **state)
{
  int fds[16];
  char err[256];

  (void)state;
  put_socket(3, AF_UNIX, SOCK_STREAM, true);
  set_env((long)getppid(), "1");
  assert_int_equal(activation_take(fds, 16, err, sizeof err), 0);
  assert_env_unset();
  cleanup_fds();
}

/* Anything but listening unix and TCP stream sockets is refused, naming
 * the descriptor and what is wrong with it. */
static void test_activation_refused(void **state)
{
  static const struct {
    int family, type;   /* family 0: a regular file */
    bool listening;
    const char *fds;
    const char *msg;
  } cases[] = {
    { AF_UNIX, SOCK_DGRAM, false, "1", "descriptor 3 is not a stream socket" },
    { AF_UNIX, SOCK_SEQPACKET, true, "1", "descriptor 3 is not a stream socket" },
    { AF_UNIX, SOCK_STREAM, false, "1", "descriptor 3 is not listening" },
    { AF_INET, SOCK_DGRAM, false, "1", "descriptor 3 is not a stream socket" },
    { 0, 0, false, "1", "descriptor 3 is not a socket" },
    { AF_UNIX, SOCK_STREAM, true, "2", "descriptor 4 is not open" },
    { AF_UNIX, SOCK_STREAM, true, "17", "LISTEN_FDS=17: at most 16 sockets" },
    { AF_UNIX, SOCK_STREAM, true, "x", "LISTEN_FDS='x': expected a number" },
    { AF_UNIX, SOCK_STREAM, true, "-1", "LISTEN_FDS='-1': expected a number" },
    { AF_UNIX, SOCK_STREAM, true, "99999999999999999999", "LISTEN_FDS='9999" },
  };
  int fds[16];
  char err[256];

  (void)state;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    if (cases[i].family == 0) {
      int f = open("/dev/null", O_RDONLY);

      if (f != 3) {
        assert_int_equal(dup2(f, 3), 3);
        close(f);
      }
    }
    else
      put_socket(3, cases[i].family, cases[i].type, cases[i].listening);
    set_env(0, cases[i].fds);
    err[0] = '\0';
    assert_int_equal(activation_take(fds, 16, err, sizeof err), -1);
    if (strstr(err, cases[i].msg) == NULL)
      fail_msg("case %zu: message '%s' lacks '%s'", i, err, cases[i].msg);
    assert_env_unset();
    cleanup_fds();
  }
  setenv("LISTEN_PID", "12ab", 1);
  setenv("LISTEN_FDS", "1", 1);
  assert_int_equal(activation_take(fds, 16, err, sizeof err), -1);
  assert_non_null(strstr(err, "LISTEN_PID='12ab'"));
  assert_env_unset();
}

/* With sockets passed, the command line names none, and no default
 * socket is made up. */
static void test_activation_options(void **state)
{
  char *a1[] = { "blockd", "disk.img", NULL };
  char *a2[] = { "blockd", "--unix", "/tmp/s", "disk.img", NULL };
  char *a3[] = { "blockd", "--vhost-user-blk", "/tmp/v=disk.img", NULL };
  struct options o;
  char err[256];

  (void)state;
  unsetenv("XDG_RUNTIME_DIR");
  assert_int_equal(options_parse(&o, 2, a1, 1, err, sizeof err), OPTIONS_RUN);
  assert_null(o.unix_path);
  assert_int_equal(o.nr_listens, 0);
  options_free(&o);
  assert_int_equal(options_parse(&o, 4, a2, 1, err, sizeof err), OPTIONS_USAGE);
  assert_non_null(strstr(err, "--unix and --listen cannot be used"));
  options_free(&o);
  assert_int_equal(options_parse(&o, 3, a3, 1, err, sizeof err), OPTIONS_USAGE);
  assert_non_null(strstr(err, "no NBD export"));
  options_free(&o);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_activation_none),
    cmocka_unit_test(test_activation_unix_and_tcp),
    cmocka_unit_test(test_activation_other_pid),
    cmocka_unit_test(test_activation_refused),
    cmocka_unit_test(test_activation_options),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* blockd: serve sparse disk images over NBD, with all socket and file I/O on
 * io_uring. Startup, signals and an orderly shutdown. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blockd.h"

/* Blocking pool threads: enough to overlap a few slow engine calls. */
#define POOL_THREADS 4
/* Most sockets taken from socket activation (as many as blockd listens on). */
#define MAX_PASSED 16
/* Exports named one by one in the line printed at start; then "N more". */
#define ANNOUNCE_EXPORTS 4

/* Checks, before anything is bound, that the pidfile PATH can be written
 * later: its directory exists and is writable. Returns 0 or -1 after logging. */
static int check_pidfile(const char *path)
{
  CLEANUP_FREE char *copy = strdup(path);
  char *slash = copy ? strrchr(copy, '/') : NULL;
  const char *dir = slash == NULL ? "." : slash == copy ? "/" : copy;

  if (copy == NULL) {
    log_msg("out of memory");
    return -1;
  }
  if (slash != NULL && slash != copy)
    *slash = '\0';
  if (access(dir, W_OK | X_OK) == -1) {
    log_msg("--pidfile %s: %s: %m", path, dir);
    return -1;
  }
  return 0;
}

/* Writes our pid to PATH atomically: an unpredictable temporary name in the
 * same directory, created exclusively (never through a planted symlink),
 * then renamed over PATH. */
static int write_pidfile(const char *path)
{
  CLEANUP_FREE char *tmp = NULL;
  char line[32];
  int fd, n;

  if (asprintf(&tmp, "%s.XXXXXX", path) < 0)
    return -1;
  fd = mkostemp(tmp, O_CLOEXEC);
  if (fd == -1) {
    log_msg("--pidfile %s: %m", path);
    return -1;
  }
  n = snprintf(line, sizeof line, "%d\n", (int)getpid());
  if (fchmod(fd, 0644) == -1 || write(fd, line, (size_t)n) != n || close(fd) == -1 ||
      rename(tmp, path) == -1) {
    log_msg("--pidfile %s: %m", path);
    unlink(tmp);
    return -1;
  }
  return 0;
}

/* Opens the image of every export of O. Returns 0, or -1 after logging. */
static int open_exports(const struct options *o)
{
  for (size_t i = 0; i < o->nr_exports; i++) {
    const struct export_spec *s = &o->exports[i];
    char err[1024];
    struct img_spec is = { .path = s->path, .format = s->format, .readonly = s->readonly,
                           .conf = s->conf, .id = s->id };
    struct fmt *f = fmt_open_spec(&is, false, err, sizeof err);

    if (f == NULL) {
      log_msg("%s", err);
      return -1;
    }
    if (s->cache_none && fmt_set_cache_none(f, err, sizeof err) < 0) {
      log_msg("%s", err);
      fmt_close(f);
      return -1;
    }
    if (export_add(s->name, f) < 0)
      return -1;
    debug("export '%s': %s, %s, %" PRIu64 " bytes", s->name, s->path, fmt_name(f), f->size);
  }
  return 0;
}

/* The export --print-uri names: the default one, else the first. */
static const struct export *uri_export(void)
{
  const struct export *e = export_find("", 0);

  return e != NULL ? e : exports_get(0);
}

/* --print-uri: prints the NBD URI of that export on the first listening
 * socket on stdout. Returns 0 or -1 after logging. */
static int print_uri(void)
{
  CLEANUP_FREE char *uri = uri_make(listen_get(0), uri_export()->name);

  if (uri == NULL)
    return -1;
  if (printf("%s\n", uri) < 0 || fflush(stdout) == EOF) {
    log_msg("--print-uri: stdout: %m");
    return -1;
  }
  return 0;
}

/* Writes " (FORMAT, MODE)" of image F to OUT. */
static void put_image(FILE *out, const struct fmt *f)
{
  fprintf(out, " (%s, %s)", fmt_name(f), f->readonly ? "read-only" : "read-write");
}

/* Says in one line on stderr what is served and where: the exports with
 * their format and mode and the NBD sockets, the vhost-user-blk devices. */
static void announce(bool passed)
{
  CLEANUP_FREE char *line = NULL;
  size_t size, nr = exports_count(), nr_vhost = vhost_count();
  FILE *out = open_memstream(&line, &size);

  if (out == NULL)
    return;
  fputs("serving", out);
  if (nr > 0)
    fputs(nr == 1 ? " export" : " exports", out);
  for (size_t i = 0; i < nr && i < ANNOUNCE_EXPORTS; i++) {
    const struct export *e = exports_get(i);
    char esc[LOG_ESCAPE_MAX];

    fprintf(out, "%s '%s'", i ? "," : "", log_escape(e->name, strlen(e->name), esc, sizeof esc));
    put_image(out, e->fmt);
  }
  if (nr > ANNOUNCE_EXPORTS)
    fprintf(out, " and %zu more", nr - ANNOUNCE_EXPORTS);
  for (size_t i = 0; i < listen_count(); i++) {
    CLEANUP_FREE char *where = uri_where(listen_get(i));

    fprintf(out, "%s%s", i ? ", " : " on ", where ? where : "?");
  }
  if (nr > 0 && passed)
    fputs(" (socket activation)", out);
  if (nr > 0 && tls_describe() != NULL)
    fprintf(out, ", %s", tls_describe());
  for (size_t i = 0; i < nr_vhost; i++) {
    const struct fmt *f;
    const char *path;

    vhost_get(i, &path, &f);
    fprintf(out, "%s%s", i ? ", " : nr ? "; vhost-user-blk " : " vhost-user-blk ", path);
    put_image(out, f);
  }
  if (fclose(out) == 0)
    log_msg("%s", line);
}

/* Parses the command line, serves until SIGTERM/SIGINT, then drains. */
int main(int argc, char **argv)
{
  struct options o;
  char err[1024];
  sigset_t sigs;
  int passed[MAX_PASSED], nr_passed;
  int sig, status = EXIT_SUCCESS;

  log_init("blockd");
  fmt_log = log_msg;
  /* Sockets a service manager passed are the caller's mistake if unusable. */
  nr_passed = activation_take(passed, ARRAY_SIZE(passed), err, sizeof err);
  if (nr_passed < 0) {
    log_msg("%s", err);
    return 2;
  }
  switch (options_parse(&o, argc, argv, (size_t)nr_passed, err, sizeof err)) {
  case OPTIONS_EXIT:
    options_free(&o);
    return EXIT_SUCCESS;
  case OPTIONS_USAGE:
    log_msg("%s", err);
    options_free(&o);
    return 2;
  case OPTIONS_RUN:
    break;
  }
  verbose = o.verbose;

  /* Every thread inherits this mask; the main thread alone takes the
   * signals, with sigwait. A client that vanishes must not kill us. */
  signal(SIGPIPE, SIG_IGN);
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &sigs, NULL);

  /* An image that cannot be opened (missing, locked, changed base) is the
   * user's to fix: a usage error, like the launcher's. */
  if (o.pidfile && check_pidfile(o.pidfile) < 0) {
    options_free(&o);
    return EXIT_FAILURE;
  }
  if (open_exports(&o) < 0 || vhost_open(o.vhosts, o.nr_vhosts) < 0 || tls_init(&o.tls) < 0) {
    exports_close();
    vhost_close();
    tls_fini();
    options_free(&o);
    return 2;
  }
  pump_init(o.stall_timeout);
  if (limits_init(o.max_connections) < 0 || pool_start(POOL_THREADS) < 0)
    goto fail_exports;
  struct worker_limits wl = {
    .max_memory = o.max_memory,
    .stall_timeout = o.stall_timeout,
    .idle_timeout = o.idle_timeout,
  };
  if (workers_start(o.threads, &wl) < 0)
    goto fail_pool;
  /* NBD listens only when there is something to serve over NBD: on the
   * sockets passed, else on its own. */
  if (o.nr_exports > 0 &&
      ((nr_passed > 0 ? listen_adopt(passed, (size_t)nr_passed)
                      : listen_open(o.unix_path, o.listens, o.nr_listens)) < 0 ||
       listen_start() < 0))
    goto fail_listen;
  if (vhost_bind() < 0)
    goto fail_listen;
  vhost_start();
  if (o.print_uri && print_uri() < 0)
    goto fail_listen;
  if (!o.quiet)
    announce(nr_passed > 0);
  if (o.pidfile && write_pidfile(o.pidfile) < 0)
    goto fail_listen;
  debug("serving %zu export(s) with %u worker(s)", exports_count(), o.threads);

  do {
    if (sigwait(&sigs, &sig) != 0)
      sig = SIGTERM;
  } while (sig == SIGHUP);
  debug("signal %d: draining", sig);

  /* Stop accepting, finish what clients sent (TLS pumps hand over the last
   * replies), then make it durable. */
  listen_stop();
  workers_stop();
  pump_stop();
  pool_stop();
  if (exports_flush_all() < 0)
    status = EXIT_FAILURE;
  exports_close();
  if (vhost_close() < 0)
    status = EXIT_FAILURE;
  tls_fini();
  limits_fini();
  if (o.pidfile)
    unlink(o.pidfile);
  options_free(&o);
  return status;

fail_listen:
  listen_stop();
  workers_stop();
  pump_stop();
fail_pool:
  pool_stop();
fail_exports:
  exports_close();
  vhost_close();
  tls_fini();
  limits_fini();
  options_free(&o);
  return EXIT_FAILURE;
}

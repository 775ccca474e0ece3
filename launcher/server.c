/* The private blockd: where its executable is, its command line, and
 * starting it until its pidfile says the socket accepts connections. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "format.h"
#include "launch.h"

/* How long blockd may take to write its pidfile. */
#define SERVER_START_MS 20000

/* Whether PATH is a regular file we may execute (the build tree has a
 * directory named blockd, which access(X_OK) alone would accept). */
static bool is_program(const char *path)
{
  struct stat st;

  return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

/* Returns the blockd to run (malloc'd): $BLOCKD; else blockd in this
 * executable's directory, as installed; else ../blockd/blockd beside it, as
 * in the build tree; else "blockd" from PATH. */
char *server_find(void)
{
  static const char *const beside[] = { "blockd", "../blockd/blockd" };
  const char *env = getenv("BLOCKD");
  char self[PATH_MAX], *slash, *path;
  ssize_t n;

  if (env != NULL && env[0] != '\0')
    return strdup(env);
  n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n > 0) {
    self[n] = '\0';
    slash = strrchr(self, '/');
    if (slash != NULL) {
      *slash = '\0';
      for (size_t i = 0; i < ARRAY_SIZE(beside); i++) {
        if (asprintf(&path, "%s/%s", self, beside[i]) < 0)
          return NULL;
        if (is_program(path))
          return path;
        free(path);
      }
    }
  }
  return strdup("blockd");
}

/* Builds blockd's command line: per --disk, an NBD export diskN on the
 * unix socket in the runtime directory, or a vhost-user-blk device on a
 * socket of its own there. Returns 0 or -errno. */
int server_cmdline(const struct launch *l, struct argv *a)
{
  char path[PATH_MAX];
  int r = 0;

  r |= argv_add(a, l->blockd);
  if (l->transport == TRANSPORT_NBD) {
    rundir_path(l, "nbd.sock", path, sizeof path);
    r |= argv_add(a, "--unix");
    r |= argv_add(a, path);
  }
  rundir_path(l, "blockd.pid", path, sizeof path);
  r |= argv_add(a, "--pidfile");
  r |= argv_add(a, path);
  for (size_t i = 0; i < l->nr_allow_base_dirs; i++) {
    r |= argv_add(a, "--allow-base-dir");
    r |= argv_add(a, l->allow_base_dirs[i]);
  }
  for (size_t i = 0; i < l->ndisks; i++) {
    const struct disk *d = &l->disks[i];
    CLEANUP_FREE char *image = spec_escape(d->path);
    CLEANUP_FREE char *conf = d->conf ? spec_escape(d->conf) : NULL;
    CLEANUP_FREE char *file = NULL;
    char sock[PATH_MAX], name[32];

    /* The image, with an rbd: name's own options after it. */
    if (image == NULL || (d->conf && conf == NULL) ||
        asprintf(&file, "%s%s%s%s%s", image, conf ? ",conf=" : "", conf ? conf : "",
                 d->id ? ",id=" : "", d->id ? d->id : "") < 0) {
      file = NULL;
      return -ENOMEM;
    }
    if (l->transport == TRANSPORT_NBD) {
      r |= argv_add(a, "--export");
      r |= argv_addf(a, "disk%zu=%s%s%s%s%s", i, file, d->readonly ? ",readonly" : "",
                     d->format ? ",format=" : "", d->format ? d->format : "",
                     d->cache_none ? ",cache=none" : "");
    }
    else {
      /* One socket per disk; the guest sees the serial through GET_ID, and
       * as many queues as it has CPUs (QEMU's default for the device). */
      snprintf(name, sizeof name, "vhost%zu.sock", i);
      rundir_path(l, name, sock, sizeof sock);
      r |= argv_add(a, "--vhost-user-blk");
      r |= argv_addf(a, "%s=%s%s%s%s%s,serial=%s,queues=%u", sock, file,
                     d->readonly ? ",readonly" : "", d->format ? ",format=" : "",
                     d->format ? d->format : "", d->cache_none ? ",cache=none" : "",
                     d->serial, l->cpus);
    }
  }
  /* The launcher speaks for its blockd; blockd's start line only with -v. */
  r |= argv_add(a, verbose ? "--verbose" : "--quiet");
  return r < 0 ? -ENOMEM : 0;
}

/* True if FILE exists and is not empty. */
static bool file_has_data(const char *file)
{
  struct stat st;

  return stat(file, &st) == 0 && st.st_size > 0;
}

/* True if SIGINT, SIGTERM or SIGHUP is pending (they are blocked). */
static bool stop_requested(void)
{
  sigset_t pending;

  sigpending(&pending);
  return sigismember(&pending, SIGINT) || sigismember(&pending, SIGTERM) ||
         sigismember(&pending, SIGHUP);
}

/* Starts blockd with A and waits until it has written its pidfile. Returns
 * its pid; or -EXIT_USAGE if blockd refused its command line or a disk (it
 * exited 2), -EXIT_RUNTIME on any other failure; blockd is not left running. */
pid_t server_start(const struct launch *l, const struct argv *a)
{
  const struct timespec tick = { 0, 20 * 1000 * 1000 };
  CLEANUP_CLOSE int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  char pidfile[PATH_MAX];
  int status;
  pid_t pid;

  rundir_path(l, "blockd.pid", pidfile, sizeof pidfile);
  /* Own process group: Ctrl-C on the terminal is the launcher's to handle.
   * Its stdout joins our stderr, keeping the console clean. */
  pid = proc_spawn(a->v, true, SIGTERM, (const int[3]){ devnull, STDERR_FILENO, -1 });
  if (pid < 0)
    return -EXIT_RUNTIME;
  for (unsigned waited = 0; waited < SERVER_START_MS; waited += 20) {
    if (file_has_data(pidfile)) {
      debug("blockd ready, pid %d", (int)pid);
      return pid;
    }
    if (waitpid(pid, &status, WNOHANG) == pid) {
      /* Exit 2: blockd refused a disk and said why in one line. */
      if (WIFEXITED(status) && WEXITSTATUS(status) == EXIT_USAGE)
        return -EXIT_USAGE;
      launch_error("blockd %s before it was ready", proc_status_string(status));
      return -EXIT_RUNTIME;
    }
    if (stop_requested())
      break;
    nanosleep(&tick, NULL);
  }
  if (!stop_requested())
    launch_error("blockd did not become ready in %d s", SERVER_START_MS / 1000);
  kill(pid, SIGTERM);
  if (proc_wait_timeout(pid, &status, 5000) < 0) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
  }
  return -EXIT_RUNTIME;
}

/* The private runtime directory: blockd's socket and pidfile, QEMU's QMP
 * socket. Mode 0700, removed with everything in it when the launch ends. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "launch.h"

/* Longest file name we put in the directory ("blockd.pid", "nbd.sock"...). */
#define NAME_MAX_LEN 16

/* Returns a malloc'd mkdtemp template: $XDG_RUNTIME_DIR/blockd-launch.XXXXXX,
 * or under /tmp when that is unset, not a directory, or too long for a unix
 * socket path. */
char *rundir_template(void)
{
  const char *base = getenv("XDG_RUNTIME_DIR");
  struct sockaddr_un sun;
  struct stat st;
  char *t = NULL;

  if (base == NULL || base[0] != '/' || stat(base, &st) < 0 || !S_ISDIR(st.st_mode) ||
      access(base, W_OK | X_OK) < 0 ||
      strlen(base) + sizeof "/blockd-launch.XXXXXX/" + NAME_MAX_LEN > sizeof sun.sun_path)
    base = "/tmp";
  if (asprintf(&t, "%s/blockd-launch.XXXXXX", base) < 0)
    return NULL;
  return t;
}

/* Marks the directory as ours for as long as we live: an exclusive flock on
 * the directory itself, then our pid in RUNDIR/launcher.pid. The kernel
 * drops the lock when we die, however we die, so a later launch can tell a
 * dead launcher's directory from a live one without trusting pids or
 * process names. launcher.pid appears only once the lock is held. */
static int rundir_write_owner(struct launch *l)
{
  char path[PATH_MAX];
  FILE *fp;

  l->rundir_fd = open(l->rundir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (l->rundir_fd < 0 || flock(l->rundir_fd, LOCK_EX | LOCK_NB) < 0) {
    launch_error("%s: %m", l->rundir);
    return -1;
  }
  rundir_path(l, "launcher.pid", path, sizeof path);
  fp = fopen(path, "wxe");
  if (fp == NULL) {
    launch_error("%s: %m", path);
    return -1;
  }
  fprintf(fp, "%d\n", (int)getpid());
  fclose(fp);
  return 0;
}

/* True if the runtime directory DIR (under BASE) belongs to a launcher that
 * is gone: it has a launcher.pid and nobody holds its lock. */
static bool rundir_is_stale(int base, const char *dir)
{
  char path[PATH_MAX];
  struct stat st;
  int fd;
  bool stale;

  snprintf(path, sizeof path, "%s/launcher.pid", dir);
  if (fstatat(base, path, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
    return false;  /* being created, or not ours: leave it */
  fd = openat(base, dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0)
    return false;
  stale = flock(fd, LOCK_EX | LOCK_NB) == 0;
  close(fd);
  return stale;
}

/* Removes the runtime directories that SIGKILLed launchers left in the
 * directory the template points into. Their QEMU and blockd are gone
 * already (parent-death signal); only files remain. */
void rundir_sweep(void)
{
  CLEANUP_FREE char *t = rundir_template();
  char *slash;
  DIR *dir;
  struct dirent *e;

  if (t == NULL || (slash = strrchr(t, '/')) == NULL)
    return;
  *slash = '\0';
  dir = opendir(t);
  if (dir == NULL)
    return;
  while ((e = readdir(dir)) != NULL) {
    struct launch stale = { .rundir_fd = -1 };
    struct stat st;

    if (strncmp(e->d_name, "blockd-launch.", 14) != 0 || strlen(e->d_name) != 20 ||
        fstatat(dirfd(dir), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
        !S_ISDIR(st.st_mode) || st.st_uid != geteuid() ||
        !rundir_is_stale(dirfd(dir), e->d_name))
      continue;
    if (asprintf(&stale.rundir, "%s/%s", t, e->d_name) < 0)
      break;
    debug("removing %s, left by a launcher that was killed", stale.rundir);
    rundir_remove(&stale);
  }
  closedir(dir);
}

/* Creates the directory (mode 0700) and stores its name in L->rundir.
 * Returns 0, or -1 with a message printed. */
int rundir_create(struct launch *l)
{
  char *t = rundir_template();

  if (t == NULL) {
    launch_error("runtime directory: %m");
    return -1;
  }
  if (mkdtemp(t) == NULL) {
    launch_error("%s: %m", t);
    free(t);
    return -1;
  }
  l->rundir = t;
  debug("runtime directory %s", t);
  if (rundir_write_owner(l) < 0) {
    rundir_remove(l);
    return -1;
  }
  return 0;
}

/* Writes RUNDIR/NAME into BUF. */
void rundir_path(const struct launch *l, const char *name, char *buf, size_t len)
{
  snprintf(buf, len, "%s/%s", l->rundir, name);
}

/* Removes everything in the directory (blockd and QEMU may have left their
 * sockets behind if they were killed), then the directory. */
void rundir_remove(struct launch *l)
{
  DIR *dir;
  struct dirent *e;

  if (l->rundir == NULL)
    return;
  dir = opendir(l->rundir);
  if (dir != NULL) {
    while ((e = readdir(dir)) != NULL) {
      if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
        continue;
      if (unlinkat(dirfd(dir), e->d_name, 0) < 0 && errno != ENOENT)
        launch_error("%s/%s: %m", l->rundir, e->d_name);
    }
    closedir(dir);
  }
  if (rmdir(l->rundir) < 0 && errno != ENOENT)
    launch_error("%s: %m", l->rundir);
  free(l->rundir);
  l->rundir = NULL;
  if (l->rundir_fd >= 0)
    close(l->rundir_fd);
  l->rundir_fd = -1;
}

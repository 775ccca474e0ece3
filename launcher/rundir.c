/* The private runtime directory: blockd's socket and pidfile, QEMU's QMP
 * socket. Mode 0700, removed with everything in it when the launch ends. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
}

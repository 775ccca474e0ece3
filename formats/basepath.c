/* basepath: where the files an image names may be, and opening them safely.
 *
 * An overlay names its base, and a qcow2 image its backing file, in bytes
 * that came from whoever made the image. Following them blindly would let a
 * crafted image serve any file on the host. The policy: a named file must
 * lie beneath the directory of the image that names it, or beneath a
 * directory the user allowed (basepath_allow, e.g. --allow-base-dir).
 * "Beneath" is enforced by the kernel (openat2 with RESOLVE_BENEATH), so
 * "..", absolute symlinks and symlinks that climb out are all refused, and a
 * path outside every allowed directory is refused before the file system
 * is asked, so the error never says whether such a file exists.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

#define MAX_ALLOWED 16

static char *allowed[MAX_ALLOWED]; /* canonical absolute directories */
static size_t nr_allowed;
static char *allowed_pools[MAX_ALLOWED]; /* Ceph pools, for rbd: bases */
static size_t nr_allowed_pools;

/* Adds "rbd:POOL" to the pools bases may live in. Returns 0 or -errno. */
static int allow_pool(const char *name)
{
  const char *pool = name + 4;

  if (nr_allowed_pools == MAX_ALLOWED)
    return -E2BIG;
  if (pool[0] == '\0' || strlen(pool) > RBD_NAME_MAX || strpbrk(pool, "/@ \t\n,") != NULL)
    return -EINVAL;
  allowed_pools[nr_allowed_pools] = strdup(pool);
  if (allowed_pools[nr_allowed_pools] == NULL)
    return -ENOMEM;
  nr_allowed_pools++;
  return 0;
}

/* Adds DIR to the directories bases may live in, or with "rbd:POOL" the
 * pool to those RBD bases may live in. Returns 0 or -errno. */
int basepath_allow(const char *dir)
{
  char *real;
  struct stat st;

  if (spec_is_rbd(dir))
    return allow_pool(dir);
  if (nr_allowed == MAX_ALLOWED)
    return -E2BIG;
  real = realpath(dir, NULL);
  if (real == NULL)
    return -errno;
  if (stat(real, &st) == -1 || !S_ISDIR(st.st_mode)) {
    free(real);
    return -ENOTDIR;
  }
  allowed[nr_allowed++] = real;
  return 0;
}

/* Forgets every allowed directory (tests). */
void basepath_reset(void)
{
  for (size_t i = 0; i < nr_allowed; i++)
    free(allowed[i]);
  nr_allowed = 0;
  for (size_t i = 0; i < nr_allowed_pools; i++)
    free(allowed_pools[i]);
  nr_allowed_pools = 0;
}

/* Opens NAME beneath directory DIRFD with openat2(RESOLVE_BENEATH), for
 * reading (WRITE: and writing), non-blocking so that a FIFO cannot hang
 * us. Returns the fd or -errno (-EXDEV: it would leave the directory). */
static int open_beneath(int dirfd, const char *name, bool write)
{
  struct open_how how = {
    .flags = (uint64_t)((write ? O_RDWR : O_RDONLY) | O_NONBLOCK | O_NOCTTY | O_CLOEXEC),
    .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
  };
  long fd = syscall(SYS_openat2, dirfd, name, &how, sizeof how);

  return fd < 0 ? -errno : (int)fd;
}

/* Writes into OUT the lexical normal form of the absolute path DIR/NAME (or
 * NAME if absolute): no ".", "..", or repeated slashes. The file system is
 * not consulted. Returns 0 or -ENAMETOOLONG. */
static int normalize(const char *dir, const char *name, char *out, size_t outlen)
{
  char tmp[2 * PATH_MAX + 2];
  size_t len = 0;
  char *save = NULL, *part;

  if (snprintf(tmp, sizeof tmp, "%s/%s", name[0] == '/' ? "" : dir, name) >= (int)sizeof tmp)
    return -ENAMETOOLONG;
  out[0] = '\0';
  for (part = strtok_r(tmp, "/", &save); part; part = strtok_r(NULL, "/", &save)) {
    if (strcmp(part, ".") == 0)
      continue;
    if (strcmp(part, "..") == 0) {
      char *slash = strrchr(out, '/');
      len = slash ? (size_t)(slash - out) : 0;
      out[len] = '\0';
      continue;
    }
    if (len + 1 + strlen(part) + 1 > outlen)
      return -ENAMETOOLONG;
    out[len++] = '/';
    strcpy(out + len, part);
    len += strlen(part);
  }
  if (len == 0) {
    if (outlen < 2)
      return -ENAMETOOLONG;
    strcpy(out, "/");
  }
  return 0;
}

/* If the normal path PATH is DIR or beneath it, returns the rest of PATH
 * after DIR (possibly ""), else NULL. */
static const char *beneath(const char *dir, const char *path)
{
  size_t n = strlen(dir);

  if (strcmp(dir, "/") == 0)
    return path + 1;
  if (strncmp(path, dir, n) != 0 || (path[n] != '/' && path[n] != '\0'))
    return NULL;
  return path[n] == '/' ? path + n + 1 : path + n;
}

/* Checks FD (opened as PATH) is a regular file or block device and makes
 * it blocking again (io_uring must see a plain file). Returns 0 or -1 with
 * a message in ERR. */
int basepath_check_fd(int fd, const char *path, char *err, size_t errlen)
{
  struct stat st;
  int fl;

  if (fstat(fd, &st) == -1) {
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return -1;
  }
  if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
    snprintf(err, errlen, "%s: not a regular file or block device", path);
    return -1;
  }
  fl = fcntl(fd, F_GETFL);
  if (fl == -1 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) == -1) {
    snprintf(err, errlen, "%s: fcntl: %s", path, strerror(errno));
    return -1;
  }
  return 0;
}

/* Writes into OUT the name to show for NAME, named by REFERRER: relative
 * to REFERRER's directory as the user wrote REFERRER, or NAME if absolute. */
static void display_name(const char *referrer, const char *name, char *out, size_t outlen)
{
  const char *slash = strrchr(referrer, '/');

  if (name[0] == '/' || slash == NULL)
    snprintf(out, outlen, "%s", name);
  else
    snprintf(out, outlen, "%.*s/%s", (int)(slash - referrer), referrer, name);
}

/* Opens the file NAME that the image at REFERRER names (its base or
 * backing file), read-only unless WRITE, under the policy above. Writes the
 * name to show for it into OUT. Returns an fd (a regular file or block
 * device, blocking) or -1 with a message in ERR, which names the file but
 * not REFERRER. */
static int open_named(const char *referrer, const char *name, bool write, char *out,
                      size_t outlen, char *err, size_t errlen)
{
  CLEANUP_FREE char *copy = strdup(referrer);
  char dir[PATH_MAX], path[PATH_MAX], cwd[PATH_MAX];
  const char *rest = NULL;
  CLEANUP_CLOSE int dirfd = -1;
  char *slash;
  int fd;

  display_name(referrer, name, out, outlen);
  if (copy == NULL) {
    snprintf(err, errlen, "%s: %s", out, strerror(ENOMEM));
    return -1;
  }
  if (name[0] == '\0') {
    snprintf(err, errlen, "empty base file name");
    return -1;
  }
  /* The referrer's directory, absolute: the user named the referrer (or it
   * passed this check itself), so its directory is trusted. */
  slash = strrchr(copy, '/');
  if (slash == copy)
    slash[1] = '\0';
  else if (slash != NULL)
    *slash = '\0';
  if (copy[0] != '/' && getcwd(cwd, sizeof cwd) == NULL) {
    snprintf(err, errlen, "getcwd: %s", strerror(errno));
    return -1;
  }
  if (normalize(cwd, slash ? copy : ".", dir, sizeof dir) < 0 ||
      normalize(dir, name, path, sizeof path) < 0) {
    snprintf(err, errlen, "%s: path too long", out);
    return -1;
  }

  /* Beneath the referrer's directory, or beneath an allowed one. */
  rest = beneath(dir, path);
  if (rest != NULL)
    dirfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
  for (size_t i = 0; rest == NULL && i < nr_allowed; i++) {
    rest = beneath(allowed[i], path);
    if (rest != NULL)
      dirfd = open(allowed[i], O_PATH | O_DIRECTORY | O_CLOEXEC);
  }
  if (rest == NULL) {
    snprintf(err, errlen, "%s: outside the image's directory and every allowed directory"
                          " (see --allow-base-dir)", out);
    return -1;
  }
  if (dirfd == -1) {
    snprintf(err, errlen, "%s: %s", dir, strerror(errno));
    return -1;
  }
  fd = open_beneath(dirfd, rest[0] ? rest : ".", write);
  if (fd == -EXDEV || fd == -ELOOP) {
    snprintf(err, errlen, "%s: a symbolic link leads outside the allowed directories", out);
    return -1;
  }
  if (fd == -ENOSYS) {
    snprintf(err, errlen, "%s: openat2 is not available (Linux 5.6 or later is needed)", out);
    return -1;
  }
  if (fd < 0) {
    snprintf(err, errlen, "%s: %s", out, strerror(-fd));
    return -1;
  }
  if (basepath_check_fd(fd, out, err, errlen) < 0) {
    close(fd);
    return -1;
  }
  return fd;
}

int basepath_open(const char *referrer, const char *name, char *out, size_t outlen, char *err,
                  size_t errlen)
{
  return open_named(referrer, name, false, out, outlen, err, errlen);
}

int basepath_open_write(const char *referrer, const char *name, char *out, size_t outlen,
                        char *err, size_t errlen)
{
  return open_named(referrer, name, true, out, outlen, err, errlen);
}

/* Whether the file NAME named by REFERRER can be opened under the policy
 * (for tools that create images, to warn early). */
bool basepath_allowed(const char *referrer, const char *name)
{
  char out[PATH_MAX], err[PATH_MAX + 256];
  int fd = basepath_open(referrer, name, out, sizeof out, err, sizeof err);

  if (fd < 0)
    return false;
  close(fd);
  return true;
}

/* An overlay's base in a Ceph cluster: a snapshot, in a pool the user
 * allowed. No pool is allowed by default: the cluster holds other tenants'
 * images, which the server's Ceph user can read, and the name comes from
 * the overlay file. The cluster is librados' default ($CEPH_CONF or
 * /etc/ceph/ceph.conf, the user from CEPH_ARGS): a file must not choose
 * which configuration file the server reads. */
struct fmt *basepath_open_rbd(const char *referrer, const char *name, char *err, size_t errlen)
{
  struct spec_rbd n;
  size_t i;

  if (spec_rbd_parse(name, &n, err, errlen) < 0)
    return NULL;
  if (n.snap[0] == '\0') {
    snprintf(err, errlen, "%s: an RBD base must be a snapshot, which cannot change", name);
    return NULL;
  }
  for (i = 0; i < nr_allowed_pools; i++)
    if (strcmp(allowed_pools[i], n.pool) == 0)
      break;
  /* Refused before the cluster is asked: the answer never says whether
   * such an image exists. */
  if (i == nr_allowed_pools) {
    snprintf(err, errlen, "%s: in Ceph pool '%s', where bases may be only with --allow-base-dir"
             " rbd:%s", name, n.pool, n.pool);
    return NULL;
  }
  (void)referrer;
#ifdef HAVE_RBD
  return fmt_rbd_open(name, NULL, NULL, true /* from a header */, true /* read-only */, err,
                      errlen);
#else
  snprintf(err, errlen, "%s: built without Ceph RBD support (librbd)", name);
  return NULL;
#endif
}

/* --disk FILE[,readonly][,serial=ID][,format=FMT]: parsing and the checks
 * that must pass before anything is started. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "format.h"
#include "launch.h"

/* virtio-blk carries at most 20 bytes of serial (VIRTIO_BLK_ID_BYTES). */
#define SERIAL_MAX 20

/* True if S is a serial QEMU and the guest will both take as is. */
static bool serial_valid(const char *s)
{
  size_t n = strlen(s);

  if (n == 0 || n > SERIAL_MAX)
    return false;
  return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") == n;
}

/* Parses SPEC into D (the INDEXth disk). Prints a one-line message and
 * returns -1 on bad input. */
int disk_parse(const char *spec, size_t index, struct disk *d)
{
  struct img_spec s;
  char err[1024];

  memset(d, 0, sizeof *d);
  d->lock_fd = -1;
  if (spec_parse(spec, SPEC_SERIAL | SPEC_RBD, &s, err, sizeof err) < 0) {
    launch_error("--disk %s", err);
    return -1;
  }
  d->path = s.path;
  d->format = s.format;
  d->readonly = s.readonly;
  d->cache_none = s.cache_none;
  d->serial = s.serial;
  d->conf = s.conf;
  d->id = s.id;
  if (d->serial != NULL && !serial_valid(d->serial)) {
    launch_error("--disk %s: serial must be 1 to %d characters of [A-Za-z0-9._-]", spec,
                 SERIAL_MAX);
    goto err;
  }
  if (d->serial == NULL && asprintf(&d->serial, "disk%zu", index) < 0) {
    d->serial = NULL;
    launch_error("--disk: %m");
    goto err;
  }
  return 0;

err:
  disk_free(d);
  return -1;
}

/* Checks that D exists, can be opened as asked, and is not in use by another
 * blockd, QEMU or launcher (a conflicting lock), makes its path absolute and
 * locks it for the launch. Prints a one-line message naming the file and returns -1 if not. */
int disk_check(struct disk *d)
{
  char *abs;

  CLEANUP_CLOSE int fd = -1;
  struct stat st;
  char err[1024];

  /* An RBD image is checked by blockd at start (cluster, pool, image,
   * librbd's exclusive lock); its one-line refusal is passed on, and
   * nothing else has started by then. */
  if (spec_is_rbd(d->path))
    return 0;
  fd = open(d->path, (d->readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
  if (fd < 0) {
    launch_error("%s: %m", d->path);
    return -1;
  }
  if (fstat(fd, &st) < 0) {
    launch_error("%s: %m", d->path);
    return -1;
  }
  if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
    launch_error("%s: not a regular file or block device", d->path);
    return -1;
  }
  /* blockd gets an absolute path: it need not share our working directory. */
  abs = realpath(d->path, NULL);
  if (abs == NULL) {
    launch_error("%s: %m", d->path);
    return -1;
  }
  free(d->path);
  d->path = abs;
  /* blockd would refuse it at start: say so before anything starts. */
  if (lock_check(fd, d->path, d->readonly, err, sizeof err) < 0) {
    launch_error("%s", err);
    return -1;
  }
  /* blockd takes its locks only once it starts, so the launcher holds a
   * flock of its own for the whole launch: a second launcher on the same
   * disk is refused at once. flock and OFD locks are independent on Linux,
   * so this never gets in the way of blockd's or QEMU's. */
  if (flock(fd, (d->readonly ? LOCK_SH : LOCK_EX) | LOCK_NB) < 0) {
    if (errno == EWOULDBLOCK)
      launch_error("%s: in use by another blockd-launch (locked)", d->path);
    else
      launch_error("%s: flock: %m", d->path);
    return -1;
  }
  d->lock_fd = fd;
  fd = -1;
  return 0;
}

/* Checks that D, the disk the firmware boots, starts with a boot sector:
 * SeaBIOS boots a disk only if bytes 510-511 are 55 AA, and otherwise
 * waits for one forever. Read through blockd's own engines, so an overlay is
 * seen as the guest sees it. Prints a one-line message and returns -1 if
 * not. */
int disk_check_boot(const struct disk *d)
{
  unsigned char sector[512] = { 0 };
  struct fmt *f;
  char err[1024];
  int r = 0;

  /* An RBD image is blockd's to open (with its conf= and id=); a disk that
   * does not boot ends the launch with exit status 6 all the same. */
  if (spec_is_rbd(d->path))
    return 0;
  f = fmt_open(d->path, d->format, true, err, sizeof err);
  if (f == NULL) {
    launch_error("%s", err);
    return -1;
  }
  if (f->size >= sizeof sector)  /* a smaller disk has no boot sector */
    r = fmt_pread(f, sector, sizeof sector, 0);
  fmt_close(f);
  if (r < 0) {
    launch_error("%s: reading its boot sector: %s", d->path, strerror(-r));
    return -1;
  }
  if (sector[510] != 0x55 || sector[511] != 0xaa) {
    launch_error("%s: no boot sector (bytes 510-511 are not 55 AA): without --kernel the "
                 "first --disk must be bootable", d->path);
    return -1;
  }
  return 0;
}

/* Frees what disk_parse allocated. */
void disk_free(struct disk *d)
{
  free(d->path);
  free(d->serial);
  free(d->format);
  free(d->conf);
  free(d->id);
  d->path = d->serial = d->format = d->conf = d->id = NULL;
  if (d->lock_fd >= 0)
    close(d->lock_fd);
  d->lock_fd = -1;
}

/* Image locks, in QEMU's protocol, so that blockd, QEMU and qemu-img each
 * see what the others do with an image.
 *
 * QEMU (block/file-posix.c) never locks a whole file. It names four
 * permissions an opener may hold, bits 0 to 3 of its BLK_PERM_* (consistent
 * read, write, write unchanged, resize), and takes one shared OFD lock per
 * byte: byte 100 + bit for each permission it holds, byte 200 + bit for each
 * one it refuses to others. Then it tests (F_OFD_GETLK, for an exclusive
 * lock) byte 200 + bit of each permission it holds (does anyone refuse it?)
 * and byte 100 + bit of each it refuses (does anyone hold it?). Taking
 * before testing means two openers racing cannot both miss each other; an
 * open file description never sees its own locks. A whole-file lock, what
 * blockd took before, covers all those bytes, so QEMU read it as "refuses
 * everything" and could not even read a base.
 *
 * What blockd takes is what QEMU takes for a backing file, and for a
 * writable virtio-blk disk (which holds bytes 100, 101 and 201) plus a
 * refusal of resizing, because blockd reads an image's size once, at open:
 *
 *   open                         holds                  refuses others
 *   FMT_WRITE (served writable)  consistent read, write  write, resize
 *   FMT_READ (read-only, bases)  consistent read        write, resize
 *   FMT_SHARED (blockd-img info) nothing                nothing
 *   lock_create (a new image)    all four               all four
 *
 * So a read-only base is shared with every reader that lets others read
 * (qemu-img info, compare and convert without -U, a QEMU backing file,
 * other blockd overlays) and refused to every writer. A writer refuses
 * other writers and the readers that refuse writers (a read-only blockd,
 * qemu-img without -U), and lets readers that tolerate change read
 * (qemu-img -U, qemu-io -r, FMT_SHARED), as a QEMU writer does.
 *
 * Two opens in one process conflict like two processes (OFD locks belong
 * to the open file description), but the kernel cannot tell who holds a
 * lock, so the process keeps a list of the files it has locked: a conflict
 * among its own opens is a file given twice, and says so.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "internal.h"

/* Permissions: the bits of QEMU's BLK_PERM_* (include/block/block-common.h). */
#define PERM_CONSISTENT_READ (1u << 0)
#define PERM_WRITE (1u << 1)
#define PERM_WRITE_UNCHANGED (1u << 2)
#define PERM_RESIZE (1u << 3)
#define PERM_ALL 0xfu
#define PERM_BITS 4

#define LOCK_PERM_BASE 100    /* byte 100 + bit: "I hold this permission" */
#define LOCK_REFUSED_BASE 200 /* byte 200 + bit: "I refuse others this permission" */

/* What an open holds and refuses to others, as permission bits. */
struct perms {
  unsigned held;    /* PERM_* the opener has */
  unsigned refused; /* PERM_* nobody else may have meanwhile */
};

static const struct perms perms_write = {
  PERM_CONSISTENT_READ | PERM_WRITE, PERM_WRITE | PERM_RESIZE
};
static const struct perms perms_read = { PERM_CONSISTENT_READ, PERM_WRITE | PERM_RESIZE };
static const struct perms perms_create = { PERM_ALL, PERM_ALL };

/* What another process does, for messages, by permission bit. */
static const char *const holder[PERM_BITS] = { "reads it", "writes it", "writes it", "resizes it" };
static const char *const refuser[PERM_BITS] = { "readers", "writers", "writers", "resizing" };

/* One file this process holds locks on, taken by lock_image. */
struct lock {
  struct lock *next;      /* the process's other locked files */
  dev_t dev;              /* the file's identity */
  ino_t ino;
  enum fmt_access access; /* FMT_WRITE or FMT_READ */
  char *name;             /* as its opener named it */
  char *base_of;          /* the image whose base it is, NULL if named by the user */
};

static struct lock *locked;                                  /* list of this process's */
static pthread_mutex_t locked_mutex = PTHREAD_MUTEX_INITIALIZER; /* guards it, and orders
                                                             * one take-and-test after another */

/* Sets a lock of TYPE (F_RDLCK or F_UNLCK) on byte OFF of FD. Returns 0 or -errno. */
static int set_byte(int fd, int off, short type)
{
  struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = off, .l_len = 1 };

  while (fcntl(fd, F_OFD_SETLK, &fl) == -1) {
    if (errno != EINTR)
      return -errno;
  }
  return 0;
}

/* Whether another open file description holds a lock on byte OFF of FD:
 * 1 yes, 0 no, or -errno. */
static int test_byte(int fd, int off)
{
  struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = off, .l_len = 1 };

  if (fcntl(fd, F_OFD_GETLK, &fl) == -1)
    return -errno;
  return fl.l_type != F_UNLCK;
}

/* Tests FD for other openers that conflict with P: one holding what P
 * refuses, or refusing what P holds. Returns 0, or -1 with a message
 * naming NAME in ERR. */
static int test(int fd, const char *name, struct perms p, char *err, size_t errlen)
{
  /* A writer is the holder most worth naming, a reader the least. */
  static const int order[PERM_BITS] = { 1, 3, 2, 0 };
  int r;

  for (int i = 0; i < PERM_BITS; i++) {
    int bit = order[i];

    if (!(p.refused & (1u << bit)))
      continue;
    r = test_byte(fd, LOCK_PERM_BASE + bit);
    if (r > 0)
      snprintf(err, errlen, "%s: locked by another process that %s", name, holder[bit]);
    if (r != 0)
      goto fail;
  }
  for (int bit = 0; bit < PERM_BITS; bit++) {
    if (!(p.held & (1u << bit)))
      continue;
    r = test_byte(fd, LOCK_REFUSED_BASE + bit);
    if (r > 0)
      snprintf(err, errlen, "%s: locked by another process that refuses %s", name, refuser[bit]);
    if (r != 0)
      goto fail;
  }
  return 0;
fail:
  if (r < 0)
    snprintf(err, errlen, "%s: lock: %s", name, strerror(-r));
  return -1;
}

/* Drops every byte lock FD's open file description holds. */
static void release(int fd)
{
  for (int bit = 0; bit < PERM_BITS; bit++) {
    set_byte(fd, LOCK_PERM_BASE + bit, F_UNLCK);
    set_byte(fd, LOCK_REFUSED_BASE + bit, F_UNLCK);
  }
}

/* Takes P's bytes on FD, then tests for conflicts; on a conflict gives the
 * bytes back. Returns 0, or -1 with a message naming NAME in ERR. */
static int take(int fd, const char *name, struct perms p, char *err, size_t errlen)
{
  int r = 0;

  for (int bit = 0; bit < PERM_BITS && r == 0; bit++) {
    if (p.held & (1u << bit))
      r = set_byte(fd, LOCK_PERM_BASE + bit, F_RDLCK);
    if (r == 0 && (p.refused & (1u << bit)))
      r = set_byte(fd, LOCK_REFUSED_BASE + bit, F_RDLCK);
  }
  if (r < 0)
    snprintf(err, errlen, "%s: lock: %s", name, strerror(-r));
  if (r < 0 || test(fd, name, p, err, errlen) < 0) {
    release(fd);
    return -1;
  }
  return 0;
}

int lock_image(int fd, const char *name, const char *base_of, enum fmt_access access,
               struct lock **out, char *err, size_t errlen)
{
  struct lock *l, *o;
  struct stat st;
  int r = -1;

  *out = NULL;
  if (access == FMT_SHARED)
    return 0;
  if (fstat(fd, &st) == -1) {
    snprintf(err, errlen, "%s: stat: %s", name, strerror(errno));
    return -1;
  }
  l = calloc(1, sizeof *l);
  if (l == NULL || (l->name = strdup(name)) == NULL ||
      (base_of != NULL && (l->base_of = strdup(base_of)) == NULL)) {
    snprintf(err, errlen, "%s: %s", name, strerror(ENOMEM));
    goto out;
  }
  l->dev = st.st_dev;
  l->ino = st.st_ino;
  l->access = access;
  pthread_mutex_lock(&locked_mutex);
  for (o = locked; o != NULL; o = o->next)
    if (o->dev == l->dev && o->ino == l->ino && (o->access == FMT_WRITE || access == FMT_WRITE))
      break;
  if (o != NULL && o->base_of != NULL)
    snprintf(err, errlen, "%s: given twice (same file as %s, the base of %s)", name, o->name,
             o->base_of);
  else if (o != NULL && strcmp(o->name, name) == 0)
    snprintf(err, errlen, "%s: given twice", name);
  else if (o != NULL)
    snprintf(err, errlen, "%s: given twice (same file as %s)", name, o->name);
  else
    r = take(fd, name, access == FMT_WRITE ? perms_write : perms_read, err, errlen);
  if (r == 0) {
    /* Appended: a later conflict names the first open of the file. */
    struct lock **p = &locked;
    while (*p != NULL)
      p = &(*p)->next;
    *p = l;
    *out = l;
    l = NULL;
  }
  pthread_mutex_unlock(&locked_mutex);
out:
  lock_forget(l);
  return r;
}

void lock_forget(struct lock *l)
{
  if (l == NULL)
    return;
  pthread_mutex_lock(&locked_mutex);
  for (struct lock **p = &locked; *p != NULL; p = &(*p)->next)
    if (*p == l) {
      *p = l->next;
      break;
    }
  pthread_mutex_unlock(&locked_mutex);
  free(l->name);
  free(l->base_of);
  free(l);
}

int lock_create(int fd, const char *path, char *err, size_t errlen)
{
  return take(fd, path, perms_create, err, errlen);
}

int lock_check(int fd, const char *path, bool readonly, char *err, size_t errlen)
{
  return test(fd, path, readonly ? perms_read : perms_write, err, errlen);
}

enum lock_use lock_in_use(const struct fmt *f)
{
  /* A writer holds byte 100 + 1; any reader byte 100 (qemu-img -U and
   * FMT_SHARED opens hold nothing and are not seen). */
  if (test_byte(f->fd, LOCK_PERM_BASE + 1) > 0)
    return LOCK_WRITTEN;
  for (int bit = 0; bit < PERM_BITS; bit++)
    if (test_byte(f->fd, LOCK_PERM_BASE + bit) > 0 || test_byte(f->fd, LOCK_REFUSED_BASE + bit) > 0)
      return LOCK_IN_USE;
  return LOCK_UNUSED;
}

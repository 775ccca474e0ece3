/* Helpers shared by the fuzz targets (see fuzz-util.h). */
#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz-util.h"

static char private_dir[PATH_MAX]; /* "" until fuzz_private_dir */

/* Removes DIRFD's entries, recursively (the directory is ours: nothing else
 * writes there). */
static void remove_entries(int dirfd)
{
  DIR *d = fdopendir(dirfd);
  struct dirent *e;

  if (d == NULL) {
    close(dirfd);
    return;
  }
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
      continue;
    if (unlinkat(dirfd, e->d_name, 0) == -1 && (errno == EISDIR || errno == EPERM)) {
      int sub = openat(dirfd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (sub >= 0)
        remove_entries(sub);
      unlinkat(dirfd, e->d_name, AT_REMOVEDIR);
    }
  }
  closedir(d);
}

/* atexit: removes the private directory, so that runs leave nothing behind
 * (a crash leaves it, for the post-mortem). */
static void remove_private_dir(void)
{
  int fd;

  if (private_dir[0] == '\0')
    return;
  fd = open(private_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0)
    remove_entries(fd);
  rmdir(private_dir);
  private_dir[0] = '\0';
}

const char *fuzz_private_dir(const char *tag)
{
  const char *parent = getenv("TMPDIR");

  /* tmpfs if we can: the overlay engine syncs, and a disk would make every
   * flush cost milliseconds. */
  if (parent == NULL || parent[0] == '\0')
    parent = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  snprintf(private_dir, sizeof private_dir, "%s/blockd-%s.XXXXXX", parent, tag);
  if (mkdtemp(private_dir) == NULL) {
    perror(private_dir);
    exit(1);
  }
  atexit(remove_private_dir);
  return private_dir;
}

int fuzz_set_mtime(const char *dir, const char *name)
{
  struct timespec ts[2] = {
    { .tv_sec = FUZZ_MTIME_SEC, .tv_nsec = FUZZ_MTIME_NSEC },
    { .tv_sec = FUZZ_MTIME_SEC, .tv_nsec = FUZZ_MTIME_NSEC },
  };
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  int r = 0;

  if (dfd == -1)
    return -errno;
  if (utimensat(dfd, name, ts, 0) == -1)
    r = -errno;
  close(dfd);
  return r;
}

int fuzz_write_file(const char *dir, const char *name, const void *data, size_t len,
                    uint64_t size, bool fixed_mtime)
{
  char path[PATH_MAX];
  const char *p = data;
  int fd, r = 0;

  snprintf(path, sizeof path, "%s/%s", dir, name);
  fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd == -1)
    return -errno;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n <= 0) {
      r = n < 0 ? -errno : -EIO;
      break;
    }
    p += n;
    len -= (size_t)n;
  }
  /* Never shrinks: SIZE only extends the file with a hole. */
  if (r == 0 && size > (uint64_t)lseek(fd, 0, SEEK_CUR) && ftruncate(fd, (off_t)size) == -1)
    r = -errno;
  if (close(fd) == -1 && r == 0)
    r = -errno;
  if (r == 0 && fixed_mtime)
    r = fuzz_set_mtime(dir, name);
  return r;
}

/* Stores V big-endian at P (qcow2 is big-endian throughout). */
static void put_be64(uint8_t *p, uint64_t v)
{
  v = htobe64(v);
  memcpy(p, &v, 8);
}

/* The same, 32 bits. */
static void put_be32(uint8_t *p, uint32_t v)
{
  v = htobe32(v);
  memcpy(p, &v, 4);
}

/* The same, 16 bits. */
static void put_be16(uint8_t *p, uint16_t v)
{
  v = htobe16(v);
  memcpy(p, &v, 2);
}

void fuzz_qcow2_image(uint8_t buf[FUZZ_QCOW2_FILE_SIZE])
{
  const uint64_t copied = 1ULL << 63; /* refcount 1: the entry's cluster is not shared */
  const unsigned cs = FUZZ_QCOW2_CLUSTER;
  uint8_t *h = buf;

  /* Clusters: 0 header, 1 refcount table, 2 refcount block, 3 L1, 4 L2,
   * 5 and 6 data. Every cluster is referenced once, as qemu-img check wants. */
  memset(buf, 0, FUZZ_QCOW2_FILE_SIZE);
  memcpy(h, "QFI\xfb", 4);
  put_be32(h + 4, 3);                        /* version */
  put_be32(h + 20, 9);                       /* cluster_bits */
  put_be64(h + 24, FUZZ_QCOW2_VIRTUAL_SIZE); /* size */
  put_be32(h + 36, 2);                       /* l1_size: 64 entries of 512 bytes each */
  put_be64(h + 40, 3 * cs);                  /* l1_table_offset */
  put_be64(h + 48, 1 * cs);                  /* refcount_table_offset */
  put_be32(h + 56, 1);                       /* refcount_table_clusters */
  put_be32(h + 96, 4);                       /* refcount_order: 16-bit refcounts */
  put_be32(h + 100, 104);                    /* header_length; the extension end is zeroes */
  put_be64(buf + 1 * cs, 2 * cs);
  for (unsigned i = 0; i < 7; i++)
    put_be16(buf + 2 * cs + 2 * i, 1);
  put_be64(buf + 3 * cs, (4 * cs) | copied);
  put_be64(buf + 4 * cs + 0, (5 * cs) | copied); /* cluster 0: data */
  put_be64(buf + 4 * cs + 8, 1);                 /* cluster 1: reads as zeroes */
  put_be64(buf + 4 * cs + 24, (6 * cs) | copied); /* cluster 3: data; 2 unallocated */
  for (unsigned i = 0; i < 2 * cs; i++)
    buf[5 * cs + i] = fuzz_pattern(i);
}

bool fuzz_verbose(void)
{
  static int v = -1;

  if (v < 0)
    v = getenv("BLOCKD_FUZZ_VERBOSE") != NULL;
  return v;
}

/* zeroout: asks a block device to zero a range, the way file systems and
 * mkfs do, so that the tiny guest can send write-zeroes requests (busybox
 * has no such tool). Linked statically into the guest's initramfs.
 *
 *   zeroout [-u] DEVICE OFFSET LENGTH
 *
 * Without -u: fallocate(ZERO_RANGE), a write-zeroes request that must not
 * deallocate. With -u: fallocate(PUNCH_HOLE), a write-zeroes request that
 * may (virtio-blk's UNMAP flag, NBD without NO_HOLE). */
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
  int unmap = argc == 5 && strcmp(argv[1], "-u") == 0;
  int mode = unmap ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE : FALLOC_FL_ZERO_RANGE;
  int fd;

  if (argc != 4 + unmap) {
    fprintf(stderr, "usage: zeroout [-u] DEVICE OFFSET LENGTH\n");
    return 2;
  }
  fd = open(argv[1 + unmap], O_WRONLY);
  if (fd < 0 || fallocate(fd, mode, strtoll(argv[2 + unmap], NULL, 0),
                          strtoll(argv[3 + unmap], NULL, 0)) < 0) {
    perror(argv[1 + unmap]);
    return 1;
  }
  return close(fd) < 0;
}

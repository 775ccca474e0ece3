/* Overlay crash test: a child writes, trims and zeroes an overlay with FUA
 * and flushes, telling the parent what has been made durable; the parent
 * SIGKILLs it at a random moment, reopens the overlay and checks that every
 * durable byte reads back, and that no byte outside an operation's range
 * ever changed (copy-up must not clobber neighbours).  25 kills.
 *
 * A SIGKILL keeps the page cache but loses the in-memory bitmap: what this
 * checks is that the bitmap on disk covers everything acknowledged.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define SIZE (16u << 20)  /* virtual size */
#define CB 12             /* 4 KiB clusters */
#define CS (1u << CB)
#define SLOT (3 * CS)     /* each slot gets one operation, within its bounds */
#define NSLOTS (SIZE / SLOT)
#define PER_CHILD 50      /* slots each child works through */
#define KILLS 25

static char dir[256], base_path[300], ovl_path[300];
static unsigned char *base_data;

/* One operation, derived from its slot number alone. */
struct op {
  int kind;        /* 0 write, 1 trim, 2 zero */
  uint64_t offset; /* virtual offset */
  uint64_t length; /* bytes */
  bool fua;        /* FMT_FUA */
  bool flush;      /* flush afterwards */
};

/* splitmix64 step. */
static uint64_t mix(uint64_t x)
{
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

/* The operation of slot S. */
static struct op op_of(uint64_t s)
{
  uint64_t r = mix(s);
  struct op op;

  op.kind = (int)(r % 5 < 3 ? 0 : r % 5 - 2);
  op.offset = s * SLOT + mix(r) % (SLOT - 1);
  op.length = 1 + mix(r + 1) % (2 * CS);
  if (op.offset + op.length > (s + 1) * SLOT)
    op.length = (s + 1) * SLOT - op.offset;
  op.fua = mix(r + 2) % 4 == 0;
  op.flush = mix(r + 3) % 3 == 0;
  return op;
}

/* Byte I of the data written by slot S's write. */
static unsigned char pattern(uint64_t s, uint64_t i)
{
  return (unsigned char)(mix(s * 1000003 + i / 8) >> (8 * (i % 8)));
}

/* Sends one acknowledgement: 'U' slot durable, 'F' every slot up to it durable. */
static void ack(int fd, char type, uint32_t s)
{
  char msg[5];

  msg[0] = type;
  memcpy(msg + 1, &s, 4);
  if (write(fd, msg, 5) != 5)
    _exit(3);
}

/* The child: works through slots [FIRST, FIRST+PER_CHILD) until killed. */
static void child(int fd, uint64_t first)
{
  char err[1024];
  unsigned char buf[2 * CS];
  struct fmt *f = fmt_open(ovl_path, NULL, false, err, sizeof err);

  if (f == NULL) {
    fprintf(stderr, "child: %s\n", err);
    _exit(2);
  }
  for (uint64_t s = first; s < first + PER_CHILD && s < NSLOTS; s++) {
    struct op op = op_of(s);
    uint32_t flags = op.fua ? FMT_FUA : 0;
    int r;

    if (op.kind == 0) {
      for (uint64_t i = 0; i < op.length; i++)
        buf[i] = pattern(s, op.offset + i);
      r = f->ops->pwrite(f, buf, op.length, op.offset, flags);
    }
    else if (op.kind == 1)
      r = f->ops->trim(f, op.length, op.offset, flags);
    else
      r = f->ops->zero(f, op.length, op.offset, flags | FMT_MAY_TRIM);
    if (r < 0)
      _exit(4);
    if (op.fua)
      ack(fd, 'U', (uint32_t)s);
    if (op.flush) {
      if (f->ops->flush(f) < 0)
        _exit(5);
      ack(fd, 'F', (uint32_t)s);
    }
  }
  /* Exit without flushing: the rest was never acknowledged. */
  _exit(0);
}

/* Opens the overlay (read-only if READONLY) and counts unowned clusters
 * with data in the overlay's data area. The map path tells owned (overlay
 * fd) from unowned (the raw base's fd at the same offset). */
static uint64_t stale_clusters(bool readonly)
{
  char err[1024];
  struct fmt *f = fmt_open(ovl_path, NULL, readonly, err, sizeof err);
  int ofd = open(ovl_path, O_RDONLY);
  uint64_t data_offset = 0, n = 0;
  struct fmt_map m;

  if (f == NULL || ofd < 0) {
    fprintf(stderr, "FAIL: %s\n", err);
    exit(1);
  }
  if (!readonly) {
    /* The read-write open did the reclaiming; look through a reader. */
    fmt_close(f);
    f = fmt_open(ovl_path, NULL, true, err, sizeof err);
  }
  for (uint64_t c = 0; c < SIZE / CS && data_offset == 0; c++)
    if (f->ops->map(f, FMT_MAP_READ, c * CS, CS, &m) && m.offset != c * CS)
      data_offset = m.offset - c * CS;
  for (uint64_t c = 0; c < SIZE / CS && data_offset != 0; c++) {
    if (!f->ops->map(f, FMT_MAP_READ, c * CS, CS, &m) || m.offset != c * CS)
      continue;
    off_t d = lseek(ofd, (off_t)(data_offset + c * CS), SEEK_DATA);
    if (d != -1 && (uint64_t)d < data_offset + (c + 1) * CS)
      n++;
  }
  close(ofd);
  fmt_close(f);
  return n;
}

int main(void)
{
  static unsigned char durable[NSLOTS]; /* 1: slot's op acknowledged durable */
  static unsigned char touched[NSLOTS]; /* 1: some child may have run it */
  unsigned char *buf = malloc(SIZE);
  char err[1024], cmd[400];
  int failures = 0;

  snprintf(dir, sizeof dir, "%s/overlay-crash.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  if (mkdtemp(dir) == NULL)
    return 1;
  snprintf(base_path, sizeof base_path, "%s/base.img", dir);
  snprintf(ovl_path, sizeof ovl_path, "%s/ws.ovl", dir);
  base_data = malloc(SIZE);
  for (uint64_t i = 0; i < SIZE; i += 8) {
    uint64_t v = mix(i ^ 0x5555);
    memcpy(base_data + i, &v, 8);
  }
  int fd = open(base_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0 || file_pwrite_full(fd, base_data, SIZE, 0) < 0)
    return 1;
  close(fd);
  if (overlay_create(ovl_path, base_path, NULL, CB, FMT_CREATE_FORCE, err, sizeof err) < 0) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  srand((unsigned)time(NULL) ^ (unsigned)getpid());

  for (int k = 0; k < KILLS && failures == 0; k++) {
    uint64_t first = (uint64_t)k * PER_CHILD;
    int p[2];
    pid_t pid;

    if (pipe(p) < 0)
      return 1;
    pid = fork();
    if (pid == 0) {
      close(p[0]);
      child(p[1], first);
    }
    close(p[1]);
    /* A random moment: from before the first op to after the last. */
    useconds_t delay = (useconds_t)(rand() % 40000);
    usleep(delay);
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    if (WIFEXITED(status) && WEXITSTATUS(status) != 0) {
      fprintf(stderr, "FAIL: child exited %d\n", WEXITSTATUS(status));
      return 1;
    }
    char msg[5];
    int acks = 0;
    while (read(p[0], msg, 5) == 5) {
      uint32_t s;
      memcpy(&s, msg + 1, 4);
      if (msg[0] == 'U')
        durable[s] = 1;
      else
        for (uint64_t t = first; t <= s; t++)
          durable[t] = 1;
      acks++;
    }
    close(p[0]);
    for (uint64_t s = first; s < first + PER_CHILD && s < NSLOTS; s++)
      touched[s] = 1;

    /* The lock died with the child: reopen and check every byte. */
    struct fmt *f = fmt_open(ovl_path, NULL, true, err, sizeof err);
    if (f == NULL) {
      fprintf(stderr, "FAIL: reopen after kill %d: %s\n", k, err);
      return 1;
    }
    if (f->ops->pread(f, buf, SIZE, 0) < 0) {
      fprintf(stderr, "FAIL: read after kill %d\n", k);
      return 1;
    }
    fmt_close(f);
    for (uint64_t s = 0; s < NSLOTS && failures < 10; s++) {
      struct op op = op_of(s);
      for (uint64_t i = s * SLOT; i < (s + 1) * SLOT; i++) {
        bool in = i >= op.offset && i < op.offset + op.length;
        unsigned char now = op.kind == 0 ? pattern(s, i) : 0;
        bool ok;
        if (!in || !touched[s])
          ok = buf[i] == base_data[i];
        else if (durable[s])
          ok = buf[i] == now;
        else
          ok = buf[i] == now || buf[i] == base_data[i];
        if (!ok) {
          fprintf(stderr, "FAIL: kill %d: slot %llu (%s, %s) byte %llu: %#x (base %#x, op %#x)\n",
                  k, (unsigned long long)s, op.kind == 0 ? "write" : op.kind == 1 ? "trim" : "zero",
                  durable[s] ? "durable" : in ? "not acknowledged" : "outside the op",
                  (unsigned long long)i, buf[i], base_data[i], now);
          failures++;
          break;
        }
      }
    }
    printf("kill %2d after %5.1f ms: %3d acknowledgements, %s\n", k + 1, delay / 1000.0, acks,
           failures ? "MISMATCH" : "all durable bytes intact");
  }
  /* Writes whose bits died with a child left data in unowned clusters; a
   * read-write open punches it. Count such clusters before and after. */
  if (failures == 0) {
    uint64_t before = stale_clusters(true), after = stale_clusters(false);
    printf("unowned clusters holding data: %llu after the kills, %llu after a read-write open\n",
           (unsigned long long)before, (unsigned long long)after);
    if (after != 0) {
      fprintf(stderr, "FAIL: read-write open left data in %llu unowned clusters\n",
              (unsigned long long)after);
      failures++;
    }
  }
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0)
    fprintf(stderr, "warning: could not remove %s\n", dir);
  free(buf);
  free(base_data);
  return failures ? 1 : 0;
}

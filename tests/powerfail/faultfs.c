/* faultfs: a FUSE file system that loses what a real disk would lose.
 *
 * A flat directory of regular files kept in memory.  Each file has a durable
 * state (its size and its allocated 4 KiB pages) and a volatile log: the data
 * operations since its last fsync, in order.  Reads see the durable state with
 * the log applied (kept materialized as the "current" state).  fsync commits
 * the log.  A power cut, commanded through the control file ".faultfs", turns
 * every file into its durable state plus a random subset of its log (whole
 * operations, single pages of a write, or single 512-byte sectors of a page),
 * and kills every open handle, so a process that outlived the cut cannot write
 * into the world after it.  The control file also injects I/O errors, and an
 * injected fsync error loses the unsynced data as Linux writeback does.
 *
 * Simplifications: namespace operations (create, unlink, rename) and
 * metadata (mode, times) are durable at once; only file data and sizes are
 * volatile.  No kernel caching (direct_io, zero timeouts), so a cut is never
 * hidden by the page cache.  File locks are left to the kernel.
 *
 * Usage: faultfs [-d] MOUNTPOINT   (foreground, single-threaded)
 *
 * Control file, one command per write() (a bad one fails with EINVAL):
 *   cut SEED MODE     power cut; the survivors are chosen by a PRNG seeded
 *                     with SEED.  MODE drop: nothing unsynced survives;
 *                     random: each logged operation survives or not, a write
 *                     page by page; torn: as random, and a surviving page of a
 *                     write may keep only some of its 512-byte sectors
 *   fail OP ERRNO COUNT [NAME]
 *                     the next COUNT (-1: all) OPs (write, read, fsync,
 *                     fallocate, truncate, any) on file NAME (default: any
 *                     file) fail with ERRNO (EIO, ENOSPC or a number).  A
 *                     failed fsync drops the file's unsynced data
 *   clear             remove every fault rule
 * Reading it returns one line of counters: writes, fsyncs, cuts, faults.
 */
#define FUSE_USE_VERSION 35

#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>

#define PAGE_SIZE_FS 4096u   /* allocation unit: holes are whole absent pages */
#define SECTOR 512u          /* the unit a torn page write keeps or loses */
#define CTL_NAME ".faultfs"  /* the control file, at the root, not listed */
#define MAX_RULES 32         /* fault rules active at once */
#define MAX_NAME 255         /* longest file name */
#define FS_BLOCKS (1ULL << 26) /* statfs: 256 GiB of 4 KiB blocks */

/* One 4 KiB page of data, shared between states until written (copy on write). */
struct pbuf {
  unsigned refs;                      /* states holding this buffer */
  unsigned char data[PAGE_SIZE_FS];   /* the bytes; past the file's size always zero */
};

/* An allocated page of a file. */
struct pent {
  uint64_t index;    /* page number: file offset / PAGE_SIZE_FS */
  struct pbuf *buf;  /* its contents (one reference) */
};

/* A file's contents: its size and allocated pages, sorted by index. */
struct state {
  uint64_t size;       /* file size in bytes */
  struct pent *pages;  /* allocated pages, ascending index, all below the size */
  size_t n;            /* entries in pages */
  size_t cap;          /* room in pages */
};

/* Kinds of data operations kept in the volatile log. */
enum log_kind {
  LOG_WRITE,    /* bytes written at off */
  LOG_PUNCH,    /* [off, off+len) punched (KEEP_SIZE) */
  LOG_ZERO,     /* [off, off+len) zeroed and allocated */
  LOG_ALLOC,    /* [off, off+len) allocated */
  LOG_TRUNCATE, /* size set to off */
};

/* One logged data operation since the file's last fsync. */
struct logop {
  enum log_kind kind;   /* what it did */
  uint64_t off;         /* offset (new size for LOG_TRUNCATE) */
  uint64_t len;         /* length in bytes */
  bool keep_size;       /* LOG_ZERO, LOG_ALLOC: the size does not grow */
  unsigned char *data;  /* LOG_WRITE: a copy of the bytes written */
  struct logop *next;   /* next newer operation */
};

/* A regular file. */
struct node {
  char *name;            /* name in the root directory; NULL once unlinked */
  uint64_t ino;          /* inode number reported by getattr */
  mode_t mode;           /* S_IFREG and permission bits */
  uid_t uid;             /* owner */
  gid_t gid;             /* group */
  struct timespec atime; /* access time: set by utimens only */
  struct timespec mtime; /* modification time: data operations and utimens */
  struct timespec ctime; /* change time: any change */
  unsigned opens;        /* open handles; an unlinked file lives until the last closes */
  struct state durable;  /* what survives any power cut */
  struct state cur;      /* durable with the log applied: what reads see */
  struct logop *log;     /* volatile log, oldest first */
  struct logop *log_tail; /* newest entry of the log, for appending */
  struct node *next;     /* next file in creation order (cuts visit files in it) */
};

/* What an open file handle (fi->fh) points to. */
struct handle {
  struct node *node;  /* the file; NULL for the control file */
  uint64_t epoch;     /* cuts seen when opened: a later cut kills the handle */
};

/* Data operations a fault rule can target. */
enum fop { FOP_WRITE, FOP_READ, FOP_FSYNC, FOP_FALLOCATE, FOP_TRUNCATE, FOP_ANY };

/* One "fail" command still in force. */
struct rule {
  enum fop op;              /* operation it fails (FOP_ANY: every data operation) */
  int err;                  /* errno returned */
  long count;               /* failures left; -1: until cleared */
  char name[MAX_NAME + 1];  /* only this file; "" for every file */
};

/* Counters shown by reading the control file. */
struct counters {
  uint64_t writes;  /* write requests on files */
  uint64_t fsyncs;  /* fsyncs that committed a log */
  uint64_t cuts;    /* power cuts */
  uint64_t faults;  /* errors injected */
};

/* The whole file system. The loop is single-threaded (-s), so no locking. */
static struct node *files;         /* every live file, created or unlinked-but-open */
static uint64_t next_ino = 3;      /* 1 is the root, 2 the control file */
static uint64_t epoch;             /* number of cuts so far: handles older than it are dead */
static struct rule rules[MAX_RULES]; /* fault rules, matched in the order given */
static size_t nr_rules;            /* entries in rules */
static struct counters stats;      /* what reading the control file shows */
static struct timespec ctl_time;   /* mount time: the root's and control file's times */

/* Fatal allocation failure: a test tool has no better answer. */
static void *xmalloc(size_t n)
{
  void *p = malloc(n ? n : 1);

  if (p == NULL) {
    fprintf(stderr, "faultfs: out of memory\n");
    abort();
  }
  return p;
}

/* xmalloc for an array, zeroed. */
static void *xcalloc(size_t n, size_t size)
{
  void *p = calloc(n ? n : 1, size ? size : 1);

  if (p == NULL) {
    fprintf(stderr, "faultfs: out of memory\n");
    abort();
  }
  return p;
}

/* ---- PRNG: splitmix64, so that a SEED replays the same choices. ---- */

static uint64_t rng_state;         /* reset to SEED by each cut */

/* Next 64 random bits. */
static uint64_t rng_next(void)
{
  uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);

  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/* A coin toss. */
static bool rng_coin(void)
{
  return rng_next() >> 63;
}

/* ---- Page buffers and file states. ---- */

/* Drops one reference to B. */
static void pbuf_put(struct pbuf *b)
{
  if (--b->refs == 0)
    free(b);
}

/* First position in S whose page index is >= INDEX. */
static size_t state_lower(const struct state *s, uint64_t index)
{
  size_t lo = 0, hi = s->n;

  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (s->pages[mid].index < index)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

/* Returns page INDEX of S, or NULL if it is a hole. */
static struct pbuf *state_get(const struct state *s, uint64_t index)
{
  size_t i = state_lower(s, index);

  return i < s->n && s->pages[i].index == index ? s->pages[i].buf : NULL;
}

/* Returns page INDEX of S ready to be modified: allocated (zeroed) if it was
 * a hole, copied first if another state shares it. */
static struct pbuf *state_mut(struct state *s, uint64_t index)
{
  size_t i = state_lower(s, index);
  struct pbuf *b;

  if (i < s->n && s->pages[i].index == index) {
    b = s->pages[i].buf;
    if (b->refs > 1) {
      struct pbuf *copy = xmalloc(sizeof *copy);
      memcpy(copy->data, b->data, PAGE_SIZE_FS);
      copy->refs = 1;
      pbuf_put(b);
      s->pages[i].buf = b = copy;
    }
    return b;
  }
  if (s->n == s->cap) {
    s->cap = s->cap ? s->cap * 2 : 64;
    struct pent *p = realloc(s->pages, s->cap * sizeof *p);
    if (p == NULL) {
      fprintf(stderr, "faultfs: out of memory\n");
      abort();
    }
    s->pages = p;
  }
  memmove(&s->pages[i + 1], &s->pages[i], (s->n - i) * sizeof *s->pages);
  b = xcalloc(1, sizeof *b);
  b->refs = 1;
  s->pages[i].index = index;
  s->pages[i].buf = b;
  s->n++;
  return b;
}

/* Removes pages FIRST..LAST-1 of S (makes them holes). */
static void state_drop_pages(struct state *s, uint64_t first, uint64_t last)
{
  size_t a, b;

  if (first >= last)
    return;
  a = state_lower(s, first);
  b = state_lower(s, last);
  if (a == b)
    return; /* all holes already (and PAGES may be NULL) */
  for (size_t i = a; i < b; i++)
    pbuf_put(s->pages[i].buf);
  memmove(&s->pages[a], &s->pages[b], (s->n - b) * sizeof *s->pages);
  s->n -= b - a;
}

/* Frees S's pages. */
static void state_free(struct state *s)
{
  for (size_t i = 0; i < s->n; i++)
    pbuf_put(s->pages[i].buf);
  free(s->pages);
  memset(s, 0, sizeof *s);
}

/* Makes DST (freed first) a copy of SRC sharing its page buffers. */
static void state_copy(struct state *dst, const struct state *src)
{
  state_free(dst);
  dst->size = src->size;
  dst->n = dst->cap = src->n;
  dst->pages = xcalloc(src->n, sizeof *dst->pages);
  for (size_t i = 0; i < src->n; i++) {
    dst->pages[i] = src->pages[i];
    dst->pages[i].buf->refs++;
  }
}

/* Copies [OFF, OFF+LEN) of S into BUF; holes and bytes past the end read as zeroes. */
static void state_read(const struct state *s, unsigned char *buf, uint64_t len, uint64_t off)
{
  while (len > 0) {
    uint64_t index = off / PAGE_SIZE_FS, in = off % PAGE_SIZE_FS;
    uint64_t n = PAGE_SIZE_FS - in < len ? PAGE_SIZE_FS - in : len;
    const struct pbuf *b = off < s->size ? state_get(s, index) : NULL;

    if (b)
      memcpy(buf, b->data + in, n);
    else
      memset(buf, 0, n);
    buf += n;
    off += n;
    len -= n;
  }
}

/* Writes BUF to [OFF, OFF+LEN) of S, growing it as needed. */
static void state_write(struct state *s, const unsigned char *buf, uint64_t len, uint64_t off)
{
  if (len > 0 && off + len > s->size)
    s->size = off + len;
  while (len > 0) {
    uint64_t in = off % PAGE_SIZE_FS;
    uint64_t n = PAGE_SIZE_FS - in < len ? PAGE_SIZE_FS - in : len;

    memcpy(state_mut(s, off / PAGE_SIZE_FS)->data + in, buf, n);
    buf += n;
    off += n;
    len -= n;
  }
}

/* Zeroes [OFF, OFF+LEN) of S (clipped to its size): whole pages become holes
 * if PUNCH, else allocated zero pages; partial pages are zeroed in place. */
static void state_zero(struct state *s, uint64_t len, uint64_t off, bool punch)
{
  uint64_t end = off + len > s->size ? s->size : off + len;

  while (off < end) {
    uint64_t index = off / PAGE_SIZE_FS, in = off % PAGE_SIZE_FS;
    uint64_t n = PAGE_SIZE_FS - in < end - off ? PAGE_SIZE_FS - in : end - off;

    if (n == PAGE_SIZE_FS && punch) {
      /* A run of whole pages: one removal. */
      uint64_t last = end / PAGE_SIZE_FS;
      state_drop_pages(s, index, last);
      off = last * PAGE_SIZE_FS;
      continue;
    }
    if (n == PAGE_SIZE_FS || state_get(s, index) != NULL)
      memset(state_mut(s, index)->data + in, 0, n);
    off += n;
  }
}

/* Allocates the pages of [OFF, OFF+LEN) of S (clipped to its size) as zeroes
 * where they are holes. */
static void state_alloc(struct state *s, uint64_t len, uint64_t off)
{
  uint64_t end = off + len > s->size ? s->size : off + len;

  for (uint64_t index = off / PAGE_SIZE_FS; index * PAGE_SIZE_FS < end; index++)
    if (state_get(s, index) == NULL)
      state_mut(s, index);
}

/* Sets S's size: pages past it are dropped, the tail of a partial last page zeroed. */
static void state_truncate(struct state *s, uint64_t size)
{
  if (size < s->size) {
    uint64_t keep = (size + PAGE_SIZE_FS - 1) / PAGE_SIZE_FS;

    state_drop_pages(s, keep, UINT64_MAX);
    if (size % PAGE_SIZE_FS != 0 && state_get(s, size / PAGE_SIZE_FS) != NULL)
      memset(state_mut(s, size / PAGE_SIZE_FS)->data + size % PAGE_SIZE_FS, 0,
             PAGE_SIZE_FS - size % PAGE_SIZE_FS);
  }
  s->size = size;
}

/* Applies logged operation OP, entirely, to S. */
static void apply(struct state *s, const struct logop *op)
{
  switch (op->kind) {
  case LOG_WRITE:
    state_write(s, op->data, op->len, op->off);
    break;
  case LOG_PUNCH:
    state_zero(s, op->len, op->off, true);
    break;
  case LOG_ZERO:
  case LOG_ALLOC:
    /* Growing first: both clip to the size. */
    if (!op->keep_size && op->off + op->len > s->size)
      s->size = op->off + op->len;
    if (op->kind == LOG_ZERO)
      state_zero(s, op->len, op->off, false);
    else
      state_alloc(s, op->len, op->off);
    break;
  case LOG_TRUNCATE:
    state_truncate(s, op->off);
    break;
  }
}

/* ---- Files, the log, commits and cuts. ---- */

/* Frees N's log. */
static void log_free(struct node *n)
{
  for (struct logop *op = n->log, *next; op; op = next) {
    next = op->next;
    free(op->data);
    free(op);
  }
  n->log = n->log_tail = NULL;
}

/* Appends OP (a copy of *OP, DATA copied for writes) to N's log and applies it
 * to N's current state. */
static void log_add(struct node *n, const struct logop *op, const void *data)
{
  struct logop *e = xmalloc(sizeof *e);

  *e = *op;
  e->data = NULL;
  e->next = NULL;
  if (op->kind == LOG_WRITE) {
    e->data = xmalloc(op->len);
    memcpy(e->data, data, op->len);
  }
  if (n->log_tail)
    n->log_tail->next = e;
  else
    n->log = e;
  n->log_tail = e;
  apply(&n->cur, e);
  clock_gettime(CLOCK_REALTIME, &n->mtime);
  n->ctime = n->mtime;
}

/* fsync: the current state becomes durable. */
static void commit(struct node *n)
{
  state_copy(&n->durable, &n->cur);
  log_free(n);
}

/* A failed writeback: the unsynced data is gone, reads see the durable state. */
static void lose_log(struct node *n)
{
  state_copy(&n->cur, &n->durable);
  log_free(n);
}

/* How a power cut treats what was not yet synced. */
enum cut_mode { CUT_DROP, CUT_RANDOM, CUT_TORN };

/* Applies a random part of write OP to S: each page piece survives or not,
 * and under CUT_TORN a surviving piece may keep only some of its sectors. */
static void apply_partial_write(struct state *s, const struct logop *op, enum cut_mode mode)
{
  uint64_t off = op->off, end = op->off + op->len;

  while (off < end) {
    uint64_t page_end = (off / PAGE_SIZE_FS + 1) * PAGE_SIZE_FS;
    uint64_t n = (page_end < end ? page_end : end) - off;

    if (rng_coin()) {
      if (mode == CUT_TORN && rng_coin()) {
        /* Torn: sector by sector (absolute 512-byte boundaries), each new or old. */
        for (uint64_t o = off; o < off + n;) {
          uint64_t sn = (o / SECTOR + 1) * SECTOR - o;
          if (sn > off + n - o)
            sn = off + n - o;
          if (rng_coin())
            state_write(s, op->data + (o - op->off), sn, o);
          o += sn;
        }
      }
      else
        state_write(s, op->data + (off - op->off), n, off);
    }
    off += n;
  }
}

/* Power cut: every file becomes its durable state plus what MODE lets survive
 * of its log, in log order. Afterwards that is the durable state. */
static void power_cut(uint64_t seed, enum cut_mode mode)
{
  rng_state = seed;
  for (struct node *n = files; n; n = n->next) {
    struct state s = { 0 };

    state_copy(&s, &n->durable);
    if (mode != CUT_DROP)
      for (const struct logop *op = n->log; op; op = op->next) {
        if (op->kind == LOG_WRITE)
          apply_partial_write(&s, op, mode);
        else if (rng_coin())
          apply(&s, op);
      }
    log_free(n);
    state_free(&n->durable);
    n->durable = s;
    state_copy(&n->cur, &n->durable);
  }
  /* Every handle opened so far now belongs to a dead world. */
  epoch++;
  stats.cuts++;
}

/* Returns the live file named NAME (no slash), or NULL. */
static struct node *node_find(const char *name)
{
  for (struct node *n = files; n; n = n->next)
    if (n->name && strcmp(n->name, name) == 0)
      return n;
  return NULL;
}

/* Frees N and removes it from the list of files. */
static void node_free(struct node *n)
{
  for (struct node **p = &files; *p; p = &(*p)->next)
    if (*p == n) {
      *p = n->next;
      break;
    }
  log_free(n);
  state_free(&n->durable);
  state_free(&n->cur);
  free(n->name);
  free(n);
}

/* Removes N from the namespace; frees it unless a handle still holds it. */
static void node_unlink(struct node *n)
{
  free(n->name);
  n->name = NULL;
  if (n->opens == 0)
    node_free(n);
}

/* What a path names. */
enum what { W_NONE, W_ROOT, W_CTL, W_FILE };

/* Resolves PATH ("/", "/.faultfs", "/NAME"); sets *NODE for a file.
 * Returns W_NONE for anything else, with -ENOENT or -ENAMETOOLONG in *ERR. */
static enum what resolve(const char *path, struct node **node, int *err)
{
  *node = NULL;
  *err = -ENOENT;
  if (path == NULL || path[0] != '/')
    return W_NONE;
  if (path[1] == '\0')
    return W_ROOT;
  if (strchr(path + 1, '/') != NULL)
    return W_NONE;
  if (strlen(path + 1) > MAX_NAME) {
    *err = -ENAMETOOLONG;
    return W_NONE;
  }
  if (strcmp(path + 1, CTL_NAME) == 0)
    return W_CTL;
  *node = node_find(path + 1);
  return *node ? W_FILE : W_NONE;
}

/* Returns the file handle FI points to. */
static struct handle *handle_of(const struct fuse_file_info *fi)
{
  return (struct handle *)(uintptr_t)fi->fh;
}

/* Finds the file for an operation: through FI when given (-EIO if a cut
 * killed it since), else through PATH. Returns 0 with *NODE set, or -errno. */
static int file_for(const char *path, struct fuse_file_info *fi, struct node **node)
{
  int err;

  if (fi != NULL) {
    struct handle *h = handle_of(fi);
    if (h->node == NULL)
      return -EINVAL; /* data operations on the control file */
    if (h->epoch != epoch)
      return -EIO;
    *node = h->node;
    return 0;
  }
  switch (resolve(path, node, &err)) {
  case W_FILE:
    return 0;
  case W_ROOT:
    return -EISDIR;
  case W_CTL:
    return -EINVAL;
  default:
    return err;
  }
}

/* Returns -errno if a fault rule fails OP on N now (consuming one use), else 0. */
static int inject(enum fop op, const struct node *n)
{
  for (size_t i = 0; i < nr_rules; i++) {
    struct rule *r = &rules[i];
    int err = r->err;

    if (r->op != op && r->op != FOP_ANY)
      continue;
    if (r->name[0] != '\0' && (n->name == NULL || strcmp(r->name, n->name) != 0))
      continue;
    if (r->count > 0 && --r->count == 0) {
      memmove(&rules[i], &rules[i + 1], (nr_rules - i - 1) * sizeof *rules);
      nr_rules--;
    }
    stats.faults++;
    return -err;
  }
  return 0;
}

/* ---- The control file. ---- */

/* Parses an errno name or number; 0 if neither. */
static int parse_errno(const char *s)
{
  char *end;
  long v;

  if (strcmp(s, "EIO") == 0)
    return EIO;
  if (strcmp(s, "ENOSPC") == 0)
    return ENOSPC;
  v = strtol(s, &end, 10);
  return *s != '\0' && *end == '\0' && v > 0 && v < 4096 ? (int)v : 0;
}

/* Runs one control command (NUL-terminated, trailing blanks allowed).
 * Returns 0 or -EINVAL for a command it does not understand. */
static int control(char *cmd)
{
  char *argv[6];
  int argc = 0;

  for (char *tok = strtok(cmd, " \t\r\n"); tok; tok = strtok(NULL, " \t\r\n")) {
    if (argc == 6)
      return -EINVAL;
    argv[argc++] = tok;
  }
  if (argc == 0)
    return -EINVAL;
  if (strcmp(argv[0], "cut") == 0 && argc == 3) {
    char *end;
    uint64_t seed = strtoull(argv[1], &end, 0);
    enum cut_mode mode;

    if (*argv[1] == '\0' || *end != '\0')
      return -EINVAL;
    if (strcmp(argv[2], "drop") == 0)
      mode = CUT_DROP;
    else if (strcmp(argv[2], "random") == 0)
      mode = CUT_RANDOM;
    else if (strcmp(argv[2], "torn") == 0)
      mode = CUT_TORN;
    else
      return -EINVAL;
    power_cut(seed, mode);
    return 0;
  }
  if (strcmp(argv[0], "fail") == 0 && (argc == 4 || argc == 5)) {
    static const char *const ops[] = { "write", "read", "fsync", "fallocate", "truncate", "any" };
    struct rule r = { .op = FOP_ANY };
    size_t i;
    char *end;

    for (i = 0; i < sizeof ops / sizeof *ops; i++)
      if (strcmp(argv[1], ops[i]) == 0)
        break;
    if (i == sizeof ops / sizeof *ops)
      return -EINVAL;
    r.op = (enum fop)i;
    r.err = parse_errno(argv[2]);
    r.count = strtol(argv[3], &end, 10);
    if (r.err == 0 || *end != '\0' || (r.count < 1 && r.count != -1))
      return -EINVAL;
    if (argc == 5) {
      if (strlen(argv[4]) > MAX_NAME)
        return -EINVAL;
      strcpy(r.name, argv[4]);
    }
    if (nr_rules == MAX_RULES)
      return -EBUSY;
    rules[nr_rules++] = r;
    return 0;
  }
  if (strcmp(argv[0], "clear") == 0 && argc == 1) {
    nr_rules = 0;
    return 0;
  }
  return -EINVAL;
}

/* The control file's contents: one line of counters. */
static int ctl_text(char *buf, size_t len)
{
  return snprintf(buf, len, "writes=%" PRIu64 " fsyncs=%" PRIu64 " cuts=%" PRIu64
                  " faults=%" PRIu64 "\n", stats.writes, stats.fsyncs, stats.cuts, stats.faults);
}

/* ---- FUSE operations. ---- */

/* Mount-time setup: no caching anywhere, stable inode numbers, real unlinks. */
static void *fs_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
  /* The kernel must not cache data (a cut would hide behind the page cache)
   * nor attributes (sizes change under it at a cut). */
  cfg->direct_io = 1;
  cfg->kernel_cache = 0;
  cfg->auto_cache = 0;
  cfg->entry_timeout = 0;
  cfg->attr_timeout = 0;
  cfg->negative_timeout = 0;
  cfg->use_ino = 1;
  /* Unlink of an open file really unlinks (no .fuse_hidden renames, which
   * would show up as namespace changes); its handles work through fi. */
  cfg->hard_remove = 1;
  cfg->nullpath_ok = 1;
  /* Writeback caching would make the kernel, not us, decide what is lost. */
  conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
  return NULL;
}

/* Fills ST for file N. */
static void fill_stat(const struct node *n, struct stat *st)
{
  memset(st, 0, sizeof *st);
  st->st_ino = n->ino;
  st->st_mode = n->mode;
  st->st_nlink = n->name ? 1 : 0;
  st->st_uid = n->uid;
  st->st_gid = n->gid;
  st->st_size = (off_t)n->cur.size;
  st->st_blksize = PAGE_SIZE_FS;
  /* Allocated pages in 512-byte units, so du and st_blocks see the holes. */
  st->st_blocks = (blkcnt_t)(n->cur.n * (PAGE_SIZE_FS / 512));
  st->st_atim = n->atime;
  st->st_mtim = n->mtime;
  st->st_ctim = n->ctime;
}

/* stat: the root, the control file or a file. */
static int fs_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
  struct node *n;
  int err;

  if (fi != NULL && handle_of(fi)->node != NULL) {
    err = file_for(path, fi, &n);
    if (err < 0)
      return err;
    fill_stat(n, st);
    return 0;
  }
  switch (resolve(path, &n, &err)) {
  case W_ROOT:
    memset(st, 0, sizeof *st);
    st->st_ino = 1;
    st->st_mode = S_IFDIR | 0755;
    st->st_nlink = 2;
    st->st_atim = st->st_mtim = st->st_ctim = ctl_time;
    return 0;
  case W_CTL:
    memset(st, 0, sizeof *st);
    st->st_ino = 2;
    st->st_mode = S_IFREG | 0600;
    st->st_nlink = 1;
    st->st_atim = st->st_mtim = st->st_ctim = ctl_time;
    return 0;
  case W_FILE:
    fill_stat(n, st);
    return 0;
  default:
    return err;
  }
}

/* Lists the files (not the control file). */
static int fs_readdir(const char *path, void *buf, fuse_fill_dir_t filler, off_t off,
                      struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
  /* The root is the only directory; with nullpath_ok PATH may be NULL. */
  (void)path;
  (void)off;
  (void)fi;
  (void)flags;
  filler(buf, ".", NULL, 0, 0);
  filler(buf, "..", NULL, 0, 0);
  for (struct node *n = files; n; n = n->next)
    if (n->name)
      filler(buf, n->name, NULL, 0, 0);
  return 0;
}

/* A new handle on N (NULL: the control file) in FI, uncached. */
static void handle_new(struct node *n, struct fuse_file_info *fi)
{
  struct handle *h = xmalloc(sizeof *h);

  h->node = n;
  h->epoch = epoch;
  if (n)
    n->opens++;
  fi->fh = (uint64_t)(uintptr_t)h;
  fi->direct_io = 1;
  fi->keep_cache = 0;
}

/* Creates and opens a file. */
static int fs_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
  struct fuse_context *ctx = fuse_get_context();
  struct node *n;
  int err;

  switch (resolve(path, &n, &err)) {
  case W_ROOT:
    return -EISDIR;
  case W_CTL:
    handle_new(NULL, fi);
    return 0;
  case W_FILE:
    break;
  default:
    if (err != -ENOENT || strchr(path + 1, '/') != NULL)
      return err;
    n = xcalloc(1, sizeof *n);
    n->name = strdup(path + 1);
    if (n->name == NULL) {
      free(n);
      return -ENOMEM;
    }
    n->ino = next_ino++;
    n->mode = S_IFREG | (mode & 07777);
    n->uid = ctx->uid;
    n->gid = ctx->gid;
    clock_gettime(CLOCK_REALTIME, &n->mtime);
    n->atime = n->ctime = n->mtime;
    /* Appended, so cuts visit files in creation order (replayable). */
    struct node **p = &files;
    while (*p)
      p = &(*p)->next;
    *p = n;
  }
  handle_new(n, fi);
  return 0;
}

/* Opens a file, or the control file. */
static int fs_open(const char *path, struct fuse_file_info *fi)
{
  struct node *n;
  int err;

  switch (resolve(path, &n, &err)) {
  case W_ROOT:
    return -EISDIR;
  case W_CTL:
    handle_new(NULL, fi);
    return 0;
  case W_FILE:
    /* With atomic_o_trunc the kernel leaves O_TRUNC to us. */
    if ((fi->flags & O_TRUNC) && (fi->flags & O_ACCMODE) != O_RDONLY && n->cur.size != 0) {
      struct logop op = { .kind = LOG_TRUNCATE, .off = 0 };
      log_add(n, &op, NULL);
    }
    handle_new(n, fi);
    return 0;
  default:
    return err;
  }
}

/* Closes a handle; an unlinked file goes with its last one. */
static int fs_release(const char *path, struct fuse_file_info *fi)
{
  struct handle *h = handle_of(fi);
  struct node *n = h->node;

  (void)path;
  if (n != NULL && --n->opens == 0 && n->name == NULL)
    node_free(n);
  free(h);
  return 0;
}

/* close(): nothing to write back, but a dead handle says so. */
static int fs_flush(const char *path, struct fuse_file_info *fi)
{
  struct handle *h = handle_of(fi);

  (void)path;
  return h->node != NULL && h->epoch != epoch ? -EIO : 0;
}

/* Reads from the current state (or the control file's counters). */
static int fs_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
  struct handle *h = handle_of(fi);
  struct node *n;
  int err;

  if (h->node == NULL) {
    char text[256];
    int len = ctl_text(text, sizeof text);
    if (off >= len)
      return 0;
    if (size > (size_t)(len - off))
      size = (size_t)(len - off);
    memcpy(buf, text + off, size);
    return (int)size;
  }
  err = file_for(path, fi, &n);
  if (err < 0)
    return err;
  err = inject(FOP_READ, n);
  if (err < 0)
    return err;
  if ((uint64_t)off >= n->cur.size)
    return 0;
  if (size > n->cur.size - (uint64_t)off)
    size = (size_t)(n->cur.size - (uint64_t)off);
  state_read(&n->cur, (unsigned char *)buf, size, (uint64_t)off);
  return (int)size;
}

/* Writes into the log (or runs a control command). */
static int fs_write(const char *path, const char *buf, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
  struct handle *h = handle_of(fi);
  struct logop op = { .kind = LOG_WRITE, .off = (uint64_t)off, .len = size };
  struct node *n;
  int err;

  if (h->node == NULL) {
    char cmd[512];
    if (size >= sizeof cmd)
      return -EINVAL;
    memcpy(cmd, buf, size);
    cmd[size] = '\0';
    err = control(cmd);
    return err < 0 ? err : (int)size;
  }
  err = file_for(path, fi, &n);
  if (err < 0)
    return err;
  err = inject(FOP_WRITE, n);
  if (err < 0)
    return err;
  stats.writes++;
  if (size > 0)
    log_add(n, &op, buf);
  /* O_SYNC/O_DSYNC files and RWF_DSYNC writes (the kernel passes them in
   * the write's flags) are durable when they return, like a real disk's
   * FUA: commit, or lose the log as a failed fsync would. */
  if (fi->flags & (O_DSYNC | O_SYNC)) {
    err = inject(FOP_FSYNC, n);
    if (err < 0) {
      lose_log(n);
      return err;
    }
    commit(n);
    stats.fsyncs++;
  }
  return (int)size;
}

/* truncate and ftruncate. */
static int fs_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
  struct logop op = { .kind = LOG_TRUNCATE, .off = (uint64_t)size };
  struct node *n;
  int err;

  if (fi == NULL && path && strcmp(path, "/" CTL_NAME) == 0)
    return 0; /* open(".faultfs", O_TRUNC) */
  if (fi != NULL && handle_of(fi)->node == NULL)
    return 0;
  if (size < 0)
    return -EINVAL;
  err = file_for(path, fi, &n);
  if (err < 0)
    return err;
  err = inject(FOP_TRUNCATE, n);
  if (err < 0)
    return err;
  log_add(n, &op, NULL);
  return 0;
}

/* fsync and fdatasync alike: commit the log, unless a fault loses it. */
static int fs_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
  struct node *n;
  int err;

  (void)datasync;
  if (handle_of(fi)->node == NULL)
    return 0;
  err = file_for(path, fi, &n);
  if (err < 0)
    return err;
  err = inject(FOP_FSYNC, n);
  if (err < 0) {
    /* Linux after a writeback error: the dirty data is dropped (pages
     * marked clean), the error reported once, and the next fsync succeeds
     * with nothing left to write. */
    lose_log(n);
    return err;
  }
  commit(n);
  stats.fsyncs++;
  return 0;
}

/* The namespace is durable at once: nothing to do for a directory fsync. */
static int fs_fsyncdir(const char *path, int datasync, struct fuse_file_info *fi)
{
  (void)path;
  (void)datasync;
  (void)fi;
  return 0;
}

/* fallocate: allocate, punch a hole, or zero a range. */
static int fs_fallocate(const char *path, int mode, off_t off, off_t len,
                        struct fuse_file_info *fi)
{
  struct logop op = { .off = (uint64_t)off, .len = (uint64_t)len };
  struct node *n;
  int err;

  if (fi != NULL && handle_of(fi)->node == NULL)
    return -EOPNOTSUPP;
  if (off < 0 || len <= 0)
    return -EINVAL;
  switch (mode) {
  case 0:
  case FALLOC_FL_KEEP_SIZE:
    op.kind = LOG_ALLOC;
    break;
  case FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE:
    op.kind = LOG_PUNCH;
    break;
  case FALLOC_FL_ZERO_RANGE:
  case FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE:
    op.kind = LOG_ZERO;
    break;
  default:
    return -EOPNOTSUPP;
  }
  op.keep_size = (mode & FALLOC_FL_KEEP_SIZE) != 0;
  err = file_for(path, fi, &n);
  if (err < 0)
    return err;
  err = inject(FOP_FALLOCATE, n);
  if (err < 0)
    return err;
  log_add(n, &op, NULL);
  return 0;
}

/* SEEK_DATA and SEEK_HOLE over the allocated pages of the current state. */
static off_t fs_lseek(const char *path, off_t off, int whence, struct fuse_file_info *fi)
{
  struct node *n;
  const struct state *s;
  uint64_t pos = (uint64_t)off;
  size_t i;
  int err;

  if (fi != NULL && handle_of(fi)->node == NULL)
    return -EINVAL;
  err = file_for(path, fi, &n);
  if (err < 0)
    return err;
  s = &n->cur;
  if (whence != SEEK_DATA && whence != SEEK_HOLE)
    return -EINVAL;
  if (off < 0 || pos >= s->size)
    return -ENXIO;
  i = state_lower(s, pos / PAGE_SIZE_FS);
  if (whence == SEEK_DATA) {
    if (i == s->n)
      return -ENXIO;
    uint64_t start = s->pages[i].index * PAGE_SIZE_FS;
    return (off_t)(start > pos ? start : pos);
  }
  /* SEEK_HOLE: the end of the run of pages holding POS, or POS itself. */
  if (i == s->n || s->pages[i].index != pos / PAGE_SIZE_FS)
    return off;
  while (i + 1 < s->n && s->pages[i + 1].index == s->pages[i].index + 1)
    i++;
  uint64_t hole = (s->pages[i].index + 1) * PAGE_SIZE_FS;
  return (off_t)(hole < s->size ? hole : s->size);
}

/* Removes a file; its open handles keep it alive. */
static int fs_unlink(const char *path)
{
  struct node *n;
  int err;

  switch (resolve(path, &n, &err)) {
  case W_FILE:
    node_unlink(n);
    return 0;
  case W_CTL:
    return -EPERM;
  case W_ROOT:
    return -EISDIR;
  default:
    return err;
  }
}

/* Renames a file, replacing the target unless RENAME_NOREPLACE. */
static int fs_rename(const char *from, const char *to, unsigned int flags)
{
  struct node *n, *t;
  int err;
  char *name;

  if (flags & ~RENAME_NOREPLACE)
    return -EINVAL;
  switch (resolve(from, &n, &err)) {
  case W_FILE:
    break;
  case W_NONE:
    return err;
  default:
    return -EPERM;
  }
  switch (resolve(to, &t, &err)) {
  case W_FILE:
    if (t == n)
      return 0;
    if (flags & RENAME_NOREPLACE)
      return -EEXIST;
    break;
  case W_NONE:
    if (err != -ENOENT || strchr(to + 1, '/') != NULL)
      return err;
    break;
  default:
    return -EPERM;
  }
  name = strdup(to + 1);
  if (name == NULL)
    return -ENOMEM;
  if (t)
    node_unlink(t);
  free(n->name);
  n->name = name;
  clock_gettime(CLOCK_REALTIME, &n->ctime);
  return 0;
}

/* No subdirectories: this file system is one flat directory. */
static int fs_mkdir(const char *path, mode_t mode)
{
  (void)path;
  (void)mode;
  return -EPERM;
}

/* Finds the target of a metadata change: 1 with *NODE set for a file, 0 for
 * the root or the control file (accepted and ignored), or -errno. */
static int meta_target(const char *path, struct fuse_file_info *fi, struct node **node)
{
  int err;

  if (fi != NULL) {
    if (handle_of(fi)->node == NULL)
      return 0;
    err = file_for(path, fi, node);
    return err < 0 ? err : 1;
  }
  switch (resolve(path, node, &err)) {
  case W_FILE:
    return 1;
  case W_NONE:
    return err;
  default:
    return 0;
  }
}

/* chmod: kept, durable at once. */
static int fs_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
  struct node *n;
  int r = meta_target(path, fi, &n);

  if (r <= 0)
    return r;
  n->mode = S_IFREG | (mode & 07777);
  clock_gettime(CLOCK_REALTIME, &n->ctime);
  return 0;
}

/* chown: kept, durable at once ((uid_t)-1 leaves a field alone). */
static int fs_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi)
{
  struct node *n;
  int r = meta_target(path, fi, &n);

  if (r <= 0)
    return r;
  if (uid != (uid_t)-1)
    n->uid = uid;
  if (gid != (gid_t)-1)
    n->gid = gid;
  clock_gettime(CLOCK_REALTIME, &n->ctime);
  return 0;
}

/* Sets one time from a utimens argument (UTIME_NOW, UTIME_OMIT or a value). */
static void set_time(struct timespec *t, const struct timespec *v, const struct timespec *now)
{
  if (v->tv_nsec == UTIME_OMIT)
    return;
  *t = v->tv_nsec == UTIME_NOW ? *now : *v;
}

/* utimens: kept, durable at once. */
static int fs_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi)
{
  struct node *n;
  struct timespec now;
  int r = meta_target(path, fi, &n);

  if (r <= 0)
    return r;
  clock_gettime(CLOCK_REALTIME, &now);
  if (tv == NULL) {
    n->atime = n->mtime = now;
  }
  else {
    set_time(&n->atime, &tv[0], &now);
    set_time(&n->mtime, &tv[1], &now);
  }
  n->ctime = now;
  return 0;
}

/* statfs: a large, mostly free disk; used blocks are the allocated pages. */
static int fs_statfs(const char *path, struct statvfs *sv)
{
  uint64_t used = 0, nfiles = 0;

  (void)path;
  for (const struct node *n = files; n; n = n->next) {
    used += n->cur.n;
    nfiles++;
  }
  memset(sv, 0, sizeof *sv);
  sv->f_bsize = PAGE_SIZE_FS;
  sv->f_frsize = PAGE_SIZE_FS;
  sv->f_blocks = FS_BLOCKS;
  sv->f_bfree = used < FS_BLOCKS ? FS_BLOCKS - used : 0;
  sv->f_bavail = sv->f_bfree;
  sv->f_files = 1u << 20;
  sv->f_ffree = sv->f_files - nfiles;
  sv->f_favail = sv->f_ffree;
  sv->f_namemax = MAX_NAME;
  return 0;
}

/* No .lock or .flock: libfuse then tells the kernel to handle POSIX, OFD and
 * flock locks locally, which is what blockd's OFD locks need. */
static const struct fuse_operations ops = {
  .init = fs_init,
  .getattr = fs_getattr,
  .readdir = fs_readdir,
  .create = fs_create,
  .open = fs_open,
  .release = fs_release,
  .flush = fs_flush,
  .read = fs_read,
  .write = fs_write,
  .truncate = fs_truncate,
  .fsync = fs_fsync,
  .fsyncdir = fs_fsyncdir,
  .fallocate = fs_fallocate,
  .lseek = fs_lseek,
  .unlink = fs_unlink,
  .rename = fs_rename,
  .mkdir = fs_mkdir,
  .chmod = fs_chmod,
  .chown = fs_chown,
  .utimens = fs_utimens,
  .statfs = fs_statfs,
};

/* Prints how to run us. */
static void usage(FILE *f)
{
  fprintf(f, "usage: faultfs [-d] MOUNTPOINT\n"
             "Mounts the fault-injecting test file system in the foreground until\n"
             "SIGTERM/SIGINT or unmount. Control it through MOUNTPOINT/" CTL_NAME ":\n"
             "  cut SEED drop|random|torn\n"
             "  fail write|read|fsync|fallocate|truncate|any EIO|ENOSPC|ERRNO COUNT [NAME]\n"
             "  clear\n");
}

int main(int argc, char **argv)
{
  bool debug = false;
  const char *mountpoint = NULL;
  char *fargv[16];
  int fargc = 0;

  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "-d") == 0)
      debug = true;
    else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      usage(stdout);
      return 0;
    }
    else if (argv[i][0] == '-' || mountpoint != NULL) {
      usage(stderr);
      return 2;
    }
    else
      mountpoint = argv[i];
  }
  if (mountpoint == NULL) {
    usage(stderr);
    return 2;
  }
  clock_gettime(CLOCK_REALTIME, &ctl_time);
  fargv[fargc++] = argv[0];
  /* Foreground and single-threaded: requests run one at a time, so the
   * file system needs no locks and a cut is atomic for every request. */
  fargv[fargc++] = "-f";
  fargv[fargc++] = "-s";
  if (debug)
    fargv[fargc++] = "-d";
  /* auto_unmount: fusermount3 unmounts even if we are killed with SIGKILL. */
  fargv[fargc++] = "-o";
  fargv[fargc++] = "fsname=faultfs,subtype=faultfs,default_permissions,auto_unmount";
  fargv[fargc++] = (char *)mountpoint;
  fargv[fargc] = NULL;
  return fuse_main(fargc, fargv, &ops, NULL);
}

/* overlay-header: the overlay's on-disk header (docs/overlay-format.md):
 * reading and checking it, checking the base against the identity it
 * records, the file lock, and creating a new overlay.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define HASH_BYTES 65536u /* bytes of the base file hashed into its identity */

_Static_assert(sizeof(struct overlay_header) == OVERLAY_HEADER_SIZE, "overlay header is one page");

/* FNV-1a 64 of LEN more bytes at P, after those that gave H. */
static uint64_t fnv1a_more(uint64_t h, const unsigned char *p, size_t len)
{
  for (size_t i = 0; i < len; i++)
    h = (h ^ p[i]) * 0x100000001b3ULL;
  return h;
}

/* FNV-1a 64 of LEN bytes. */
static uint64_t fnv1a(const unsigned char *p, size_t len)
{
  return fnv1a_more(0xcbf29ce484222325ULL, p, len);
}

/* The first control byte (below 0x20, or 0x7f) of S, or 0 if none. */
static unsigned control_byte(const char *s)
{
  for (; *s; s++)
    if (fmt_is_control((unsigned char)*s))
      return (unsigned char)*s;
  return 0;
}

/* Decodes and checks a header read from PATH, in place, to host order.
 * Returns 0, -ENOTSUP for a version or feature this reader does not know,
 * or -EINVAL for a corrupt header; the message in ERR names the field. */
static int header_decode(struct overlay_header *h, uint64_t file_size, const char *path, char *err,
                         size_t errlen)
{
  uint64_t bitmap_end, cs, clusters;
  char what[160];
  unsigned c;

  if (memcmp(h->magic, OVERLAY_MAGIC, 8) != 0) {
    snprintf(err, errlen, "%s: not a blockd overlay", path);
    return -EINVAL;
  }
  h->version = le32toh(h->version);
  h->header_size = le32toh(h->header_size);
  h->incompat = le64toh(h->incompat);
  h->cluster_bits = le32toh(h->cluster_bits);
  h->virtual_size = le64toh(h->virtual_size);
  h->bitmap_offset = le64toh(h->bitmap_offset);
  h->bitmap_size = le64toh(h->bitmap_size);
  h->data_offset = le64toh(h->data_offset);
  h->base_file_size = le64toh(h->base_file_size);
  h->base_mtime_sec = (int64_t)le64toh((uint64_t)h->base_mtime_sec);
  h->base_mtime_nsec = le32toh(h->base_mtime_nsec);
  h->base_virtual_size = le64toh(h->base_virtual_size);
  h->base_hash = le64toh(h->base_hash);
  h->base_path_len = le32toh(h->base_path_len);

  if (h->version != OVERLAY_VERSION) {
    snprintf(err, errlen, "%s: overlay format version %u not supported (this is version %u)",
             path, h->version, OVERLAY_VERSION);
    return -ENOTSUP;
  }
  if ((h->incompat & ~OVERLAY_INCOMPAT_KNOWN) != 0) {
    snprintf(err, errlen, "%s: overlay uses unknown features 0x%llx", path,
             (unsigned long long)(h->incompat & ~OVERLAY_INCOMPAT_KNOWN));
    return -ENOTSUP;
  }
#define CORRUPT(...) do { snprintf(what, sizeof what, __VA_ARGS__); goto corrupt; } while (0)
  if (h->cluster_bits < 12 || h->cluster_bits > 24)
    CORRUPT("cluster_bits %u is not 12 to 24", h->cluster_bits);
  if (h->reserved0 != 0 || h->reserved1 != 0 || h->reserved2 != 0)
    CORRUPT("a reserved field is not 0");
  cs = 1ULL << h->cluster_bits;
  if (h->header_size != OVERLAY_HEADER_SIZE)
    CORRUPT("header_size %u is not %u", h->header_size, OVERLAY_HEADER_SIZE);
  if (h->bitmap_offset < OVERLAY_HEADER_SIZE || h->bitmap_offset % 4096 != 0)
    CORRUPT("bitmap_offset %llu is not a multiple of 4096 past the header",
            (unsigned long long)h->bitmap_offset);
  if (h->virtual_size > OVERLAY_MAX_VIRTUAL_SIZE)
    CORRUPT("virtual_size %llu is over 2^56", (unsigned long long)h->virtual_size);
  /* The bitmap is read whole into memory (three copies): a small file must
   * not make us allocate gigabytes by declaring a huge disk. */
  clusters = (h->virtual_size + cs - 1) >> h->cluster_bits;
  if (clusters > OVERLAY_MAX_CLUSTERS) {
    snprintf(err, errlen, "%s: overlay has %llu clusters, more than %llu (corrupt, or made with a"
                          " larger limit)", path, (unsigned long long)clusters,
             (unsigned long long)OVERLAY_MAX_CLUSTERS);
    return -EINVAL;
  }
  if (h->bitmap_size != bitmap_bytes(clusters))
    CORRUPT("bitmap_size %llu is not the %llu bytes %llu clusters take",
            (unsigned long long)h->bitmap_size, (unsigned long long)bitmap_bytes(clusters),
            (unsigned long long)clusters);
  /* Checked arithmetic from here on: every offset the engine computes,
   * data_offset + X for X below the virtual size, must fit in an off_t. */
  if (h->bitmap_offset > INT64_MAX - h->bitmap_size)
    CORRUPT("bitmap_offset + bitmap_size overflows");
  bitmap_end = h->bitmap_offset + h->bitmap_size;
  if (file_size < bitmap_end)
    CORRUPT("the file (%llu bytes) ends before its bitmap does (%llu)",
            (unsigned long long)file_size, (unsigned long long)bitmap_end);
  /* Data starts at the first cluster boundary after the bitmap: so guest
   * writes can never land on the header or the bitmap, nor far beyond. */
  if (h->data_offset < bitmap_end || h->data_offset % cs != 0 || h->data_offset - bitmap_end >= cs)
    CORRUPT("data_offset %llu is not the first cluster boundary after the bitmap",
            (unsigned long long)h->data_offset);
  if (h->data_offset > INT64_MAX - h->virtual_size)
    CORRUPT("data_offset + virtual_size overflows");
  if (h->base_path_len == 0 || h->base_path_len >= sizeof h->base_path ||
      h->base_path_len >= PATH_MAX || h->base_path[h->base_path_len] != '\0' ||
      strnlen(h->base_path, sizeof h->base_path) != h->base_path_len)
    CORRUPT("base_path_len %u is not the length of base_path", h->base_path_len);
  if (h->base_format[sizeof h->base_format - 1] != '\0')
    CORRUPT("base_format is not NUL terminated");
  /* Both names reach messages, logs and terminals: no escape sequences. */
  if ((c = control_byte(h->base_path)) != 0)
    CORRUPT("base_path has a control byte (0x%02x)", c);
  if ((c = control_byte(h->base_format)) != 0)
    CORRUPT("base_format has a control byte (0x%02x)", c);
#undef CORRUPT
  return 0;
corrupt:
  snprintf(err, errlen, "%s: corrupt overlay header: %s", path, what);
  return -EINVAL;
}

/* Encodes the host-order header H into OUT, little-endian. */
static void header_encode(const struct overlay_header *h, struct overlay_header *out)
{
  *out = *h;
  out->version = htole32(h->version);
  out->header_size = htole32(h->header_size);
  out->incompat = htole64(h->incompat);
  out->cluster_bits = htole32(h->cluster_bits);
  out->virtual_size = htole64(h->virtual_size);
  out->bitmap_offset = htole64(h->bitmap_offset);
  out->bitmap_size = htole64(h->bitmap_size);
  out->data_offset = htole64(h->data_offset);
  out->base_file_size = htole64(h->base_file_size);
  out->base_mtime_sec = (int64_t)htole64((uint64_t)h->base_mtime_sec);
  out->base_mtime_nsec = htole32(h->base_mtime_nsec);
  out->base_virtual_size = htole64(h->base_virtual_size);
  out->base_hash = htole64(h->base_hash);
  out->base_path_len = htole32(h->base_path_len);
}

int overlay_header_write(int fd, const struct overlay_header *h)
{
  struct overlay_header le;

  header_encode(h, &le);
  return file_pwrite_full(fd, &le, sizeof le, 0);
}

/* overlay_header_identify for an RBD snapshot BASE (BUF: HASH_BYTES of
 * zeroes): no file to stat, so the file size is the virtual size, the
 * "modification time" the snapshot's id, and the hash covers the image's
 * id after its head, so a snapshot or image re-created under the same
 * names is told apart. */
static int identify_rbd(struct overlay_header *h, const struct fmt *base, unsigned char *buf)
{
#ifdef HAVE_RBD
  char id[128];
  uint64_t snap;
  uint64_t n = base->size < HASH_BYTES ? base->size : HASH_BYTES;
  int r = fmt_rbd_identity((struct fmt *)base, &snap, id, sizeof id);

  if (r == 0 && n > 0)
    r = base->ops->pread((struct fmt *)base, buf, n, 0);
  if (r < 0)
    return r;
  h->base_file_size = base->size;
  h->base_mtime_sec = (int64_t)snap;
  h->base_mtime_nsec = 0;
  h->base_virtual_size = base->size;
  h->base_hash = fnv1a_more(fnv1a(buf, HASH_BYTES), (const unsigned char *)id, strlen(id));
  memset(h->base_format, 0, sizeof h->base_format);
  snprintf(h->base_format, sizeof h->base_format, "%s", base->ops->name);
  return 0;
#else
  (void)h, (void)base, (void)buf;
  return -ENOTSUP;
#endif
}

int overlay_header_identify(struct overlay_header *h, const struct fmt *base)
{
  CLEANUP_FREE unsigned char *buf = calloc(1, HASH_BYTES);
  struct stat st;
  int r;

  if (buf == NULL)
    return -ENOMEM;
  if (base->fd < 0)
    return identify_rbd(h, base, buf);
  /* The open file, as overlay_header_check_base reads it. */
  if (fstat(base->fd, &st) == -1)
    return -errno;
  r = file_pread_full(base->fd, buf, HASH_BYTES, 0);
  if (r < 0)
    return r;
  h->base_file_size = (uint64_t)st.st_size;
  h->base_mtime_sec = st.st_mtim.tv_sec;
  h->base_mtime_nsec = (uint32_t)st.st_mtim.tv_nsec;
  h->base_virtual_size = base->size;
  h->base_hash = fnv1a(buf, HASH_BYTES);
  memset(h->base_format, 0, sizeof h->base_format);
  snprintf(h->base_format, sizeof h->base_format, "%s", base->ops->name);
  return 0;
}

/* Writes the time SEC.NSEC as UTC into BUF. */
static const char *utc(int64_t sec, uint32_t nsec, char *buf, size_t len)
{
  time_t t = (time_t)sec;
  struct tm tm;
  char day[32];

  if (gmtime_r(&t, &tm) == NULL || strftime(day, sizeof day, "%Y-%m-%d %H:%M:%S", &tm) == 0)
    snprintf(buf, len, "%lld.%09u", (long long)sec, nsec);
  else
    snprintf(buf, len, "%s.%09u UTC", day, nsec);
  return buf;
}

int overlay_header_check_base(const struct overlay_header *h, const struct fmt *base,
                              const char *path, char *err, size_t errlen)
{
  struct overlay_header now = *h;
  char what[160], t1[48], t2[48];
  int r;

  /* On the open file, never by name again: the name could be swapped for
   * another file between the check and the use. */
  r = overlay_header_identify(&now, base);
  if (r < 0) {
    snprintf(err, errlen, "%s: base image %s: %s", path, base->path, strerror(-r));
    return -1;
  }
  /* Name the first identity check that fails, with both values: it tells
   * the user whether the base was rewritten, or only copied or touched. */
  if (now.base_virtual_size != h->base_virtual_size)
    snprintf(what, sizeof what, "its virtual size differs: %llu bytes, %llu when the overlay was"
             " made", (unsigned long long)now.base_virtual_size,
             (unsigned long long)h->base_virtual_size);
  else if (now.base_file_size != h->base_file_size)
    snprintf(what, sizeof what, "its file size differs: %llu bytes, %llu when the overlay was"
             " made", (unsigned long long)now.base_file_size,
             (unsigned long long)h->base_file_size);
  else if (now.base_hash != h->base_hash)
    snprintf(what, sizeof what, "its first 64 KiB%s differ from when the overlay was made",
             base->fd < 0 ? " or its image id" : "");
  else if (base->fd < 0 && now.base_mtime_sec != h->base_mtime_sec)
    snprintf(what, sizeof what, "it is another snapshot of that name: id %lld, %lld when the"
             " overlay was made", (long long)now.base_mtime_sec, (long long)h->base_mtime_sec);
  else if (now.base_mtime_sec != h->base_mtime_sec || now.base_mtime_nsec != h->base_mtime_nsec) {
    /* Size and head match: most likely a copy without -p, or a touch. */
    snprintf(err, errlen, "%s: base image %s changed since the overlay was created (only its"
             " modification time differs: %s, %s when the overlay was made). If it was copied"
             " (cp without -p) or touched, not written, 'blockd-img rebase %s' checks what it"
             " can and re-accepts it",
             path, h->base_path, utc(now.base_mtime_sec, now.base_mtime_nsec, t1, sizeof t1),
             utc(h->base_mtime_sec, h->base_mtime_nsec, t2, sizeof t2), path);
    return -1;
  }
  else
    return 0;
  snprintf(err, errlen, "%s: base image %s changed since the overlay was created (%s): it is not"
           " the image the overlay was made on. Put that image back, or give a copy of it with"
           " 'blockd-img rebase -b COPY %s'", path, h->base_path, what, path);
  return -1;
}

int overlay_header_read(int fd, uint64_t file_size, const char *path, struct overlay_header *h,
                        char *err, size_t errlen)
{
  int r = file_pread_full(fd, h, sizeof *h, 0);

  if (r < 0) {
    snprintf(err, errlen, "%s: read: %s", path, strerror(-r));
    return r;
  }
  return header_decode(h, file_size, path, err, errlen);
}

/* Fsyncs the directory holding PATH, so a new file's name is durable. */
static void sync_dir(const char *path)
{
  CLEANUP_FREE char *dir = strdup(path);
  char *slash = dir ? strrchr(dir, '/') : NULL;
  int fd;

  if (dir == NULL)
    return;
  if (slash == dir)
    slash[1] = '\0';
  else if (slash != NULL)
    *slash = '\0';
  fd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    fsync(fd);
    close(fd);
  }
}

/* Writes into OUT the path of FILE relative to directory DIR, both absolute
 * and canonical. Returns 0, or -ENAMETOOLONG. */
static int relative_path(const char *dir, const char *file, char *out, size_t outlen)
{
  size_t i = 0, common = 0, len = 0;

  /* COMMON: just past the last '/' both share. */
  while (dir[i] != '\0' && dir[i] == file[i])
    if (file[i++] == '/')
      common = i;
  if (dir[i] == '\0' && file[i] == '/')
    common = i + 1; /* DIR is an ancestor of FILE */
  out[0] = '\0';
  /* One "../" per component of DIR below the common part. */
  for (const char *p = dir + (dir[i] == '\0' && file[i] == '/' ? i : common); *p != '\0';) {
    const char *next = strchr(p, '/');
    if (next != p) {
      len += 3;
      if (len >= outlen)
        return -ENAMETOOLONG;
      strcat(out, "../");
    }
    if (next == NULL)
      break;
    p = next + 1;
  }
  if (len + strlen(file + common) >= outlen)
    return -ENAMETOOLONG;
  strcat(out, file + common);
  return 0;
}

/* Writes into RECORDED how the overlay at PATH names its base REAL (the
 * base's canonical path), as the user wrote BASE: absolute stays absolute,
 * relative becomes relative to the overlay's directory. Returns 0 or -1
 * with a message in ERR. */
static int record_base(const char *path, const char *base, const char *real, char *recorded,
                       size_t len, char *err, size_t errlen)
{
  CLEANUP_FREE char *copy = strdup(path);
  char dir[PATH_MAX];
  char *slash = copy ? strrchr(copy, '/') : NULL;

  if (base[0] == '/') {
    snprintf(recorded, len, "%s", real);
    return 0;
  }
  if (copy == NULL) {
    snprintf(err, errlen, "%s: %s", path, strerror(ENOMEM));
    return -1;
  }
  if (slash == copy)
    slash[1] = '\0';
  else if (slash != NULL)
    *slash = '\0';
  if (realpath(slash ? copy : ".", dir) == NULL) {
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return -1;
  }
  if (relative_path(dir, real, recorded, len) < 0) {
    snprintf(err, errlen, "%s: path too long for an overlay header", base);
    return -1;
  }
  return 0;
}

int overlay_header_set_base(struct overlay_header *h, const char *path, const char *base,
                            char *real, size_t reallen, char *err, size_t errlen)
{
  char recorded[PATH_MAX];
  unsigned c;

  if (reallen < PATH_MAX || realpath(base, real) == NULL) {
    snprintf(err, errlen, "%s: %s", base, strerror(reallen < PATH_MAX ? EINVAL : errno));
    return -1;
  }
  if (record_base(path, base, real, recorded, sizeof recorded, err, errlen) < 0)
    return -1;
  if (strlen(recorded) >= sizeof h->base_path) {
    snprintf(err, errlen, "%s: path too long for an overlay header", base);
    return -1;
  }
  if ((c = control_byte(recorded)) != 0) {
    snprintf(err, errlen, "the base's path has a control character (0x%02x): not recorded in "
             "an overlay header, whose names reach messages and terminals", c);
    return -1;
  }
  memset(h->base_path, 0, sizeof h->base_path);
  memcpy(h->base_path, recorded, strlen(recorded) + 1);
  h->base_path_len = (uint32_t)strlen(recorded);
  return 0;
}

/* Opens BASE, an rbd:POOL/IMAGE@SNAP spec with [,conf=FILE][,id=USER], to
 * become an overlay's base, and records its name (without the options: a
 * file must not choose the configuration its server reads) in H. NULL with
 * a message in ERR. */
static struct fmt *open_rbd_base(struct overlay_header *h, const char *base,
                                 const char *base_format, char *err, size_t errlen)
{
  struct img_spec s;
  struct spec_rbd n;
  struct fmt *b = NULL;

  if (base_format != NULL) {
    snprintf(err, errlen, "%s: an rbd: base has no format to name", base);
    return NULL;
  }
  if (spec_parse(base, SPEC_RBD, &s, err, errlen) < 0)
    return NULL;
  if (spec_rbd_parse(s.path, &n, err, errlen) < 0)
    goto out;
  if (n.snap[0] == '\0') {
    snprintf(err, errlen, "%s: an overlay's RBD base is a snapshot, which cannot change:"
             " rbd:%s/%s@SNAP (make one with 'rbd snap create')", s.path, n.pool, n.image);
    goto out;
  }
  b = fmt_open_spec(&s, true, err, errlen);
  /* A snapshot removed under an overlay would read as zeroes, silently:
   * protected, rbd snap rm refuses it (unprotect it once no overlay needs it). */
  if (b != NULL && fmt_rbd_protect(&s, err, errlen) < 0) {
    fmt_close(b);
    b = NULL;
  }
  if (b != NULL) {
    h->base_path_len = (uint32_t)strlen(s.path);
    memcpy(h->base_path, s.path, h->base_path_len + 1);
  }
out:
  spec_free(&s);
  return b;
}

int overlay_create(const char *path, const char *base, const char *base_format,
                   unsigned cluster_bits, unsigned flags, char *err, size_t errlen)
{
  struct overlay_header h;
  struct stat bst, st;
  char real[PATH_MAX];
  struct fmt *b;
  uint64_t cs, clusters, data_offset, vsize;
  bool created;
  int fd, r;

  if (cluster_bits < 12 || cluster_bits > 24) {
    snprintf(err, errlen, "%s: cluster size must be 4 KiB to 16 MiB", path);
    return -1;
  }
  memset(&h, 0, sizeof h);
  if (spec_is_rbd(base))
    b = open_rbd_base(&h, base, base_format, err, errlen);
  else if (overlay_header_set_base(&h, path, base, real, sizeof real, err, errlen) < 0)
    return -1;
  else
    /* Opening the base checks it (and its own chain) and gives its size;
     * its identity is read from the same open file. */
    b = fmt_open(real, base_format, true, err, errlen);
  if (b == NULL)
    return -1;
  r = b->fd >= 0 && fstat(b->fd, &bst) == -1 ? -errno : overlay_header_identify(&h, b);
  if (r < 0) {
    snprintf(err, errlen, "%s: %s", base, strerror(-r));
    fmt_close(b);
    return -1;
  }
  if (b->fd >= 0 && stat(path, &st) == 0 && st.st_dev == bst.st_dev && st.st_ino == bst.st_ino) {
    snprintf(err, errlen, "%s: is the base image itself", path);
    fmt_close(b);
    return -1;
  }
  vsize = b->size;
  fmt_close(b);
  cs = 1ULL << cluster_bits;
  clusters = (vsize + cs - 1) / cs;
  if (clusters > OVERLAY_MAX_CLUSTERS || vsize > OVERLAY_MAX_VIRTUAL_SIZE) {
    snprintf(err, errlen, "%s: a %llu-byte base needs more than %llu clusters of %llu bytes:"
                          " choose larger clusters (-c)", path, (unsigned long long)vsize,
             (unsigned long long)OVERLAY_MAX_CLUSTERS, (unsigned long long)cs);
    return -1;
  }
  data_offset = (OVERLAY_HEADER_SIZE + bitmap_bytes(clusters) + cs - 1) / cs * cs;
  memcpy(h.magic, OVERLAY_MAGIC, 8);
  h.version = OVERLAY_VERSION;
  h.header_size = OVERLAY_HEADER_SIZE;
  h.cluster_bits = cluster_bits;
  h.virtual_size = vsize;
  h.bitmap_offset = OVERLAY_HEADER_SIZE;
  h.bitmap_size = bitmap_bytes(clusters);
  h.data_offset = data_offset;

  fd = fmt_create_file(path, flags, &created, err, errlen);
  if (fd < 0)
    return -1;
  /* The file is all holes but the header: O(1) whatever the base's size. */
  r = 0;
  if (ftruncate(fd, 0) == -1 || (r = overlay_header_write(fd, &h)) < 0 ||
      ftruncate(fd, (off_t)(data_offset + vsize)) == -1 || fsync(fd) == -1) {
    snprintf(err, errlen, "%s: %s", path, strerror(r < 0 ? -r : errno));
    close(fd);
    if (created)
      unlink(path);
    return -1;
  }
  close(fd);
  sync_dir(path);
  return 0;
}

/* blk: virtio-blk (VIRTIO 1.x, "Block Device") over a vring: the features
 * and configuration a device offers, and its requests turned into the
 * core's io_req, reading and writing the guest's buffers in place.
 *
 * A request is a chain: a 16-byte header the device reads, data, and a
 * status byte, the last byte the device may write. Where headers, data and
 * status fall among the chain's buffers is the guest's choice, so the
 * header is gathered and the status found by position, never by assuming
 * Linux's layout of one descriptor each.
 */
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "vhost.h"

/* Largest discard or write-zeroes request, in sectors (4 GiB). */
#define MAX_ZERO_SECTORS (1u << 23)

/* The virtio features of device D. */
uint64_t blk_features(const struct vhost_dev *d)
{
  uint64_t f = (1ULL << VIRTIO_F_VERSION_1) | (1ULL << VHOST_USER_F_PROTOCOL_FEATURES) |
               (1ULL << VIRTIO_RING_F_INDIRECT_DESC) | (1ULL << VIRTIO_RING_F_EVENT_IDX) |
               (1ULL << VIRTIO_BLK_F_SIZE_MAX) | (1ULL << VIRTIO_BLK_F_SEG_MAX) |
               (1ULL << VIRTIO_BLK_F_BLK_SIZE) | (1ULL << VIRTIO_BLK_F_TOPOLOGY) |
               (1ULL << VIRTIO_BLK_F_FLUSH) | (1ULL << VIRTIO_BLK_F_CONFIG_WCE) |
               (1ULL << VIRTIO_BLK_F_MQ);

  if (d->fmt->readonly)
    f |= 1ULL << VIRTIO_BLK_F_RO;
  else {
    f |= 1ULL << VIRTIO_BLK_F_WRITE_ZEROES;
    if (d->fmt->can_trim)
      f |= 1ULL << VIRTIO_BLK_F_DISCARD;
  }
  return f;
}

/* Fills CFG for device D (little-endian). */
void blk_config(const struct vhost_dev *d, struct virtio_blk_config *cfg)
{
  memset(cfg, 0, sizeof *cfg);
  cfg->capacity = htole64(d->fmt->size / VIRTIO_BLK_SECTOR);
  /* A large size_max: 0 would make Linux cut every segment to 4 KiB. */
  cfg->size_max = htole32(VHOST_SIZE_MAX);
  cfg->seg_max = htole32(VHOST_SEG_MAX);
  cfg->blk_size = htole32(VIRTIO_BLK_SECTOR);
  cfg->physical_block_exp = 3; /* 4 KiB: what file systems and holes work in */
  cfg->min_io_size = htole16(1);
  cfg->writeback = d->writeback;
  cfg->num_queues = htole16((uint16_t)d->max_queues);
  cfg->max_discard_sectors = htole32(MAX_ZERO_SECTORS);
  cfg->max_discard_seg = htole32(1);
  cfg->discard_sector_alignment = htole32(4096 / VIRTIO_BLK_SECTOR);
  cfg->max_write_zeroes_sectors = htole32(MAX_ZERO_SECTORS);
  cfg->max_write_zeroes_seg = htole32(1);
  cfg->write_zeroes_may_unmap = 1;
}

/* Copies LEN bytes from the start of IOV (N buffers) into DST. Returns
 * false if the buffers hold fewer. */
static bool gather(const struct iovec *iov, unsigned n, void *dst, size_t len)
{
  char *p = dst;

  for (unsigned i = 0; i < n && len > 0; i++) {
    size_t k = iov[i].iov_len < len ? iov[i].iov_len : len;

    memcpy(p, iov[i].iov_base, k);
    p += k;
    len -= k;
  }
  return len == 0;
}

/* Copies LEN bytes of SRC into the start of IOV (N buffers). Returns the
 * bytes copied. */
static size_t scatter(const struct iovec *iov, unsigned n, const void *src, size_t len)
{
  const char *p = src;
  size_t done = 0;

  for (unsigned i = 0; i < n && done < len; i++) {
    size_t k = iov[i].iov_len < len - done ? iov[i].iov_len : len - done;

    memcpy(iov[i].iov_base, p + done, k);
    done += k;
  }
  return done;
}

/* Copies the buffers of IOV (N of them) minus the first SKIP bytes into
 * OUT; returns how many OUT holds and their total length in *LEN. */
static unsigned skip_into(const struct iovec *iov, unsigned n, size_t skip, struct iovec *out,
                          uint64_t *len)
{
  unsigned k = 0;

  *len = 0;
  for (unsigned i = 0; i < n; i++) {
    if (skip >= iov[i].iov_len) {
      skip -= iov[i].iov_len;
      continue;
    }
    out[k].iov_base = (char *)iov[i].iov_base + skip;
    out[k].iov_len = iov[i].iov_len - skip;
    *len += out[k].iov_len;
    k++;
    skip = 0;
  }
  return k;
}

/* Gives R back to its ring's spares. */
static void req_recycle(struct blk_req *r)
{
  struct vring *vq = r->vq;

  mem_put(r->mem);
  r->mem = NULL;
  r->next = vq->spare;
  vq->spare = r;
}

/* Finishes R with virtio-blk STATUS: the status byte, the used entry. */
static void complete(struct blk_req *r, uint8_t status)
{
  struct vring *vq = r->vq;

  *r->status = status;
  vring_push(vq, r->head, r->written);
  vq->inflight--;
  req_recycle(r);
  /* At the limit blk_process stopped taking: go on, unless it is running
   * below us (a request it completed at once) or the ring stops. */
  if (vq->inflight == vq->num - 1 && !vq->processing && !vq->stopping)
    blk_process(vq);
  queue_settle(vq);
}

/* The virtio-blk status for a host errno. */
static uint8_t status_of(int err)
{
  if (err == 0)
    return VIRTIO_BLK_S_OK;
  return err == ENOTSUP || err == EOPNOTSUPP ? VIRTIO_BLK_S_UNSUPP : VIRTIO_BLK_S_IOERR;
}

/* The core finished R's operation. */
static void io_done(struct io_req *io)
{
  struct blk_req *r = container_of(io, struct blk_req, io);

  complete(r, status_of(io->err));
}

/* Whether [SECTOR, SECTOR + LEN bytes) lies in the disk of F. */
static bool in_disk(const struct fmt *f, uint64_t sector, uint64_t len)
{
  uint64_t size = f->size / VIRTIO_BLK_SECTOR * VIRTIO_BLK_SECTOR;

  return sector <= size / VIRTIO_BLK_SECTOR && len <= size - sector * VIRTIO_BLK_SECTOR;
}

/* Turns R's chain into an io_req and submits it, or completes R at once.
 * The header and status are already found. */
static void start(struct blk_req *r, const struct virtio_blk_outhdr *hdr)
{
  struct vring *vq = r->vq;
  struct vhost_dev *d = vq->dev;
  struct vring_chain *c = &r->chain;
  struct io_req *io = &r->io;
  uint32_t type = le32toh(hdr->type);
  uint64_t sector = le64toh(hdr->sector), len;

  io->w = vq->w;
  io->fmt = d->fmt;
  io->done = io_done;
  io->flags = 0;
  switch (type) {
  case VIRTIO_BLK_T_IN:
    /* Data: the writable buffers, less the status byte. */
    io->iovcnt = skip_into(c->iov + c->nread, c->nwrite, 0, r->data, &len);
    len--; /* the status byte is the last of them */
    if (r->data[io->iovcnt - 1].iov_len == 1)
      io->iovcnt--;
    else
      r->data[io->iovcnt - 1].iov_len--;
    if (len % VIRTIO_BLK_SECTOR != 0 || !in_disk(d->fmt, sector, len)) {
      complete(r, VIRTIO_BLK_S_IOERR);
      return;
    }
    r->written = (uint32_t)len + 1;
    io->op = IO_READ;
    break;
  case VIRTIO_BLK_T_OUT:
    io->iovcnt = skip_into(c->iov, c->nread, sizeof *hdr, r->data, &len);
    if (d->fmt->readonly || len % VIRTIO_BLK_SECTOR != 0 || !in_disk(d->fmt, sector, len)) {
      complete(r, VIRTIO_BLK_S_IOERR);
      return;
    }
    io->op = IO_WRITE;
    /* A write-through cache (the guest turned write-back off) makes
     * every write durable before it completes. */
    if (!vq->writeback)
      io->flags |= FMT_FUA;
    break;
  case VIRTIO_BLK_T_FLUSH:
    io->op = IO_FLUSH;
    len = 0;
    break;
  case VIRTIO_BLK_T_GET_ID: {
    char id[VIRTIO_BLK_ID_BYTES] = { 0 };
    const char *serial = vhost_serial(d);

    memcpy(id, serial, strnlen(serial, sizeof id));
    skip_into(c->iov + c->nread, c->nwrite, 0, r->data, &len);
    /* The status byte is the last writable byte: the ID goes before it. */
    r->written = (uint32_t)scatter(c->iov + c->nread, c->nwrite, id,
                                   len - 1 < sizeof id ? len - 1 : sizeof id) + 1;
    complete(r, VIRTIO_BLK_S_OK);
    return;
  }
  case VIRTIO_BLK_T_DISCARD:
  case VIRTIO_BLK_T_WRITE_ZEROES: {
    struct virtio_blk_discard_write_zeroes seg;
    struct iovec rest[VHOST_MAX_IOV];
    unsigned n = skip_into(c->iov, c->nread, sizeof *hdr, rest, &len);
    uint32_t flags;
    bool zero = type == VIRTIO_BLK_T_WRITE_ZEROES;

    /* A read-only device refuses writes of every kind, negotiated or not
     * (qemu-storage-daemon answers the same). */
    if (d->fmt->readonly) {
      complete(r, VIRTIO_BLK_S_IOERR);
      return;
    }
    /* One segment (max_*_seg is 1), and only the flag the type allows. */
    if (len != sizeof seg || !gather(rest, n, &seg, sizeof seg) ||
        ((flags = le32toh(seg.flags)) & ~VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) ||
        (!zero && flags != 0) || (zero ? !vring_has(vq, VIRTIO_BLK_F_WRITE_ZEROES)
                                       : !vring_has(vq, VIRTIO_BLK_F_DISCARD))) {
      complete(r, VIRTIO_BLK_S_UNSUPP);
      return;
    }
    sector = le64toh(seg.sector);
    len = (uint64_t)le32toh(seg.num_sectors) * VIRTIO_BLK_SECTOR;
    if (d->fmt->readonly || le32toh(seg.num_sectors) > MAX_ZERO_SECTORS ||
        !in_disk(d->fmt, sector, len)) {
      complete(r, VIRTIO_BLK_S_IOERR);
      return;
    }
    /* The same engine calls as NBD's TRIM and WRITE_ZEROES: holes in the
     * file, clusters owned by an overlay so base data never comes back. */
    io->op = zero ? IO_ZERO : IO_TRIM;
    if (zero && (flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP))
      io->flags |= FMT_MAY_TRIM;
    if (!vq->writeback)
      io->flags |= FMT_FUA;
    io->iovcnt = 0;
    break;
  }
  default:
    complete(r, VIRTIO_BLK_S_UNSUPP);
    return;
  }
  io->iov = r->data;
  io->offset = sector * VIRTIO_BLK_SECTOR;
  io->length = len;
  if (len == 0 && io->op != IO_FLUSH) {
    complete(r, VIRTIO_BLK_S_OK);
    return;
  }
  io_submit(io);
}

/* A spare request of VQ, or a new one; NULL if out of memory. */
static struct blk_req *req_get(struct vring *vq)
{
  struct blk_req *r = vq->spare;

  if (r != NULL) {
    vq->spare = r->next;
    return r;
  }
  return malloc(sizeof *r);
}

/* Takes one chain off VQ into a request and starts it. Returns 1 if one
 * was taken, 0 if the ring is empty, -1 if it broke (or no memory). */
static int take_one(struct vring *vq)
{
  struct vhost_dev *d = vq->dev;
  struct virtio_blk_outhdr hdr;
  struct blk_req *r = req_get(vq);
  struct vring_chain *c;
  int got;

  if (r == NULL) {
    log_msg("%s: out of memory for a request", d->path);
    return -1;
  }
  c = &r->chain;
  got = vring_pop(vq, c);
  if (got <= 0) {
    r->next = vq->spare;
    vq->spare = r;
    return got;
  }
  r->vq = vq;
  r->head = c->head;
  r->mem = vq->mem;
  mem_get(r->mem);
  r->written = 1;
  vq->inflight++;
  /* Without a writable byte there is nowhere to say how it went: the
   * guest broke the protocol, not just this request. */
  if (c->nwrite == 0 || !gather(c->iov, c->nread, &hdr, sizeof hdr)) {
    r->status = NULL;
    vq->inflight--;
    req_recycle(r);
    vring_break(vq, c->nwrite == 0 ? "a request with no status byte"
                                   : "a request shorter than its header");
    return -1;
  }
  {
    struct iovec *last = &c->iov[c->nread + c->nwrite - 1];
    r->status = (uint8_t *)last->iov_base + last->iov_len - 1;
  }
  start(r, &hdr);
  return 1;
}

/* Takes and starts every available request of VQ, never more in flight
 * than the ring has entries: a guest that makes heads available again
 * while they are in flight would otherwise grow blockd's memory at will.
 * A completion at the limit calls it again. */
void blk_process(struct vring *vq)
{
  if (vq->processing)
    return;
  vq->processing = true;
  while (vring_ready(vq) && vq->inflight < vq->num) {
    int got = take_one(vq);

    if (got < 0 || (got == 0 && !vring_kick_enable(vq)))
      break;
  }
  vq->processing = false;
}

/* Frees VQ's spare requests. */
void blk_free_spares(struct vring *vq)
{
  while (vq->spare != NULL) {
    struct blk_req *r = vq->spare;

    vq->spare = r->next;
    free(r);
  }
}

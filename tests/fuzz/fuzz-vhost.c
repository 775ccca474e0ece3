/* libFuzzer entry point for blockd's vhost-user-blk device: the conversation
 * (vhost/device.c's framing, msg.c's handlers), guest memory (mem.c), the
 * rings and their workers (vring.c, queue.c) and virtio-blk requests
 * (blk.c).
 *
 * A device is built over a small sparse raw image, as vhost_open builds one,
 * and handed to a private worker with vhost_adopt (its rings run on that
 * worker too); it accepts on a unix socket of its own. A client thread plays
 * the VMM and the guest: it connects, runs the input as a small program, and
 * at the end closes the connection and tells the device to leave (its drain
 * op), which ends the private worker. The operations:
 *
 *   MSG     a vhost-user message sent on the socket, with fds made up for it
 *           (the guest memfd, eventfds: a ring's own for KICK/CALL/ERR, a
 *           second small memfd, /dev/null); then a GET_FEATURES whose reply
 *           says blockd has handled it. Or, with bit 7 of its flags byte,
 *           the rest of the input sent raw (framing, truncation), then EOF.
 *   SETUP   a well-formed session start: features, memory, 1-4 rings
 *   REQ     a virtio-blk request laid out in guest memory in one of five
 *           shapes, made available and kicked
 *   POKE    bytes written anywhere in guest memory
 *   KICK    a ring's kick eventfd written
 *   WAIT    a barrier, then a little time for the used rings to catch up
 *   DESC    one raw descriptor in a ring's table
 *   AVAIL   a head made available, the index moved by any amount, a kick
 *
 * Guest memory (GUEST_SIZE bytes, one memfd) holds queue Q's rings at
 * Q * QUEUE_SPAN: descriptors at +0, avail at +0x400, used at +0x800, an
 * indirect table at +0x1000, the request header at +0x2000, its status at
 * +0x2010, a discard segment at +0x2020, data from +0x2100. The front-end
 * "maps" it at GUEST_UVA. make-corpus-vhost.py writes seeds in this format:
 * change one, change both. A REQ waits a little (and never long in all)
 * until the ring has room, so that well-formed bursts stay well formed.
 *
 * Oracles besides the sanitizers: every reply carries exactly VERSION|REPLY
 * and at most 4096 bytes, every barrier is answered within
 * REPLY_TIMEOUT_MS, and the device closes the connection once the front-end
 * has gone (else the run hangs and libFuzzer's -timeout reports it).
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "fuzz-util.h"
#include "vhost.h"

#define GUEST_SIZE (256 * 1024)
#define GUEST_UVA 0x7f0000000000ULL
#define QUEUES 4
#define QUEUE_SPAN 0x4000u
#define OFF_AVAIL 0x400u
#define OFF_USED 0x800u
#define OFF_TABLE 0x1000u
#define OFF_HDR 0x2000u
#define OFF_STATUS 0x2010u
#define OFF_SEG 0x2020u
#define OFF_DATA 0x2100u
#define IMAGE_SIZE (1024 * 1024)
/* How long blockd may take to answer a barrier before the run is a hang
 * (a reply held back by GET_VRING_BASE waits for requests in flight). */
#define REPLY_TIMEOUT_MS 15000
/* How long a WAIT waits for the used rings, and a REQ for room, and all
 * waits of an input together, in steps of 100 us (a stalled ring must not
 * make inputs slow). */
#define WAIT_STEPS 200
#define ROOM_STEPS 100
#define INPUT_WAIT_STEPS 500

/* Operations (the low 3 bits of an operation's first byte). */
enum { OP_MSG, OP_SETUP, OP_REQ, OP_POKE, OP_KICK, OP_WAIT, OP_DESC, OP_AVAIL };
/* MSG's flags byte: bits 0-2 fds, bit 3 NEED_REPLY, bits 4-5 fd kind,
 * bit 6 the header's flags come verbatim in the next byte, bit 7 raw. */
enum { FD_GUEST, FD_EVENT, FD_SMALL, FD_NULL };
#define MSG_NEED_REPLY 0x08
#define MSG_RAW_FLAGS 0x40
#define MSG_RAW_REST 0x80
/* SETUP's flags: bits 3-4 queues - 1, bits 5-6 log2(queue size / 4). */
#define SETUP_NO_EVENT_IDX 0x01
#define SETUP_NO_INDIRECT 0x02
#define SETUP_REPLY_ACK 0x04
#define SETUP_NO_PROTOCOL 0x80

/* What lives for the whole run. */
static struct {
  struct fmt *fmt;       /* the image */
  int listen_fd;         /* the device's socket */
  char sock_path[4096];
  int guest_fd;          /* guest memory */
  uint8_t *guest;        /* our mapping of it */
  int small_fd;          /* another memfd, 4 KiB, not sealable */
  sem_t go, done;        /* input ready; input played and the device told to leave */
} run;

/* One input's execution (the client thread's). */
struct fuzz {
  struct vhost_dev *d;       /* the device under test */
  struct worker *w;          /* its private worker */
  struct task leave;         /* to the worker: the device leaves */
  int fd;                    /* our end of the connection, -1 once gone */
  int kick[QUEUES], call[QUEUES], err[QUEUES]; /* the rings' eventfds (ours) */
  unsigned num[QUEUES];      /* ring sizes SETUP gave, for REQ and AVAIL */
  unsigned next_desc[QUEUES]; /* REQ's next descriptor */
  bool broken[QUEUES];       /* blockd wrote the ring's err eventfd */
  int wait_budget;           /* 100 us steps this input may still wait */
  uint64_t barriers;         /* GET_FEATURES sent (and so replies owed) */
  uint64_t answered;         /* GET_FEATURES replies read */
  const uint8_t *p, *end;    /* the rest of the input */
};

static struct fuzz *current; /* the input the client thread plays */

/* ---- reading the input ---------------------------------------------------- */

static uint8_t take8(struct fuzz *f)
{
  return f->p < f->end ? *f->p++ : 0;
}

static uint16_t take16(struct fuzz *f)
{
  uint16_t v = take8(f);
  return (uint16_t)(v | take8(f) << 8);
}

static uint32_t take32(struct fuzz *f)
{
  uint32_t v = take16(f);
  return v | (uint32_t)take16(f) << 16;
}

/* ---- guest memory ----------------------------------------------------------- */

static void put16(uint64_t off, uint16_t v)
{
  v = htole16(v);
  memcpy(run.guest + off, &v, 2);
}

static uint16_t get16(uint64_t off)
{
  uint16_t v;

  memcpy(&v, run.guest + off, 2);
  return le16toh(v);
}

static void put_desc(uint64_t table, unsigned i, uint64_t addr, uint32_t len, uint16_t flags,
                     uint16_t next)
{
  struct vring_desc d = { htole64(addr), htole32(len), htole16(flags), htole16(next) };

  memcpy(run.guest + table + 16 * (uint64_t)i, &d, sizeof d);
}

/* ---- the connection ------------------------------------------------------------ */

/* Sends LEN bytes of BUF with NFDS fds. Returns false once the device has
 * gone (our end is closed then). */
static bool send_all(struct fuzz *f, const void *buf, size_t len, const int *fds, unsigned nfds)
{
  union {
    char buf[CMSG_SPACE(8 * sizeof(int))];
    struct cmsghdr align;
  } cmsg;
  const char *p = buf;

  while (f->fd >= 0 && (len > 0 || nfds > 0)) {
    struct iovec iov = { (void *)p, len };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
    ssize_t n;

    if (nfds > 0) {
      mh.msg_control = cmsg.buf;
      mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
      struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
      memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
    }
    n = sendmsg(f->fd, &mh, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      close(f->fd);
      f->fd = -1;
      return false;
    }
    nfds = 0; /* they went with the first bytes */
    p += n;
    len -= (size_t)n;
  }
  return f->fd >= 0;
}

/* Reads exactly LEN bytes (within the reply timeout). Returns false once
 * the device has gone. */
static bool recv_all(struct fuzz *f, void *buf, size_t len)
{
  char *p = buf;

  while (f->fd >= 0 && len > 0) {
    struct pollfd pfd = { .fd = f->fd, .events = POLLIN };
    ssize_t n;

    if (poll(&pfd, 1, REPLY_TIMEOUT_MS) == 0) {
      fprintf(stderr, "fuzz-vhost: blockd did not answer in %d ms\n", REPLY_TIMEOUT_MS);
      abort();
    }
    n = recv(f->fd, p, len, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      close(f->fd);
      f->fd = -1;
      return false;
    }
    p += n;
    len -= (size_t)n;
  }
  return f->fd >= 0;
}

/* Sends a GET_FEATURES and reads replies until it is answered: blockd has
 * handled everything sent before. Replies are checked as a front-end
 * would: exactly VERSION|REPLY, at most the largest payload. */
static void barrier(struct fuzz *f)
{
  struct vhost_user_header h = { VHOST_USER_GET_FEATURES, VHOST_USER_VERSION, 0 };
  uint8_t payload[VHOST_USER_MAX_PAYLOAD];

  if (!send_all(f, &h, sizeof h, NULL, 0))
    return;
  f->barriers++;
  while (f->answered < f->barriers && recv_all(f, &h, sizeof h)) {
    if (h.flags != (VHOST_USER_VERSION | VHOST_USER_REPLY) || h.size > sizeof payload) {
      fprintf(stderr, "fuzz-vhost: a reply to %u with flags 0x%x and %u bytes\n", h.request,
              h.flags, h.size);
      abort();
    }
    if (!recv_all(f, payload, h.size))
      return;
    if (h.request == VHOST_USER_GET_FEATURES)
      f->answered++;
  }
}

/* An fd of KIND for a message REQUEST whose payload starts with P. */
static int make_fd(struct fuzz *f, unsigned kind, uint32_t request, const uint8_t *p, size_t len)
{
  unsigned q = len > 0 ? p[0] % QUEUES : 0;

  switch (kind) {
  case FD_GUEST:
    return dup(run.guest_fd);
  case FD_EVENT:
    if (request == VHOST_USER_SET_VRING_KICK)
      return dup(f->kick[q]);
    if (request == VHOST_USER_SET_VRING_CALL)
      return dup(f->call[q]);
    if (request == VHOST_USER_SET_VRING_ERR)
      return dup(f->err[q]);
    return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  case FD_SMALL:
    return dup(run.small_fd);
  default:
    return open("/dev/null", O_RDWR | O_CLOEXEC);
  }
}

/* Sends one message: REQUEST with header flags FLAGS, LEN bytes of P,
 * NFDS fds of KIND (GET_FEATURES counts as a barrier owed). */
static void send_msg(struct fuzz *f, uint32_t request, uint32_t flags, const void *p, size_t len,
                     unsigned nfds, unsigned kind)
{
  uint8_t buf[sizeof(struct vhost_user_header) + VHOST_USER_MAX_PAYLOAD];
  struct vhost_user_header h = { request, flags, (uint32_t)len };
  int fds[8] = { 0 };

  memcpy(buf, &h, sizeof h);
  if (len > 0)
    memcpy(buf + sizeof h, p, len);
  for (unsigned i = 0; i < nfds; i++) {
    fds[i] = make_fd(f, kind, request, p, len);
    if (fds[i] < 0) {
      perror("fuzz-vhost: an fd for a message");
      abort();
    }
  }
  if (send_all(f, buf, sizeof h + len, fds, nfds) && request == VHOST_USER_GET_FEATURES &&
      (flags & ~VHOST_USER_NEED_REPLY) == VHOST_USER_VERSION)
    f->barriers++;
  for (unsigned i = 0; i < nfds; i++)
    close(fds[i]);
}

static uint32_t msg_flags(bool need_reply)
{
  return VHOST_USER_VERSION | (need_reply ? VHOST_USER_NEED_REPLY : 0);
}

static void send_u64(struct fuzz *f, uint32_t request, uint64_t v, bool ack)
{
  send_msg(f, request, msg_flags(ack), &v, sizeof v, 0, 0);
}

static void send_state(struct fuzz *f, uint32_t request, unsigned index, unsigned num, bool ack)
{
  struct vhost_vring_state st = { index, num };

  send_msg(f, request, msg_flags(ack), &st, sizeof st, 0, 0);
}

/* ---- operations ----------------------------------------------------------------- */

/* SETUP: a session as Cloud Hypervisor starts one. */
static void op_setup(struct fuzz *f)
{
  uint8_t flags = take8(f);
  unsigned nq = 1 + ((flags >> 3) & 3), num = 4u << ((flags >> 5) & 3);
  bool ack = flags & SETUP_REPLY_ACK;
  uint64_t features = blk_features(f->d);
  const struct vhost_user_region r = { 0, GUEST_SIZE, GUEST_UVA, 0 };
  uint8_t table[sizeof(struct vhost_user_memory) + sizeof r] = { 1 }; /* nregions 1 */

  memcpy(table + sizeof(struct vhost_user_memory), &r, sizeof r);
  if (flags & SETUP_NO_EVENT_IDX)
    features &= ~(1ULL << VIRTIO_RING_F_EVENT_IDX);
  if (flags & SETUP_NO_INDIRECT)
    features &= ~(1ULL << VIRTIO_RING_F_INDIRECT_DESC);
  if (flags & SETUP_NO_PROTOCOL)
    features &= ~(1ULL << VHOST_USER_F_PROTOCOL_FEATURES);
  send_msg(f, VHOST_USER_SET_OWNER, VHOST_USER_VERSION, NULL, 0, 0, 0);
  send_msg(f, VHOST_USER_GET_PROTOCOL_FEATURES, VHOST_USER_VERSION, NULL, 0, 0, 0);
  send_u64(f, VHOST_USER_SET_PROTOCOL_FEATURES,
           (1ULL << VHOST_USER_PROTOCOL_F_MQ) | (1ULL << VHOST_USER_PROTOCOL_F_CONFIG) |
             (ack ? 1ULL << VHOST_USER_PROTOCOL_F_REPLY_ACK : 0),
           false);
  send_u64(f, VHOST_USER_SET_FEATURES, features, ack);
  send_msg(f, VHOST_USER_SET_MEM_TABLE, msg_flags(ack), table, sizeof table, 1, FD_GUEST);
  for (unsigned q = 0; q < nq; q++) {
    uint64_t base = (uint64_t)q * QUEUE_SPAN;
    struct vhost_vring_addr a = {
      .index = q,
      .desc_user_addr = GUEST_UVA + base,
      .used_user_addr = GUEST_UVA + base + OFF_USED,
      .avail_user_addr = GUEST_UVA + base + OFF_AVAIL,
    };
    uint64_t idx = q;

    f->num[q] = num;
    send_state(f, VHOST_USER_SET_VRING_NUM, q, num, ack);
    send_state(f, VHOST_USER_SET_VRING_BASE, q, get16(base + OFF_AVAIL + 2), ack);
    send_msg(f, VHOST_USER_SET_VRING_ADDR, msg_flags(ack), &a, sizeof a, 0, 0);
    send_msg(f, VHOST_USER_SET_VRING_CALL, msg_flags(ack), &idx, sizeof idx, 1, FD_EVENT);
    send_msg(f, VHOST_USER_SET_VRING_ERR, msg_flags(ack), &idx, sizeof idx, 1, FD_EVENT);
    send_msg(f, VHOST_USER_SET_VRING_KICK, msg_flags(ack), &idx, sizeof idx, 1, FD_EVENT);
    send_state(f, VHOST_USER_SET_VRING_ENABLE, q, 1, ack);
  }
  barrier(f);
}

/* MSG: any message, or the rest of the input raw. */
static void op_msg(struct fuzz *f)
{
  uint32_t request = take8(f), flags;
  uint8_t fl = take8(f);
  size_t len = take16(f), left;
  uint8_t payload[VHOST_USER_MAX_PAYLOAD];

  if (fl & MSG_RAW_REST) {
    /* Framing: whatever bytes, then EOF. */
    send_all(f, f->p, (size_t)(f->end - f->p), NULL, 0);
    f->p = f->end;
    return;
  }
  flags = fl & MSG_RAW_FLAGS ? take8(f) : msg_flags(fl & MSG_NEED_REPLY);
  if (request == 0xff)
    request = take32(f);
  left = (size_t)(f->end - f->p);
  if (len > VHOST_USER_MAX_PAYLOAD)
    len = VHOST_USER_MAX_PAYLOAD;
  if (len > left)
    len = left;
  memcpy(payload, f->p, len);
  f->p += len;
  send_msg(f, request, flags, payload, len, fl & 7, (fl >> 4) & 3);
  barrier(f);
}

/* Requests of queue Q made available and not yet used; false if the ring
 * broke (blockd wrote its err eventfd) and will use none. */
static bool outstanding(struct fuzz *f, unsigned q, unsigned *n)
{
  uint64_t base = (uint64_t)q * QUEUE_SPAN, v;

  if (read(f->err[q], &v, sizeof v) == sizeof v)
    f->broken[q] = true;
  *n = (uint16_t)(get16(base + OFF_AVAIL + 2) - get16(base + OFF_USED + 2));
  return !f->broken[q];
}

/* Waits (STEPS times 100 us at most) until queue Q, if SETUP started it,
 * has at most MAX requests outstanding. */
static void wait_used(struct fuzz *f, unsigned q, unsigned max, int steps)
{
  struct timespec ts = { .tv_nsec = 100000 };
  unsigned n;

  if (f->num[q] == 0)
    return;
  while (steps-- > 0 && f->wait_budget > 0 && f->fd >= 0 && outstanding(f, q, &n) && n > max) {
    nanosleep(&ts, NULL);
    f->wait_budget--;
  }
}

/* The next avail slot of queue Q gets HEAD; the index moves by STEP; a kick. */
static void make_available(struct fuzz *f, unsigned q, uint16_t head, uint16_t step)
{
  uint64_t avail = (uint64_t)q * QUEUE_SPAN + OFF_AVAIL;
  unsigned num = f->num[q] ? f->num[q] : 16;
  uint16_t idx = get16(avail + 2);

  put16(avail + 4 + 2 * (idx % num), head);
  __atomic_thread_fence(__ATOMIC_RELEASE);
  put16(avail + 2, (uint16_t)(idx + step));
  if (write(f->kick[q], &(uint64_t){ 1 }, 8) < 0)
    abort();
}

/* A buffer of a request. */
struct buf {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
};

/* REQ: a virtio-blk request on queue Q, in one of five shapes: 0 header |
 * data | status; 1 merged: header and data in one buffer (OUT), data and
 * status in one (IN); 2 as 0 in an indirect table; 3 the header in two
 * pieces and the data in two; 4 as 1 in an indirect table. */
static void op_req(struct fuzz *f)
{
  static const uint32_t types[] = { VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_FLUSH,
                                    VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_DISCARD,
                                    VIRTIO_BLK_T_WRITE_ZEROES, VIRTIO_BLK_T_WRITE_ZEROES, 99 };
  unsigned q = take8(f) % QUEUES, t = take8(f) % 8, shape = take8(f) % 5;
  uint64_t sector = (uint64_t)take8(f) * 8;
  unsigned count = take8(f) % 16, num = f->num[q] ? f->num[q] : 16;
  uint64_t base = (uint64_t)q * QUEUE_SPAN;
  uint32_t type = types[t], len = count * VIRTIO_BLK_SECTOR;
  bool in = type == VIRTIO_BLK_T_IN || type == VIRTIO_BLK_T_GET_ID;
  bool zeroes = type == VIRTIO_BLK_T_DISCARD || type == VIRTIO_BLK_T_WRITE_ZEROES;
  bool merged = shape == 1 || shape == 4, indirect = shape == 2 || shape == 4;
  bool hdr_with_data = merged && !in && !zeroes && len > 0;
  bool status_with_data = merged && in && len > 0;
  uint16_t w = in ? VRING_DESC_F_WRITE : 0;
  struct virtio_blk_outhdr hdr = { htole32(type), 0, htole64(sector) };
  struct buf bufs[6];
  unsigned n = 0, head;

  /* A request takes at most 5 descriptors, in turn: with fewer than num/5
   * outstanding, none is rewritten before blockd has used it (and the
   * buffers below are shared: the guest's business). */
  wait_used(f, q, num / 5 > 1 ? num / 5 - 1 : 0, ROOM_STEPS);
  memcpy(run.guest + base + OFF_HDR, &hdr, sizeof hdr);
  run.guest[base + OFF_STATUS] = 0xff;
  if (zeroes) {
    struct virtio_blk_discard_write_zeroes seg = {
      htole64(sector), htole32(count * 8),
      htole32(t == 6 ? VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP : 0),
    };
    memcpy(run.guest + base + OFF_SEG, &seg, sizeof seg);
  }
  else if (!in)
    memset(run.guest + base + OFF_DATA, 0x5a ^ (int)t, len);
  if (shape == 3) {
    bufs[n++] = (struct buf){ base + OFF_HDR, 8, 0 };
    bufs[n++] = (struct buf){ base + OFF_HDR + 8, 8, 0 };
  }
  else if (!hdr_with_data)
    bufs[n++] = (struct buf){ base + OFF_HDR, 16, 0 };
  if (zeroes)
    bufs[n++] = (struct buf){ base + OFF_SEG, 16, 0 };
  else if (hdr_with_data) {
    memcpy(run.guest + base + OFF_DATA - 16, &hdr, 16);
    bufs[n++] = (struct buf){ base + OFF_DATA - 16, len + 16, 0 };
  }
  else if (status_with_data)
    bufs[n++] = (struct buf){ base + OFF_DATA, len + 1, VRING_DESC_F_WRITE };
  else if (len > 0 && shape == 3) {
    bufs[n++] = (struct buf){ base + OFF_DATA, len / 2 + 1, w };
    bufs[n++] = (struct buf){ base + OFF_DATA + len / 2 + 1, len - len / 2 - 1, w };
  }
  else if (len > 0)
    bufs[n++] = (struct buf){ base + OFF_DATA, len, w };
  if (!status_with_data)
    bufs[n++] = (struct buf){ base + OFF_STATUS, 1, VRING_DESC_F_WRITE };
  if (indirect) {
    for (unsigned i = 0; i < n; i++)
      put_desc(base + OFF_TABLE, i, bufs[i].addr, bufs[i].len,
               (uint16_t)(bufs[i].flags | (i + 1 < n ? VRING_DESC_F_NEXT : 0)),
               (uint16_t)(i + 1));
    head = f->next_desc[q]++ % num;
    put_desc(base, head, base + OFF_TABLE, 16 * n, VRING_DESC_F_INDIRECT, 0);
  }
  else {
    head = f->next_desc[q] % num;
    for (unsigned i = 0; i < n; i++) {
      unsigned cur = f->next_desc[q]++ % num;

      put_desc(base, cur, bufs[i].addr, bufs[i].len,
               (uint16_t)(bufs[i].flags | (i + 1 < n ? VRING_DESC_F_NEXT : 0)),
               (uint16_t)(f->next_desc[q] % num));
    }
  }
  make_available(f, q, (uint16_t)head, 1);
}

/* POKE: bytes anywhere in guest memory. */
static void op_poke(struct fuzz *f)
{
  uint32_t off = take16(f) * 4u % GUEST_SIZE;
  unsigned len = take8(f);

  for (unsigned i = 0; i < len && off + i < GUEST_SIZE; i++)
    run.guest[off + i] = take8(f);
}

/* DESC: one raw descriptor. */
static void op_desc(struct fuzz *f)
{
  unsigned q = take8(f) % QUEUES, i = take8(f);
  uint64_t addr = take32(f);
  uint32_t len = take32(f);
  uint8_t flags = take8(f), next = take8(f);

  put_desc((uint64_t)q * QUEUE_SPAN, i % 64, addr, len, flags & 7, next);
}

/* WAIT: a barrier, then a little time for the used rings to catch up. */
static void op_wait(struct fuzz *f)
{
  barrier(f);
  for (unsigned q = 0; q < QUEUES; q++)
    wait_used(f, q, 0, WAIT_STEPS);
}

/* Runs the next operation. */
static void run_op(struct fuzz *f)
{
  uint8_t op = take8(f);

  switch (op & 7) {
  case OP_MSG: op_msg(f); break;
  case OP_SETUP: op_setup(f); break;
  case OP_REQ: op_req(f); break;
  case OP_POKE: op_poke(f); break;
  case OP_KICK:
    if (write(f->kick[take8(f) % QUEUES], &(uint64_t){ take8(f) + 1ULL }, 8) < 0)
      abort();
    break;
  case OP_WAIT: op_wait(f); break;
  case OP_DESC: op_desc(f); break;
  case OP_AVAIL: {
    unsigned q = take8(f) % QUEUES;
    uint16_t head = take8(f);

    /* The index moves by 1 for a 0 byte, by anything else otherwise. */
    make_available(f, q, head, (uint16_t)(take8(f) ^ 1));
    break;
  }
  }
}

/* ---- the device and its worker ---------------------------------------------------- */

/* On the device's worker: the device leaves (as when blockd stops), which
 * ends the private worker once its rings have left too. */
static void device_leaves(struct task *t)
{
  struct fuzz *f = container_of(t, struct fuzz, leave);

  f->d->client.ops->drain(&f->d->client);
}

/* The client thread: connects, plays each input, closes, waits for the
 * device to close its end, and tells it to leave. */
static void *client_thread(void *arg)
{
  struct sockaddr_un sun = { .sun_family = AF_UNIX };

  (void)arg;
  strcpy(sun.sun_path, run.sock_path);
  for (;;) {
    struct fuzz *f;
    char buf[4096];

    while (sem_wait(&run.go) == -1)
      ;
    f = current;
    f->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (f->fd < 0 || connect(f->fd, (struct sockaddr *)&sun, sizeof sun) < 0) {
      perror("fuzz-vhost: connect");
      abort();
    }
    while (f->fd >= 0 && f->p < f->end)
      run_op(f);
    if (f->fd >= 0) {
      /* The VMM goes: blockd finishes what it took, then closes. */
      shutdown(f->fd, SHUT_WR);
      while (recv(f->fd, buf, sizeof buf, 0) > 0)
        ;
      close(f->fd);
      f->fd = -1;
    }
    f->leave.fn = device_leaves;
    worker_post(f->w, &f->leave);
    sem_post(&run.done);
  }
  return NULL;
}

/* On the private worker: the device arrives. */
static void start(struct worker *w, void *arg)
{
  struct fuzz *f = arg;

  f->w = w;
  if (vhost_adopt(f->d, w) < 0)
    abort();
  current = f;
  sem_post(&run.go);
}

/* Creates the image, the socket, guest memory, the pool and the client
 * thread, once. */
static void setup(void)
{
  const char *dir = fuzz_private_dir("fuzz-vhost");
  char path[4096], err[4352];
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  pthread_t t;

  if (fuzz_write_file(dir, "disk.raw", NULL, 0, IMAGE_SIZE, false) < 0) {
    perror("fuzz-vhost: image");
    exit(1);
  }
  snprintf(path, sizeof path, "%s/disk.raw", dir);
  run.fmt = fmt_open(path, "raw", false, err, sizeof err);
  if (run.fmt == NULL) {
    fprintf(stderr, "fuzz-vhost: %s\n", err);
    exit(1);
  }
  snprintf(run.sock_path, sizeof run.sock_path, "%s/vhost.sock", dir);
  run.listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (strlen(run.sock_path) >= sizeof sun.sun_path || run.listen_fd < 0) {
    fprintf(stderr, "fuzz-vhost: socket\n");
    exit(1);
  }
  strcpy(sun.sun_path, run.sock_path);
  if (bind(run.listen_fd, (struct sockaddr *)&sun, sizeof sun) < 0 ||
      listen(run.listen_fd, 4) < 0) {
    perror("fuzz-vhost: bind");
    exit(1);
  }
  /* The guest memfd can be sealed (blockd seals it against shrinking, as
   * QEMU's come sealed); the small one cannot. */
  run.guest_fd = memfd_create("fuzz-vhost-guest", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  run.small_fd = memfd_create("fuzz-vhost-small", MFD_CLOEXEC);
  if (run.guest_fd < 0 || run.small_fd < 0 || ftruncate(run.guest_fd, GUEST_SIZE) < 0 ||
      ftruncate(run.small_fd, 4096) < 0) {
    perror("fuzz-vhost: memfd");
    exit(1);
  }
  run.guest = mmap(NULL, GUEST_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, run.guest_fd, 0);
  if (run.guest == MAP_FAILED || pool_start(1) < 0) {
    fprintf(stderr, "fuzz-vhost: setup: mmap or pool\n");
    exit(1);
  }
  if (sem_init(&run.go, 0, 0) == -1 || sem_init(&run.done, 0, 0) == -1 ||
      pthread_create(&t, NULL, client_thread, NULL) != 0 || pthread_detach(t) != 0) {
    fprintf(stderr, "fuzz-vhost: cannot start the client thread\n");
    exit(1);
  }
  log_init("fuzz-vhost");
  verbose = fuzz_verbose();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  static const struct worker_limits limits = {
    .max_memory = 2 * (uint64_t)BUDGET_MAX_SHARE,
    .stall_timeout = 30,
  };
  static bool ready;
  struct fuzz f = { .p = data, .end = data + size, .fd = -1, .wait_budget = INPUT_WAIT_STEPS };
  struct vhost_dev *d;

  if (!ready) {
    setup();
    ready = true;
  }
  memset(run.guest, 0, GUEST_SIZE);
  /* As vhost_open makes a device. */
  d = calloc(1, sizeof *d);
  if (d == NULL)
    abort();
  d->path = (char *)"fuzz-vhost";
  d->serial = (char *)"fuzz-serial";
  d->fmt = run.fmt;
  d->max_queues = QUEUES;
  d->listen_fd = run.listen_fd;
  d->fd = -1;
  d->retired_fd = -1;
  d->writeback = true;
  for (unsigned q = 0; q < QUEUES; q++) {
    d->vqs[q] = malloc(sizeof *d->vqs[q]);
    if (d->vqs[q] == NULL)
      abort();
    vring_init(d->vqs[q], d, q);
  }
  f.d = d;
  for (unsigned q = 0; q < QUEUES; q++) {
    f.kick[q] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    f.call[q] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    f.err[q] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (f.kick[q] < 0 || f.call[q] < 0 || f.err[q] < 0) {
      perror("fuzz-vhost: eventfd");
      abort();
    }
  }
  if (worker_run_private(&limits, start, &f) < 0)
    abort();
  while (sem_wait(&run.done) == -1)
    ;
  for (unsigned q = 0; q < QUEUES; q++) {
    close(f.kick[q]);
    close(f.call[q]);
    close(f.err[q]);
    vring_close_fds(d->vqs[q]);
    blk_free_spares(d->vqs[q]);
    free(d->vqs[q]);
  }
  free(d);
  return 0;
}

/* msg: the vhost-user conversation with a front-end (QEMU, Cloud
 * Hypervisor, Firecracker): one function per message, each checking the
 * payload's size, its fds and every value before touching anything.
 *
 * Replies carry exactly VERSION|REPLY (QEMU drops the connection on any
 * other flags) and exactly the size the message type defines (rust-vmm
 * reads fixed sizes). With REPLY_ACK, a message with no reply of its own is
 * answered with a u64: 0 for success, 1 for failure. A message that fails
 * without a way to say so ends the connection, with one log line.
 *
 * A change that running rings must see is handed to their workers
 * (queue_sync); the reply, and the next message, wait until each has
 * answered, so a front-end that hears "done" finds it done.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "vhost.h"

/* The protocol features a device offers. */
#define PROTOCOL_FEATURES                                                                \
  ((1ULL << VHOST_USER_PROTOCOL_F_MQ) | (1ULL << VHOST_USER_PROTOCOL_F_REPLY_ACK) |     \
   (1ULL << VHOST_USER_PROTOCOL_F_CONFIG) | (1ULL << VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS))

/* What a handler answers. */
enum outcome {
  DONE,     /* replied, or nothing to reply */
  OK,       /* success, ack if asked */
  FAILED,   /* failure, ack 1 if asked, else disconnect */
  DEFER,    /* GET_VRING_BASE: the reply waits for its ring to stop */
  FATAL,    /* disconnect */
};

/* The message being handled. */
struct msg {
  struct vhost_dev *d;
  uint32_t request;
  uint32_t flags;
  const unsigned char *payload;
  uint32_t size;
  char why[160];      /* why it failed, for the log */
};

/* Fails M because WHY. */
static enum outcome fail(struct msg *m, enum outcome o, const char *why)
{
  snprintf(m->why, sizeof m->why, "%s", why);
  return o;
}

/* Whether M has exactly LEN bytes of payload and NFDS fds. */
static bool shape(const struct msg *m, uint32_t len, unsigned nfds)
{
  return m->size == len && m->d->nfds == nfds;
}

/* Takes M's only fd (the caller checked there is one). */
static int take_fd(struct msg *m)
{
  int fd = m->d->fds[0];

  m->d->fds[0] = -1;
  m->d->nfds = 0;
  return fd;
}

/* Reads M's payload as a u64. */
static uint64_t payload_u64(const struct msg *m)
{
  uint64_t v;

  memcpy(&v, m->payload, sizeof v);
  return v;
}

/* Replies to M with a u64. */
static enum outcome reply_u64(struct msg *m, uint64_t v)
{
  return vhost_send(m->d, m->request, &v, sizeof v) < 0 ? FATAL : DONE;
}

/* The ring M's vring state names, after checking M's shape. */
static struct vring *state_ring(struct msg *m, struct vhost_vring_state *st)
{
  if (!shape(m, sizeof *st, 0))
    return NULL;
  memcpy(st, m->payload, sizeof *st);
  return vhost_vring(m->d, st->index);
}

/* GET_FEATURES. */
static enum outcome get_features(struct msg *m)
{
  if (!shape(m, 0, 0))
    return fail(m, FATAL, "GET_FEATURES with a payload");
  return reply_u64(m, blk_features(m->d));
}

/* Hands the device's settings to every running ring of D. */
static void sync_running(struct vhost_dev *d)
{
  for (unsigned i = 0; i < d->max_queues; i++)
    if (d->vqs[i]->running)
      queue_sync(d->vqs[i]);
}

/* SET_FEATURES: also repeated with the same value, and possibly with bits
 * a legacy driver set that we never offered (QEMU passes them on). */
static enum outcome set_features(struct msg *m)
{
  uint64_t f;

  if (!shape(m, 8, 0))
    return fail(m, FATAL, "SET_FEATURES of a bad size");
  f = payload_u64(m);
  if (!(f & (1ULL << VIRTIO_F_VERSION_1)))
    return fail(m, FAILED, "a legacy (pre-VERSION_1) driver");
  m->d->features = f & blk_features(m->d);
  /* Without protocol features, rings are enabled as they are set up. */
  if (!vhost_has(m->d, VHOST_USER_F_PROTOCOL_FEATURES))
    for (unsigned i = 0; i < m->d->max_queues; i++)
      m->d->vqs[i]->enabled = true;
  sync_running(m->d);
  return OK;
}

/* GET_PROTOCOL_FEATURES. */
static enum outcome get_protocol_features(struct msg *m)
{
  if (!shape(m, 0, 0))
    return fail(m, FATAL, "GET_PROTOCOL_FEATURES with a payload");
  return reply_u64(m, PROTOCOL_FEATURES);
}

/* SET_PROTOCOL_FEATURES: Cloud Hypervisor sends it on reconnect without
 * asking first. */
static enum outcome set_protocol_features(struct msg *m)
{
  if (!shape(m, 8, 0))
    return fail(m, FATAL, "SET_PROTOCOL_FEATURES of a bad size");
  m->d->protocol_features = payload_u64(m) & PROTOCOL_FEATURES;
  return OK;
}

/* GET_QUEUE_NUM. */
static enum outcome get_queue_num(struct msg *m)
{
  if (!shape(m, 0, 0))
    return fail(m, FATAL, "GET_QUEUE_NUM with a payload");
  return reply_u64(m, m->d->max_queues);
}

/* GET_MAX_MEM_SLOTS. */
static enum outcome get_max_mem_slots(struct msg *m)
{
  if (!shape(m, 0, 0))
    return fail(m, FATAL, "GET_MAX_MEM_SLOTS with a payload");
  return reply_u64(m, VHOST_MAX_REGIONS);
}

/* SET_OWNER, RESET_OWNER: no state of their own. */
static enum outcome set_owner(struct msg *m)
{
  if (!shape(m, 0, 0))
    return fail(m, FATAL, "SET_OWNER/RESET_OWNER with a payload");
  return OK;
}

/* Makes MEM the device's memory: rings are translated anew (running ones
 * by their workers), and the old table goes once no ring or request uses
 * it any more. */
static enum outcome install_mem(struct msg *m, struct vhost_mem *mem)
{
  struct vhost_dev *d = m->d;

  mem_put(d->mem);
  d->mem = mem;
  for (unsigned i = 0; i < d->max_queues; i++) {
    struct vring *vq = d->vqs[i];

    if (vq->running)
      queue_sync(vq);
    else if (vq->addr_set && vring_translate(vq, mem) < 0 && !vq->broken)
      vring_break(vq, "its rings are outside the new guest memory");
  }
  return OK;
}

/* SET_MEM_TABLE: the whole table at once, one fd a region. */
static enum outcome set_mem_table(struct msg *m)
{
  const struct vhost_user_memory *t = (const void *)m->payload;
  struct vhost_mem *mem;
  uint32_t n;

  if (m->size < sizeof *t)
    return fail(m, FATAL, "SET_MEM_TABLE too short");
  n = t->nregions;
  if (n == 0 || n > VHOST_MAX_REGIONS || m->size != sizeof *t + n * sizeof t->regions[0] ||
      m->d->nfds != n)
    return fail(m, FATAL, "SET_MEM_TABLE whose regions, size and fds disagree");
  mem = mem_new();
  if (mem == NULL)
    return fail(m, FATAL, "out of memory");
  for (uint32_t i = 0; i < n; i++) {
    struct vhost_user_region r;

    memcpy(&r, &t->regions[i], sizeof r);
    if (mem_add(mem, &r, m->d->fds[i], m->why, sizeof m->why) < 0) {
      /* mem_add closed its fd; close the others it will never see. */
      for (uint32_t k = i + 1; k < n; k++)
        close(m->d->fds[k]);
      m->d->nfds = 0;
      mem_put(mem);
      return FATAL;
    }
    m->d->fds[i] = -1;
  }
  m->d->nfds = 0;
  return install_mem(m, mem);
}

/* ADD_MEM_REG: one region more (CONFIGURE_MEM_SLOTS). */
static enum outcome add_mem_reg(struct msg *m)
{
  struct vhost_user_mem_reg reg;
  struct vhost_mem *mem;

  if (!shape(m, sizeof reg, 1))
    return fail(m, FATAL, "ADD_MEM_REG of a bad size or without its fd");
  memcpy(&reg, m->payload, sizeof reg);
  /* A new table: requests in flight keep theirs. */
  mem = m->d->mem != NULL ? mem_copy(m->d->mem) : mem_new();
  if (mem == NULL) {
    close(take_fd(m));
    return fail(m, FATAL, "out of memory");
  }
  if (mem_add(mem, &reg.region, take_fd(m), m->why, sizeof m->why) < 0) {
    mem_put(mem);
    return FATAL;
  }
  return install_mem(m, mem);
}

/* REM_MEM_REG: one region less. */
static enum outcome rem_mem_reg(struct msg *m)
{
  struct vhost_user_mem_reg reg;
  struct vhost_mem *mem;

  if (m->size != sizeof reg || m->d->nfds > 1)
    return fail(m, FATAL, "REM_MEM_REG of a bad size");
  if (m->d->nfds == 1)
    close(take_fd(m)); /* the spec lets front-ends attach one; it is not used */
  memcpy(&reg, m->payload, sizeof reg);
  if (m->d->mem == NULL || (mem = mem_copy(m->d->mem)) == NULL)
    return fail(m, FAILED, "REM_MEM_REG without memory");
  if (mem_remove(mem, &reg.region) < 0) {
    mem_put(mem);
    return fail(m, FAILED, "REM_MEM_REG of a region that is not there");
  }
  return install_mem(m, mem);
}

/* Starts ring VQ on its worker once it has a size, addresses and a kick,
 * whatever order they came in. */
static void maybe_start(struct vring *vq)
{
  if (!vq->running && vq->kick_fd >= 0 && vq->num > 0 && vq->addr_set)
    queue_sync(vq);
}

/* SET_VRING_NUM. */
static enum outcome set_vring_num(struct msg *m)
{
  struct vhost_vring_state st;
  struct vring *vq = state_ring(m, &st);

  if (vq == NULL)
    return fail(m, FATAL, "SET_VRING_NUM of a bad size or queue");
  if (st.num == 0 || st.num > VHOST_MAX_QUEUE_SIZE || (st.num & (st.num - 1)) != 0)
    return fail(m, FAILED, "a queue size that is not a power of two up to 1024");
  if (vq->running)
    return fail(m, FAILED, "SET_VRING_NUM on a running queue");
  vq->num = st.num;
  if (vq->addr_set)
    vring_translate(vq, m->d->mem);
  maybe_start(vq);
  return OK;
}

/* SET_VRING_ADDR: front-end addresses, translated through the memory table. */
static enum outcome set_vring_addr(struct msg *m)
{
  struct vhost_vring_addr a;
  struct vring *vq;

  if (!shape(m, sizeof a, 0))
    return fail(m, FATAL, "SET_VRING_ADDR of a bad size");
  memcpy(&a, m->payload, sizeof a);
  vq = vhost_vring(m->d, a.index);
  if (vq == NULL)
    return fail(m, FATAL, "SET_VRING_ADDR of a bad queue");
  if (a.flags & 1)
    return fail(m, FAILED, "dirty logging was not offered");
  if (vq->running)
    return fail(m, FAILED, "SET_VRING_ADDR on a running queue");
  vq->desc_qva = a.desc_user_addr;
  vq->avail_qva = a.avail_user_addr;
  vq->used_qva = a.used_user_addr;
  vq->addr_set = true;
  if (vring_translate(vq, m->d->mem) < 0)
    return fail(m, FAILED, "ring addresses outside guest memory");
  /* The guest's used index is where completions go next. */
  vq->used_idx = vq->published = le16toh(__atomic_load_n(&vq->used->idx, __ATOMIC_ACQUIRE));
  vq->broken = false;
  maybe_start(vq);
  return OK;
}

/* SET_VRING_BASE: the next available entry to take. */
static enum outcome set_vring_base(struct msg *m)
{
  struct vhost_vring_state st;
  struct vring *vq = state_ring(m, &st);

  if (vq == NULL)
    return fail(m, FATAL, "SET_VRING_BASE of a bad size or queue");
  if (st.num > 0xffff)
    return fail(m, FAILED, "a ring base over 65535 (packed rings are not offered)");
  if (vq->running)
    return fail(m, FAILED, "SET_VRING_BASE on a running queue");
  vq->last_avail = (uint16_t)st.num;
  return OK;
}

/* GET_VRING_BASE: stops the ring; the reply waits until every request
 * taken from it is completed, else a restart would lose them. */
static enum outcome get_vring_base(struct msg *m)
{
  struct vhost_vring_state st;
  struct vring *vq = state_ring(m, &st);

  if (vq == NULL)
    return fail(m, FATAL, "GET_VRING_BASE of a bad size or queue");
  if (vq->running) {
    queue_stop(vq);
    m->d->deferred_value = vq->index;
    return DEFER;
  }
  vring_close_kick_call(vq); /* stopped: no more kicks, no interrupts */
  st.num = vq->last_avail;
  return vhost_send(m->d, m->request, &st, sizeof st) < 0 ? FATAL : DONE;
}

/* Replaces the fd at *SLOT of ring VQ with FD: the old one is closed now,
 * or, if the ring runs, once its worker has moved to the new one. */
static void replace_fd(struct vring *vq, int *slot, int fd)
{
  struct vhost_dev *d = vq->dev;

  if (*slot >= 0) {
    if (vq->running) {
      /* One fd a message, and the next message waits for the sync. */
      if (d->retired_fd >= 0)
        close(d->retired_fd);
      d->retired_fd = *slot;
    }
    else
      close(*slot);
  }
  *slot = fd;
}

/* SET_VRING_KICK, SET_VRING_CALL, SET_VRING_ERR: an eventfd for a ring,
 * replacing the one before. */
static enum outcome set_vring_fd(struct msg *m)
{
  struct vhost_dev *d = m->d;
  struct vring *vq;
  uint64_t v;
  bool nofd;
  int fd;

  if (m->size != 8)
    return fail(m, FATAL, "SET_VRING_KICK/CALL/ERR of a bad size");
  v = payload_u64(m);
  nofd = v & VHOST_USER_VRING_NOFD;
  if ((v & ~(uint64_t)(VHOST_USER_VRING_IDX_MASK | VHOST_USER_VRING_NOFD)) ||
      d->nfds != (nofd ? 0u : 1u))
    return fail(m, FATAL, "SET_VRING_KICK/CALL/ERR whose fd and flag disagree");
  vq = vhost_vring(d, v & VHOST_USER_VRING_IDX_MASK);
  if (vq == NULL) {
    if (!nofd)
      close(take_fd(m));
    return fail(m, FATAL, "SET_VRING_KICK/CALL/ERR of a bad queue");
  }
  fd = nofd ? -1 : take_fd(m);
  switch (m->request) {
  case VHOST_USER_SET_VRING_KICK:
    if (nofd)
      return fail(m, FAILED, "a kick without an fd (polling) is not supported");
    replace_fd(vq, &vq->kick_fd, fd);
    if (!vq->running) {
      maybe_start(vq);
      return OK;
    }
    break;
  case VHOST_USER_SET_VRING_CALL:
    replace_fd(vq, &vq->call_fd, fd);
    break;
  default:
    replace_fd(vq, &vq->err_fd, fd);
    break;
  }
  if (vq->running)
    queue_sync(vq);
  return OK;
}

/* SET_VRING_ENABLE: enabled rings are processed (if set up), disabled ones
 * left alone. QEMU enables every queue it has, set up or not. */
static enum outcome set_vring_enable(struct msg *m)
{
  struct vhost_vring_state st;
  struct vring *vq = state_ring(m, &st);

  if (vq == NULL)
    return fail(m, FATAL, "SET_VRING_ENABLE of a bad size or queue");
  if (st.num > 1)
    return fail(m, FAILED, "SET_VRING_ENABLE with a value other than 0 or 1");
  vq->enabled = st.num == 1;
  /* A running ring processes what the guest made available meanwhile. */
  if (vq->running)
    queue_sync(vq);
  return OK;
}

/* GET_CONFIG: any part of the configuration space. */
static enum outcome get_config(struct msg *m)
{
  struct vhost_user_config c;
  struct virtio_blk_config cfg;
  unsigned char reply[sizeof c + sizeof cfg];

  if (m->size < sizeof c || m->d->nfds != 0)
    return fail(m, FATAL, "GET_CONFIG too short");
  memcpy(&c, m->payload, sizeof c);
  if (m->size != sizeof c + c.size || c.offset > sizeof cfg || c.size > sizeof cfg - c.offset)
    return fail(m, FATAL, "GET_CONFIG of a range outside the configuration");
  blk_config(m->d, &cfg);
  memcpy(reply, &c, sizeof c);
  memcpy(reply + sizeof c, (unsigned char *)&cfg + c.offset, c.size);
  return vhost_send(m->d, m->request, reply, (uint32_t)(sizeof c + c.size)) < 0 ? FATAL : DONE;
}

/* SET_CONFIG: the guest may change only its cache mode (writeback). */
static enum outcome set_config(struct msg *m)
{
  struct vhost_user_config c;

  if (m->size < sizeof c || m->d->nfds != 0)
    return fail(m, FATAL, "SET_CONFIG too short");
  memcpy(&c, m->payload, sizeof c);
  if (m->size != sizeof c + c.size)
    return fail(m, FATAL, "SET_CONFIG of a bad size");
  if (c.offset != offsetof(struct virtio_blk_config, writeback) || c.size != 1 ||
      m->payload[sizeof c] > 1)
    return fail(m, FAILED, "SET_CONFIG of something other than the cache mode");
  m->d->writeback = m->payload[sizeof c] == 1;
  sync_running(m->d);
  return OK;
}

/* Handles the message in D's receive buffer. */
int msg_handle(struct vhost_dev *d)
{
  const struct vhost_user_header *h = (const void *)d->rbuf;
  struct msg m = {
    .d = d,
    .request = h->request,
    .flags = h->flags,
    .payload = d->rbuf + sizeof *h,
    .size = h->size,
  };
  enum outcome o;

  switch (h->request) {
  case VHOST_USER_GET_FEATURES: o = get_features(&m); break;
  case VHOST_USER_SET_FEATURES: o = set_features(&m); break;
  case VHOST_USER_SET_OWNER:
  case VHOST_USER_RESET_OWNER: o = set_owner(&m); break;
  case VHOST_USER_SET_MEM_TABLE: o = set_mem_table(&m); break;
  case VHOST_USER_SET_VRING_NUM: o = set_vring_num(&m); break;
  case VHOST_USER_SET_VRING_ADDR: o = set_vring_addr(&m); break;
  case VHOST_USER_SET_VRING_BASE: o = set_vring_base(&m); break;
  case VHOST_USER_GET_VRING_BASE: o = get_vring_base(&m); break;
  case VHOST_USER_SET_VRING_KICK:
  case VHOST_USER_SET_VRING_CALL:
  case VHOST_USER_SET_VRING_ERR: o = set_vring_fd(&m); break;
  case VHOST_USER_GET_PROTOCOL_FEATURES: o = get_protocol_features(&m); break;
  case VHOST_USER_SET_PROTOCOL_FEATURES: o = set_protocol_features(&m); break;
  case VHOST_USER_GET_QUEUE_NUM: o = get_queue_num(&m); break;
  case VHOST_USER_SET_VRING_ENABLE: o = set_vring_enable(&m); break;
  case VHOST_USER_GET_CONFIG: o = get_config(&m); break;
  case VHOST_USER_SET_CONFIG: o = set_config(&m); break;
  case VHOST_USER_GET_MAX_MEM_SLOTS: o = get_max_mem_slots(&m); break;
  case VHOST_USER_ADD_MEM_REG: o = add_mem_reg(&m); break;
  case VHOST_USER_REM_MEM_REG: o = rem_mem_reg(&m); break;
  default:
    snprintf(m.why, sizeof m.why, "message %u is not supported", h->request);
    o = FAILED;
    break;
  }
  /* Fds the message carried and nobody took are not ours to keep. */
  for (unsigned i = 0; i < d->nfds; i++)
    if (d->fds[i] >= 0)
      close(d->fds[i]);
  d->nfds = 0;
  switch (o) {
  case DONE:
    return 0;
  case DEFER:
    d->deferred = DEFERRED_VRING_BASE;
    d->deferred_request = m.request;
    return 1;
  case OK:
  case FAILED:
    if ((m.flags & VHOST_USER_NEED_REPLY) &&
        (d->protocol_features & (1ULL << VHOST_USER_PROTOCOL_F_REPLY_ACK))) {
      if (o == FAILED)
        debug("%s: message %u failed: %s", d->path, m.request, m.why);
      if (d->pending > 0) {
        d->deferred = DEFERRED_ACK;
        d->deferred_request = m.request;
        d->deferred_value = o == OK ? 0 : 1;
        return 1;
      }
      return reply_u64(&m, o == OK ? 0 : 1) == DONE ? 0 : -1;
    }
    if (o == OK) {
      d->deferred = DEFERRED_NONE;
      return d->pending > 0 ? 1 : 0;
    }
    /* No way to tell the front-end: */
    __attribute__((fallthrough));
  case FATAL:
    /* Without a reason the reply could not be sent, which vhost_send logged. */
    if (m.why[0])
      log_msg("%s: %s: dropping the front-end", d->path, m.why);
    return -1;
  }
  return -1;
}

/* Sends the reply that waited for the rings' workers. */
int msg_reply_deferred(struct vhost_dev *d)
{
  enum vhost_deferred kind = d->deferred;
  struct vhost_vring_state st;
  struct vring *vq;

  d->deferred = DEFERRED_NONE;
  switch (kind) {
  case DEFERRED_ACK:
    return vhost_send(d, d->deferred_request, &d->deferred_value, sizeof d->deferred_value);
  case DEFERRED_VRING_BASE:
    /* Every request it took is on the used ring: tell where it stands. */
    vq = d->vqs[d->deferred_value];
    vring_close_kick_call(vq); /* stopped: no more kicks, no interrupts */
    st.index = vq->index;
    st.num = vq->last_avail;
    return vhost_send(d, d->deferred_request, &st, sizeof st);
  case DEFERRED_NONE:
    break;
  }
  return 0;
}

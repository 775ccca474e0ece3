/* vring: a split virtqueue in guest memory (VIRTIO 1.x, "Split
 * Virtqueues"): taking descriptor chains from the available ring, putting
 * finished ones on the used ring, and the notifications both ways.
 *
 * The rings are shared with a running guest that may be hostile: indices
 * are read once with acquire loads, every descriptor is copied once before
 * use, every chain is bounded by the queue size (and an indirect table by
 * its own length), and every buffer must lie inside guest memory. A guest
 * that breaks these rules breaks its ring: blockd stops processing it, says
 * so once, and signals the front-end's error eventfd.
 */
#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vhost.h"

/* Largest indirect table (libvhost-user's limit too). */
#define MAX_INDIRECT 1024

/* What the used ring's interrupt eventfd is written with. */
static const uint64_t one = 1;

/* The avail ring's used_event field (EVENT_IDX), after its ring[num]. */
static uint16_t *used_event(const struct vring *vq)
{
  return &vq->avail->ring[vq->num];
}

/* The used ring's avail_event field (EVENT_IDX), after its ring[num]. */
static uint16_t *avail_event(const struct vring *vq)
{
  return (uint16_t *)&vq->used->ring[vq->num];
}

/* The pass-end task: publish what this pass completed. */
static void publish_task(struct task *t)
{
  struct vring *vq = container_of(t, struct vring, publish);

  vq->publish_queued = false;
  vring_publish(vq);
  queue_settle(vq);
}

/* Makes VQ empty: no addresses, no fds, no requests. */
void vring_init(struct vring *vq, struct vhost_dev *dev, unsigned index)
{
  memset(vq, 0, sizeof *vq);
  vq->dev = dev;
  vq->index = index;
  vq->kick_fd = vq->call_fd = vq->err_fd = -1;
  vq->run_kick_fd = vq->run_call_fd = vq->run_err_fd = -1;
  vq->publish.fn = publish_task;
}

/* Forgets stopped ring VQ's session; keeps its worker and its tasks. */
void vring_reset(struct vring *vq)
{
  vring_close_fds(vq);
  vq->num = 0;
  vq->desc_qva = vq->avail_qva = vq->used_qva = 0;
  vq->addr_set = false;
  vq->enabled = false;
  vq->desc = NULL;
  vq->avail = NULL;
  vq->used = NULL;
  vq->last_avail = vq->used_idx = vq->published = vq->signalled = 0;
  vq->signalled_valid = false;
  vq->broken = false;
  vq->features = 0;
}

/* Translates VQ's ring addresses through MEM. */
int vring_translate(struct vring *vq, const struct vhost_mem *mem)
{
  uint64_t n = vq->num;

  vq->desc = NULL;
  vq->avail = NULL;
  vq->used = NULL;
  if (!vq->addr_set || n == 0 || mem == NULL)
    return -1;
  /* Sizes with the EVENT_IDX fields, which exist whether used or not. */
  vq->desc = mem_qva(mem, vq->desc_qva, 16 * n);
  vq->avail = mem_qva(mem, vq->avail_qva, 6 + 2 * n);
  vq->used = mem_qva(mem, vq->used_qva, 6 + 8 * n);
  /* Aligned as the spec wants, in the front-end's addresses and in ours:
   * a region's offset in its fd may be odd. */
  if (vq->desc == NULL || vq->avail == NULL || vq->used == NULL ||
      vq->desc_qva % 16 != 0 || vq->avail_qva % 2 != 0 || vq->used_qva % 4 != 0 ||
      (uintptr_t)vq->desc % 16 != 0 || (uintptr_t)vq->avail % 2 != 0 ||
      (uintptr_t)vq->used % 4 != 0) {
    vq->desc = NULL;
    vq->avail = NULL;
    vq->used = NULL;
    return -1;
  }
  return 0;
}

/* Whether VQ may be processed now. */
bool vring_ready(const struct vring *vq)
{
  return vq->started && !vq->stopping && vq->run_enabled && !vq->broken && vq->desc != NULL;
}

/* Marks VQ broken by the guest, with one log line saying WHY. */
void vring_break(struct vring *vq, const char *why)
{
  /* Called on the ring's worker while it runs, else on the device's. */
  int err_fd = vq->started ? vq->run_err_fd : vq->err_fd;

  /* One line per connection, whichever ring breaks first. */
  if (!vq->broken && !__atomic_exchange_n(&vq->dev->broken_logged, true, __ATOMIC_RELAXED))
    log_msg("%s: queue %u: %s: the guest broke the ring, which stops", vq->dev->path,
            vq->index, why);
  vq->broken = true;
  if (err_fd >= 0 && write(err_fd, &one, sizeof one) < 0 && errno != EAGAIN)
    log_msg("%s: queue %u: error eventfd: %m", vq->dev->path, vq->index);
}

/* Copies descriptor I of TABLE (N entries) out of guest memory. */
static bool read_desc(const struct vring_desc *table, unsigned n, unsigned i, struct vring_desc *d)
{
  if (i >= n)
    return false;
  /* Once, and into our memory: the guest may change it behind us. */
  memcpy(d, (const void *)&table[i], sizeof *d);
  d->addr = le64toh(d->addr);
  d->len = le32toh(d->len);
  d->flags = le16toh(d->flags);
  d->next = le16toh(d->next);
  return true;
}

/* Adds descriptor D's buffer to chain C: readable ones must all come
 * before writable ones. Returns NULL, or why the chain is invalid. */
static const char *add_buffer(struct vring_chain *c, const struct vhost_mem *mem,
                              const struct vring_desc *d)
{
  unsigned n = c->nread + c->nwrite;

  if (!(d->flags & VRING_DESC_F_WRITE) && c->nwrite > 0)
    return "a device-readable buffer after a writable one";
  if (d->len == 0)
    return NULL; /* nothing to move; allowed */
  if (mem_gpa_iov(mem, d->addr, d->len, c->iov, &n, VHOST_MAX_IOV) < 0)
    return n == VHOST_MAX_IOV ? "a chain of too many buffers"
                              : "a buffer outside guest memory";
  if (d->flags & VRING_DESC_F_WRITE)
    c->nwrite = n - c->nread;
  else
    c->nread = n;
  return NULL;
}

/* Walks the chain starting at descriptor HEAD of VQ into C. Returns NULL,
 * or why the chain is invalid. */
static const char *walk(struct vring *vq, uint16_t head, struct vring_chain *c)
{
  const struct vhost_mem *mem = vq->mem;
  bool indirect = vring_has(vq, VIRTIO_RING_F_INDIRECT_DESC);
  const struct vring_desc *table = vq->desc;
  unsigned n = vq->num, i = head, seen = 0;
  bool in_indirect = false;
  struct vring_desc d;

  c->head = head;
  c->nread = c->nwrite = 0;
  for (;;) {
    const char *why;

    if (!read_desc(table, n, i, &d))
      return "a descriptor index past the table";
    /* A chain never visits more descriptors than its table has: a loop
     * or an endless chain stops here. */
    if (++seen > n)
      return "a descriptor chain that loops";
    if (d.flags & VRING_DESC_F_INDIRECT) {
      if (!indirect)
        return "an indirect descriptor that was not negotiated";
      if (in_indirect)
        return "an indirect table inside an indirect table";
      if (d.flags & VRING_DESC_F_NEXT)
        return "an indirect descriptor with a next";
      if (d.len == 0 || d.len % 16 != 0 || d.len / 16 > MAX_INDIRECT)
        return "an indirect table of a bad size";
      table = mem_gpa(mem, d.addr, d.len);
      if (table == NULL)
        return "an indirect table outside guest memory";
      /* The spec allows plain descriptors before the indirect one. */
      n = d.len / 16;
      i = 0;
      seen = 0;
      in_indirect = true;
      continue;
    }
    why = add_buffer(c, mem, &d);
    if (why != NULL)
      return why;
    if (!(d.flags & VRING_DESC_F_NEXT))
      return NULL;
    i = d.next;
  }
}

/* Takes the next available chain into C. */
int vring_pop(struct vring *vq, struct vring_chain *c)
{
  uint16_t avail_idx, head;
  const char *why;

  avail_idx = le16toh(__atomic_load_n(&vq->avail->idx, __ATOMIC_ACQUIRE));
  if (avail_idx == vq->last_avail)
    return 0;
  if ((uint16_t)(avail_idx - vq->last_avail) > vq->num) {
    vring_break(vq, "more entries available than the queue holds");
    return -1;
  }
  head = le16toh(__atomic_load_n(&vq->avail->ring[vq->last_avail % vq->num],
                                 __ATOMIC_RELAXED));
  vq->last_avail++;
  why = walk(vq, head, c);
  if (why != NULL) {
    vring_break(vq, why);
    return -1;
  }
  return 1;
}

/* Asks the guest for a kick on the next entry. */
bool vring_kick_enable(struct vring *vq)
{
  if (!vring_has(vq, VIRTIO_RING_F_EVENT_IDX))
    return false;
  __atomic_store_n(avail_event(vq), htole16(vq->last_avail), __ATOMIC_RELAXED);
  /* The guest reads avail_event after publishing its index: order our
   * store before our second look at the index, or a kick can be lost. */
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  return le16toh(__atomic_load_n(&vq->avail->idx, __ATOMIC_ACQUIRE)) != vq->last_avail;
}

/* Records chain HEAD as used, LEN bytes written; publishes at pass end. */
void vring_push(struct vring *vq, uint16_t head, uint32_t len)
{
  struct vring_used_elem *e;

  if (vq->used == NULL)
    return; /* the ring went away (memory replaced badly): nothing to tell */
  e = &vq->used->ring[vq->used_idx % vq->num];
  __atomic_store_n(&e->id, htole32(head), __ATOMIC_RELAXED);
  __atomic_store_n(&e->len, htole32(len), __ATOMIC_RELAXED);
  vq->used_idx++;
  if (!vq->publish_queued) {
    vq->publish_queued = true;
    worker_at_pass_end(vq->w, &vq->publish);
  }
}

/* Whether moving the used index from OLD to NEW passes the guest's EVENT. */
static bool need_event(uint16_t event, uint16_t new, uint16_t old)
{
  return (uint16_t)(new - event - 1) < (uint16_t)(new - old);
}

/* Publishes used entries and interrupts the guest if it asked to be. */
void vring_publish(struct vring *vq)
{
  uint16_t new = vq->used_idx;
  bool signal;

  if (vq->used == NULL || vq->published == new)
    return;
  /* The entries before the index that makes them visible. */
  __atomic_store_n(&vq->used->idx, htole16(new), __ATOMIC_RELEASE);
  vq->published = new;
  /* Our index store before our look at the guest's wishes. */
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  if (vring_has(vq, VIRTIO_RING_F_EVENT_IDX)) {
    uint16_t event = le16toh(__atomic_load_n(used_event(vq), __ATOMIC_RELAXED));

    /* Counting from the last interrupt covers entries published without
     * one; right after a start, or once that count is stale, interrupt. */
    signal = !vq->signalled_valid || (uint16_t)(new - vq->signalled) > vq->num ||
             need_event(event, new, vq->signalled);
  }
  else
    signal = !(le16toh(__atomic_load_n(&vq->avail->flags, __ATOMIC_RELAXED)) &
               VRING_AVAIL_F_NO_INTERRUPT);
  if (!signal || vq->run_call_fd < 0)
    return;
  vq->signalled = new;
  vq->signalled_valid = true;
  /* On the ring: no syscall of its own, submitted with the next batch. */
  struct io_uring_sqe *sqe = worker_sqe(vq->w);

  io_uring_prep_write(sqe, vq->run_call_fd, &one, sizeof one, 0);
  sqe_set_completion(sqe, &completion_ignore);
}

/* Closes the fds the device holds for stopped ring VQ. */
void vring_close_fds(struct vring *vq)
{
  if (vq->kick_fd >= 0)
    close(vq->kick_fd);
  if (vq->call_fd >= 0)
    close(vq->call_fd);
  if (vq->err_fd >= 0)
    close(vq->err_fd);
  vq->kick_fd = vq->call_fd = vq->err_fd = -1;
}

/* Closes stopped ring VQ's kick and call fds, keeping its error eventfd. */
void vring_close_kick_call(struct vring *vq)
{
  int err_fd = vq->err_fd;

  vq->err_fd = -1;
  vring_close_fds(vq);
  vq->err_fd = err_fd;
}

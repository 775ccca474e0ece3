/* queue: a virtqueue's life on a worker of its own, so that the queues of
 * one device (one per guest vCPU, as QEMU and Linux set them up) can run on
 * several cores, while the device's worker keeps the conversation. (With
 * few workers they all share the device's: vhost_adopt picks.)
 *
 * Ownership moves in tasks. A ring belongs to its device's worker while it
 * is stopped. A sync hands it to its worker, which takes up the device's
 * settings (fds, enabled, memory, features, cache mode) and processes it;
 * later syncs hand over changed settings the same way. A stop makes the
 * ring take nothing new; once every request it took is on the used ring,
 * it belongs to the device again. The device waits for each task's answer
 * before it reads the next message, so a ring's worker reads the device's
 * settings only while nothing writes them, and the front-end hears nothing
 * before the change is in force.
 *
 * Each ring is a client of its worker from the device's start to its end,
 * so that worker keeps running as long as the device may hand it work.
 */
#include <stdlib.h>
#include <unistd.h>

#include "vhost.h"

/* Client ops: the device stops its rings itself; nothing to do here. */
static void ring_drain(struct client *c)
{
  (void)c;
}

/* Client op: requests in flight use guest memory and cannot be abandoned. */
static void ring_kill(struct client *c)
{
  (void)c;
}

/* Rings use no payload budget (guest memory is the buffer). */
static const struct client_ops ring_ops = {
  .drain = ring_drain,
  .kill = ring_kill,
};

/* On the ring's worker: the ring becomes its client. */
static void adopt(struct task *t)
{
  struct vring *vq = container_of(t, struct vring, adopt_task);

  client_add(vq->w, &vq->client, &ring_ops);
}

/* On the ring's worker: the device has gone; so does the ring. */
static void leave(struct task *t)
{
  struct vring *vq = container_of(t, struct vring, leave_task);

  client_remove(&vq->client);
}

/* A kick on the ring's eventfd: take what the guest made available. */
static void kicked(struct watch *wt)
{
  struct kick *k = container_of(wt, struct kick, watch);

  if (k->vq != NULL)
    blk_process(k->vq);
}

/* Frees a kick watch once its last read came back. */
static void kick_release(struct watch *wt)
{
  free(container_of(wt, struct kick, watch));
}

/* Stops watching VQ's kick eventfd. */
static void unwatch_kick(struct vring *vq)
{
  if (vq->kick == NULL)
    return;
  vq->kick->vq = NULL;
  worker_unwatch(&vq->kick->watch); /* it frees itself */
  vq->kick = NULL;
}

/* Watches VQ's kick eventfd FD. Returns false if out of memory. */
static bool watch_kick(struct vring *vq, int fd)
{
  struct kick *k = calloc(1, sizeof *k);

  if (k == NULL)
    return false;
  k->vq = vq;
  k->watch.release = kick_release;
  worker_watch(vq->w, &k->watch, fd, kicked);
  vq->kick = k;
  return true;
}

/* On the ring's worker: take up the device's settings, starting the ring
 * if it is not running. The device waits for the answer, so nothing
 * writes what is read here. */
static void sync_run(struct task *t)
{
  struct vring *vq = container_of(t, struct vring, sync_task);
  struct vhost_dev *d = vq->dev;

  if (!vq->started) {
    debug("%s: queue %u starts on thread %d", d->path, vq->index, (int)gettid());
    vq->started = true;
    vq->stopping = false;
    vq->signalled_valid = false;
  }
  vq->features = d->features;
  vq->writeback = d->writeback;
  vq->run_enabled = vq->enabled;
  /* A new interrupt line: the guest may have missed the last one. */
  if (vq->run_call_fd != vq->call_fd)
    vq->signalled_valid = false;
  vq->run_call_fd = vq->call_fd;
  vq->run_err_fd = vq->err_fd;
  if (vq->run_kick_fd != vq->kick_fd) {
    unwatch_kick(vq);
    vq->run_kick_fd = vq->kick_fd;
    if (vq->kick_fd >= 0 && !watch_kick(vq, vq->kick_fd))
      vring_break(vq, "out of memory for its kick");
  }
  if (vq->mem != d->mem) {
    /* Requests in flight keep the table they were mapped with. */
    if (d->mem != NULL)
      mem_get(d->mem);
    mem_put(vq->mem);
    vq->mem = d->mem;
    if (vq->mem != NULL && vring_translate(vq, vq->mem) < 0 && !vq->broken)
      vring_break(vq, "its rings are outside the new guest memory");
  }
  /* The guest may have made entries available before we listened. */
  blk_process(vq);
  /* Whatever is queued on a replaced fd (an interrupt, a re-armed kick
   * read) reaches the kernel before the device may close it: io_uring
   * looks fds up at submission, and the number may be reused. */
  io_uring_submit(&vq->w->ring);
  worker_post(d->client.w, &vq->synced_task);
}

/* On the ring's worker: the ring takes nothing new, and stops once every
 * request it took is on the used ring. */
static void stop_run(struct task *t)
{
  struct vring *vq = container_of(t, struct vring, stop_task);

  vq->stopping = true;
  unwatch_kick(vq);
  vq->run_kick_fd = -1;
  queue_settle(vq);
}

/* On VQ's worker: a stopping ring with nothing in flight and nothing left
 * to publish has stopped; it goes back to the device. */
void queue_settle(struct vring *vq)
{
  if (!vq->stopping || vq->inflight > 0 || vq->publish_queued)
    return;
  vring_publish(vq);
  io_uring_submit(&vq->w->ring); /* the last interrupt, before its fd can close */
  mem_put(vq->mem);
  vq->mem = NULL;
  vq->desc = NULL;
  vq->avail = NULL;
  vq->used = NULL;
  vq->started = false;
  vq->stopping = false;
  vq->run_call_fd = vq->run_err_fd = -1;
  worker_post(vq->dev->client.w, &vq->stopped_task);
}

/* On the device's worker: VQ's worker has taken up the settings. */
static void synced(struct task *t)
{
  struct vring *vq = container_of(t, struct vring, synced_task);

  vhost_acked(vq->dev);
}

/* On the device's worker: VQ has stopped and is the device's again. */
static void stopped(struct task *t)
{
  struct vring *vq = container_of(t, struct vring, stopped_task);

  vq->running = false;
  vq->stop_sent = false;
  vhost_acked(vq->dev);
}

/* Makes VQ a client of worker W until queue_leave. */
void queue_adopt(struct vring *vq, struct worker *w)
{
  vq->w = w;
  vq->adopt_task.fn = adopt;
  vq->sync_task.fn = sync_run;
  vq->stop_task.fn = stop_run;
  vq->leave_task.fn = leave;
  vq->synced_task.fn = synced;
  vq->stopped_task.fn = stopped;
  worker_post(w, &vq->adopt_task);
}

/* On the device's worker: VQ's worker takes up the device's settings. */
void queue_sync(struct vring *vq)
{
  if (vq->stop_sent)
    return; /* it is going; nothing is owed to a stopping ring */
  vq->running = true;
  vq->dev->pending++;
  worker_post(vq->w, &vq->sync_task);
}

/* On the device's worker: running ring VQ stops. */
void queue_stop(struct vring *vq)
{
  if (!vq->running || vq->stop_sent)
    return;
  vq->stop_sent = true;
  vq->dev->pending++;
  worker_post(vq->w, &vq->stop_task);
}

/* On the device's worker: VQ's worker lets it go. */
void queue_leave(struct vring *vq)
{
  worker_post(vq->w, &vq->leave_task);
}

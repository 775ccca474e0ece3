/* blockd's vhost-user-blk front end: what each file of vhost/ exports.
 *
 * A device listens on its own unix socket; one VMM (the front-end) at a
 * time connects and drives it with vhost-user messages (msg.c), shares the
 * guest's memory as fds that blockd maps (mem.c), and hands over split
 * virtqueues (vring.c) whose requests blk.c turns into the core's io_req,
 * reading and writing guest memory in place. A device's socket runs on one
 * worker; each of its queues (kicks, I/O, interrupts) on a worker of its own
 * (queue.c), which with few workers is the device's.
 */
#ifndef BLOCKD_VHOST_H
#define BLOCKD_VHOST_H

#include <sys/socket.h>

#include "core.h"
#include "protocol.h"

/* Most regions of guest memory (rust-vmm front-ends send up to 32). */
#define VHOST_MAX_REGIONS 32
/* Largest queue blockd takes (QEMU allows up to 1024). */
#define VHOST_MAX_QUEUE_SIZE 1024
/* Default and largest number of queues a device offers. */
#define VHOST_DEFAULT_QUEUES 8
#define VHOST_MAX_QUEUES 64
/* Data segments a request may have (advertised seg_max, as QEMU's 128-entry
 * rings allow), and buffers after splitting at region boundaries. */
#define VHOST_SEG_MAX 126
#define VHOST_MAX_IOV 256
/* Largest data segment advertised (size_max). */
#define VHOST_SIZE_MAX (1u << 20)
/* Workers (--threads) from which a device's queues are spread over them
 * rather than served by the device's own worker. */
#define VHOST_SPREAD_MIN_WORKERS 4

/* mem.c: the guest's memory, as the front-end shared it */
struct vhost_region {
  uint64_t gpa;          /* guest-physical address of byte 0 */
  uint64_t size;         /* bytes */
  uint64_t qva;          /* the front-end's address of byte 0 (ring addresses) */
  void *map;             /* our mapping, from offset 0 of the fd */
  size_t map_len;        /* its length: mmap_offset + size */
  char *hva;             /* our address of byte 0 */
};
/* A set of regions; requests in flight keep the one they were mapped with. */
struct vhost_mem {
  unsigned refs;         /* the device's, each running ring's, each request's (atomic) */
  unsigned nregions;     /* regions used */
  bool unsealed_logged;  /* a region that can shrink was logged */
  struct vhost_region regions[VHOST_MAX_REGIONS];
};
/* A new empty table with one reference, or NULL. */
struct vhost_mem *mem_new(void);
/* A new table with M's regions (mapped again, M untouched), or NULL. */
struct vhost_mem *mem_copy(const struct vhost_mem *m);
/* Maps region R shared through FD (closed in any case) into M. Returns 0,
 * or -1 with a message in ERR (bad geometry, overlap, too many, mmap). */
int mem_add(struct vhost_mem *m, const struct vhost_user_region *r, int fd, char *err,
            size_t errlen);
/* Removes and unmaps the region of M that R describes. Returns 0 or -1. */
int mem_remove(struct vhost_mem *m, const struct vhost_user_region *r);
/* Takes and drops a reference; the last one unmaps everything. */
void mem_get(struct vhost_mem *m);
void mem_put(struct vhost_mem *m);
/* Our address of the front-end's [QVA, QVA+LEN), all in one region; NULL if not. */
void *mem_qva(const struct vhost_mem *m, uint64_t qva, uint64_t len);
/* Our address of guest-physical [GPA, GPA+LEN), all in one region; NULL if not. */
void *mem_gpa(const struct vhost_mem *m, uint64_t gpa, uint64_t len);
/* Appends guest-physical [GPA, GPA+LEN) to IOV (split at region edges),
 * which holds *N of at most MAX entries. Returns 0, or -1 if any byte is
 * outside guest memory or IOV is full. */
int mem_gpa_iov(const struct vhost_mem *m, uint64_t gpa, uint64_t len, struct iovec *iov,
                unsigned *n, unsigned max);

/* vring.c: one split virtqueue */
struct vhost_dev;
struct blk_req;
struct vring;
/* A kick eventfd watched for a ring; freed once its watch is released
 * (a replaced or stopped kick's read may still be in the kernel). */
struct kick {
  struct watch watch;          /* on the ring's worker */
  struct vring *vq;            /* the ring, NULL once it no longer cares */
};
/* A virtqueue. It lives on a worker of its own (queue.c), so the queues of
 * one device run in parallel; its device's worker runs the conversation.
 * While the ring is stopped everything here is the device's; between a
 * start and the end of a stop, the part marked "ring's" belongs to the
 * ring's worker alone, and the device hands changes over in tasks. */
struct vring {
  struct vhost_dev *dev;       /* owner */
  unsigned index;              /* queue number */
  /* The device's: set by messages */
  unsigned num;                /* queue size; 0 until SET_VRING_NUM */
  uint64_t desc_qva, avail_qva, used_qva; /* SET_VRING_ADDR, front-end addresses */
  bool addr_set;               /* SET_VRING_ADDR seen */
  int kick_fd, call_fd, err_fd; /* eventfds, -1 if none */
  bool enabled;                /* SET_VRING_ENABLE(1), or no protocol features */
  bool running;                /* started, and its stop not yet finished */
  bool stop_sent;              /* asked to stop */
  /* The ring's worker's while it runs (the device's while stopped): */
  struct worker *w;            /* the ring's worker (fixed) */
  struct client client;        /* keeps that worker up while the device lives */
  bool started;                /* running on its worker */
  bool stopping;               /* taking nothing; stops once drained */
  struct vhost_mem *mem;       /* guest memory (a reference), NULL when stopped */
  uint64_t features;           /* the device's virtio features, as last synced */
  bool writeback;              /* the guest's cache mode, as last synced */
  bool run_enabled;            /* enabled, as last synced */
  int run_kick_fd, run_call_fd, run_err_fd; /* the fds in use, as last synced */
  struct kick *kick;           /* run_kick_fd watched, or NULL */
  struct vring_desc *desc;     /* translated through the memory; NULL if not */
  struct vring_avail *avail;
  struct vring_used *used;
  uint16_t last_avail;         /* next avail entry to take */
  uint16_t used_idx;           /* next used entry to fill (published at pass end) */
  uint16_t published;          /* used index the guest can see */
  uint16_t signalled;          /* used index at the last interrupt */
  bool signalled_valid;        /* signalled means something (not right after a start) */
  bool broken;                 /* the guest broke the ring: no more processing */
  unsigned inflight;           /* requests taken, not yet completed */
  struct blk_req *spare;       /* finished requests, for reuse */
  struct task publish;         /* pass-end task: publish used entries, interrupt */
  bool publish_queued;         /* it is queued */
  bool processing;             /* blk_process runs (a request may complete inside it) */
  /* Tasks between the two workers (queue.c) */
  struct task adopt_task, sync_task, stop_task, leave_task; /* to the ring's worker */
  struct task synced_task, stopped_task; /* back to the device's */
};
/* A chain of descriptors taken from a ring, as buffers in our memory. */
struct vring_chain {
  uint16_t head;               /* its head, for the used ring */
  unsigned nread;              /* device-readable buffers, first in iov */
  unsigned nwrite;             /* device-writable buffers, after them */
  struct iovec iov[VHOST_MAX_IOV];
};
/* Makes VQ empty: no addresses, no fds, no requests. */
void vring_init(struct vring *vq, struct vhost_dev *dev, unsigned index);
/* Forgets VQ's session (stopped): addresses, fds, state; keeps its worker. */
void vring_reset(struct vring *vq);
/* Whether VQ negotiated virtio feature BIT (as last synced). */
static inline bool vring_has(const struct vring *vq, unsigned bit)
{
  return (vq->features >> bit) & 1;
}
/* Translates VQ's ring addresses through MEM. Returns 0, or -1 (NULL rings). */
int vring_translate(struct vring *vq, const struct vhost_mem *mem);
/* Whether VQ may be processed now. */
bool vring_ready(const struct vring *vq);
/* Takes the next available chain into C. Returns 1, 0 if the ring is empty,
 * or -1 if the guest broke the ring (VQ is then broken; logged once). */
int vring_pop(struct vring *vq, struct vring_chain *c);
/* After the ring was found empty: asks the guest for a kick on the next
 * entry (EVENT_IDX). Returns true if entries arrived meanwhile. */
bool vring_kick_enable(struct vring *vq);
/* Records chain HEAD as used, LEN bytes written; publishes at pass end. */
void vring_push(struct vring *vq, uint16_t head, uint32_t len);
/* Publishes used entries and interrupts the guest if it asked to be. */
void vring_publish(struct vring *vq);
/* Marks VQ broken by the guest, with one log line saying WHY. */
void vring_break(struct vring *vq, const char *why);
/* Closes the fds the device holds for stopped ring VQ. */
void vring_close_fds(struct vring *vq);
/* Closes stopped ring VQ's kick and call fds; its error eventfd stays (QEMU
 * sends it once, when it creates the device, not at each start). */
void vring_close_kick_call(struct vring *vq);

/* queue.c: a ring's life on its worker */
/* Makes VQ a client of worker W until queue_leave (before the device
 * starts). */
void queue_adopt(struct vring *vq, struct worker *w);
/* On the device's worker: VQ's worker takes up the device's settings now
 * (VQ's fds, enabled, memory, features, cache mode), starting the ring if
 * it is not running; vhost_acked says when it has. */
void queue_sync(struct vring *vq);
/* On the device's worker: running ring VQ stops; vhost_acked says when
 * every request it took is on the used ring and the ring is the device's. */
void queue_stop(struct vring *vq);
/* On the device's worker: VQ's worker lets it go (the device leaves). */
void queue_leave(struct vring *vq);
/* On VQ's worker, after a request completed or used entries went out: a
 * stop that waits for the ring to drain finishes. */
void queue_settle(struct vring *vq);

/* blk.c: virtio-blk over a vring */
/* A virtio-blk request in flight. */
struct blk_req {
  struct io_req io;            /* what the core runs */
  struct vring *vq;            /* the ring it came from */
  struct vhost_mem *mem;       /* the memory its buffers are in (a reference) */
  uint16_t head;               /* its chain */
  uint8_t *status;             /* where the status byte goes */
  uint32_t written;            /* bytes written to the writable part, status included */
  struct blk_req *next;        /* spare list */
  struct vring_chain chain;    /* its buffers */
  struct iovec data[VHOST_MAX_IOV]; /* the data part of the buffers, for io */
};
/* The virtio features and configuration of a device. */
uint64_t blk_features(const struct vhost_dev *d);
/* Fills CFG for device D. */
void blk_config(const struct vhost_dev *d, struct virtio_blk_config *cfg);
/* Takes and starts every available request of VQ (on its worker). */
void blk_process(struct vring *vq);
/* Frees VQ's spare requests. */
void blk_free_spares(struct vring *vq);

/* msg.c: the vhost-user conversation */
/* Handles the message in D's receive buffer (fds in D->fds). Returns 0 to
 * go on, 1 if the reply waits for a ring to drain, -1 to disconnect (logged). */
int msg_handle(struct vhost_dev *d);
/* Sends the reply that waited for the rings' workers (vhost_dev.deferred).
 * Returns 0 or -1 (logged). */
int msg_reply_deferred(struct vhost_dev *d);
/* What a reply that waits for the rings' workers is. */
enum vhost_deferred {
  DEFERRED_NONE,        /* nothing: just read the next message after */
  DEFERRED_ACK,         /* REPLY_ACK's u64 */
  DEFERRED_VRING_BASE,  /* GET_VRING_BASE's state, once its ring stopped */
};

/* device.c: a vhost-user-blk device, its socket and its connection */
/* The device and what its front-end negotiated. */
struct vhost_dev {
  struct client client;        /* as the worker sees it (first) */
  char *path;                  /* the socket */
  char *serial;                /* GET_ID: up to 20 bytes */
  struct fmt *fmt;             /* the image */
  unsigned max_queues;         /* queues offered */
  int listen_fd;               /* the listening socket */
  int fd;                      /* the connection, -1 if none */
  struct completion accept_comp; /* the posted accept */
  struct completion recv_comp; /* the posted receive */
  bool accept_posted, recv_posted; /* in the kernel */
  bool closing;                /* the connection is going: wait for requests */
  bool draining;               /* the server stops: go once idle */
  struct msghdr msg;           /* the posted receive */
  struct iovec msg_iov;
  /* Ancillary data: the fds of a message. (Aligned by hand: a union with
   * struct cmsghdr, whose last member is flexible, is not valid C here.) */
  _Alignas(struct cmsghdr) char cmsg[CMSG_SPACE(VHOST_USER_MAX_FDS * sizeof(int))];
  unsigned char rbuf[sizeof(struct vhost_user_header) + VHOST_USER_MAX_PAYLOAD];
  size_t rlen;                 /* bytes of the current message received */
  int fds[VHOST_USER_MAX_FDS]; /* fds received with it */
  unsigned nfds;
  unsigned pending;            /* tasks sent to rings' workers, not yet answered */
  enum vhost_deferred deferred; /* the reply that waits for them */
  uint32_t deferred_request;   /* its message */
  uint64_t deferred_value;     /* DEFERRED_ACK: 0 or 1; DEFERRED_VRING_BASE: the ring */
  int retired_fd;              /* an fd a running ring used; closed once synced, or -1 */
  uint64_t features;           /* SET_FEATURES */
  uint64_t protocol_features;  /* SET_PROTOCOL_FEATURES */
  bool writeback;              /* the guest's cache mode (CONFIG_WCE) */
  bool broken_logged;          /* a ring error was logged for this connection (atomic) */
  struct vhost_mem *mem;       /* guest memory, NULL before SET_MEM_TABLE */
  struct vring *vqs[VHOST_MAX_QUEUES]; /* max_queues of them, for the device's life */
};
/* One --vhost-user-blk, parsed. */
struct vhost_spec {
  char *path;                  /* the socket */
  char *file;                  /* the image: a file or rbd:POOL/IMAGE[@SNAP] */
  char *format;                /* format=, or NULL */
  char *conf;                  /* rbd: conf=, or NULL */
  char *id;                    /* rbd: id=, or NULL */
  char *serial;                /* serial=, or NULL */
  bool readonly;               /* readonly */
  bool cache_none;             /* cache=none */
  unsigned queues;             /* queues=N */
};
/* Parses PATH=FILE[,readonly][,format=F][,cache=none][,serial=ID][,queues=N] into S.
 * Returns 0, or -1 with a message in ERR. */
int vhost_spec_parse(const char *arg, struct vhost_spec *s, char *err, size_t errlen);
/* Frees what vhost_spec_parse allocated. */
void vhost_spec_free(struct vhost_spec *s);
/* Opens the image of every spec. Returns 0, or -1 after logging. */
int vhost_open(const struct vhost_spec *specs, size_t n);
/* Binds every device's socket (mode 0600). Returns 0, or -1 after logging. */
int vhost_bind(void);
/* Hands every device to a worker, which starts accepting. */
void vhost_start(void);
/* Hands device D to worker W (its rings to the least loaded workers, or to
 * W when there is no pool, as in a private worker); it starts accepting.
 * Returns 0, or -1 if out of memory. */
int vhost_adopt(struct vhost_dev *d, struct worker *w);
/* Number of devices, and the socket path and image of device I (false
 * past the end), for messages. */
size_t vhost_count(void);
bool vhost_get(size_t i, const char **path, const struct fmt **f);
/* Unlinks the sockets and frees the devices (after workers_stop). Returns
 * 0, or -1 if a flush failed. */
int vhost_close(void);
/* The ring INDEX of D; NULL if out of range. */
struct vring *vhost_vring(struct vhost_dev *d, unsigned index);
/* Whether feature BIT was negotiated. */
static inline bool vhost_has(const struct vhost_dev *d, unsigned bit)
{
  return (d->features >> bit) & 1;
}
/* Sends a reply (REPLY flag, no fds) to REQUEST with LEN bytes of DATA.
 * Returns 0 or -1 (logged). */
int vhost_send(struct vhost_dev *d, uint32_t request, const void *data, uint32_t len);
/* On the device's worker: a ring's worker did what queue_sync or
 * queue_stop asked; once none is left, the conversation goes on. */
void vhost_acked(struct vhost_dev *d);
/* Drops D's connection: stops the rings, waits for requests in flight,
 * then forgets the session and accepts the next front-end. */
void vhost_disconnect(struct vhost_dev *d, const char *why);
/* Answers the virtio-blk serial: the device's. */
const char *vhost_serial(const struct vhost_dev *d);

#endif

/* The vhost-user wire format (QEMU docs/interop/vhost-user.rst), the split
 * virtqueue layout and virtio-blk's requests and configuration space (the
 * VIRTIO 1.x specification). vhost-user messages are in host byte order;
 * rings and virtio-blk structures are little-endian (VERSION_1 only). */
#ifndef BLOCKD_VHOST_PROTOCOL_H
#define BLOCKD_VHOST_PROTOCOL_H

#include <stdint.h>

/* ---- vhost-user messages ---------------------------------------------- */

/* Header flags. */
#define VHOST_USER_VERSION 0x1u         /* bits 0-1: protocol version 1 */
#define VHOST_USER_VERSION_MASK 0x3u
#define VHOST_USER_REPLY 0x4u           /* set on every reply, and only there */
#define VHOST_USER_NEED_REPLY 0x8u      /* with REPLY_ACK: answer a u64 status */

/* Largest payload blockd accepts (rust-vmm front-ends' own limit). */
#define VHOST_USER_MAX_PAYLOAD 4096u
/* Most file descriptors one message may carry (rust-vmm sends up to 32). */
#define VHOST_USER_MAX_FDS 32u

/* Front-end requests. */
enum vhost_user_request {
  VHOST_USER_GET_FEATURES = 1,          /* reply u64 */
  VHOST_USER_SET_FEATURES = 2,          /* u64 */
  VHOST_USER_SET_OWNER = 3,
  VHOST_USER_RESET_OWNER = 4,
  VHOST_USER_SET_MEM_TABLE = 5,         /* struct vhost_user_memory + one fd a region */
  VHOST_USER_SET_LOG_BASE = 6,
  VHOST_USER_SET_LOG_FD = 7,
  VHOST_USER_SET_VRING_NUM = 8,         /* struct vhost_vring_state */
  VHOST_USER_SET_VRING_ADDR = 9,        /* struct vhost_vring_addr */
  VHOST_USER_SET_VRING_BASE = 10,       /* struct vhost_vring_state */
  VHOST_USER_GET_VRING_BASE = 11,       /* reply struct vhost_vring_state; stops the ring */
  VHOST_USER_SET_VRING_KICK = 12,       /* u64 index (| NOFD) + fd */
  VHOST_USER_SET_VRING_CALL = 13,       /* u64 index (| NOFD) + fd */
  VHOST_USER_SET_VRING_ERR = 14,        /* u64 index (| NOFD) + fd */
  VHOST_USER_GET_PROTOCOL_FEATURES = 15, /* reply u64 */
  VHOST_USER_SET_PROTOCOL_FEATURES = 16, /* u64 */
  VHOST_USER_GET_QUEUE_NUM = 17,        /* reply u64 */
  VHOST_USER_SET_VRING_ENABLE = 18,     /* struct vhost_vring_state */
  VHOST_USER_GET_CONFIG = 24,           /* struct vhost_user_config; reply the same */
  VHOST_USER_SET_CONFIG = 25,           /* struct vhost_user_config */
  VHOST_USER_GET_MAX_MEM_SLOTS = 36,    /* reply u64 */
  VHOST_USER_ADD_MEM_REG = 37,          /* struct vhost_user_mem_reg + fd */
  VHOST_USER_REM_MEM_REG = 38,          /* struct vhost_user_mem_reg */
};

/* The u64 of SET_VRING_KICK/CALL/ERR. */
#define VHOST_USER_VRING_IDX_MASK 0xffu
#define VHOST_USER_VRING_NOFD (1u << 8) /* no fd: poll (kick), do not signal (call) */

/* Protocol feature bits. */
#define VHOST_USER_PROTOCOL_F_MQ 0
#define VHOST_USER_PROTOCOL_F_REPLY_ACK 3
#define VHOST_USER_PROTOCOL_F_CONFIG 9
#define VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS 15

/* Message header, 12 bytes. */
struct vhost_user_header {
  uint32_t request; /* enum vhost_user_request */
  uint32_t flags;   /* VHOST_USER_VERSION | VHOST_USER_REPLY | VHOST_USER_NEED_REPLY */
  uint32_t size;    /* payload bytes that follow */
} __attribute__((packed));

/* SET/GET_VRING_NUM/BASE/ENABLE. */
struct vhost_vring_state {
  uint32_t index;   /* the queue */
  uint32_t num;     /* size, next avail index, or enabled (0/1) */
} __attribute__((packed));

/* SET_VRING_ADDR: front-end process addresses (not guest-physical). */
struct vhost_vring_addr {
  uint32_t index;          /* the queue */
  uint32_t flags;          /* bit 0: log used-ring writes (refused: no logging) */
  uint64_t desc_user_addr; /* descriptor table */
  uint64_t used_user_addr; /* used ring */
  uint64_t avail_user_addr; /* available ring */
  uint64_t log_guest_addr; /* for logging; ignored */
} __attribute__((packed));

/* One region of guest memory, shared through an fd. */
struct vhost_user_region {
  uint64_t guest_phys_addr; /* where the guest sees it */
  uint64_t memory_size;     /* bytes */
  uint64_t userspace_addr;  /* where the front-end maps it (ring addresses use these) */
  uint64_t mmap_offset;     /* offset of the region in its fd */
} __attribute__((packed));

/* SET_MEM_TABLE. */
struct vhost_user_memory {
  uint32_t nregions;        /* regions that follow, one fd each */
  uint32_t padding;
  struct vhost_user_region regions[]; /* nregions of them */
} __attribute__((packed));

/* ADD_MEM_REG and REM_MEM_REG. */
struct vhost_user_mem_reg {
  uint64_t padding;
  struct vhost_user_region region;
} __attribute__((packed));

/* GET_CONFIG and SET_CONFIG. */
struct vhost_user_config {
  uint32_t offset;          /* in the device's configuration space */
  uint32_t size;            /* bytes of payload that follow */
  uint32_t flags;           /* 0 (QEMU) or 1 (rust-vmm: "writable"); 2: migration */
  uint8_t payload[];
} __attribute__((packed));

/* ---- virtio feature bits --------------------------------------------- */

#define VIRTIO_BLK_F_SIZE_MAX 1
#define VIRTIO_BLK_F_SEG_MAX 2
#define VIRTIO_BLK_F_RO 5
#define VIRTIO_BLK_F_BLK_SIZE 6
#define VIRTIO_BLK_F_FLUSH 9
#define VIRTIO_BLK_F_TOPOLOGY 10
#define VIRTIO_BLK_F_CONFIG_WCE 11
#define VIRTIO_BLK_F_MQ 12
#define VIRTIO_BLK_F_DISCARD 13
#define VIRTIO_BLK_F_WRITE_ZEROES 14
#define VIRTIO_RING_F_INDIRECT_DESC 28
#define VIRTIO_RING_F_EVENT_IDX 29
#define VHOST_USER_F_PROTOCOL_FEATURES 30
#define VIRTIO_F_VERSION_1 32

/* ---- split virtqueue (little-endian) ---------------------------------- */
/* Naturally aligned, no padding: the rings' alignment is checked when they
 * are set up (16 bytes for descriptors, 2 for avail, 4 for used). */

#define VRING_DESC_F_NEXT 1     /* chain continues at next */
#define VRING_DESC_F_WRITE 2    /* device-writable */
#define VRING_DESC_F_INDIRECT 4 /* addr/len is a table of descriptors */
#define VRING_AVAIL_F_NO_INTERRUPT 1
#define VRING_USED_F_NO_NOTIFY 1
/* Largest queue the split ring allows. */
#define VRING_MAX_SIZE 32768u

struct vring_desc {
  uint64_t addr;  /* guest-physical */
  uint32_t len;   /* bytes */
  uint16_t flags; /* VRING_DESC_F_* */
  uint16_t next;  /* next descriptor with VRING_DESC_F_NEXT */
};

struct vring_avail {
  uint16_t flags; /* VRING_AVAIL_F_NO_INTERRUPT */
  uint16_t idx;   /* where the driver puts the next entry (free running) */
  uint16_t ring[]; /* heads; then used_event (EVENT_IDX) */
};

struct vring_used_elem {
  uint32_t id;  /* head of the chain */
  uint32_t len; /* bytes written into the chain's device-writable part */
};

struct vring_used {
  uint16_t flags; /* VRING_USED_F_NO_NOTIFY */
  uint16_t idx;   /* where the device puts the next entry (free running) */
  struct vring_used_elem ring[]; /* then avail_event (EVENT_IDX) */
};

/* ---- virtio-blk --------------------------------------------------------- */

#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8
#define VIRTIO_BLK_T_DISCARD 11
#define VIRTIO_BLK_T_WRITE_ZEROES 13

#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_IOERR 1
#define VIRTIO_BLK_S_UNSUPP 2

#define VIRTIO_BLK_ID_BYTES 20
#define VIRTIO_BLK_SECTOR 512u
/* write_zeroes / discard segment flag: the range may be deallocated. */
#define VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP 1u

/* The request header, device-readable, first in the chain. */
struct virtio_blk_outhdr {
  uint32_t type;     /* VIRTIO_BLK_T_* */
  uint32_t ioprio;   /* reserved */
  uint64_t sector;   /* 512-byte units */
} __attribute__((packed));

/* One DISCARD or WRITE_ZEROES segment. */
struct virtio_blk_discard_write_zeroes {
  uint64_t sector;       /* first sector */
  uint32_t num_sectors;  /* sectors */
  uint32_t flags;        /* VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP */
} __attribute__((packed));

/* The configuration space, up to write_zeroes_may_unmap and padding (60
 * bytes, what Cloud Hypervisor and Firecracker read; QEMU reads 57). */
struct virtio_blk_config {
  uint64_t capacity;             /* 512-byte sectors */
  uint32_t size_max;             /* bytes per segment (SIZE_MAX) */
  uint32_t seg_max;              /* data segments per request (SEG_MAX) */
  uint16_t cylinders;            /* geometry (not offered) */
  uint8_t heads;
  uint8_t sectors;
  uint32_t blk_size;             /* logical block size (BLK_SIZE) */
  uint8_t physical_block_exp;    /* log2 physical/logical (TOPOLOGY) */
  uint8_t alignment_offset;
  uint16_t min_io_size;          /* logical blocks */
  uint32_t opt_io_size;          /* logical blocks */
  uint8_t writeback;             /* 1: write-back cache (CONFIG_WCE) */
  uint8_t unused0;
  uint16_t num_queues;           /* (MQ) */
  uint32_t max_discard_sectors;  /* (DISCARD) */
  uint32_t max_discard_seg;
  uint32_t discard_sector_alignment;
  uint32_t max_write_zeroes_sectors; /* (WRITE_ZEROES) */
  uint32_t max_write_zeroes_seg;
  uint8_t write_zeroes_may_unmap;
  uint8_t unused1[3];
} __attribute__((packed));

_Static_assert(sizeof(struct vhost_user_header) == 12, "vhost-user header");
_Static_assert(sizeof(struct vhost_vring_addr) == 40, "vring addr");
_Static_assert(sizeof(struct vhost_user_region) == 32, "region");
_Static_assert(sizeof(struct vhost_user_mem_reg) == 40, "mem reg");
_Static_assert(sizeof(struct vring_desc) == 16, "vring desc");
_Static_assert(sizeof(struct vring_used_elem) == 8, "vring used element");
_Static_assert(sizeof(struct vring_avail) == 4 && sizeof(struct vring_used) == 4, "vring heads");
_Static_assert(sizeof(struct virtio_blk_outhdr) == 16, "virtio-blk header");
_Static_assert(sizeof(struct virtio_blk_config) == 60, "virtio-blk config");

#endif

/* The NBD wire format (NetworkBlockDevice/nbd doc/proto.md), and nothing else.
 *
 * All multi-byte fields are big-endian on the wire; the structs below hold
 * them exactly as sent, and code converts with be*toh/htobe* at the edge.
 */
#ifndef BLOCKD_PROTOCOL_H
#define BLOCKD_PROTOCOL_H

#include <stdint.h>

/* Handshake magics. */
#define NBD_MAGIC        UINT64_C(0x4e42444d41474943) /* "NBDMAGIC" */
#define NBD_IHAVEOPT     UINT64_C(0x49484156454f5054) /* "IHAVEOPT" */
#define NBD_REP_MAGIC    UINT64_C(0x0003e889045565a9) /* option reply */

/* Handshake flags, server to client (16 bits). */
#define NBD_FLAG_FIXED_NEWSTYLE (1u << 0)
#define NBD_FLAG_NO_ZEROES      (1u << 1)

/* Client flags (32 bits). */
#define NBD_FLAG_C_FIXED_NEWSTYLE (1u << 0)
#define NBD_FLAG_C_NO_ZEROES      (1u << 1)

/* Options. */
#define NBD_OPT_EXPORT_NAME       1
#define NBD_OPT_ABORT             2
#define NBD_OPT_LIST              3
#define NBD_OPT_STARTTLS          5
#define NBD_OPT_INFO              6
#define NBD_OPT_GO                7
#define NBD_OPT_STRUCTURED_REPLY  8
#define NBD_OPT_LIST_META_CONTEXT 9
#define NBD_OPT_SET_META_CONTEXT  10

/* Option reply types; errors have bit 31 set. */
#define NBD_REP_ACK            1
#define NBD_REP_SERVER         2
#define NBD_REP_INFO           3
#define NBD_REP_META_CONTEXT   4
#define NBD_REP_ERR_UNSUP      (1u << 31 | 1)
#define NBD_REP_ERR_POLICY     (1u << 31 | 2)
#define NBD_REP_ERR_INVALID    (1u << 31 | 3)
#define NBD_REP_ERR_PLATFORM   (1u << 31 | 4)
#define NBD_REP_ERR_TLS_REQD   (1u << 31 | 5)
#define NBD_REP_ERR_UNKNOWN    (1u << 31 | 6)
#define NBD_REP_ERR_SHUTDOWN   (1u << 31 | 7)
#define NBD_REP_ERR_TOO_BIG    (1u << 31 | 9)

/* NBD_REP_INFO types. */
#define NBD_INFO_EXPORT      0
#define NBD_INFO_NAME        1
#define NBD_INFO_DESCRIPTION 2
#define NBD_INFO_BLOCK_SIZE  3

/* Transmission flags (16 bits). */
#define NBD_FLAG_HAS_FLAGS         (1u << 0)
#define NBD_FLAG_READ_ONLY         (1u << 1)
#define NBD_FLAG_SEND_FLUSH        (1u << 2)
#define NBD_FLAG_SEND_FUA          (1u << 3)
#define NBD_FLAG_ROTATIONAL        (1u << 4)
#define NBD_FLAG_SEND_TRIM         (1u << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES (1u << 6)
#define NBD_FLAG_SEND_DF           (1u << 7)
#define NBD_FLAG_CAN_MULTI_CONN    (1u << 8)
#define NBD_FLAG_SEND_CACHE        (1u << 10)
#define NBD_FLAG_SEND_FAST_ZERO    (1u << 11)

/* Request and reply magics. */
#define NBD_REQUEST_MAGIC           UINT32_C(0x25609513)
#define NBD_SIMPLE_REPLY_MAGIC      UINT32_C(0x67446698)
#define NBD_STRUCTURED_REPLY_MAGIC  UINT32_C(0x668e33ef)

/* Commands. */
#define NBD_CMD_READ         0
#define NBD_CMD_WRITE        1
#define NBD_CMD_DISC         2
#define NBD_CMD_FLUSH        3
#define NBD_CMD_TRIM         4
#define NBD_CMD_CACHE        5
#define NBD_CMD_WRITE_ZEROES 6
#define NBD_CMD_BLOCK_STATUS 7

/* Command flags. */
#define NBD_CMD_FLAG_FUA       (1u << 0)
#define NBD_CMD_FLAG_NO_HOLE   (1u << 1)
#define NBD_CMD_FLAG_DF        (1u << 2)
#define NBD_CMD_FLAG_REQ_ONE   (1u << 3)
#define NBD_CMD_FLAG_FAST_ZERO (1u << 4)

/* Structured reply flags and chunk types. */
#define NBD_REPLY_FLAG_DONE         (1u << 0)
#define NBD_REPLY_TYPE_NONE         0
#define NBD_REPLY_TYPE_OFFSET_DATA  1
#define NBD_REPLY_TYPE_OFFSET_HOLE  2
#define NBD_REPLY_TYPE_BLOCK_STATUS 5
#define NBD_REPLY_TYPE_ERROR        (1u << 15 | 1)

/* Error values on the wire (not the host's errno). */
#define NBD_EPERM      1
#define NBD_EIO        5
#define NBD_ENOMEM     12
#define NBD_EINVAL     22
#define NBD_ENOSPC     28
#define NBD_EOVERFLOW  75
#define NBD_ENOTSUP    95
#define NBD_ESHUTDOWN  108

/* base:allocation flags. */
#define NBD_STATE_HOLE (1u << 0)
#define NBD_STATE_ZERO (1u << 1)

/* Limits on what a client may send during the handshake. */
#define NBD_MAX_STRING     4096 /* export names, queries: proto.md allows 4096 */
#define NBD_MAX_OPTION_LEN (64 * 1024)
/* Largest read a server must answer in one chunk under NBD_CMD_FLAG_DF. */
#define NBD_DF_MAX 65536

/* Server greeting: NBD_MAGIC, NBD_IHAVEOPT, handshake flags. */
struct nbd_new_handshake {
  uint64_t nbdmagic;        /* NBD_MAGIC */
  uint64_t version;         /* NBD_IHAVEOPT */
  uint16_t gflags;          /* NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES */
} __attribute__((packed));

/* Client option header, followed by optlen bytes. */
struct nbd_new_option {
  uint64_t version;         /* NBD_IHAVEOPT */
  uint32_t option;          /* NBD_OPT_* */
  uint32_t optlen;          /* length of the data that follows */
} __attribute__((packed));

/* Server option reply header, followed by replylen bytes. */
struct nbd_fixed_new_option_reply {
  uint64_t magic;           /* NBD_REP_MAGIC */
  uint32_t option;          /* the option being answered */
  uint32_t reply;           /* NBD_REP_* */
  uint32_t replylen;        /* length of the data that follows */
} __attribute__((packed));

/* Reply to NBD_OPT_EXPORT_NAME (followed by 124 zero bytes without NO_ZEROES). */
struct nbd_export_name_reply {
  uint64_t exportsize;      /* bytes */
  uint16_t eflags;          /* NBD_FLAG_* transmission flags */
} __attribute__((packed));

/* NBD_INFO_EXPORT payload. */
struct nbd_info_export {
  uint16_t info;            /* NBD_INFO_EXPORT */
  uint64_t exportsize;      /* bytes */
  uint16_t eflags;          /* NBD_FLAG_* transmission flags */
} __attribute__((packed));

/* NBD_INFO_BLOCK_SIZE payload. */
struct nbd_info_block_size {
  uint16_t info;            /* NBD_INFO_BLOCK_SIZE */
  uint32_t minimum;         /* smallest request granularity */
  uint32_t preferred;       /* efficient granularity */
  uint32_t maximum;         /* largest payload accepted */
} __attribute__((packed));

/* Transmission-phase request, followed by length bytes for NBD_CMD_WRITE. */
struct nbd_request {
  uint32_t magic;           /* NBD_REQUEST_MAGIC */
  uint16_t flags;           /* NBD_CMD_FLAG_* */
  uint16_t type;            /* NBD_CMD_* */
  uint64_t cookie;          /* opaque, echoed in the reply */
  uint64_t offset;          /* bytes */
  uint32_t count;           /* bytes */
} __attribute__((packed));

/* Simple reply, followed by the data of a successful NBD_CMD_READ. */
struct nbd_simple_reply {
  uint32_t magic;           /* NBD_SIMPLE_REPLY_MAGIC */
  uint32_t error;           /* NBD_E*, 0 on success */
  uint64_t cookie;          /* from the request */
} __attribute__((packed));

/* Structured reply chunk header, followed by length bytes of payload. */
struct nbd_structured_reply {
  uint32_t magic;           /* NBD_STRUCTURED_REPLY_MAGIC */
  uint16_t flags;           /* NBD_REPLY_FLAG_DONE on the last chunk */
  uint16_t type;            /* NBD_REPLY_TYPE_* */
  uint64_t cookie;          /* from the request */
  uint32_t length;          /* payload bytes */
} __attribute__((packed));

/* NBD_REPLY_TYPE_OFFSET_DATA payload prefix, followed by the data. */
struct nbd_chunk_offset_data {
  uint64_t offset;          /* where the data starts */
} __attribute__((packed));

/* NBD_REPLY_TYPE_OFFSET_HOLE payload. */
struct nbd_chunk_offset_hole {
  uint64_t offset;          /* where the hole starts */
  uint32_t length;          /* bytes of zeroes */
} __attribute__((packed));

/* NBD_REPLY_TYPE_ERROR payload prefix, followed by a message. */
struct nbd_chunk_error {
  uint32_t error;           /* NBD_E* */
  uint16_t len;             /* message bytes that follow */
} __attribute__((packed));

/* NBD_REPLY_TYPE_BLOCK_STATUS payload prefix, followed by descriptors. */
struct nbd_chunk_block_status {
  uint32_t context_id;      /* as announced by NBD_REP_META_CONTEXT */
} __attribute__((packed));

/* One base:allocation extent. */
struct nbd_block_descriptor {
  uint32_t length;          /* bytes */
  uint32_t status_flags;    /* NBD_STATE_* */
} __attribute__((packed));

#endif

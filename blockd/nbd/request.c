/* What an export offers a client, and validation of transmission-phase
 * requests, once, at the edge. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>

#include "nbd.h"

/* Transmission flags advertised for export E. */
uint16_t nbd_eflags(const struct export *e)
{
  const struct fmt *f = e->fmt;
  uint16_t flags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_DF | NBD_FLAG_SEND_CACHE;

  if (f->readonly)
    flags |= NBD_FLAG_READ_ONLY;
  else {
    flags |= NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_WRITE_ZEROES |
             NBD_FLAG_SEND_FAST_ZERO;
    if (f->can_trim)
      flags |= NBD_FLAG_SEND_TRIM;
  }
  /* CAN_MULTI_CONN promises that a flush on any connection covers writes
   * completed on all of them (proto.md); every connection to an export
   * shares the one open image, so it holds when the engine says so. */
  if (f->can_multi_conn)
    flags |= NBD_FLAG_CAN_MULTI_CONN;
  return flags;
}

/* The description clients see for E (LIST, INFO): every client may read
 * it, so it names the format and the mode, never the host path. */
const char *nbd_description(const struct export *e, char *buf, size_t len)
{
  snprintf(buf, len, "%s disk%s", fmt_name(e->fmt), e->fmt->readonly ? ", read-only" : "");
  return buf;
}

/* Checks a request header's framing. Returns 0, or -1 if the connection must
 * be dropped (bad magic, payload over the maximum), logging why. */
int request_check_framing(const struct nbd_request *req)
{
  if (req->magic != NBD_REQUEST_MAGIC) {
    log_msg("bad request magic 0x%08" PRIx32 ": dropping the connection", req->magic);
    return -1;
  }
  /* A write's payload follows its header: if it is too large to accept we
   * cannot skip it safely without reading it, so the connection goes. */
  if (req->type == NBD_CMD_WRITE && req->count > BLOCKD_MAX_PAYLOAD) {
    log_msg("write of %" PRIu32 " bytes is over the maximum payload %u: dropping the connection",
            req->count, BLOCKD_MAX_PAYLOAD);
    return -1;
  }
  return 0;
}

/* Flags each command accepts. proto.md: once SEND_FUA is advertised (on
 * writable exports) FUA is valid on every command, meaningless or not. */
static uint16_t allowed_flags(uint16_t type, bool readonly)
{
  uint16_t fua = readonly ? 0 : NBD_CMD_FLAG_FUA;

  switch (type) {
  case NBD_CMD_READ:         return fua | NBD_CMD_FLAG_DF;
  case NBD_CMD_WRITE_ZEROES: return fua | NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO;
  case NBD_CMD_BLOCK_STATUS: return fua | NBD_CMD_FLAG_REQ_ONE;
  default:                   return fua;
  }
}

/* Validates a request (fields already in host order) against EXP. Returns 0
 * or the host errno the client gets. */
int request_validate(const struct export *exp, const struct nbd_request *req, bool structured,
                     bool meta)
{
  const struct fmt *f = exp->fmt;
  bool is_write = req->type == NBD_CMD_WRITE || req->type == NBD_CMD_TRIM ||
                  req->type == NBD_CMD_WRITE_ZEROES;
  /* proto.md: writes past the end get ENOSPC; everything else EINVAL. */
  bool fills = req->type == NBD_CMD_WRITE || req->type == NBD_CMD_WRITE_ZEROES;

  switch (req->type) {
  case NBD_CMD_READ: case NBD_CMD_WRITE: case NBD_CMD_FLUSH: case NBD_CMD_TRIM:
  case NBD_CMD_CACHE: case NBD_CMD_WRITE_ZEROES: case NBD_CMD_BLOCK_STATUS:
    break;
  default:
    return EINVAL;
  }
  if (is_write && f->readonly)
    return EPERM;
  if (req->flags & ~allowed_flags(req->type, f->readonly))
    return EINVAL;
  if (req->type == NBD_CMD_FLUSH)
    return req->offset == 0 && req->count == 0 ? 0 : EINVAL;
  if (req->type == NBD_CMD_TRIM && !f->can_trim)
    return EINVAL;
  if (req->count == 0)
    return EINVAL;
  if (req->offset > f->size || req->count > f->size - req->offset)
    return fills ? ENOSPC : EINVAL;
  if (req->type == NBD_CMD_READ && req->count > BLOCKD_MAX_PAYLOAD)
    return EINVAL;
  /* DF asks for the whole read in one chunk; proto.md lets the server refuse
   * reads over 64 KiB with EOVERFLOW. */
  if (req->type == NBD_CMD_READ && (req->flags & NBD_CMD_FLAG_DF) && structured &&
      req->count > NBD_DF_MAX)
    return EOVERFLOW;
  if (req->type == NBD_CMD_BLOCK_STATUS && (!structured || !meta))
    return EINVAL;
  return 0;
}

/* Converts a host errno into the NBD error sent on the wire. */
uint32_t nbd_errno(int err)
{
  switch (err) {
  case 0:          return 0;
  case EROFS:
  case EPERM:      return NBD_EPERM;
  case ENOMEM:     return NBD_ENOMEM;
  case EINVAL:     return NBD_EINVAL;
  case EFBIG:
  case EDQUOT:
  case ENOSPC:     return NBD_ENOSPC;
  case EOVERFLOW:  return NBD_EOVERFLOW;
  case EOPNOTSUPP: return NBD_ENOTSUP;
  case ESHUTDOWN:  return NBD_ESHUTDOWN;
  default:         return NBD_EIO;
  }
}

/* Name of NBD option OPTION for messages ("NBD_OPT_GO"); an option blockd
 * does not know is written into BUF as its number. */
const char *nbd_opt_name(uint32_t option, char *buf, size_t len)
{
  switch (option) {
  case NBD_OPT_EXPORT_NAME:       return "NBD_OPT_EXPORT_NAME";
  case NBD_OPT_ABORT:             return "NBD_OPT_ABORT";
  case NBD_OPT_LIST:              return "NBD_OPT_LIST";
  case NBD_OPT_STARTTLS:          return "NBD_OPT_STARTTLS";
  case NBD_OPT_INFO:              return "NBD_OPT_INFO";
  case NBD_OPT_GO:                return "NBD_OPT_GO";
  case NBD_OPT_STRUCTURED_REPLY:  return "NBD_OPT_STRUCTURED_REPLY";
  case NBD_OPT_LIST_META_CONTEXT: return "NBD_OPT_LIST_META_CONTEXT";
  case NBD_OPT_SET_META_CONTEXT:  return "NBD_OPT_SET_META_CONTEXT";
  default:
    snprintf(buf, len, "unknown option %" PRIu32, option);
    return buf;
  }
}

/* Name of an NBD command, for messages. */
const char *nbd_cmd_name(uint16_t type)
{
  switch (type) {
  case NBD_CMD_READ:         return "read";
  case NBD_CMD_WRITE:        return "write";
  case NBD_CMD_DISC:         return "disconnect";
  case NBD_CMD_FLUSH:        return "flush";
  case NBD_CMD_TRIM:         return "trim";
  case NBD_CMD_CACHE:        return "cache";
  case NBD_CMD_WRITE_ZEROES: return "write_zeroes";
  case NBD_CMD_BLOCK_STATUS: return "block_status";
  default:                   return "unknown";
  }
}

/* Replies on the wire (proto.md "Transmission phase"): simple replies, or
 * structured chunks once negotiated, encoded into a request's iovecs. */
#include <endian.h>
#include <string.h>

#include "nbd.h"

/* Encodes REQ's reply into REQ->iov, for a connection with STRUCTURED
 * replies. */
void reply_encode(struct nbd_req *req, bool structured)
{
  const struct nbd_request *h = &req->h;
  uint32_t err = nbd_errno(req->err);

  req->niov = 1;
  req->iov[0].iov_base = req->hdr;
  /* Reads and block status need structured chunks once negotiated; errors
   * too, so that the client gets them in the form it asked for. */
  if (structured &&
      (err != 0 || h->type == NBD_CMD_READ || h->type == NBD_CMD_BLOCK_STATUS)) {
    struct nbd_structured_reply *sr = (void *)req->hdr;
    char *payload = req->hdr + sizeof *sr;
    uint32_t len;

    sr->magic = htobe32(NBD_STRUCTURED_REPLY_MAGIC);
    sr->flags = htobe16(NBD_REPLY_FLAG_DONE);
    sr->cookie = htobe64(h->cookie);
    if (err != 0) {
      struct nbd_chunk_error e = { .error = htobe32(err), .len = 0 };

      sr->type = htobe16(NBD_REPLY_TYPE_ERROR);
      memcpy(payload, &e, sizeof e);
      len = sizeof e;
    }
    else if (h->type == NBD_CMD_READ && req->hole) {
      struct nbd_chunk_offset_hole hole = { .offset = htobe64(h->offset),
                                            .length = htobe32(h->count) };

      sr->type = htobe16(NBD_REPLY_TYPE_OFFSET_HOLE);
      memcpy(payload, &hole, sizeof hole);
      len = sizeof hole;
    }
    else if (h->type == NBD_CMD_READ) {
      uint64_t off = htobe64(h->offset);

      sr->type = htobe16(NBD_REPLY_TYPE_OFFSET_DATA);
      memcpy(payload, &off, sizeof off);
      len = sizeof off;
      if (req->pipe != NULL) {
        /* The data follows from the pipe (conn.c's send). */
        req->iov[0].iov_len = sizeof *sr + len;
        sr->length = htobe32(len + h->count);
        req->reply_len = req->iov[0].iov_len + h->count;
        req->sent = 0;
        return;
      }
      req->iov[1].iov_base = req->buf;
      req->iov[1].iov_len = h->count;
      req->niov = 2;
    }
    else {
      uint32_t id = htobe32(META_BASE_ALLOCATION_ID);

      sr->type = htobe16(NBD_REPLY_TYPE_BLOCK_STATUS);
      memcpy(payload, &id, sizeof id);
      len = sizeof id;
      req->iov[1].iov_base = req->extents;
      req->iov[1].iov_len = req->nr_extents * sizeof *req->extents;
      req->niov = 2;
    }
    req->iov[0].iov_len = sizeof *sr + len;
    sr->length = htobe32(len + (req->niov == 2 ? (uint32_t)req->iov[1].iov_len : 0));
  }
  else {
    struct nbd_simple_reply *r = (void *)req->hdr;

    r->magic = htobe32(NBD_SIMPLE_REPLY_MAGIC);
    r->error = htobe32(err);
    r->cookie = htobe64(h->cookie);
    req->iov[0].iov_len = sizeof *r;
    if (h->type == NBD_CMD_READ && err == 0) {
      req->iov[1].iov_base = req->buf;
      req->iov[1].iov_len = h->count;
      req->niov = 2;
    }
  }
  req->reply_len = req->iov[0].iov_len + (req->niov == 2 ? req->iov[1].iov_len : 0);
  req->sent = 0;
}

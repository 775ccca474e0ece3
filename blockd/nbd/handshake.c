/* Fixed newstyle negotiation, on a blocking socket, before a connection
 * reaches a worker (proto.md "Handshake"). */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "nbd.h"

/* Options a client may send before we give up on it. */
#define MAX_OPTIONS 256

/* Per-handshake state. */
struct hs {
  int fd;                     /* the client socket */
  struct tls_session *tls;    /* after STARTTLS: its session; NULL: plaintext */
  struct timespec deadline;   /* CLOCK_MONOTONIC end of the handshake; 0: none */
  bool no_zeroes;             /* client set NBD_FLAG_C_NO_ZEROES */
  bool structured;            /* NBD_OPT_STRUCTURED_REPLY acknowledged */
  bool meta;                  /* base:allocation selected by SET_META_CONTEXT */
  char meta_export[NBD_MAX_STRING + 1]; /* export the meta context was set for */
  size_t meta_export_len;     /* bytes of meta_export */
};

/* Waits until H's socket is ready for EVENTS or the handshake's deadline
 * passes. Returns 0, or -1 with errno ETIMEDOUT. A deadline on the whole
 * handshake, not per call: a client trickling a byte at a time is cut off. */
static int wait_ready(struct hs *h, short events)
{
  struct pollfd pfd = { .fd = h->fd, .events = events };
  struct timespec now;
  long ms = -1;
  int r;

  for (;;) {
    if (h->deadline.tv_sec != 0) {
      clock_gettime(CLOCK_MONOTONIC, &now);
      ms = (h->deadline.tv_sec - now.tv_sec) * 1000 + (h->deadline.tv_nsec - now.tv_nsec) / 1000000;
      if (ms <= 0) {
        errno = ETIMEDOUT;
        return -1;
      }
    }
    /* Without a deadline too: a TLS socket is non-blocking. */
    r = poll(&pfd, 1, (int)ms);
    if (r > 0)
      return 0;
    if (r < 0 && errno != EINTR)
      return -1;
  }
}

/* Moves exactly LEN bytes to (SENDING) or from the client through its TLS
 * session. Returns 0, or -1 on error (errno EPROTO: tls_error says why) or
 * EOF (errno 0). */
static int transfer_tls(struct hs *h, char *p, size_t len, bool sending)
{
  while (len > 0) {
    /* Try first: GnuTLS may hold decrypted bytes the socket no longer shows. */
    ssize_t n = sending ? tls_send(h->tls, p, len) : tls_recv(h->tls, p, len);

    if (n == -EAGAIN) {
      if (wait_ready(h, tls_wants(h->tls)) < 0)
        return -1;
      continue;
    }
    if (n <= 0) {
      errno = n == 0 ? 0 : EPROTO;
      return -1;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* Moves exactly LEN bytes to (SENDING) or from the client. Returns 0, or -1
 * on error or EOF (errno 0 on EOF). */
static int transfer(struct hs *h, void *buf, size_t len, bool sending)
{
  char *p = buf;

  if (h->tls)
    return transfer_tls(h, p, len, sending);
  while (len > 0) {
    ssize_t n;

    if (wait_ready(h, sending ? POLLOUT : POLLIN) < 0)
      return -1;
    n = sending ? send(h->fd, p, len, MSG_NOSIGNAL) : recv(h->fd, p, len, 0);
    if (n == 0 && !sending) {
      errno = 0;
      return -1;
    }
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* Reads exactly LEN bytes. Returns 0, or -1 on EOF or error (errno 0 on EOF). */
static int recv_full(struct hs *h, void *buf, size_t len)
{
  return transfer(h, buf, len, false);
}

/* Writes exactly LEN bytes. Returns 0 or -1. */
static int send_full(struct hs *h, const void *buf, size_t len)
{
  return transfer(h, (void *)buf, len, true);
}

/* Sends one option reply with LEN bytes of DATA. Returns 0 or -1. */
static int send_reply(struct hs *h, uint32_t option, uint32_t reply, const void *data,
                      size_t len)
{
  struct nbd_fixed_new_option_reply r = {
    .magic = htobe64(NBD_REP_MAGIC),
    .option = htobe32(option),
    .reply = htobe32(reply),
    .replylen = htobe32((uint32_t)len),
  };

  if (send_full(h, &r, sizeof r) < 0 || (len > 0 && send_full(h, data, len) < 0))
    return -1;
  return 0;
}

/* Sends an error reply whose payload is a human-readable message. */
static int send_error(struct hs *h, uint32_t option, uint32_t reply, const char *msg)
{
  char name[NBD_OPT_NAME_MAX];

  debug("%s: %s", nbd_opt_name(option, name, sizeof name), msg);
  return send_reply(h, option, reply, msg, strlen(msg));
}

/* Cursor over an option's payload. */
struct cursor {
  const char *p; /* next byte */
  size_t left;   /* bytes left */
};

/* Takes LEN bytes from C. Returns NULL if the payload is too short. */
static const char *take(struct cursor *c, size_t len)
{
  const char *p = c->p;

  if (c->left < len)
    return NULL;
  c->p += len;
  c->left -= len;
  return p;
}

static bool take_u32(struct cursor *c, uint32_t *v)
{
  const char *p = take(c, 4);

  if (p) {
    memcpy(v, p, 4); /* option payloads carry no alignment */
    *v = be32toh(*v);
  }
  return p != NULL;
}

static bool take_u16(struct cursor *c, uint16_t *v)
{
  const char *p = take(c, 2);

  if (p) {
    memcpy(v, p, 2);
    *v = be16toh(*v);
  }
  return p != NULL;
}

/* Transmission flags for export E on this connection: proto.md says DF
 * MUST stay clear unless structured replies were negotiated. */
static uint16_t conn_eflags(const struct hs *h, const struct export *e)
{
  uint16_t eflags = nbd_eflags(e);

  return h->structured ? eflags : eflags & ~NBD_FLAG_SEND_DF;
}

/* Fills P for a client entering transmission on export E, which it named
 * with the LEN bytes at NAME. */
static void enter_transmission(const struct hs *h, struct export *e, const char *name, size_t len,
                               struct conn_params *p)
{
  p->exp = e;
  p->structured = h->structured;
  p->tls = h->tls;
  p->release = NULL;
  p->release_arg = NULL;
  /* Meta contexts are only valid for the export they were set on. */
  p->meta = h->meta && h->meta_export_len == len && memcmp(h->meta_export, name, len) == 0;
}

/* Sends the NBD_REP_INFO replies for EXP: always EXPORT and BLOCK_SIZE, NAME
 * and DESCRIPTION when asked. */
static int send_infos(struct hs *h, uint32_t option, const struct export *e, bool want_name,
                      bool want_description)
{
  struct nbd_info_export ie = {
    .info = htobe16(NBD_INFO_EXPORT),
    .exportsize = htobe64(e->fmt->size),
    .eflags = htobe16(conn_eflags(h, e)),
  };
  struct nbd_info_block_size bs = {
    .info = htobe16(NBD_INFO_BLOCK_SIZE),
    .minimum = htobe32(e->fmt->block_min),
    .preferred = htobe32(e->fmt->block_pref),
    .maximum = htobe32(e->fmt->block_max < BLOCKD_MAX_PAYLOAD ? e->fmt->block_max
                                                              : BLOCKD_MAX_PAYLOAD),
  };
  char buf[2 + NBD_MAX_STRING + 256], desc[128];
  uint16_t type;
  size_t len;

  if (send_reply(h, option, NBD_REP_INFO, &ie, sizeof ie) < 0 ||
      send_reply(h, option, NBD_REP_INFO, &bs, sizeof bs) < 0)
    return -1;
  if (want_name) {
    type = htobe16(NBD_INFO_NAME);
    len = strlen(e->name);
    memcpy(buf, &type, 2);
    memcpy(buf + 2, e->name, len);
    if (send_reply(h, option, NBD_REP_INFO, buf, 2 + len) < 0)
      return -1;
  }
  if (want_description) {
    type = htobe16(NBD_INFO_DESCRIPTION);
    nbd_description(e, desc, sizeof desc);
    len = strlen(desc);
    memcpy(buf, &type, 2);
    memcpy(buf + 2, desc, len);
    if (send_reply(h, option, NBD_REP_INFO, buf, 2 + len) < 0)
      return -1;
  }
  return 0;
}

/* NBD_OPT_INFO and NBD_OPT_GO. Returns 1 to enter transmission, 0 to go
 * on negotiating, -1 on error. */
static int opt_info_go(struct hs *h, uint32_t option, struct cursor *c, struct conn_params *p)
{
  uint32_t namelen;
  uint16_t nr, type = 0;
  const char *name;
  bool want_name = false, want_description = false;
  struct export *e;

  if (!take_u32(c, &namelen) || (name = take(c, namelen)) == NULL || !take_u16(c, &nr) ||
      c->left != (size_t)nr * 2)
    return send_error(h, option, NBD_REP_ERR_INVALID, "malformed INFO/GO request");
  while (nr-- > 0) {
    take_u16(c, &type);
    want_name |= type == NBD_INFO_NAME;
    want_description |= type == NBD_INFO_DESCRIPTION;
  }
  e = export_find(name, namelen);
  if (e == NULL) {
    char esc[LOG_ESCAPE_MAX];

    log_msg("client asked for unknown export '%s'", log_escape(name, namelen, esc, sizeof esc));
    return send_error(h, option, NBD_REP_ERR_UNKNOWN, "unknown export name");
  }
  if (send_infos(h, option, e, want_name, want_description) < 0 ||
      send_reply(h, option, NBD_REP_ACK, NULL, 0) < 0)
    return -1;
  if (option == NBD_OPT_INFO)
    return 0;
  enter_transmission(h, e, name, namelen, p);
  return 1;
}

/* NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT: blockd knows one
 * context, base:allocation. */
static int opt_meta(struct hs *h, uint32_t option, struct cursor *c)
{
  static const char ba[] = "base:allocation";
  bool set = option == NBD_OPT_SET_META_CONTEXT, match = false;
  uint32_t namelen, nr, qlen;
  const char *name, *q;
  char reply[4 + sizeof ba];
  /* proto.md: LIST answers with id 0; SET hands out the id used later. */
  uint32_t id = htobe32(set ? META_BASE_ALLOCATION_ID : 0);

  /* SET replaces every earlier context, also when it fails. */
  if (set) {
    h->meta = false;
    h->meta_export_len = 0;
  }
  if (set && !h->structured)
    return send_error(h, option, NBD_REP_ERR_INVALID, "structured replies not negotiated");
  if (!take_u32(c, &namelen) || namelen > NBD_MAX_STRING || (name = take(c, namelen)) == NULL ||
      !take_u32(c, &nr))
    return send_error(h, option, NBD_REP_ERR_INVALID, "malformed META_CONTEXT request");
  if (export_find(name, namelen) == NULL)
    return send_error(h, option, NBD_REP_ERR_UNKNOWN, "unknown export name");
  if (nr == 0 && !set)
    match = true; /* list everything */
  while (nr-- > 0) {
    if (!take_u32(c, &qlen) || qlen > NBD_MAX_STRING || (q = take(c, qlen)) == NULL)
      return send_error(h, option, NBD_REP_ERR_INVALID, "malformed META_CONTEXT query");
    if (qlen == sizeof ba - 1 && memcmp(q, ba, qlen) == 0)
      match = true;
    else if (!set && qlen == 5 && memcmp(q, "base:", 5) == 0)
      match = true;
  }
  if (c->left != 0)
    return send_error(h, option, NBD_REP_ERR_INVALID, "trailing bytes in META_CONTEXT request");
  if (set) {
    h->meta = match;
    memcpy(h->meta_export, name, namelen);
    h->meta_export_len = namelen;
  }
  if (match) {
    memcpy(reply, &id, 4);
    memcpy(reply + 4, ba, sizeof ba - 1);
    if (send_reply(h, option, NBD_REP_META_CONTEXT, reply, 4 + sizeof ba - 1) < 0)
      return -1;
  }
  return send_reply(h, option, NBD_REP_ACK, NULL, 0);
}

/* NBD_OPT_LIST: one NBD_REP_SERVER per export. */
static int opt_list(struct hs *h, struct cursor *c)
{
  char buf[4 + 2 * NBD_MAX_STRING], desc[128];

  if (c->left != 0)
    return send_error(h, NBD_OPT_LIST, NBD_REP_ERR_INVALID, "LIST takes no data");
  for (size_t i = 0; i < exports_count(); i++) {
    const struct export *e = exports_get(i);
    size_t len = strnlen(e->name, NBD_MAX_STRING);
    size_t dlen = strlen(nbd_description(e, desc, sizeof desc));
    uint32_t be = htobe32((uint32_t)len);

    /* Name length, name, then the description in the rest of the reply. */
    memcpy(buf, &be, 4);
    memcpy(buf + 4, e->name, len);
    memcpy(buf + 4 + len, desc, dlen);
    if (send_reply(h, NBD_OPT_LIST, NBD_REP_SERVER, buf, 4 + len + dlen) < 0)
      return -1;
  }
  return send_reply(h, NBD_OPT_LIST, NBD_REP_ACK, NULL, 0);
}

/* NBD_OPT_EXPORT_NAME: the old way in, with no way to report an error. */
static int opt_export_name(struct hs *h, struct cursor *c, struct conn_params *p)
{
  static const char zeroes[124];
  struct export *e = export_find(c->p, c->left);
  struct nbd_export_name_reply r;

  if (e == NULL) {
    char esc[LOG_ESCAPE_MAX];

    log_msg("client asked for unknown export '%s' (EXPORT_NAME): closing",
            log_escape(c->p, c->left, esc, sizeof esc));
    return -1;
  }
  r.exportsize = htobe64(e->fmt->size);
  r.eflags = htobe16(conn_eflags(h, e));
  if (send_full(h, &r, sizeof r) < 0 ||
      (!h->no_zeroes && send_full(h, zeroes, sizeof zeroes) < 0))
    return -1;
  enter_transmission(h, e, c->p, c->left, p);
  return 1;
}

/* NBD_OPT_STARTTLS: acknowledge, then the TLS handshake on the same
 * socket, under the negotiation's deadline. Returns 0 to go on negotiating
 * inside TLS, -1 on error (a failed TLS handshake: errno EPROTO). */
static int opt_starttls(struct hs *h, struct cursor *c)
{
  int r;

  if (tls_mode() == TLS_OFF)
    return send_error(h, NBD_OPT_STARTTLS, NBD_REP_ERR_POLICY, "TLS is not enabled on this server");
  if (h->tls)
    return send_error(h, NBD_OPT_STARTTLS, NBD_REP_ERR_INVALID, "TLS is already running");
  if (c->left != 0)
    return send_error(h, NBD_OPT_STARTTLS, NBD_REP_ERR_INVALID, "STARTTLS takes no data");
  if (send_reply(h, NBD_OPT_STARTTLS, NBD_REP_ACK, NULL, 0) < 0)
    return -1;
  h->tls = tls_session_new(h->fd);
  if (h->tls == NULL) {
    errno = ENOMEM;
    return -1;
  }
  while ((r = tls_handshake(h->tls)) == -EAGAIN)
    if (wait_ready(h, tls_wants(h->tls)) < 0)
      return -1;
  if (r < 0) {
    errno = EPROTO;
    return -1;
  }
  /* proto.md: nothing negotiated before STARTTLS survives it; the option
   * haggling starts over inside TLS. */
  h->structured = false;
  h->meta = false;
  h->meta_export_len = 0;
  return 0;
}

/* The server's greeting: fixed newstyle, no zeroes. */
static struct nbd_new_handshake greeting(void)
{
  return (struct nbd_new_handshake){
    .nbdmagic = htobe64(NBD_MAGIC),
    .version = htobe64(NBD_IHAVEOPT),
    .gflags = htobe16(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES),
  };
}

/* Sends the greeting on FD without blocking: a fresh socket always has room
 * for 18 bytes. Returns 0 or -1. */
int handshake_greet(int fd)
{
  struct nbd_new_handshake g = greeting();
  ssize_t n;

  do
    n = send(fd, &g, sizeof g, MSG_NOSIGNAL | MSG_DONTWAIT);
  while (n == -1 && errno == EINTR);
  return n == (ssize_t)sizeof g ? 0 : -1;
}

/* Haggles over options with the client of H until it enters transmission
 * (returns 1, P filled), leaves (0), or fails (-1, logged). DATA holds
 * NBD_MAX_OPTION_LEN bytes; TIMEOUT is for the log. */
static int haggle(struct hs *h, char *data, int timeout, bool greeted, struct conn_params *p)
{
  struct nbd_new_handshake g = greeting();
  uint32_t cflags;

  if ((!greeted && send_full(h, &g, sizeof g) < 0) || recv_full(h, &cflags, 4) < 0)
    goto io_error;
  cflags = be32toh(cflags);
  if (cflags & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) {
    log_msg("client sent unknown handshake flags 0x%" PRIx32 ": closing", cflags);
    return -1;
  }
  h->no_zeroes = cflags & NBD_FLAG_C_NO_ZEROES;

  for (int i = 0; i < MAX_OPTIONS; i++) {
    struct nbd_new_option opt;
    char name[NBD_OPT_NAME_MAX];
    struct cursor c;
    uint32_t option, len;
    int r;

    if (recv_full(h, &opt, sizeof opt) < 0)
      goto io_error;
    if (be64toh(opt.version) != NBD_IHAVEOPT) {
      log_msg("bad option magic: closing");
      return -1;
    }
    option = be32toh(opt.option);
    len = be32toh(opt.optlen);
    if (len > NBD_MAX_OPTION_LEN) {
      log_msg("%s of %" PRIu32 " bytes is too large: closing",
              nbd_opt_name(option, name, sizeof name), len);
      return -1;
    }
    if (recv_full(h, data, len) < 0)
      goto io_error;
    c.p = data;
    c.left = len;
    debug("%s, %" PRIu32 " bytes%s", nbd_opt_name(option, name, sizeof name), len,
          h->tls ? " (TLS)" : "");

    /* proto.md, FORCEDTLS: before TLS, every option but STARTTLS and ABORT
     * gets NBD_REP_ERR_TLS_REQD (INFO, GO, LIST and unknown ones too), so
     * nothing is served, listed or described in plaintext. */
    if (tls_mode() == TLS_REQUIRE && h->tls == NULL && option != NBD_OPT_STARTTLS &&
        option != NBD_OPT_ABORT) {
      /* EXPORT_NAME has no error reply: the session must end. */
      if (option == NBD_OPT_EXPORT_NAME) {
        log_msg("client asked for an export without TLS (--tls=require): closing");
        return -1;
      }
      if (send_error(h, option, NBD_REP_ERR_TLS_REQD,
                     "TLS is required: send NBD_OPT_STARTTLS first") < 0)
        goto io_error;
      continue;
    }
    switch (option) {
    case NBD_OPT_EXPORT_NAME:
      return opt_export_name(h, &c, p);
    case NBD_OPT_ABORT:
      send_reply(h, option, NBD_REP_ACK, NULL, 0);
      if (h->tls)
        tls_bye(h->tls);
      return 0;
    case NBD_OPT_STARTTLS:
      r = opt_starttls(h, &c);
      break;
    case NBD_OPT_LIST:
      r = opt_list(h, &c);
      break;
    case NBD_OPT_INFO:
    case NBD_OPT_GO:
      r = opt_info_go(h, option, &c, p);
      if (r == 1)
        return 1;
      break;
    case NBD_OPT_STRUCTURED_REPLY:
      if (len != 0)
        r = send_error(h, option, NBD_REP_ERR_INVALID, "STRUCTURED_REPLY takes no data");
      else {
        h->structured = true;
        r = send_reply(h, option, NBD_REP_ACK, NULL, 0);
      }
      break;
    case NBD_OPT_LIST_META_CONTEXT:
    case NBD_OPT_SET_META_CONTEXT:
      r = opt_meta(h, option, &c);
      break;
    default:
      r = send_error(h, option, NBD_REP_ERR_UNSUP, "option not supported");
      break;
    }
    if (r < 0)
      goto io_error;
  }
  log_msg("client sent more than %d options: closing", MAX_OPTIONS);
  return -1;

io_error:
  if (errno == 0)
    debug("client closed during the handshake");
  else if (errno == ETIMEDOUT)
    log_msg("handshake not finished after %d s: closing", timeout);
  else if (errno == EPROTO && h->tls)
    log_msg("TLS: %s: closing", tls_error(h->tls));
  else
    log_msg("handshake: %m");
  return errno == 0 ? 0 : -1;
}

/* Runs the fixed newstyle negotiation on blocking socket FD (its greeting
 * already sent if GREETED), giving up after TIMEOUT seconds in all (0:
 * never). Returns 1 when the client entered transmission (P filled, with
 * P->tls its TLS session if it started one), 0 when it left cleanly, -1 on
 * error (logged). */
int handshake(int fd, int timeout, bool greeted, struct conn_params *p)
{
  struct hs h = { .fd = fd };
  CLEANUP_FREE char *data = malloc(NBD_MAX_OPTION_LEN);
  int r;

  if (data == NULL)
    return -1;
  if (timeout > 0) {
    clock_gettime(CLOCK_MONOTONIC, &h.deadline);
    h.deadline.tv_sec += timeout;
  }
  r = haggle(&h, data, timeout, greeted, p);
  if (r != 1)
    tls_session_free(h.tls);
  return r;
}

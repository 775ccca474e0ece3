/* TLS for NBD clients (proto.md "TLS support"), with GnuTLS: the server's
 * credentials, loaded once at start (X.509 certificates in nbdkit's
 * directory layout, or pre-shared keys in psktool's format), and one session
 * per client that started TLS.
 *
 * Sessions run on non-blocking sockets: every call returns -EAGAIN instead
 * of waiting, and the caller waits for tls_wants() itself, the negotiation
 * with its deadline (handshake.c), the pump with its stall timeout (pump.c).
 * So no TLS call can hold a thread past the limits those set. */
#include <errno.h>
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nbd.h"

/* TLS 1.2 and 1.3 only: proto.md says older versions SHOULD NOT be offered
 * by default. The PSK key exchanges are not in NORMAL. */
#define PRIORITY_X509 "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"
#define PRIORITY_PSK PRIORITY_X509 ":+ECDHE-PSK:+DHE-PSK:+PSK"
/* Limits on a --tls-psk file. */
#define PSK_MAX_USERNAME 255 /* bytes of a username */
#define PSK_MAX_KEY 256      /* bytes of a key (512 hex digits) */
#define PSK_MAX_KEYS 65536   /* lines */
/* Non-fatal GnuTLS answers (warning alerts) taken in a row before giving up. */
#define MAX_WARNINGS 16
/* Bytes read from the socket at a time: four full records. GnuTLS alone
 * would read each record's header and body with a recv of their own. */
#define READ_AHEAD (4 * (16384 + 256))

/* One line of the --tls-psk file. */
struct psk_key {
  char *name;           /* the username (not NUL-terminated on the wire) */
  size_t name_len;      /* its bytes */
  unsigned char *key;   /* the key, binary */
  size_t key_len;       /* its bytes */
};

static enum tls_mode mode = TLS_OFF;          /* --tls */
static bool verify_peer;                      /* --tls-verify-peer */
static gnutls_certificate_credentials_t x509; /* --tls-certificates, or NULL */
static gnutls_psk_server_credentials_t psk;   /* --tls-psk, or NULL */
static gnutls_priority_t priority;            /* protocol versions and ciphers */
static struct psk_key *psk_keys;              /* the --tls-psk file's lines */
static size_t nr_psk_keys;                    /* entries in psk_keys */

/* One client's TLS session. */
struct tls_session {
  gnutls_session_t s;   /* GnuTLS's session */
  int fd;               /* the client's socket (non-blocking) */
  unsigned char *ahead; /* READ_AHEAD bytes: read from fd, not yet taken by GnuTLS */
  size_t ahead_off, ahead_len; /* where those bytes are in it */
  int err;              /* the GnuTLS error that ended it, 0 if none */
  char user[LOG_ESCAPE_MAX]; /* the PSK username it asked for, escaped; "" */
  char why[512];        /* what went wrong, for the log */
};

/* The mode --tls chose. */
enum tls_mode tls_mode(void)
{
  return mode;
}

/* What the line at start says of TLS, or NULL when it is off. */
const char *tls_describe(void)
{
  if (mode == TLS_OFF)
    return NULL;
  if (psk)
    return mode == TLS_REQUIRE ? "TLS required (PSK)" : "TLS offered (PSK)";
  if (verify_peer)
    return mode == TLS_REQUIRE ? "TLS required (X.509, client certificates checked)"
                               : "TLS offered (X.509, client certificates checked)";
  return mode == TLS_REQUIRE ? "TLS required (X.509)" : "TLS offered (X.509)";
}

/* Warns if the secret file open as FD, at PATH, is readable by everyone. */
static void warn_if_public(int fd, const char *path)
{
  struct stat st;

  if (fstat(fd, &st) == 0 && (st.st_mode & S_IROTH))
    log_msg("warning: %s is readable by every user of this machine", path);
}

/* Checks that PATH can be opened for reading (GnuTLS's own message for a
 * missing file says only "Error while reading file"). Warns if SECRET and
 * readable by everyone. Returns 0, or -1 after logging. */
static int check_file(const char *path, bool secret)
{
  CLEANUP_CLOSE int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);

  if (fd == -1) {
    log_msg("--tls-certificates: %s: %m", path);
    return -1;
  }
  if (secret)
    warn_if_public(fd, path);
  return 0;
}

/* Loads nbdkit's layout from DIR: server-cert.pem and server-key.pem, and,
 * to check client certificates, ca-cert.pem and (if present) ca-crl.pem.
 * Returns 0, or -1 after logging. */
static int load_x509(const char *dir)
{
  char ca[PATH_MAX], crl[PATH_MAX], cert[PATH_MAX], key[PATH_MAX];
  int r;

  if ((size_t)snprintf(ca, sizeof ca, "%s/ca-cert.pem", dir) >= sizeof ca ||
      (size_t)snprintf(crl, sizeof crl, "%s/ca-crl.pem", dir) >= sizeof crl ||
      (size_t)snprintf(cert, sizeof cert, "%s/server-cert.pem", dir) >= sizeof cert ||
      (size_t)snprintf(key, sizeof key, "%s/server-key.pem", dir) >= sizeof key) {
    log_msg("--tls-certificates: %s: path too long", dir);
    return -1;
  }
  r = gnutls_certificate_allocate_credentials(&x509);
  if (r < 0) {
    log_msg("--tls-certificates: %s", gnutls_strerror(r));
    return -1;
  }
  if (check_file(cert, false) < 0 || check_file(key, true) < 0)
    return -1;
  r = gnutls_certificate_set_x509_key_file(x509, cert, key, GNUTLS_X509_FMT_PEM);
  if (r < 0) {
    log_msg("--tls-certificates: %s, %s: %s", cert, key, gnutls_strerror(r));
    return -1;
  }
  if (!verify_peer)
    return 0;
  if (check_file(ca, false) < 0)
    return -1;
  r = gnutls_certificate_set_x509_trust_file(x509, ca, GNUTLS_X509_FMT_PEM);
  if (r <= 0) {
    log_msg("--tls-certificates: %s: %s", ca,
            r == 0 ? "no certificate in it" : gnutls_strerror(r));
    return -1;
  }
  if (access(crl, F_OK) == 0) {
    if (check_file(crl, false) < 0)
      return -1;
    r = gnutls_certificate_set_x509_crl_file(x509, crl, GNUTLS_X509_FMT_PEM);
    if (r < 0) {
      log_msg("--tls-certificates: %s: %s", crl, gnutls_strerror(r));
      return -1;
    }
  }
  return 0;
}

/* The value of hex digit C, or -1. */
static int hex_value(char c)
{
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* Parses one "username:hexkey" LINE (its newline removed) into K. Returns
 * NULL, or what is wrong with it. */
static const char *parse_psk_line(const char *line, struct psk_key *k)
{
  const char *colon = strchr(line, ':'), *hex;
  size_t hexlen;

  if (colon == NULL || colon == line)
    return "expected USERNAME:HEXKEY";
  if ((size_t)(colon - line) > PSK_MAX_USERNAME)
    return "username longer than 255 bytes";
  hex = colon + 1;
  hexlen = strlen(hex);
  if (hexlen == 0 || hexlen % 2 != 0 || hexlen / 2 > PSK_MAX_KEY)
    return "the key must be an even number of hex digits, at most 512";
  for (size_t i = 0; i < hexlen; i++)
    if (hex_value(hex[i]) < 0)
      return "the key must be hex digits";
  k->name_len = (size_t)(colon - line);
  k->key_len = hexlen / 2;
  k->name = malloc(k->name_len);
  k->key = malloc(k->key_len);
  if (k->name == NULL || k->key == NULL) {
    free(k->name);
    free(k->key);
    return "out of memory";
  }
  memcpy(k->name, line, k->name_len);
  for (size_t i = 0; i < k->key_len; i++)
    k->key[i] = (unsigned char)(hex_value(hex[2 * i]) << 4 | hex_value(hex[2 * i + 1]));
  return NULL;
}

/* Whether a key for the LEN-byte username NAME was loaded already. */
static struct psk_key *psk_find(const void *name, size_t len)
{
  for (size_t i = 0; i < nr_psk_keys; i++)
    if (psk_keys[i].name_len == len && memcmp(psk_keys[i].name, name, len) == 0)
      return &psk_keys[i];
  return NULL;
}

/* GnuTLS asks for the key of USERNAME (during a handshake). */
static int psk_lookup(gnutls_session_t s, const gnutls_datum_t *username, gnutls_datum_t *key)
{
  struct tls_session *t = gnutls_session_get_ptr(s);
  const struct psk_key *k = psk_find(username->data, username->size);
  char esc[LOG_ESCAPE_MAX];

  if (k == NULL) {
    snprintf(t->why, sizeof t->why, "unknown PSK username '%s'",
             log_escape((const char *)username->data, username->size, esc, sizeof esc));
    return -1;
  }
  log_escape((const char *)username->data, username->size, t->user, sizeof t->user);
  /* GnuTLS frees the key with gnutls_free. */
  key->data = gnutls_malloc(k->key_len);
  if (key->data == NULL)
    return -1;
  memcpy(key->data, k->key, k->key_len);
  key->size = (unsigned)k->key_len;
  return 0;
}

/* Loads the username:hexkey lines of PATH. Returns 0, or -1 after logging. */
static int load_psk(const char *path)
{
  char line[PSK_MAX_USERNAME + 1 + 2 * PSK_MAX_KEY + 3];
  unsigned lineno = 0;
  FILE *f = fopen(path, "re");
  const char *bad = NULL;
  int r;

  if (f == NULL) {
    log_msg("--tls-psk: %s: %m", path);
    return -1;
  }
  warn_if_public(fileno(f), path);
  while (bad == NULL && fgets(line, sizeof line, f) != NULL) {
    size_t len = strlen(line);
    struct psk_key k, *more;

    lineno++;
    if (len > 0 && line[len - 1] == '\n')
      line[--len] = '\0';
    else if (!feof(f)) {
      bad = "line too long";
      break;
    }
    if (len > 0 && line[len - 1] == '\r')
      line[--len] = '\0';
    if (len == 0)
      continue;
    if (nr_psk_keys == PSK_MAX_KEYS)
      bad = "more than 65536 keys";
    else if ((bad = parse_psk_line(line, &k)) != NULL)
      break;
    else if (psk_find(k.name, k.name_len) != NULL) {
      bad = "username given twice";
      free(k.name);
      free(k.key);
    }
    else if ((more = realloc(psk_keys, (nr_psk_keys + 1) * sizeof *more)) == NULL) {
      bad = "out of memory";
      free(k.name);
      free(k.key);
    }
    else {
      psk_keys = more;
      psk_keys[nr_psk_keys++] = k;
    }
  }
  explicit_bzero(line, sizeof line);
  if (bad == NULL && ferror(f)) {
    log_msg("--tls-psk: %s: read: %m", path);
    fclose(f);
    return -1;
  }
  fclose(f);
  if (bad != NULL) {
    log_msg("--tls-psk: %s:%u: %s", path, lineno, bad);
    return -1;
  }
  if (nr_psk_keys == 0) {
    log_msg("--tls-psk: %s: no keys in it (psktool -u USERNAME -p %s makes one)", path, path);
    return -1;
  }
  r = gnutls_psk_allocate_server_credentials(&psk);
  if (r < 0) {
    log_msg("--tls-psk: %s", gnutls_strerror(r));
    return -1;
  }
  gnutls_psk_set_server_credentials_function2(psk, psk_lookup);
  return 0;
}

/* Loads the credentials CFG names. Returns 0, or -1 after logging. */
int tls_init(const struct tls_config *cfg)
{
  const char *err_pos;
  int r;

  mode = cfg->mode;
  verify_peer = cfg->verify_peer;
  if (mode == TLS_OFF)
    return 0;
  if (cfg->psk ? load_psk(cfg->psk) < 0 : load_x509(cfg->certificates) < 0) {
    tls_fini();
    return -1;
  }
  r = gnutls_priority_init(&priority, cfg->psk ? PRIORITY_PSK : PRIORITY_X509, &err_pos);
  if (r < 0) {
    log_msg("TLS priority: %s", gnutls_strerror(r));
    tls_fini();
    return -1;
  }
  return 0;
}

/* Frees the credentials (keys wiped first). */
void tls_fini(void)
{
  for (size_t i = 0; i < nr_psk_keys; i++) {
    explicit_bzero(psk_keys[i].key, psk_keys[i].key_len);
    free(psk_keys[i].key);
    free(psk_keys[i].name);
  }
  free(psk_keys);
  psk_keys = NULL;
  nr_psk_keys = 0;
  if (psk)
    gnutls_psk_free_server_credentials(psk);
  if (x509)
    gnutls_certificate_free_credentials(x509);
  if (priority)
    gnutls_priority_deinit(priority);
  psk = NULL;
  x509 = NULL;
  priority = NULL;
  mode = TLS_OFF;
}

/* GnuTLS's transport read: up to LEN bytes of what the last recv read
 * ahead, or of a new recv of up to READ_AHEAD bytes when that is used up.
 * Only ever called once TLS has started, so nothing read ahead belongs to
 * the plaintext negotiation. */
static ssize_t pull(gnutls_transport_ptr_t ptr, void *buf, size_t len)
{
  struct tls_session *t = ptr;

  if (t->ahead_len == 0) {
    ssize_t n = recv(t->fd, t->ahead, READ_AHEAD, 0);

    if (n <= 0) {
      if (n < 0)
        gnutls_transport_set_errno(t->s, errno);
      return n;
    }
    t->ahead_off = 0;
    t->ahead_len = (size_t)n;
  }
  if (len > t->ahead_len)
    len = t->ahead_len;
  memcpy(buf, t->ahead + t->ahead_off, len);
  t->ahead_off += len;
  t->ahead_len -= len;
  return (ssize_t)len;
}

/* Whether pull has something to give, waiting at most MS milliseconds,
 * and never without end: every session call must return at once. Returns
 * 1, 0, or -1. */
static int pull_timeout(gnutls_transport_ptr_t ptr, unsigned ms)
{
  struct tls_session *t = ptr;
  struct pollfd pfd = { .fd = t->fd, .events = POLLIN };

  if (t->ahead_len > 0)
    return 1;
  return poll(&pfd, 1, ms == GNUTLS_INDEFINITE_TIMEOUT || ms > INT_MAX ? 0 : (int)ms);
}

/* Starts a server session on socket FD, which is made non-blocking for
 * good (it never reaches io_uring: the worker gets the pump's socketpair).
 * Returns the session, or NULL after logging. */
struct tls_session *tls_session_new(int fd)
{
  struct tls_session *t = calloc(1, sizeof *t);
  int fl = fcntl(fd, F_GETFL), r;

  if (t == NULL || (t->ahead = malloc(READ_AHEAD)) == NULL || fl == -1 ||
      fcntl(fd, F_SETFL, fl | O_NONBLOCK) == -1) {
    log_msg("TLS session: %m");
    if (t)
      free(t->ahead);
    free(t);
    return NULL;
  }
  t->fd = fd;
  /* No tickets: a resumed session would skip the client certificate check. */
  r = gnutls_init(&t->s, GNUTLS_SERVER | GNUTLS_NONBLOCK | GNUTLS_NO_SIGNAL | GNUTLS_NO_TICKETS);
  if (r < 0) {
    log_msg("TLS session: %s", gnutls_strerror(r));
    free(t->ahead);
    free(t);
    return NULL;
  }
  gnutls_session_set_ptr(t->s, t);
  r = gnutls_priority_set(t->s, priority);
  if (r >= 0)
    r = psk ? gnutls_credentials_set(t->s, GNUTLS_CRD_PSK, psk)
            : gnutls_credentials_set(t->s, GNUTLS_CRD_CERTIFICATE, x509);
  if (r < 0) {
    log_msg("TLS session: %s", gnutls_strerror(r));
    tls_session_free(t);
    return NULL;
  }
  if (x509 && verify_peer) {
    /* Ask for a client certificate, refuse the handshake without one, and
     * check it against ca-cert.pem (and ca-crl.pem) within the handshake,
     * so a client that fails gets a TLS alert saying why. */
    gnutls_certificate_server_set_request(t->s, GNUTLS_CERT_REQUIRE);
    gnutls_session_set_verify_cert(t->s, NULL, 0);
  }
  /* Sending stays GnuTLS's own: one sendmsg per record. */
  gnutls_transport_set_ptr2(t->s, t, (gnutls_transport_ptr_t)(intptr_t)fd);
  gnutls_transport_set_pull_function(t->s, pull);
  gnutls_transport_set_pull_timeout_function(t->s, pull_timeout);
  return t;
}

/* Frees T; its socket stays open. */
void tls_session_free(struct tls_session *t)
{
  if (t == NULL)
    return;
  gnutls_deinit(t->s);
  free(t->ahead);
  free(t);
}

/* Drops the full stop (and spaces) GnuTLS ends its sentences with. */
static const char *trim(char *s)
{
  size_t n = strlen(s);

  while (n > 0 && (s[n - 1] == '.' || s[n - 1] == ' '))
    s[--n] = '\0';
  return s;
}

/* GnuTLS's message for error R, in BUF of LEN bytes, trimmed. */
static const char *words(int r, char *buf, size_t len)
{
  snprintf(buf, len, "%s", gnutls_strerror(r));
  return trim(buf);
}

/* Records that T failed with GnuTLS error R, and why, in words. Returns -1. */
static int failed(struct tls_session *t, int r)
{
  gnutls_datum_t text;
  char msg[128];

  t->err = r;
  if (t->why[0] != '\0')
    return -1;
  if (r == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR &&
      gnutls_certificate_verification_status_print(gnutls_session_get_verify_cert_status(t->s),
                                                   GNUTLS_CRT_X509, &text, 0) == 0) {
    snprintf(msg, sizeof msg, "%s", (char *)text.data);
    gnutls_free(text.data);
    snprintf(t->why, sizeof t->why, "client certificate refused: %s", trim(msg));
  }
  else if (t->user[0] != '\0' &&
           (r == GNUTLS_E_RECEIVED_ILLEGAL_PARAMETER || r == GNUTLS_E_DECRYPTION_FAILED))
    /* What TLS 1.3 says when the client's binder, and 1.2 when its
     * Finished message, does not check with the key on file. */
    snprintf(t->why, sizeof t->why, "PSK username '%s': wrong key (%s)", t->user,
             words(r, msg, sizeof msg));
  else if (t->user[0] != '\0')
    snprintf(t->why, sizeof t->why, "PSK username '%s': %s", t->user, words(r, msg, sizeof msg));
  else
    snprintf(t->why, sizeof t->why, "%s", words(r, msg, sizeof msg));
  return -1;
}

/* Whether GnuTLS error R means the peer went away. */
static bool peer_gone(int r)
{
  return r == GNUTLS_E_PREMATURE_TERMINATION ||
         ((r == GNUTLS_E_PULL_ERROR || r == GNUTLS_E_PUSH_ERROR) &&
          (errno == ECONNRESET || errno == EPIPE));
}

/* Runs the TLS handshake on T. Returns 0 once it is done, -EAGAIN to be
 * called again once the socket is ready for tls_wants(T), or -1 (see
 * tls_error). */
int tls_handshake(struct tls_session *t)
{
  for (int i = 0; i < MAX_WARNINGS; i++) {
    int r = gnutls_handshake(t->s);

    if (r == 0) {
      if (unlikely(verbose)) {
        char *desc = gnutls_session_get_desc(t->s);

        debug("TLS: %s", desc ? desc : "established");
        gnutls_free(desc);
      }
      return 0;
    }
    if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED)
      return -EAGAIN;
    if (peer_gone(r)) {
      /* What a client does when it does not trust our certificate, or a
       * PSK client whose key is wrong. */
      snprintf(t->why, sizeof t->why, "the client broke off the TLS handshake");
      return failed(t, r);
    }
    if (gnutls_error_is_fatal(r))
      return failed(t, r);
  }
  snprintf(t->why, sizeof t->why, "too many TLS warning alerts");
  return -1;
}

/* Reads up to LEN bytes of plaintext. Returns how many, 0 when the client
 * closed the connection, -EAGAIN to be called again once the socket is
 * ready for tls_wants(T) (data GnuTLS holds already is returned first), or
 * -1 (see tls_error). */
ssize_t tls_recv(struct tls_session *t, void *buf, size_t len)
{
  for (int i = 0; i < MAX_WARNINGS; i++) {
    ssize_t n = gnutls_record_recv(t->s, buf, len);

    if (n >= 0)
      return n;
    if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED)
      return -EAGAIN;
    if (peer_gone((int)n))
      return 0;
    if (n == GNUTLS_E_REHANDSHAKE) {
      /* A TLS 1.2 renegotiation: nothing NBD needs, and a way to make the
       * server repeat expensive work. */
      snprintf(t->why, sizeof t->why, "client asked to renegotiate TLS");
      return failed(t, (int)n);
    }
    if (gnutls_error_is_fatal((int)n))
      return failed(t, (int)n);
  }
  snprintf(t->why, sizeof t->why, "too many TLS warning alerts");
  return -1;
}

/* Seals and sends up to LEN bytes (at most one record). Returns how many,
 * -EAGAIN to be called again with the same BUF and LEN once the socket is
 * ready for tls_wants(T), or -1 (see tls_error; tls_peer_gone says whether
 * the client just went away). */
ssize_t tls_send(struct tls_session *t, const void *buf, size_t len)
{
  ssize_t n = gnutls_record_send(t->s, buf, len);

  if (n >= 0)
    return n;
  if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED)
    return -EAGAIN;
  return failed(t, (int)n);
}

/* What T's socket must be ready for after -EAGAIN: POLLIN or POLLOUT. */
short tls_wants(const struct tls_session *t)
{
  return gnutls_record_get_direction(t->s) == 0 ? POLLIN : POLLOUT;
}

/* Whether the call that failed on T did so because the client vanished. */
bool tls_peer_gone(const struct tls_session *t)
{
  return t->err == GNUTLS_E_PREMATURE_TERMINATION || t->err == GNUTLS_E_PUSH_ERROR ||
         t->err == GNUTLS_E_PULL_ERROR;
}

/* Sends the TLS close_notify alert if the socket takes it now. */
void tls_bye(struct tls_session *t)
{
  gnutls_bye(t->s, GNUTLS_SHUT_WR);
}

/* Why the last call on T failed, for the log. */
const char *tls_error(const struct tls_session *t)
{
  return t->why[0] != '\0' ? t->why : "unknown error";
}

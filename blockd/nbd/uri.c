/* NBD URIs of the listening sockets (NetworkBlockDevice/nbd doc/uri.md),
 * for --print-uri, and their addresses for the line blockd prints at start.
 * Both come from the address the socket is bound to, so a port the kernel
 * chose (--listen :0) or a socket passed by activation is told right. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "nbd.h"

/* A socket's bound address, decoded. */
struct addr {
  int family;                         /* AF_UNIX, AF_INET or AF_INET6 */
  char path[sizeof(((struct sockaddr_un *)0)->sun_path) + 1]; /* unix: the path */
  size_t pathlen;                     /* unix: its bytes; an abstract name starts with NUL */
  char host[INET6_ADDRSTRLEN];        /* IP: the numeric address */
  unsigned port;                      /* IP: the port */
  bool wildcard;                      /* IP: bound to every address */
};

/* Reads FD's bound address into A. Returns 0, or -1 after logging. */
static int get_addr(int fd, struct addr *a)
{
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;

  memset(a, 0, sizeof *a);
  if (getsockname(fd, (struct sockaddr *)&ss, &len) == -1) {
    log_msg("getsockname: %m");
    return -1;
  }
  a->family = ss.ss_family;
  switch (ss.ss_family) {
  case AF_UNIX: {
    const struct sockaddr_un *sun = (const struct sockaddr_un *)&ss;

    /* An unnamed socket has no path at all; a path may lack its NUL. */
    if (len <= offsetof(struct sockaddr_un, sun_path)) {
      log_msg("the listening unix socket has no name");
      return -1;
    }
    a->pathlen = len - offsetof(struct sockaddr_un, sun_path);
    if (a->pathlen > sizeof sun->sun_path)
      a->pathlen = sizeof sun->sun_path;
    memcpy(a->path, sun->sun_path, a->pathlen);
    if (a->path[0] != '\0')
      a->pathlen = strnlen(a->path, a->pathlen);
    return 0;
  }
  case AF_INET: {
    const struct sockaddr_in *sin = (const struct sockaddr_in *)&ss;

    a->wildcard = sin->sin_addr.s_addr == htonl(INADDR_ANY);
    inet_ntop(AF_INET, &sin->sin_addr, a->host, sizeof a->host);
    a->port = ntohs(sin->sin_port);
    return 0;
  }
  case AF_INET6: {
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&ss;

    a->wildcard = IN6_IS_ADDR_UNSPECIFIED(&sin6->sin6_addr);
    inet_ntop(AF_INET6, &sin6->sin6_addr, a->host, sizeof a->host);
    a->port = ntohs(sin6->sin6_port);
    return 0;
  }
  default:
    log_msg("listening socket of unknown family %d", ss.ss_family);
    return -1;
  }
}

/* Writes the LEN bytes at S to F percent-encoded (RFC 3986): everything but
 * the unreserved characters and '/', which both the path (the export name)
 * and a query value may hold as they are. */
static void put_encoded(FILE *f, const char *s, size_t len)
{
  static const char hex[] = "0123456789ABCDEF";

  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];

    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
        c == '-' || c == '.' || c == '_' || c == '~' || c == '/')
      fputc(c, f);
    else
      fprintf(f, "%%%c%c", hex[c >> 4], hex[c & 15]);
  }
}

/* The NBD URI of export NAME on listening socket FD. */
char *uri_make(int fd, const char *name)
{
  struct addr a;
  char *uri = NULL;
  size_t size;
  FILE *f;

  if (get_addr(fd, &a) < 0)
    return NULL;
  f = open_memstream(&uri, &size);
  if (f == NULL) {
    log_msg("open_memstream: %m");
    return NULL;
  }
  /* nbds: the client must use TLS, as --tls=require makes it; under
   * --tls=on plaintext is served, so nbd: works for every client. */
  fputs(tls_mode() == TLS_REQUIRE ? "nbds" : "nbd", f);
  if (a.family == AF_UNIX) {
    /* An abstract name's leading NUL is written %00 (uri.md). */
    fputs("+unix:///", f);
    put_encoded(f, name, strlen(name));
    fputs("?socket=", f);
    put_encoded(f, a.path, a.pathlen);
  }
  else {
    /* A client cannot connect to the wildcard address by that name. */
    const char *host = a.wildcard ? (a.family == AF_INET ? "127.0.0.1" : "::1") : a.host;

    fprintf(f, a.family == AF_INET6 ? "://[%s]:%u/" : "://%s:%u/", host, a.port);
    put_encoded(f, name, strlen(name));
  }
  if (fclose(f) != 0) {
    log_msg("out of memory");
    free(uri);
    return NULL;
  }
  return uri;
}

/* Where listening socket FD is, for messages. */
char *uri_where(int fd)
{
  struct addr a;
  char *s;
  int r;

  if (get_addr(fd, &a) < 0)
    return NULL;
  if (a.family == AF_UNIX && a.path[0] == '\0')
    r = asprintf(&s, "abstract unix socket @%.*s", (int)a.pathlen - 1, a.path + 1);
  else if (a.family == AF_UNIX)
    r = asprintf(&s, "unix socket %s", a.path);
  else
    r = asprintf(&s, a.family == AF_INET6 ? "[%s]:%u" : "%s:%u", a.host, a.port);
  if (r < 0) {
    log_msg("out of memory");
    return NULL;
  }
  return s;
}

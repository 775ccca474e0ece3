/* --net user[,hostfwd=RULE]...[,restrict=on|off]: QEMU's user-mode network
 * (slirp) behind a virtio-net-pci NIC. Parsing, the checks that must pass
 * before anything starts, and the -netdev value. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "launch.h"

/* At most this many hostfwd= rules: more is a typo, not a workspace. */
#define HOSTFWD_MAX 64
/* QEMU's default user network, 10.0.2.0/24: the host is .2, DNS .3. */
#define SLIRP_NET 0x0a000200u
#define SLIRP_MASK 0xffffff00u

/* Parses a port: 1 to 65535 in decimal digits only. Returns 0 or -1. */
static int parse_port(const char *s, size_t len, uint16_t *out)
{
  unsigned v = 0;

  if (len == 0 || len > 5)
    return -1;
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9')
      return -1;
    v = v * 10 + (unsigned)(s[i] - '0');
  }
  if (v == 0 || v > 65535)
    return -1;
  *out = v;
  return 0;
}

/* Parses an IPv4 address of LEN bytes at S, or the empty string as ANY.
 * Returns 0 or -1. */
static int parse_addr(const char *s, size_t len, struct in_addr *out, bool *given)
{
  char buf[INET_ADDRSTRLEN];

  *given = len > 0;
  if (len == 0) {
    out->s_addr = htonl(INADDR_ANY);
    return 0;
  }
  if (len >= sizeof buf)
    return -1;
  memcpy(buf, s, len);
  buf[len] = '\0';
  return inet_pton(AF_INET, buf, out) == 1 ? 0 : -1;
}

/* Parses the hostfwd RULE, [tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT
 * as QEMU writes it, into F. An empty HOSTADDR is 127.0.0.1 (QEMU's is every
 * address). Prints a one-line message and returns -1 on bad input. */
static int hostfwd_parse(const char *rule, struct hostfwd *f)
{
  const char *c1 = strchr(rule, ':'), *dash, *c2, *c3;
  bool given;
  uint32_t g;

  memset(f, 0, sizeof *f);
  if (c1 == NULL || (dash = strchr(c1 + 1, '-')) == NULL ||
      (c2 = memchr(c1 + 1, ':', dash - c1 - 1)) == NULL ||
      memchr(c2 + 1, ':', dash - c2 - 1) != NULL ||
      (c3 = strchr(dash + 1, ':')) == NULL || strchr(c3 + 1, ':') != NULL) {
    launch_error("--net hostfwd=%s: not [tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT",
                 rule);
    return -1;
  }
  if (c1 == rule || (c1 - rule == 3 && memcmp(rule, "tcp", 3) == 0))
    f->udp = false;
  else if (c1 - rule == 3 && memcmp(rule, "udp", 3) == 0)
    f->udp = true;
  else {
    launch_error("--net hostfwd=%s: protocol '%.*s' is not tcp or udp", rule,
                 (int)(c1 - rule), rule);
    return -1;
  }
  if (parse_addr(c1 + 1, c2 - c1 - 1, &f->host, &given) < 0) {
    launch_error("--net hostfwd=%s: host address '%.*s' is not an IPv4 address", rule,
                 (int)(c2 - c1 - 1), c1 + 1);
    return -1;
  }
  /* Like blockd --listen: a forward reaches no further than this host unless
   * the user names an address. */
  if (!given)
    f->host.s_addr = htonl(INADDR_LOOPBACK);
  if (parse_port(c2 + 1, dash - c2 - 1, &f->host_port) < 0) {
    launch_error("--net hostfwd=%s: host port '%.*s' is not a number from 1 to 65535",
                 rule, (int)(dash - c2 - 1), c2 + 1);
    return -1;
  }
  if (parse_addr(dash + 1, c3 - dash - 1, &f->guest, &given) < 0) {
    launch_error("--net hostfwd=%s: guest address '%.*s' is not an IPv4 address", rule,
                 (int)(c3 - dash - 1), dash + 1);
    return -1;
  }
  g = ntohl(f->guest.s_addr);
  if (given && ((g & SLIRP_MASK) != SLIRP_NET || (g & 0xff) == 0 || (g & 0xff) == 2 ||
                (g & 0xff) == 3 || (g & 0xff) == 255)) {
    launch_error("--net hostfwd=%s: guest address must be a guest's in 10.0.2.0/24 "
                 "(not .0, .2, .3 or .255)", rule);
    return -1;
  }
  if (parse_port(c3 + 1, strlen(c3 + 1), &f->guest_port) < 0) {
    launch_error("--net hostfwd=%s: guest port '%s' is not a number from 1 to 65535",
                 rule, c3 + 1);
    return -1;
  }
  return 0;
}

/* True if A and B would listen on the same host socket. */
static bool hostfwd_clash(const struct hostfwd *a, const struct hostfwd *b)
{
  return a->udp == b->udp && a->host_port == b->host_port &&
         (a->host.s_addr == b->host.s_addr || a->host.s_addr == htonl(INADDR_ANY) ||
          b->host.s_addr == htonl(INADDR_ANY));
}

/* Parses SPEC, --net's argument, into N. Prints a one-line message and
 * returns -1 on bad input. */
int net_parse(const char *spec, struct net *n)
{
  CLEANUP_FREE char *copy = strdup(spec);
  char *save = NULL, *opt;

  if (copy == NULL) {
    launch_error("--net: %m");
    return -1;
  }
  if (n->user) {
    launch_error("--net given twice: give one --net with every hostfwd= in it");
    return -1;
  }
  opt = strtok_r(copy, ",", &save);
  if (opt == NULL || strcmp(opt, "user") != 0) {
    launch_error("--net %s: only user-mode networking is supported: --net "
                 "user[,hostfwd=RULE]...[,restrict=on|off]", spec);
    return -1;
  }
  n->user = true;
  while ((opt = strtok_r(NULL, ",", &save)) != NULL) {
    if (strncmp(opt, "hostfwd=", 8) == 0) {
      struct hostfwd f, *v;

      if (hostfwd_parse(opt + 8, &f) < 0)
        return -1;
      if (n->nfwds == HOSTFWD_MAX) {
        launch_error("--net %s: more than %d hostfwd= rules", spec, HOSTFWD_MAX);
        return -1;
      }
      for (size_t i = 0; i < n->nfwds; i++)
        if (hostfwd_clash(&n->fwds[i], &f)) {
          launch_error("--net hostfwd=%s: that host port is forwarded twice", opt + 8);
          return -1;
        }
      v = realloc(n->fwds, (n->nfwds + 1) * sizeof *v);
      if (v == NULL) {
        launch_error("--net: %m");
        return -1;
      }
      n->fwds = v;
      n->fwds[n->nfwds++] = f;
    }
    else if (strcmp(opt, "restrict=on") == 0)
      n->restricted = true;
    else if (strcmp(opt, "restrict=off") == 0)
      n->restricted = false;
    else {
      launch_error("--net: '%s' is not supported (only hostfwd=RULE and restrict=on|off)", opt);
      return -1;
    }
  }
  return 0;
}

/* Checks that every forwarded host port can be listened on now, so a port
 * in use is refused before anything starts rather than by QEMU. Slirp binds
 * with SO_REUSEADDR, so this does too. Prints a one-line message and returns
 * -1 if one cannot. */
int net_check(const struct net *n)
{
  for (size_t i = 0; i < n->nfwds; i++) {
    const struct hostfwd *f = &n->fwds[i];
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr = f->host,
                               .sin_port = htons(f->host_port) };
    CLEANUP_CLOSE int fd = socket(AF_INET, (f->udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC, 0);
    char addr[INET_ADDRSTRLEN];
    int one = 1;

    inet_ntop(AF_INET, &f->host, addr, sizeof addr);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, (struct sockaddr *)&sin, sizeof sin) < 0) {
      launch_error("--net hostfwd: cannot forward %s %s:%u: %m", f->udp ? "udp" : "tcp", addr,
                   f->host_port);
      return -1;
    }
  }
  return 0;
}

/* Returns the value of QEMU's -netdev for N (malloc'd), NULL if out of memory. */
char *net_netdev(const struct net *n)
{
  char *s = NULL;
  size_t len = 0;
  FILE *fp = open_memstream(&s, &len);

  if (fp == NULL)
    return NULL;
  fprintf(fp, "user,id=net0%s", n->restricted ? ",restrict=on" : "");
  for (size_t i = 0; i < n->nfwds; i++) {
    const struct hostfwd *f = &n->fwds[i];
    char host[INET_ADDRSTRLEN], guest[INET_ADDRSTRLEN] = "";

    inet_ntop(AF_INET, &f->host, host, sizeof host);
    if (f->guest.s_addr != htonl(INADDR_ANY))
      inet_ntop(AF_INET, &f->guest, guest, sizeof guest);
    fprintf(fp, ",hostfwd=%s:%s:%u-%s:%u", f->udp ? "udp" : "tcp", host, f->host_port, guest,
            f->guest_port);
  }
  if (fclose(fp) != 0) {
    free(s);
    return NULL;
  }
  return s;
}

/* Frees what net_parse allocated. */
void net_free(struct net *n)
{
  free(n->fwds);
  n->fwds = NULL;
  n->nfwds = 0;
}

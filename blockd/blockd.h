/* blockd, the program: its command line (options.c) and what main.c runs.
 * The server's parts are core/ (engine core), nbd/ and vhost/ (front ends). */
#ifndef BLOCKD_H
#define BLOCKD_H

#include "core.h"
#include "nbd.h"
#include "vhost.h"

/* options.c */
/* One --export, or the lone FILE. */
struct export_spec {
  char *name;     /* export name; "" for the default export */
  char *path;     /* image file, or rbd:POOL/IMAGE[@SNAP] */
  char *format;   /* "raw", "qcow2", "overlay", or NULL to detect */
  char *conf;     /* rbd: conf=, or NULL */
  char *id;       /* rbd: id=, or NULL */
  bool readonly;  /* ,readonly or --readonly */
  bool cache_none; /* ,cache=none or --cache=none */
};

#define OPTIONS_MAX_LISTENS 8
#define OPTIONS_DEFAULT_MAX_CONNECTIONS 256
#define OPTIONS_DEFAULT_MAX_MEMORY (256u << 20)

/* The parsed command line. */
struct options {
  char *unix_path;              /* --unix, the default socket, or NULL with --listen
                                   or sockets passed by socket activation */
  struct listen_spec listens[OPTIONS_MAX_LISTENS]; /* --listen, in order */
  size_t nr_listens;            /* entries in listens */
  char *pidfile;                /* --pidfile, or NULL */
  bool readonly;                /* --readonly: every export read-only */
  bool cache_none;              /* --cache=none: every export and device */
  unsigned threads;             /* --threads, default: online CPUs */
  unsigned max_connections;     /* --max-connections */
  uint64_t max_memory;          /* --max-memory: payload bytes, all clients */
  unsigned stall_timeout;       /* --stall-timeout seconds */
  unsigned idle_timeout;        /* --idle-timeout seconds, 0: none */
  struct tls_config tls;        /* --tls, --tls-certificates, --tls-psk, --tls-verify-peer */
  bool verbose;                 /* -v */
  bool quiet;                   /* -q: no line at start */
  bool print_uri;               /* --print-uri */
  struct export_spec *exports;  /* exports in command-line order */
  size_t nr_exports;            /* entries in exports */
  struct vhost_spec *vhosts;    /* --vhost-user-blk devices, in order */
  size_t nr_vhosts;             /* entries in vhosts */
};

/* What options_parse wants the caller to do next. */
enum options_result {
  OPTIONS_RUN = 0,   /* serve */
  OPTIONS_EXIT = 1,  /* --help or --version printed: exit 0 */
  OPTIONS_USAGE = 2, /* ERR holds a one-line message: exit 2 */
};
/* Parses ARGV into O; NR_PASSED listening sockets came by socket
 * activation (then no socket may be named). Returns an options_result. */
enum options_result options_parse(struct options *o, int argc, char **argv, size_t nr_passed,
                                  char *err, size_t errlen);
/* Frees what options_parse allocated. */
void options_free(struct options *o);

/* activation.c */
/* Takes the listening sockets passed with LISTEN_FDS and LISTEN_PID
 * (systemd's socket activation, sd_listen_fds(3)) into FDS, which has room
 * for MAX, made close-on-exec and non-blocking. Returns how many (0 when
 * none were passed to this process), or -1 with ERR set when the variables
 * do not parse, there are more than MAX, or one is not a listening unix or
 * TCP stream socket. Unsets the variables in every case, so that no child
 * takes the sockets for its own. */
int activation_take(int *fds, size_t max, char *err, size_t errlen);

#endif

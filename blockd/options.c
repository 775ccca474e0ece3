/* The command line. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blockd.h"

static const char usage_text[] =
  "Usage: blockd [OPTION]... [FILE]\n"
  "Serve sparse disk images over NBD and vhost-user-blk, with all I/O on io_uring.\n"
  "\n"
  "  --unix PATH           listen on a unix socket (created mode 0600)\n"
  "  --listen HOST:PORT    listen on TCP (HOST defaults to 127.0.0.1; ':PORT' works);\n"
  "                        may be repeated (e.g. 127.0.0.1:P and [::1]:P)\n"
  "  --pidfile FILE        write the process id once the socket accepts connections\n"
  "  --print-uri           print the NBD URI of the default (or first) export on\n"
  "                        stdout once the socket accepts connections\n"
  "  --readonly            serve every export read-only\n"
  "  --cache=none          every export and device keeps its own file out of the\n"
  "                        host's page cache (O_DIRECT where I/O is aligned; large\n"
  "                        reads spliced, their pages dropped behind): a guest\n"
  "                        already caches its disk (per export: ,cache=none;\n"
  "                        default: cache=default, the page cache)\n"
  "  --threads N           worker threads, each with its own io_uring (default: CPUs)\n"
  "  --max-connections N   clients at once, negotiating or served (default 256);\n"
  "                        more wait in the listen backlog\n"
  "  --max-memory SIZE     request payload bytes held in memory by all clients\n"
  "                        together (default 256M; at least 64M per thread)\n"
  "  --stall-timeout SECS  drop a client that leaves its replies unread or a\n"
  "                        request unfinished for SECS (default 30)\n"
  "  --idle-timeout SECS   close a connection after SECS without a request\n"
  "                        (default 0: never; QEMU keeps idle connections open)\n"
  "  --tls=off|on|require  TLS for NBD clients (NBD_OPT_STARTTLS): on offers it,\n"
  "                        require refuses everything else before it (default:\n"
  "                        require with credentials, else off)\n"
  "  --tls-certificates=DIR  X.509 credentials: DIR/server-cert.pem, server-key.pem,\n"
  "                        and for --tls-verify-peer ca-cert.pem (ca-crl.pem if there)\n"
  "  --tls-psk=FILE        pre-shared keys instead, USERNAME:HEXKEY lines (psktool)\n"
  "  --tls-verify-peer     TLS clients must show a certificate signed by ca-cert.pem\n"
  "  --export NAME=FILE[,readonly][,format=raw|qcow2|overlay][,cache=none]\n"
  "                        serve FILE under NAME; may be repeated (a comma in\n"
  "                        FILE is written ',,')\n"
  "  --export NAME=rbd:POOL/IMAGE[@SNAP][,readonly][,conf=FILE][,id=USER]\n"
  "                        serve a Ceph RBD image (a snapshot read-only)\n"
  "  --vhost-user-blk SOCKET=FILE[,readonly][,format=F][,cache=none][,serial=ID]\n"
  "                        [,queues=N]\n"
  "                        serve FILE as a vhost-user-blk device on the unix\n"
  "                        socket SOCKET (mode 0600), for QEMU, Cloud Hypervisor\n"
  "                        or Firecracker; queues: how many the device offers\n"
  "                        (default 8); may be repeated; FILE may be an rbd: image\n"
  "  --socket-path PATH --blk-file FILE [--read-only]\n"
  "                        the same, as vhost-user back-ends are started\n"
  "  --print-capabilities  print the vhost-user back-end capabilities (JSON)\n"
  "  --allow-base-dir DIR  overlay bases and qcow2 backing files may live beneath\n"
  "                        DIR too (default: only beneath the image's directory);\n"
  "                        rbd:POOL: overlay bases may be snapshots in that Ceph pool\n"
  "  -q, --quiet           print no line at start (errors are still printed)\n"
  "  -v, --verbose         log the control path\n"
  "  --help                show this help and exit\n"
  "  --version             show the version and exit\n"
  "\n"
  "With only --vhost-user-blk devices, no NBD socket is opened. Started by\n"
  "systemd socket activation (LISTEN_FDS, LISTEN_PID), blockd serves NBD on the\n"
  "listening unix or TCP sockets passed, and takes no --unix or --listen.\n"
  "A lone FILE is the default export (name \"\"). Without format=, a blockd\n"
  "overlay is recognised by its header and anything else is raw: qcow2 is\n"
  "never guessed (a guest can write its header into a raw disk). Without --unix or\n"
  "--listen, blockd listens on the unix socket $XDG_RUNTIME_DIR/blockd.sock\n"
  "(root: /run/blockd.sock). TCP clients are not authenticated unless TLS is\n"
  "required with --tls-psk or --tls-verify-peer.\n"
  "blockd prints one line on stderr when it starts serving, unless -q.\n"
  "SIGTERM or SIGINT: stop accepting, finish requests in flight, flush, exit 0.\n"
  "Exit status: 0 ok, 1 runtime error, 2 usage error.\n";

enum { OPT_UNIX = 256, OPT_LISTEN, OPT_PIDFILE, OPT_READONLY, OPT_THREADS, OPT_EXPORT,
       OPT_MAX_CONNECTIONS, OPT_MAX_MEMORY, OPT_STALL_TIMEOUT, OPT_IDLE_TIMEOUT,
       OPT_ALLOW_BASE_DIR, OPT_VHOST, OPT_SOCKET_PATH, OPT_BLK_FILE, OPT_PRINT_CAPABILITIES, OPT_PRINT_URI,
       OPT_CACHE, OPT_TLS, OPT_TLS_CERTIFICATES, OPT_TLS_PSK, OPT_TLS_VERIFY_PEER, OPT_HELP, OPT_VERSION };

static const struct option long_options[] = {
  { "unix", required_argument, NULL, OPT_UNIX },
  { "listen", required_argument, NULL, OPT_LISTEN },
  { "pidfile", required_argument, NULL, OPT_PIDFILE },
  { "readonly", no_argument, NULL, OPT_READONLY },
  { "threads", required_argument, NULL, OPT_THREADS },
  { "cache", required_argument, NULL, OPT_CACHE },
  { "export", required_argument, NULL, OPT_EXPORT },
  { "max-connections", required_argument, NULL, OPT_MAX_CONNECTIONS },
  { "max-memory", required_argument, NULL, OPT_MAX_MEMORY },
  { "stall-timeout", required_argument, NULL, OPT_STALL_TIMEOUT },
  { "allow-base-dir", required_argument, NULL, OPT_ALLOW_BASE_DIR },
  { "vhost-user-blk", required_argument, NULL, OPT_VHOST },
  { "socket-path", required_argument, NULL, OPT_SOCKET_PATH },
  { "blk-file", required_argument, NULL, OPT_BLK_FILE },
  { "read-only", no_argument, NULL, OPT_READONLY },
  { "print-capabilities", no_argument, NULL, OPT_PRINT_CAPABILITIES },
  { "print-uri", no_argument, NULL, OPT_PRINT_URI },
  { "idle-timeout", required_argument, NULL, OPT_IDLE_TIMEOUT },
  { "quiet", no_argument, NULL, 'q' },
  { "tls", required_argument, NULL, OPT_TLS },
  { "tls-certificates", required_argument, NULL, OPT_TLS_CERTIFICATES },
  { "tls-psk", required_argument, NULL, OPT_TLS_PSK },
  { "tls-verify-peer", no_argument, NULL, OPT_TLS_VERIFY_PEER },
  { "verbose", no_argument, NULL, 'v' },
  { "help", no_argument, NULL, OPT_HELP },
  { "version", no_argument, NULL, OPT_VERSION },
  { NULL, 0, NULL, 0 },
};

/* Parses OPT's value ARG as a whole number from MIN to MAX into *OUT.
 * Returns 0 or -1 with ERR set. */
static int parse_number(const char *opt, const char *arg, long min, long max, unsigned *out,
                        char *err, size_t errlen)
{
  char *end;
  long n;

  errno = 0;
  n = strtol(arg, &end, 10);
  if (errno || *end || end == arg || n < min || n > max) {
    snprintf(err, errlen, "%s '%s': expected a number from %ld to %ld", opt, arg, min, max);
    return -1;
  }
  *out = (unsigned)n;
  return 0;
}

/* Appends the export NAME (NAMELEN bytes) of the image SPEC, whose strings
 * it takes over (SPEC is cleared). Returns 0 or -1. */
static int add_export(struct options *o, const char *name, size_t namelen, struct img_spec *spec)
{
  struct export_spec *e, *n = realloc(o->exports, (o->nr_exports + 1) * sizeof *n);

  if (n == NULL)
    return -1;
  o->exports = n;
  e = &n[o->nr_exports];
  e->name = strndup(name, namelen);
  if (e->name == NULL)
    return -1;
  e->path = spec->path;
  e->format = spec->format;
  e->conf = spec->conf;
  e->id = spec->id;
  e->readonly = spec->readonly;
  e->cache_none = spec->cache_none;
  free(spec->serial);
  memset(spec, 0, sizeof *spec);
  o->nr_exports++;
  return 0;
}

/* Parses NAME=SPEC (spec.c). Returns 0 or -1 with ERR set. */
static int parse_export(struct options *o, const char *arg, char *err, size_t errlen)
{
  const char *eq = strchr(arg, '=');
  struct img_spec spec;
  char msg[1024];
  int r;

  if (eq == NULL) {
    snprintf(err, errlen, "--export '%s': expected NAME=FILE", arg);
    return -1;
  }
  if (eq - arg > NBD_MAX_STRING) {
    snprintf(err, errlen, "--export: export name longer than %d bytes", NBD_MAX_STRING);
    return -1;
  }
  if (eq[1] == '\0') {
    snprintf(err, errlen, "--export '%s': missing FILE", arg);
    return -1;
  }
  if (spec_parse(eq + 1, SPEC_RBD, &spec, msg, sizeof msg) < 0) {
    snprintf(err, errlen, "--export %s", msg);
    return -1;
  }
  for (size_t i = 0; i < o->nr_exports; i++) {
    if (strlen(o->exports[i].name) == (size_t)(eq - arg) &&
        strncmp(o->exports[i].name, arg, (size_t)(eq - arg)) == 0) {
      snprintf(err, errlen, "--export: export '%.*s' given twice", (int)(eq - arg), arg);
      spec_free(&spec);
      return -1;
    }
  }
  r = add_export(o, arg, (size_t)(eq - arg), &spec);
  spec_free(&spec);
  if (r < 0) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  return 0;
}

/* Appends the --vhost-user-blk device ARG. Returns 0 or -1 with ERR set. */
static int add_vhost(struct options *o, const char *arg, char *err, size_t errlen)
{
  struct vhost_spec *n = realloc(o->vhosts, (o->nr_vhosts + 1) * sizeof *n);

  if (n == NULL) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  o->vhosts = n;
  if (vhost_spec_parse(arg, &n[o->nr_vhosts], err, errlen) < 0)
    return -1;
  for (size_t i = 0; i < o->nr_vhosts; i++)
    if (strcmp(n[i].path, n[o->nr_vhosts].path) == 0) {
      snprintf(err, errlen, "--vhost-user-blk: socket '%s' given twice", n[i].path);
      vhost_spec_free(&n[o->nr_vhosts]);
      return -1;
    }
  o->nr_vhosts++;
  return 0;
}

/* Splits HOST:PORT; a missing host means 127.0.0.1, [v6]:port works. */
static int parse_listen(struct options *o, const char *arg, char *err, size_t errlen)
{
  const char *colon = strrchr(arg, ':');
  const char *host = arg;
  struct listen_spec *l;
  size_t hostlen;
  char *end;
  long port;

  if (colon == NULL) {
    snprintf(err, errlen, "--listen '%s': expected HOST:PORT", arg);
    return -1;
  }
  port = strtol(colon + 1, &end, 10);
  if (colon[1] == '\0' || *end != '\0' || port < 0 || port > 65535) {
    snprintf(err, errlen, "--listen '%s': bad port", arg);
    return -1;
  }
  hostlen = (size_t)(colon - arg);
  if (hostlen >= 2 && host[0] == '[' && host[hostlen - 1] == ']') {
    host++;
    hostlen -= 2;
  }
  if (o->nr_listens == OPTIONS_MAX_LISTENS) {
    snprintf(err, errlen, "--listen: at most %d addresses", OPTIONS_MAX_LISTENS);
    return -1;
  }
  l = &o->listens[o->nr_listens];
  l->host = hostlen ? strndup(host, hostlen) : strdup("127.0.0.1");
  l->port = strdup(colon + 1);
  o->nr_listens++;
  if (l->host == NULL || l->port == NULL) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  return 0;
}

/* Checks the TLS options of O together; TLS_GIVEN says --tls was. Returns 0
 * or -1 with ERR set. */
static int check_tls(struct options *o, bool tls_given, char *err, size_t errlen)
{
  struct tls_config *t = &o->tls;
  bool creds = t->certificates || t->psk;

  if (t->certificates && t->psk) {
    snprintf(err, errlen, "--tls-certificates and --tls-psk: give one");
    return -1;
  }
  if (t->verify_peer && !t->certificates) {
    snprintf(err, errlen, "--tls-verify-peer needs --tls-certificates (client certificates are X.509)");
    return -1;
  }
  if (!tls_given)
    /* Credentials alone mean TLS for everyone: plaintext must be asked for. */
    t->mode = creds ? TLS_REQUIRE : TLS_OFF;
  if (t->mode == TLS_OFF && (creds || t->verify_peer)) {
    snprintf(err, errlen, "--tls=off with TLS credentials or --tls-verify-peer: drop one");
    return -1;
  }
  if (t->mode != TLS_OFF && !creds) {
    snprintf(err, errlen, "--tls=%s needs --tls-certificates DIR or --tls-psk FILE",
             t->mode == TLS_ON ? "on" : "require");
    return -1;
  }
  if (t->mode != TLS_OFF && o->nr_exports == 0) {
    snprintf(err, errlen, "--tls: no NBD export to serve (vhost-user sockets have no TLS)");
    return -1;
  }
  return 0;
}

/* The unix socket blockd listens on when told nothing: in the user's
 * runtime directory, which only they can reach. NULL if there is none. */
static char *default_socket(void)
{
  const char *dir = getenv("XDG_RUNTIME_DIR");
  char *path;

  if (dir != NULL && dir[0] == '/')
    return asprintf(&path, "%s/blockd.sock", dir) < 0 ? NULL : path;
  if (geteuid() == 0)
    return strdup("/run/blockd.sock");
  return NULL;
}

/* Parses ARGV into O; NR_PASSED listening sockets came by socket
 * activation. Returns an options_result. */
enum options_result options_parse(struct options *o, int argc, char **argv, size_t nr_passed,
                                  char *err, size_t errlen)
{
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  const char *socket_path = NULL, *blk_file = NULL;
  bool tls_given = false;
  int c;

  memset(o, 0, sizeof *o);
  o->threads = cpus > 0 ? (unsigned)cpus : 1;
  o->max_connections = OPTIONS_DEFAULT_MAX_CONNECTIONS;
  o->max_memory = OPTIONS_DEFAULT_MAX_MEMORY;
  o->stall_timeout = NBD_STALL_TIMEOUT;
  optind = 1;
  opterr = 0;
  while ((c = getopt_long(argc, argv, ":qv", long_options, NULL)) != -1) {
    switch (c) {
    case OPT_UNIX:
      free(o->unix_path);
      o->unix_path = strdup(optarg);
      if (o->unix_path == NULL)
        goto nomem;
      break;
    case OPT_LISTEN:
      if (parse_listen(o, optarg, err, errlen) < 0)
        return OPTIONS_USAGE;
      break;
    case OPT_PIDFILE:
      free(o->pidfile);
      o->pidfile = strdup(optarg);
      if (o->pidfile == NULL)
        goto nomem;
      break;
    case OPT_READONLY:
      o->readonly = true;
      break;
    case OPT_CACHE:
      if (strcmp(optarg, "none") == 0)
        o->cache_none = true;
      else if (strcmp(optarg, "default") == 0)
        o->cache_none = false;
      else {
        snprintf(err, errlen, "--cache '%s': expected none or default", optarg);
        return OPTIONS_USAGE;
      }
      break;
    case OPT_THREADS:
      if (parse_number("--threads", optarg, 1, 256, &o->threads, err, errlen) < 0)
        return OPTIONS_USAGE;
      break;
    case OPT_MAX_CONNECTIONS:
      if (parse_number("--max-connections", optarg, 1, 65536, &o->max_connections, err,
                       errlen) < 0)
        return OPTIONS_USAGE;
      break;
    case OPT_ALLOW_BASE_DIR: {
      int r = basepath_allow(optarg);

      if (r < 0) {
        snprintf(err, errlen, "--allow-base-dir '%s': %s", optarg, strerror(-r));
        return OPTIONS_USAGE;
      }
      break;
    }
    case OPT_STALL_TIMEOUT:
      if (parse_number("--stall-timeout", optarg, 1, 86400, &o->stall_timeout, err, errlen) < 0)
        return OPTIONS_USAGE;
      break;
    case OPT_IDLE_TIMEOUT:
      if (parse_number("--idle-timeout", optarg, 0, 86400 * 365, &o->idle_timeout, err,
                       errlen) < 0)
        return OPTIONS_USAGE;
      break;
    case OPT_MAX_MEMORY:
      if (size_parse(optarg, &o->max_memory) < 0 || o->max_memory < (64u << 20) ||
          o->max_memory > (UINT64_C(1) << 46)) {
        snprintf(err, errlen, "--max-memory '%s': expected a size from 64M to 64T", optarg);
        return OPTIONS_USAGE;
      }
      break;
    case OPT_TLS:
      tls_given = true;
      if (strcmp(optarg, "off") == 0)
        o->tls.mode = TLS_OFF;
      else if (strcmp(optarg, "on") == 0)
        o->tls.mode = TLS_ON;
      else if (strcmp(optarg, "require") == 0)
        o->tls.mode = TLS_REQUIRE;
      else {
        snprintf(err, errlen, "--tls '%s': expected off, on or require", optarg);
        return OPTIONS_USAGE;
      }
      break;
    case OPT_TLS_CERTIFICATES:
      o->tls.certificates = optarg;
      break;
    case OPT_TLS_PSK:
      o->tls.psk = optarg;
      break;
    case OPT_TLS_VERIFY_PEER:
      o->tls.verify_peer = true;
      break;
    case OPT_EXPORT:
      if (parse_export(o, optarg, err, errlen) < 0)
        return OPTIONS_USAGE;
      break;
    case OPT_VHOST:
      if (add_vhost(o, optarg, err, errlen) < 0)
        return OPTIONS_USAGE;
      break;
    case OPT_SOCKET_PATH:
      socket_path = optarg;
      break;
    case OPT_BLK_FILE:
      blk_file = optarg;
      break;
    case OPT_PRINT_URI:
      o->print_uri = true;
      break;
    case OPT_PRINT_CAPABILITIES:
      /* docs/interop/vhost-user.rst, "Backend program conventions". */
      printf("{\n  \"type\": \"block\",\n  \"features\": [\n    \"read-only\",\n"
             "    \"blk-file\"\n  ]\n}\n");
      return OPTIONS_EXIT;
    case 'q':
      o->quiet = true;
      break;
    case 'v':
      o->verbose = true;
      break;
    case OPT_HELP:
      fputs(usage_text, stdout);
      return OPTIONS_EXIT;
    case OPT_VERSION:
      printf("blockd %s\n", BLOCKD_VERSION);
      return OPTIONS_EXIT;
    case ':':
      snprintf(err, errlen, "option '%s' needs an argument (try --help)", argv[optind - 1]);
      return OPTIONS_USAGE;
    default:
      if (optopt != 0 && optopt < 256)
        snprintf(err, errlen, "unknown option '-%c' (try --help)", optopt);
      else
        snprintf(err, errlen, "unknown option '%s' (try --help)", argv[optind - 1]);
      return OPTIONS_USAGE;
    }
  }
  if (optind < argc) {
    struct img_spec spec = { .path = NULL };

    if (argc - optind > 1) {
      snprintf(err, errlen, "unexpected argument '%s': one FILE at most", argv[optind + 1]);
      return OPTIONS_USAGE;
    }
    for (size_t i = 0; i < o->nr_exports; i++) {
      if (o->exports[i].name[0] == '\0') {
        snprintf(err, errlen, "FILE and --export '=...' both name the default export");
        return OPTIONS_USAGE;
      }
    }
    spec.path = strdup(argv[optind]);
    if (spec.path == NULL || add_export(o, "", 0, &spec) < 0) {
      free(spec.path);
      snprintf(err, errlen, "out of memory");
      return OPTIONS_USAGE;
    }
  }
  if ((socket_path == NULL) != (blk_file == NULL)) {
    snprintf(err, errlen, "--socket-path and --blk-file go together");
    return OPTIONS_USAGE;
  }
  if (socket_path != NULL) {
    CLEANUP_FREE char *spec = NULL;
    CLEANUP_FREE char *file = spec_escape(blk_file);

    if (file == NULL || asprintf(&spec, "%s=%s", socket_path, file) < 0)
      goto nomem;
    if (add_vhost(o, spec, err, errlen) < 0)
      return OPTIONS_USAGE;
  }
  if (o->nr_exports == 0 && o->nr_vhosts == 0) {
    snprintf(err, errlen, "nothing to serve: give a FILE, --export NAME=FILE or "
                          "--vhost-user-blk SOCKET=FILE (try --help)");
    return OPTIONS_USAGE;
  }
  if (check_tls(o, tls_given, err, errlen) < 0)
    return OPTIONS_USAGE;
  if (o->unix_path && o->nr_listens > 0) {
    snprintf(err, errlen, "--unix and --listen cannot be used together");
    return OPTIONS_USAGE;
  }
  if (nr_passed > 0 && (o->unix_path || o->nr_listens > 0)) {
    snprintf(err, errlen, "socket activation: sockets were passed (LISTEN_FDS), "
                          "so --unix and --listen cannot be used");
    return OPTIONS_USAGE;
  }
  if (nr_passed > 0 && o->nr_exports == 0) {
    snprintf(err, errlen, "socket activation: sockets were passed (LISTEN_FDS) "
                          "but there is no NBD export to serve on them");
    return OPTIONS_USAGE;
  }
  if (o->print_uri && o->nr_exports == 0) {
    snprintf(err, errlen, "--print-uri: no NBD export (only --vhost-user-blk devices)");
    return OPTIONS_USAGE;
  }
  if (nr_passed == 0 && o->unix_path == NULL && o->nr_listens == 0 && o->nr_exports > 0) {
    /* No TCP by default: any local user could reach it, and write every
     * export. The socket is the owner's alone (mode 0600). */
    o->unix_path = default_socket();
    if (o->unix_path == NULL) {
      snprintf(err, errlen, "no --unix or --listen, and no XDG_RUNTIME_DIR for the default socket");
      return OPTIONS_USAGE;
    }
  }
  if (o->cache_none) {
    for (size_t i = 0; i < o->nr_exports; i++)
      o->exports[i].cache_none = true;
    for (size_t i = 0; i < o->nr_vhosts; i++)
      o->vhosts[i].cache_none = true;
  }
  if (o->readonly) {
    for (size_t i = 0; i < o->nr_exports; i++)
      o->exports[i].readonly = true;
    for (size_t i = 0; i < o->nr_vhosts; i++)
      o->vhosts[i].readonly = true;
  }
  return OPTIONS_RUN;
nomem:
  snprintf(err, errlen, "out of memory");
  return OPTIONS_USAGE;
}

/* Frees what options_parse allocated. */
void options_free(struct options *o)
{
  for (size_t i = 0; i < o->nr_exports; i++) {
    free(o->exports[i].name);
    free(o->exports[i].path);
    free(o->exports[i].format);
    free(o->exports[i].conf);
    free(o->exports[i].id);
  }
  free(o->exports);
  for (size_t i = 0; i < o->nr_vhosts; i++)
    vhost_spec_free(&o->vhosts[i]);
  free(o->vhosts);
  free(o->unix_path);
  for (size_t i = 0; i < o->nr_listens; i++) {
    free(o->listens[i].host);
    free(o->listens[i].port);
  }
  free(o->pidfile);
  memset(o, 0, sizeof *o);
}

/* blockd-launch: starts a workspace VM whose disks are served by a private
 * blockd over NBD and whose freed memory goes back to the host. Options,
 * checks, and the order things start and stop in. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "format.h"
#include "launch.h"

bool verbose;

/* Default and limits for --memory and --cpus. */
#define MEMORY_DEFAULT (1ULL << 30)
#define MEMORY_MIN (64ULL << 20)
#define CPUS_MAX 256
#define GRACE_DEFAULT 30

/* Prints "blockd-launch: MESSAGE" on stderr. */
void launch_error(const char *fmt, ...)
{
  va_list ap;

  va_start(ap, fmt);
  fmt_vprint_line(stderr, "blockd-launch: ", fmt, ap);
  va_end(ap);
}

/* --help. */
static void usage(FILE *fp)
{
  fprintf(fp,
"Usage: blockd-launch [--kernel FILE [--initrd FILE] [--append TEXT]]\n"
"                     --disk FILE[,readonly][,serial=ID][,format=FMT][,cache=none]...\n"
"                     [--net user[,hostfwd=RULE]...[,restrict=on|off]]\n"
"                     [--memory SIZE] [--cpus N] [--accel auto|kvm|tcg]\n"
"                     [--transport nbd|vhost-user]\n"
"                     [--qmp PATH] [--grace SECONDS] [--allow-base-dir DIR]...\n"
"                     [--dry-run] [-v]\n"
"\n"
"Starts a workspace VM: a private blockd serves each --disk over NBD on a unix\n"
"socket, and QEMU attaches it as virtio-blk with discard end to end (guest TRIM\n"
"punches holes in the host file). A virtio-balloon with free page reporting\n"
"hands guest memory the guest frees back to the host. QEMU boots --kernel, or\n"
"without it the firmware (SeaBIOS) boots the first --disk's own boot loader.\n"
"The serial console is on stdin/stdout; messages go to stderr.\n"
"\n"
"  --kernel FILE    guest kernel (bzImage); without it the first --disk must\n"
"                   start with a BIOS boot sector (MBR)\n"
"  --initrd FILE    initramfs (only with --kernel)\n"
"  --append TEXT    kernel command line (only with --kernel; default\n"
"                   \"console=ttyS0\": the serial console is the one on stdio)\n"
"  --disk SPEC      a disk image: raw, qcow2 (read-only) or blockd overlay;\n"
"                   readonly: read-only export and device; serial=ID: the\n"
"                   virtio serial (default diskN); format=raw|qcow2|overlay;\n"
"                   cache=none: blockd keeps the disk out of the host's page\n"
"                   cache (the guest caches it already). A Ceph RBD image:\n"
"                   rbd:POOL/IMAGE[@SNAP][,readonly][,serial=ID][,conf=FILE]\n"
"                   [,id=USER] (conf=: the cluster's configuration; id=: the\n"
"                   Ceph user)\n"
"  --net user[,hostfwd=RULE]...[,restrict=on|off]\n"
"                   a virtio-net NIC on QEMU's user-mode network (the guest\n"
"                   gets 10.0.2.15 by DHCP; default: no network). RULE is\n"
"                   QEMU's [tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT,\n"
"                   except that an empty HOSTADDR is 127.0.0.1, not every\n"
"                   address: hostfwd=tcp::2222-:22 forwards localhost:2222\n"
"                   to the guest's port 22. restrict=on: the guest reaches\n"
"                   neither the host nor beyond; forwarded ports still work\n"
"  --memory SIZE    guest RAM, e.g. 1G, 768M (default 1G)\n"
"  --cpus N         virtual CPUs (default 2)\n"
"  --transport T    how disks reach QEMU: nbd (QEMU's NBD client and\n"
"                   virtio-blk, the default) or vhost-user (vhost-user-blk,\n"
"                   guest RAM shared with blockd as a memfd; no hugepages)\n"
"  --accel A        kvm (refused unless /dev/kvm creates a VM), tcg, or auto:\n"
"                   KVM if a probe boots a kernel (--kernel, else one from\n"
"                   /boot) under it, else TCG with a notice (default auto)\n"
"  --qmp PATH       also serve QMP on the unix socket PATH\n"
"  --allow-base-dir DIR  overlay bases may also live beneath DIR (repeatable;\n"
"                   by default only beneath each overlay's own directory);\n"
"                   rbd:POOL: snapshots in that Ceph pool may be bases\n"
"  --grace SECONDS  time the guest gets to power off after SIGINT/SIGTERM\n"
"                   before QEMU is told to quit (default %d)\n"
"  --dry-run        print the blockd and QEMU command lines, start nothing\n"
"                   (XXXXXX stands for the runtime directory's suffix)\n"
"  -v, --verbose    say what happens on stderr\n"
"  -h, --help       this text\n"
"  -V, --version    print the version\n"
"\n"
"Environment: BLOCKD (blockd to run; default blockd in this program's\n"
"directory, else ../blockd/blockd beside it, else blockd on PATH), QEMU\n"
"(default qemu-system-x86_64), XDG_RUNTIME_DIR (where the private runtime\n"
"directory goes; else /tmp).\n"
"\n"
"Keys at the console: everything typed goes to the guest, Ctrl-C included\n"
"(QEMU puts the terminal in raw mode: Ctrl-C interrupts the guest's program,\n"
"not this one). Ctrl-A x quits QEMU at once, without a guest power-off\n"
"(exit status 7); Ctrl-A c switches between the console and QEMU's monitor;\n"
"Ctrl-A h lists the others.\n"
"\n"
"Signals (from another terminal, e.g. kill -INT PID): SIGINT, SIGTERM or\n"
"SIGHUP press the guest's power button (QMP system_powerdown); after the\n"
"grace period QEMU is told to quit, then killed. A second signal skips the\n"
"grace period. blockd is drained and stopped once QEMU has exited.\n"
"\n"
"Exit status: 0 the guest powered off; 1 runtime error; 2 bad usage or input\n"
"(nothing started); 3 the guest did not power off in time and was stopped;\n"
"4 QEMU exited or was killed without a guest power-off; 5 blockd died while the\n"
"guest ran; 6 the guest rebooted or panicked, or the firmware found nothing to\n"
"boot; 7 the user quit QEMU (Ctrl-A x, or quit in the monitor or on --qmp).\n",
          GRACE_DEFAULT);
}

/* Fails with a usage error unless FILE opens for reading. */
static int check_readable(const char *what, const char *file)
{
  int fd = open(file, O_RDONLY | O_CLOEXEC);

  if (fd < 0) {
    launch_error("%s %s: %m", what, file);
    return -1;
  }
  close(fd);
  return 0;
}

/* Fails with a usage error unless FILE looks like a kernel QEMU can boot
 * with -kernel: a bzImage ("HdrS" at 0x202, the x86 boot protocol) or ELF. */
static int check_kernel(const char *file)
{
  CLEANUP_CLOSE int fd = open(file, O_RDONLY | O_CLOEXEC);
  unsigned char head[0x206];

  if (fd < 0) {
    launch_error("--kernel %s: %m", file);
    return -1;
  }
  if (pread(fd, head, sizeof head, 0) != (ssize_t)sizeof head ||
      (memcmp(head + 0x202, "HdrS", 4) != 0 && memcmp(head, "\x7f" "ELF", 4) != 0)) {
    launch_error("--kernel %s: not a Linux kernel (bzImage or ELF)", file);
    return -1;
  }
  return 0;
}

/* Parses a positive integer no larger than MAX. */
static int parse_uint(const char *s, unsigned max, unsigned *out)
{
  char *end;
  unsigned long v;

  errno = 0;
  v = strtoul(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v == 0 || v > max)
    return -1;
  *out = v;
  return 0;
}

/* Parses the command line into L. Returns 0, or an exit status when the
 * launcher should stop here (after --help, --version or bad input). */
static int parse_options(int argc, char *argv[], struct launch *l)
{
  enum { OPT_KERNEL = 256, OPT_INITRD, OPT_APPEND, OPT_DISK, OPT_MEMORY, OPT_CPUS,
         OPT_ACCEL, OPT_QMP, OPT_GRACE, OPT_DRY_RUN, OPT_ALLOW_BASE_DIR, OPT_TRANSPORT,
         OPT_NET };
  static const struct option longopts[] = {
    { "kernel", required_argument, NULL, OPT_KERNEL },
    { "initrd", required_argument, NULL, OPT_INITRD },
    { "append", required_argument, NULL, OPT_APPEND },
    { "disk", required_argument, NULL, OPT_DISK },
    { "memory", required_argument, NULL, OPT_MEMORY },
    { "cpus", required_argument, NULL, OPT_CPUS },
    { "accel", required_argument, NULL, OPT_ACCEL },
    { "qmp", required_argument, NULL, OPT_QMP },
    { "grace", required_argument, NULL, OPT_GRACE },
    { "dry-run", no_argument, NULL, OPT_DRY_RUN },
    { "allow-base-dir", required_argument, NULL, OPT_ALLOW_BASE_DIR },
    { "transport", required_argument, NULL, OPT_TRANSPORT },
    { "net", required_argument, NULL, OPT_NET },
    { "verbose", no_argument, NULL, 'v' },
    { "help", no_argument, NULL, 'h' },
    { "version", no_argument, NULL, 'V' },
    { NULL },
  };
  int c;

  opterr = 0;  /* our own one-line messages */
  while ((c = getopt_long(argc, argv, ":vhV", longopts, NULL)) != -1) {
    switch (c) {
    case OPT_KERNEL: l->kernel = optarg; break;
    case OPT_INITRD: l->initrd = optarg; break;
    case OPT_APPEND: l->append = optarg; break;
    case OPT_QMP: l->qmp = optarg; break;
    case OPT_DRY_RUN: l->dry_run = true; break;
    case 'v': verbose = true; break;
    case 'h': usage(stdout); return 0;
    case 'V': printf("blockd-launch %s\n", BLOCKD_VERSION); return 0;
    case OPT_NET:
      if (net_parse(optarg, &l->net) < 0)
        return EXIT_USAGE;
      break;
    case OPT_TRANSPORT:
      if (strcmp(optarg, "nbd") == 0)
        l->transport = TRANSPORT_NBD;
      else if (strcmp(optarg, "vhost-user") == 0)
        l->transport = TRANSPORT_VHOST_USER;
      else {
        launch_error("--transport %s: not nbd or vhost-user", optarg);
        return EXIT_USAGE;
      }
      break;
    case OPT_ALLOW_BASE_DIR: {
      const char **v = realloc(l->allow_base_dirs, (l->nr_allow_base_dirs + 1) * sizeof *v);

      if (v == NULL) {
        launch_error("--allow-base-dir: %m");
        return EXIT_RUNTIME;
      }
      v[l->nr_allow_base_dirs++] = optarg;
      l->allow_base_dirs = v;
      break;
    }
    case OPT_DISK: {
      struct disk *d = realloc(l->disks, (l->ndisks + 1) * sizeof *d);

      if (d == NULL) {
        launch_error("--disk: %m");
        return EXIT_RUNTIME;
      }
      l->disks = d;
      if (disk_parse(optarg, l->ndisks, &l->disks[l->ndisks]) < 0)
        return EXIT_USAGE;
      l->ndisks++;
      break;
    }
    case OPT_MEMORY:
      if (size_parse(optarg, &l->memory) < 0 || l->memory < MEMORY_MIN ||
          l->memory % (1 << 20) != 0) {
        launch_error("--memory %s: not a size of at least 64M in whole MiB", optarg);
        return EXIT_USAGE;
      }
      break;
    case OPT_CPUS:
      if (parse_uint(optarg, CPUS_MAX, &l->cpus) < 0) {
        launch_error("--cpus %s: not a number from 1 to %d", optarg, CPUS_MAX);
        return EXIT_USAGE;
      }
      break;
    case OPT_GRACE:
      if (parse_uint(optarg, 3600, &l->grace) < 0) {
        launch_error("--grace %s: not a number of seconds from 1 to 3600", optarg);
        return EXIT_USAGE;
      }
      break;
    case OPT_ACCEL:
      if (accel_parse(optarg, &l->accel) < 0) {
        launch_error("--accel %s: not auto, kvm or tcg", optarg);
        return EXIT_USAGE;
      }
      break;
    case ':':
      launch_error("option %s needs an argument (see --help)", argv[optind - 1]);
      return EXIT_USAGE;
    default:
      launch_error("unknown option '%s' (see --help)", argv[optind - 1]);
      return EXIT_USAGE;
    }
  }
  if (optind < argc) {
    launch_error("unexpected argument '%s' (see --help)", argv[optind]);
    return EXIT_USAGE;
  }
  if (l->kernel == NULL && (l->initrd != NULL || l->append != NULL)) {
    launch_error("%s needs --kernel (without one the firmware boots the first --disk)",
                 l->initrd != NULL ? "--initrd" : "--append");
    return EXIT_USAGE;
  }
  if (l->kernel != NULL && l->append == NULL)
    l->append = "console=ttyS0";
  if (l->ndisks == 0) {
    launch_error("no --disk given (see --help)");
    return EXIT_USAGE;
  }
  return -1;
}

/* Whether A and B name one file: the same name, or links to one inode. */
static bool same_file(const char *a, const char *b)
{
  struct stat sa, sb;

  if (strcmp(a, b) == 0)
    return true;
  return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
         sa.st_ino == sb.st_ino;
}

/* Checks the files named on the command line before anything starts. */
static int check_inputs(struct launch *l)
{
  struct stat st;

  if (accel_check(l->accel) < 0)
    return -1;
  if (l->kernel != NULL && check_kernel(l->kernel) < 0)
    return -1;
  if (l->initrd != NULL && check_readable("--initrd", l->initrd) < 0)
    return -1;
  if (l->qmp != NULL && lstat(l->qmp, &st) == 0 && !S_ISSOCK(st.st_mode)) {
    launch_error("--qmp %s: exists and is not a socket", l->qmp);
    return -1;
  }
  /* Before disk_check makes the paths absolute, to name them as given. */
  for (size_t i = 0; i < l->ndisks; i++)
    for (size_t j = 0; j < i; j++)
      if (same_file(l->disks[i].path, l->disks[j].path)) {
        if (strcmp(l->disks[i].path, l->disks[j].path) == 0)
          launch_error("%s: given twice", l->disks[i].path);
        else
          launch_error("%s: given twice (same file as %s)", l->disks[i].path, l->disks[j].path);
        return -1;
      }
  for (size_t i = 0; i < l->ndisks; i++)
    if (disk_check(&l->disks[i]) < 0)
      return -1;
  if (l->kernel == NULL) {
    /* The boot sector is read through blockd's engines, which find an
     * overlay's base only where blockd would. */
    for (size_t i = 0; i < l->nr_allow_base_dirs; i++) {
      int r = basepath_allow(l->allow_base_dirs[i]);

      if (r < 0) {
        launch_error("--allow-base-dir %s: %s", l->allow_base_dirs[i], strerror(-r));
        return -1;
      }
    }
    if (disk_check_boot(&l->disks[0]) < 0)
      return -1;
  }
  return net_check(&l->net);
}

/* Frees what parse_options and main allocated. */
static void launch_free(struct launch *l)
{
  for (size_t i = 0; i < l->ndisks; i++)
    disk_free(&l->disks[i]);
  free(l->disks);
  free(l->blockd);
  free(l->allow_base_dirs);
  net_free(&l->net);
}

/* Everything after the checks: command lines, then blockd, then QEMU, then
 * supervision. Returns the exit status. */
static int run(struct launch *l)
{
  CLEANUP_ARGV struct argv server = { 0 }, qemu = { 0 };
  pid_t blockd_pid, qemu_pid;
  struct termios tty;
  bool have_tty;
  sigset_t mask;

  l->accel = accel_resolve(l);
  if (l->kernel == NULL && l->transport == TRANSPORT_VHOST_USER && l->accel == ACCEL_TCG)
    launch_error("notice: under TCG, QEMU does not see blockd write guest memory over "
                 "vhost-user, so a boot loader that loads code over code it ran (an MBR that "
                 "chain-loads its partition) hangs; --transport nbd boots any disk");
  if (l->dry_run)
    l->rundir = rundir_template();
  else {
    rundir_sweep();
    if (rundir_create(l) < 0)
      return EXIT_RUNTIME;
  }
  if (l->rundir == NULL || server_cmdline(l, &server) < 0 || qemu_cmdline(l, &qemu) < 0) {
    launch_error("command line: %m");
    return EXIT_RUNTIME;
  }
  if (l->dry_run) {
    argv_print(&server, stdout);
    argv_print(&qemu, stdout);
    free(l->rundir);
    return 0;
  }
  if (verbose) {
    fputs("blockd-launch: debug: ", stderr);
    argv_print(&server, stderr);
    fputs("blockd-launch: debug: ", stderr);
    argv_print(&qemu, stderr);
  }

  /* From here on signals are read through supervise()'s signalfd; blocking
   * them now keeps a Ctrl-C during start-up from being lost. */
  sigemptyset(&mask);
  sigaddset(&mask, SIGCHLD);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGHUP);
  sigprocmask(SIG_BLOCK, &mask, NULL);

  blockd_pid = server_start(l, &server);
  if (blockd_pid < 0) {
    rundir_remove(l);
    return -blockd_pid;
  }
  /* QEMU puts a terminal console in raw mode; if it is killed, put the
   * terminal back ourselves. */
  have_tty = isatty(STDIN_FILENO) && tcgetpgrp(STDIN_FILENO) == getpgrp() &&
             tcgetattr(STDIN_FILENO, &tty) == 0;
  qemu_pid = qemu_start(&qemu);
  if (qemu_pid < 0) {
    int status;

    kill(blockd_pid, SIGTERM);
    waitpid(blockd_pid, &status, 0);
    rundir_remove(l);
    return EXIT_RUNTIME;
  }
  if (verbose)
    debug("blockd pid %d, QEMU pid %d, runtime directory %s", (int)blockd_pid,
          (int)qemu_pid, l->rundir);
  int status = supervise(l, blockd_pid, qemu_pid);
  if (have_tty)
    tcsetattr(STDIN_FILENO, TCSANOW, &tty);
  rundir_remove(l);
  return status;
}

/* Parses, checks, runs; the exit status says how the launch ended. */
int main(int argc, char *argv[])
{
  struct launch l = {
    .memory = MEMORY_DEFAULT,
    .cpus = 2,
    .accel = ACCEL_AUTO,
    .grace = GRACE_DEFAULT,
    .rundir_fd = -1,
  };
  int status;

  status = parse_options(argc, argv, &l);
  if (status < 0) {
    l.qemu = getenv("QEMU") && getenv("QEMU")[0] ? getenv("QEMU") : "qemu-system-x86_64";
    l.blockd = server_find();
    if (l.blockd == NULL) {
      launch_error("%m");
      status = EXIT_RUNTIME;
    }
    else if (check_inputs(&l) < 0)
      status = EXIT_USAGE;
    else
      status = run(&l);
  }
  launch_free(&l);
  return status;
}

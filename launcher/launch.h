/* blockd-launch: private header, one section per file. */
#ifndef BLOCKD_LAUNCH_H
#define BLOCKD_LAUNCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <netinet/in.h>
#include <sys/types.h>

#include "cleanup.h"

/* Exit statuses: how the launch (and the guest) ended. */
enum {
  EXIT_GUEST_OFF = 0,       /* the guest powered off (by itself or on our request) */
  EXIT_RUNTIME = 1,         /* could not start blockd or QEMU, or a runtime error */
  EXIT_USAGE = 2,           /* bad command line or input; nothing was started */
  EXIT_GUEST_FORCED = 3,    /* the guest ignored the power button: QMP quit / SIGKILL */
  EXIT_QEMU_DIED = 4,       /* QEMU exited on its own without a guest power off */
  EXIT_BLOCKD_DIED = 5,     /* blockd died first; QEMU was stopped */
  EXIT_GUEST_RESET = 6,     /* the guest rebooted or panicked (-no-reboot ends the launch) */
  EXIT_USER_QUIT = 7,       /* the user quit QEMU (Ctrl-A x, monitor or --qmp quit) */
};

/* Accelerator choice from --accel. */
enum accel {
  ACCEL_AUTO, /* KVM if a probe boots under it, else TCG */
  ACCEL_KVM,  /* KVM, no fallback */
  ACCEL_TCG,  /* QEMU's emulator */
};

/* How disks reach QEMU, from --transport. */
enum transport {
  TRANSPORT_NBD,        /* QEMU's NBD client, virtio-blk-pci */
  TRANSPORT_VHOST_USER, /* vhost-user-blk-pci from guest RAM shared as a memfd */
};

/* One --disk. */
struct disk {
  char *path;       /* image file (made absolute by disk_check), or an rbd: name */
  char *conf;       /* rbd: conf=, Ceph configuration file, or NULL */
  char *id;         /* rbd: id=, Ceph user, or NULL */
  char *serial;     /* virtio-blk serial; "diskN" unless given */
  char *format;     /* blockd format= (raw, qcow2, overlay), NULL: detected */
  bool readonly;    /* export and device are read-only */
  bool cache_none;  /* cache=none: blockd bypasses the host page cache */
  int lock_fd;      /* holds a flock on the image for the launch, or -1 */
};

/* One hostfwd= rule of --net user. */
struct hostfwd {
  bool udp;              /* udp, else tcp */
  struct in_addr host;   /* host address QEMU listens on: 127.0.0.1 unless given */
  uint16_t host_port;    /* host port */
  struct in_addr guest;  /* guest address; INADDR_ANY: the guest's DHCP address */
  uint16_t guest_port;   /* guest port */
};

/* --net: QEMU's user-mode network behind a virtio-net-pci NIC, or none. */
struct net {
  bool user;              /* --net user given; false: no NIC at all */
  bool restricted;        /* restrict=on: the guest reaches nothing, only forwards reach it */
  struct hostfwd *fwds;   /* hostfwd= rules, in order */
  size_t nfwds;           /* number of rules */
};

/* Everything the command line says, plus what main() works out. */
struct launch {
  const char *kernel;   /* --kernel; NULL: the firmware boots the first disk */
  const char *initrd;   /* --initrd, may be NULL; only with a kernel */
  const char *append;   /* --append; "console=ttyS0" with a kernel unless given */
  struct disk *disks;   /* --disk, in order: export diskN is disks[N] */
  size_t ndisks;        /* number of disks */
  uint64_t memory;      /* --memory in bytes */
  unsigned cpus;        /* --cpus */
  enum accel accel;     /* --accel; resolved to KVM or TCG before starting */
  enum transport transport; /* --transport */
  const char *qmp;      /* --qmp: an extra QMP socket for the user, may be NULL */
  struct net net;       /* --net */
  bool dry_run;         /* --dry-run: print the command lines, start nothing */
  char *blockd;         /* blockd executable */
  const char *qemu;     /* qemu-system-x86_64 executable ($QEMU or PATH) */
  char *rundir;         /* private runtime directory (for --dry-run: a template) */
  int rundir_fd;        /* the directory, flock'ed while we live; -1 if none */
  const char **allow_base_dirs; /* --allow-base-dir, passed on to blockd */
  size_t nr_allow_base_dirs;
  unsigned grace;       /* seconds the guest gets to power off after the button */
};

/* launch.c */
extern bool verbose;
/* Prints "blockd-launch: MESSAGE" on stderr. */
void launch_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#define debug(fmt, ...)                                                 \
  do {                                                                  \
    if (unlikely(verbose))                                              \
      launch_error("debug: " fmt, ##__VA_ARGS__);                       \
  } while (0)

/* argv.c */
/* A growable NULL-terminated argument vector. */
struct argv {
  char **v;   /* the arguments, NULL-terminated once anything was added */
  size_t n;   /* number of arguments */
  size_t cap; /* allocated slots */
};
int argv_add(struct argv *a, const char *s);
int argv_addf(struct argv *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void argv_free(struct argv *a);
void argv_print(const struct argv *a, FILE *fp);
#define CLEANUP_ARGV __attribute__((cleanup(argv_free)))

/* disk.c */
int disk_parse(const char *spec, size_t index, struct disk *d);
int disk_check(struct disk *d);
int disk_check_boot(const struct disk *d);
void disk_free(struct disk *d);

/* net.c */
int net_parse(const char *spec, struct net *n);
int net_check(const struct net *n);
char *net_netdev(const struct net *n);
void net_free(struct net *n);

/* rundir.c */
char *rundir_template(void);
int rundir_create(struct launch *l);
void rundir_path(const struct launch *l, const char *name, char *buf, size_t len);
void rundir_remove(struct launch *l);
void rundir_sweep(void);

/* accel.c */
int accel_parse(const char *s, enum accel *a);
int accel_check(enum accel a);
const char *accel_name(enum accel a);
enum accel accel_resolve(const struct launch *l);

/* server.c */
char *server_find(void);
int server_cmdline(const struct launch *l, struct argv *a);
pid_t server_start(const struct launch *l, const struct argv *a);

/* qemu.c */
int qemu_cmdline(const struct launch *l, struct argv *a);
pid_t qemu_start(const struct argv *a);

/* proc.c */
pid_t proc_spawn(char *const argv[], bool own_group, int death_signal, const int fds[3]);
int proc_wait_timeout(pid_t pid, int *status, unsigned ms);
char *proc_status_string(int status);

/* qmp.c */
struct qmp;
struct qmp *qmp_connect(const char *path, unsigned timeout_ms);
int qmp_fd(const struct qmp *q);
int qmp_command(struct qmp *q, const char *cmd);
int qmp_read_events(struct qmp *q, char *reason, size_t len);
void qmp_close(struct qmp *q);

/* supervise.c */
int supervise(struct launch *l, pid_t blockd, pid_t qemu);

#endif

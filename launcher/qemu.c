/* The QEMU command line: NBD-backed virtio-blk with discard end to end, a
 * free-page-reporting balloon, plain anonymous guest RAM, QMP, the serial
 * console on stdout, a kernel or the firmware booting the first disk, and
 * user-mode networking when asked. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "format.h"
#include "launch.h"

/* Builds QEMU's command line into A. Returns 0 or -errno. */
int qemu_cmdline(const struct launch *l, struct argv *a)
{
  CLEANUP_FREE char *nbd = NULL, *qmp = NULL, *user_qmp = NULL;
  char path[PATH_MAX];
  int r = 0;

  rundir_path(l, "nbd.sock", path, sizeof path);
  nbd = spec_escape(path);
  rundir_path(l, "qmp.sock", path, sizeof path);
  qmp = spec_escape(path);
  if (nbd == NULL || qmp == NULL)
    return -ENOMEM;

  r |= argv_add(a, l->qemu);
  r |= argv_add(a, "-nodefaults");
  r |= argv_add(a, "-no-user-config");
  r |= argv_add(a, "-machine");
  r |= argv_add(a, "q35");
  r |= argv_add(a, "-accel");
  r |= argv_add(a, accel_name(l->accel));
  if (l->accel == ACCEL_KVM) {
    r |= argv_add(a, "-cpu");
    r |= argv_add(a, "host");
  }
  /* -m alone gives plain anonymous memory, which free page reporting can
   * hand back with MADV_DONTNEED: no memory backend, no hugepages.
   * vhost-user needs guest RAM blockd can map: a shared memfd (free page
   * reporting then punches holes in it), still no hugepages. */
  r |= argv_add(a, "-m");
  r |= argv_addf(a, "%" PRIu64 "M", l->memory >> 20);
  if (l->transport == TRANSPORT_VHOST_USER) {
    r |= argv_add(a, "-object");
    r |= argv_addf(a, "memory-backend-memfd,id=ram,size=%" PRIu64 "M,share=on", l->memory >> 20);
    r |= argv_add(a, "-numa");
    r |= argv_add(a, "node,memdev=ram");
  }
  r |= argv_add(a, "-smp");
  r |= argv_addf(a, "%u", l->cpus);
  /* A guest reboot or panic ends the launch; the exit status tells which. */
  r |= argv_add(a, "-no-reboot");
  r |= argv_add(a, "-display");
  r |= argv_add(a, "none");
  /* Console on stdio. signal=off: Ctrl-C goes to the guest, as on a real
   * serial line; mux=on puts QEMU's monitor behind Ctrl-A c (Ctrl-A x quits). */
  r |= argv_add(a, "-chardev");
  r |= argv_add(a, "stdio,id=console,mux=on,signal=off");
  r |= argv_add(a, "-serial");
  r |= argv_add(a, "chardev:console");
  r |= argv_add(a, "-mon");
  r |= argv_add(a, "chardev=console,mode=readline");
  /* QMP through -chardev/-mon, where the path is one option value (commas
   * doubled): -qmp unix:PATH,... misreads paths with '=' in them. */
  r |= argv_add(a, "-chardev");
  r |= argv_addf(a, "socket,id=qmp,path=%s,server=on,wait=off", qmp);
  r |= argv_add(a, "-mon");
  r |= argv_add(a, "chardev=qmp,mode=control");
  if (l->qmp != NULL) {
    user_qmp = spec_escape(l->qmp);
    if (user_qmp == NULL)
      return -ENOMEM;
    r |= argv_add(a, "-chardev");
    r |= argv_addf(a, "socket,id=userqmp,path=%s,server=on,wait=off", user_qmp);
    r |= argv_add(a, "-mon");
    r |= argv_add(a, "chardev=userqmp,mode=control");
  }

  if (l->kernel != NULL) {
    r |= argv_add(a, "-kernel");
    r |= argv_add(a, l->kernel);
    if (l->initrd != NULL) {
      r |= argv_add(a, "-initrd");
      r |= argv_add(a, l->initrd);
    }
    if (l->append != NULL) {
      r |= argv_add(a, "-append");
      r |= argv_add(a, l->append);
    }
  }
  else {
    /* SeaBIOS boots the disk with bootindex=0 and nothing else (strict=on).
     * Should it find nothing to boot, it would wait and retry for ever;
     * reboot-timeout=0 makes it reboot at once, which -no-reboot turns into
     * the end of the launch. */
    r |= argv_add(a, "-boot");
    r |= argv_add(a, "strict=on,reboot-timeout=0");
  }

  for (size_t i = 0; i < l->ndisks && l->transport == TRANSPORT_VHOST_USER; i++) {
    CLEANUP_FREE char *sock = NULL;
    char name[32];

    /* The device's features (read-only, discard, write zeroes, queues) come
     * from blockd; QEMU's num-queues defaults to one per CPU. */
    snprintf(name, sizeof name, "vhost%zu.sock", i);
    rundir_path(l, name, path, sizeof path);
    sock = spec_escape(path);
    if (sock == NULL)
      return -ENOMEM;
    r |= argv_add(a, "-chardev");
    r |= argv_addf(a, "socket,id=vhost%zu,path=%s", i, sock);
    r |= argv_add(a, "-device");
    r |= argv_addf(a, "vhost-user-blk-pci,chardev=vhost%zu,num-queues=%u%s", i, l->cpus,
                   i == 0 && l->kernel == NULL ? ",bootindex=0" : "");
  }
  for (size_t i = 0; i < l->ndisks && l->transport == TRANSPORT_NBD; i++) {
    const struct disk *d = &l->disks[i];

    /* The NBD node is attached directly (no format layer: blockd owns the
     * format). discard=unmap passes guest discards on as NBD_CMD_TRIM;
     * detect-zeroes=unmap turns written zeroes into trims too. */
    r |= argv_add(a, "-blockdev");
    r |= argv_addf(a, "driver=nbd,node-name=disk%zu,server.type=unix,server.path=%s,"
                   "export=disk%zu,%s", i, nbd, i,
                   d->readonly ? "read-only=on"
                               : "discard=unmap,detect-zeroes=unmap");
    r |= argv_add(a, "-device");
    r |= argv_addf(a, "virtio-blk-pci,drive=disk%zu,serial=%s%s%s", i, d->serial,
                   d->readonly ? "" : ",discard=on,write-zeroes=on",
                   i == 0 && l->kernel == NULL ? ",bootindex=0" : "");
  }
  if (l->net.user) {
    CLEANUP_FREE char *netdev = net_netdev(&l->net);

    if (netdev == NULL)
      return -ENOMEM;
    /* romfile= leaves out iPXE: nothing boots from the network, and SeaBIOS
     * need not run the ROM. */
    r |= argv_add(a, "-netdev");
    r |= argv_add(a, netdev);
    r |= argv_add(a, "-device");
    r |= argv_add(a, "virtio-net-pci,netdev=net0,romfile=");
  }
  /* Free page reporting: the guest tells QEMU about free 2 MiB+ blocks and
   * QEMU drops them from its RSS. */
  r |= argv_add(a, "-device");
  r |= argv_add(a, "virtio-balloon-pci,free-page-reporting=on");
  return r < 0 ? -ENOMEM : 0;
}

/* Starts QEMU with A, the console on our stdio. QEMU stays in our process
 * group so it may use the terminal; it gets SIGTERM if the launcher dies.
 * Returns its pid or -1. */
pid_t qemu_start(const struct argv *a)
{
  return proc_spawn(a->v, false, SIGTERM, NULL);
}

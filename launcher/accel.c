/* --accel: KVM where it really runs guests, TCG otherwise. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "launch.h"

/* How long the KVM probe may take to print the kernel's banner. A working
 * KVM gets there in well under a second. */
#define PROBE_MS 3000

/* Parses "auto", "kvm" or "tcg". Returns 0 or -EINVAL. */
int accel_parse(const char *s, enum accel *a)
{
  if (strcmp(s, "auto") == 0)
    *a = ACCEL_AUTO;
  else if (strcmp(s, "kvm") == 0)
    *a = ACCEL_KVM;
  else if (strcmp(s, "tcg") == 0)
    *a = ACCEL_TCG;
  else
    return -EINVAL;
  return 0;
}

/* Checks, for --accel kvm, that KVM can run a VM here: /dev/kvm opens for
 * reading and writing, speaks the stable API, and creates a VM. Prints a
 * one-line message and returns -1 if not. */
int accel_check(enum accel a)
{
  CLEANUP_CLOSE int fd = -1, vm = -1;
  int version;

  if (a != ACCEL_KVM)
    return 0;
  fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    launch_error("--accel kvm: /dev/kvm: %m");
    return -1;
  }
  version = ioctl(fd, KVM_GET_API_VERSION, 0);
  if (version < 0) {
    launch_error("--accel kvm: /dev/kvm: not KVM: %m");
    return -1;
  }
  if (version != KVM_API_VERSION) {
    launch_error("--accel kvm: /dev/kvm: API version %d, not %d", version, KVM_API_VERSION);
    return -1;
  }
  vm = ioctl(fd, KVM_CREATE_VM, 0);
  if (vm < 0) {
    launch_error("--accel kvm: /dev/kvm: cannot create a VM: %m");
    return -1;
  }
  return 0;
}

/* The name QEMU's -accel takes. */
const char *accel_name(enum accel a)
{
  return a == ACCEL_KVM ? "kvm" : a == ACCEL_TCG ? "tcg" : "auto";
}

/* Milliseconds on the monotonic clock. */
static int64_t now_ms(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Returns the kernel to probe KVM with when the launch has none (the
 * firmware boots a disk): /boot/vmlinuz-RELEASE of the running kernel, else
 * the /boot/vmlinuz-* with the highest version. malloc'd; NULL if none. */
static char *probe_kernel(void)
{
  struct utsname u;
  char *best = NULL, *path = NULL;
  struct dirent *e;
  DIR *dir;

  if (uname(&u) == 0 && asprintf(&path, "/boot/vmlinuz-%s", u.release) >= 0) {
    if (access(path, R_OK) == 0)
      return path;
    free(path);
  }
  dir = opendir("/boot");
  if (dir == NULL)
    return NULL;
  while ((e = readdir(dir)) != NULL)
    if (strncmp(e->d_name, "vmlinuz-", 8) == 0 &&
        (best == NULL || strverscmp(e->d_name, best) > 0)) {
      free(best);
      best = strdup(e->d_name);
    }
  closedir(dir);
  if (best == NULL || asprintf(&path, "/boot/%s", best) < 0)
    path = NULL;
  free(best);
  if (path != NULL && access(path, R_OK) != 0) {
    free(path);
    path = NULL;
  }
  return path;
}

/* Boots KERNEL under KVM for at most PROBE_MS and returns true if it
 * printed its banner. /dev/kvm can open and even run real-mode code on hosts
 * (nested or sandboxed) where a kernel then hangs entering long mode, so
 * nothing short of a real kernel says KVM works. */
static bool kvm_boots(const struct launch *l, const char *kernel)
{
  char *const argv[] = {
    (char *)l->qemu, "-accel", "kvm", "-cpu", "host", "-machine", "q35",
    "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio",
    "-no-reboot", "-m", "128", "-kernel", (char *)kernel,
    "-append", "console=ttyS0 earlyprintk=ttyS0 panic=-1", NULL,
  };
  CLEANUP_CLOSE int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
  int pipefd[2], status;
  char buf[4096];
  size_t have = 0;
  bool ok = false;
  pid_t pid;
  int64_t deadline = now_ms() + PROBE_MS;

  if (pipe2(pipefd, O_CLOEXEC) < 0)
    return false;
  pid = proc_spawn(argv, true, SIGKILL, (const int[3]){ devnull, pipefd[1], devnull });
  close(pipefd[1]);
  if (pid < 0) {
    close(pipefd[0]);
    return false;
  }
  while (!ok) {
    int64_t left = deadline - now_ms();
    struct pollfd p = { .fd = pipefd[0], .events = POLLIN };
    ssize_t r;

    if (left <= 0 || poll(&p, 1, (int)left) <= 0)
      break;
    r = read(pipefd[0], buf + have, sizeof buf - 1 - have);
    if (r <= 0)
      break;
    have += r;
    buf[have] = '\0';
    ok = strstr(buf, "Linux version") != NULL;
    if (have > sizeof buf / 2) {  /* keep a tail in case the banner straddles */
      memmove(buf, buf + have - 64, 64);
      have = 64;
    }
  }
  close(pipefd[0]);
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
  return ok;
}

/* Returns the accelerator to run with: KVM or TCG. For --accel auto, KVM is
 * used only if /dev/kvm opens and the kernel (--kernel, else one from /boot:
 * SeaBIOS alone never leaves real and 32-bit mode, where broken hosts still
 * work) boots under it; otherwise TCG with a one-line notice. */
enum accel accel_resolve(const struct launch *l)
{
  CLEANUP_FREE char *found = NULL;
  const char *kernel = l->kernel;
  int fd;

  if (l->accel != ACCEL_AUTO)
    return l->accel;
  fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    launch_error("notice: KVM unavailable (/dev/kvm: %m), using TCG");
    return ACCEL_TCG;
  }
  close(fd);
  if (kernel == NULL && (kernel = found = probe_kernel()) == NULL) {
    launch_error("notice: no kernel in /boot to check that KVM works with, using TCG "
                 "(--accel kvm uses KVM unchecked)");
    return ACCEL_TCG;
  }
  if (!kvm_boots(l, kernel)) {
    launch_error("notice: KVM does not boot the kernel on this host, using TCG");
    return ACCEL_TCG;
  }
  debug("KVM probe booted %s", kernel);
  return ACCEL_KVM;
}

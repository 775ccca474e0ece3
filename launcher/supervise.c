/* Supervision of a running launch: signals become a QMP power-button press,
 * then quit, then SIGKILL; whichever of QEMU and blockd dies first, the other
 * is stopped; blockd is drained after QEMU is gone; the exit status says how
 * the guest ended. */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "launch.h"

/* How long QEMU gets to exit after QMP quit before SIGKILL. */
#define QUIT_MS 5000
/* How long blockd gets to drain and flush after SIGTERM before SIGKILL. */
#define DRAIN_MS 30000

/* Where the shutdown has got to. */
enum phase {
  RUNNING,       /* nothing asked yet */
  POWERING_DOWN, /* power button pressed; waiting up to the grace period */
  QUITTING,      /* QMP quit (or SIGTERM) sent; waiting QUIT_MS */
  KILLED,        /* SIGKILL sent */
};

/* The state of one supervised launch. */
struct sv {
  struct launch *l;  /* the launch */
  pid_t qemu;        /* QEMU's pid */
  pid_t blockd;      /* blockd's pid */
  struct qmp *qmp;   /* our QMP connection; NULL if lost or never made */
  enum phase phase;  /* shutdown progress */
  int64_t deadline;  /* monotonic ms when the phase times out; 0: none */
  bool qemu_done;    /* QEMU reaped; status in qemu_status */
  int qemu_status;   /* QEMU's wait status */
  bool blockd_done;  /* blockd reaped; status in blockd_status */
  int blockd_status; /* blockd's wait status */
  bool blockd_first; /* blockd died while QEMU ran */
  bool requested;    /* a signal asked us to stop */
  bool quit_sent;    /* we told QEMU to quit (QMP quit or SIGTERM) */
  char reason[64];   /* SHUTDOWN event reason, "" if none seen */
};

/* Milliseconds on the monotonic clock. */
static int64_t now_ms(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sends CMD over QMP, or SIGTERM to QEMU when there is no QMP connection
 * (QEMU's own orderly exit). */
static void qemu_ask(struct sv *s, const char *cmd)
{
  if (s->qmp != NULL && qmp_command(s->qmp, cmd) == 0)
    return;
  debug("no QMP: SIGTERM to QEMU instead of %s", cmd);
  kill(s->qemu, SIGTERM);
}

/* Moves to the next shutdown phase. */
static void escalate(struct sv *s)
{
  switch (s->phase) {
  case RUNNING:
    qemu_ask(s, "system_powerdown");
    s->phase = POWERING_DOWN;
    s->deadline = now_ms() + (int64_t)s->l->grace * 1000;
    break;
  case POWERING_DOWN:
    qemu_ask(s, "quit");
    s->quit_sent = true;
    s->phase = QUITTING;
    s->deadline = now_ms() + QUIT_MS;
    break;
  case QUITTING:
    kill(s->qemu, SIGKILL);
    s->phase = KILLED;
    s->deadline = 0;
    break;
  case KILLED:
    break;
  }
}

/* Reaps every child that has exited. */
static void reap(struct sv *s)
{
  int status;
  pid_t pid;

  while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
    if (pid == s->qemu) {
      s->qemu_done = true;
      s->qemu_status = status;
    }
    else if (pid == s->blockd) {
      s->blockd_done = true;
      s->blockd_status = status;
      if (!s->qemu_done)
        s->blockd_first = true;
    }
  }
}

/* Reads QEMU's QMP messages, noting the SHUTDOWN reason; drops the
 * connection once QEMU closes it. */
static void read_qmp(struct sv *s)
{
  char reason[sizeof s->reason];
  int r;

  if (s->qmp == NULL)
    return;
  r = qmp_read_events(s->qmp, reason, sizeof reason);
  if (r == 1)
    memcpy(s->reason, reason, sizeof reason);
  if (r < 0) {
    qmp_close(s->qmp);
    s->qmp = NULL;
  }
}

/* Reads the signals queued on SFD and acts on them. */
static void handle_signals(struct sv *s, int sfd)
{
  struct signalfd_siginfo si;

  while (read(sfd, &si, sizeof si) == sizeof si) {
    if (si.ssi_signo == SIGCHLD)
      continue;  /* reaped below whatever the signal */
    debug("signal %s", sigabbrev_np(si.ssi_signo));
    s->requested = true;
    /* A first signal presses the power button; another one skips the
     * grace period. */
    if (s->phase == RUNNING || s->phase == POWERING_DOWN)
      escalate(s);
  }
  reap(s);
}

/* Stops blockd after QEMU: SIGTERM makes it drain and flush. */
static void stop_blockd(struct sv *s)
{
  if (s->blockd_done)
    return;
  kill(s->blockd, SIGTERM);
  if (proc_wait_timeout(s->blockd, &s->blockd_status, DRAIN_MS) < 0) {
    launch_error("blockd did not exit %d s after SIGTERM, killing it", DRAIN_MS / 1000);
    kill(s->blockd, SIGKILL);
    waitpid(s->blockd, &s->blockd_status, 0);
  }
  s->blockd_done = true;
}

/* Works out the exit status and says why when it is not 0. */
static int verdict(struct sv *s)
{
  int ret;

  if (s->blockd_first) {
    launch_error("blockd %s while the guest was running; QEMU stopped",
                 proc_status_string(s->blockd_status));
    return EXIT_BLOCKD_DIED;
  }
  if (strcmp(s->reason, "guest-shutdown") == 0) {
    debug("guest powered off");
    ret = EXIT_GUEST_OFF;
  }
  else if (strcmp(s->reason, "guest-reset") == 0 || strcmp(s->reason, "guest-panic") == 0) {
    launch_error("guest ended by %s%s", s->reason,
                 s->l->kernel == NULL && strcmp(s->reason, "guest-reset") == 0
                   ? " (a reboot, or the firmware found nothing it could boot)" : "");
    ret = EXIT_GUEST_RESET;
  }
  else if ((strcmp(s->reason, "host-qmp-quit") == 0 && !s->quit_sent) ||
           strcmp(s->reason, "host-ui") == 0) {
    /* Not our quit: Ctrl-A x on the console (QEMU's mux turns it into a
     * QMP quit), quit in the monitor, or a quit on the user's --qmp. */
    launch_error("QEMU quit at the user's request (Ctrl-A x, or quit in the monitor or on "
                 "--qmp); the guest did not power off");
    ret = EXIT_USER_QUIT;
  }
  else if (s->phase >= QUITTING && s->requested) {
    launch_error("guest did not power off within %u s; QEMU %s", s->l->grace,
                 proc_status_string(s->qemu_status));
    ret = EXIT_GUEST_FORCED;
  }
  else if (s->reason[0] != '\0') {
    launch_error("QEMU stopped by the host (%s), %s", s->reason,
                 proc_status_string(s->qemu_status));
    ret = EXIT_QEMU_DIED;
  }
  else if (WIFEXITED(s->qemu_status) && WEXITSTATUS(s->qemu_status) == 0) {
    ret = EXIT_GUEST_OFF;  /* no QMP to tell us more */
  }
  else {
    launch_error("QEMU %s; blockd stopped", proc_status_string(s->qemu_status));
    ret = EXIT_QEMU_DIED;
  }
  if (!WIFEXITED(s->blockd_status) || WEXITSTATUS(s->blockd_status) != 0) {
    launch_error("blockd %s on shutdown: writes may not be flushed",
                 proc_status_string(s->blockd_status));
    if (ret == EXIT_GUEST_OFF)
      ret = EXIT_RUNTIME;
  }
  return ret;
}

/* Waits for QEMU to create its QMP socket at PATH. Returns 0, or -1 if QEMU
 * exited first (left for reap() to collect) or took over 10 s. */
static int wait_for_socket(pid_t qemu, const char *path)
{
  const struct timespec tick = { 0, 20 * 1000 * 1000 };
  struct stat st;

  for (int waited = 0; waited < 10000; waited += 20) {
    siginfo_t info = { 0 };

    if (stat(path, &st) == 0 && S_ISSOCK(st.st_mode))
      return 0;
    if (waitid(P_PID, qemu, &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == qemu)
      return -1;
    nanosleep(&tick, NULL);
  }
  return -1;
}

/* Supervises QEMU and blockd until both have exited. Expects SIGCHLD,
 * SIGINT, SIGTERM and SIGHUP blocked. Returns the launcher's exit status. */
int supervise(struct launch *l, pid_t blockd, pid_t qemu)
{
  struct sv s = { .l = l, .qemu = qemu, .blockd = blockd };
  CLEANUP_CLOSE int sfd = -1;
  char path[PATH_MAX];
  sigset_t mask;
  struct stat st;

  sigemptyset(&mask);
  sigaddset(&mask, SIGCHLD);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGHUP);
  sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0) {
    launch_error("signalfd: %m");
    kill(qemu, SIGKILL);
    waitpid(qemu, &s.qemu_status, 0);
    s.qemu_done = true;
    stop_blockd(&s);
    return EXIT_RUNTIME;
  }

  rundir_path(l, "qmp.sock", path, sizeof path);
  if (wait_for_socket(qemu, path) == 0) {
    s.qmp = qmp_connect(path, 2000);
    if (s.qmp == NULL)
      launch_error("QMP %s: %m; shutdown will be by signal", path);
  }

  while (!s.qemu_done) {
    struct pollfd p[2] = {
      { .fd = sfd, .events = POLLIN },
      { .fd = s.qmp ? qmp_fd(s.qmp) : -1, .events = POLLIN },
    };
    int timeout = -1;

    if (s.deadline != 0) {
      int64_t left = s.deadline - now_ms();
      timeout = left > 0 ? (int)left : 0;
    }
    if (poll(p, 2, timeout) < 0 && errno != EINTR) {
      launch_error("poll: %m");
      break;
    }
    if (p[1].revents)
      read_qmp(&s);
    handle_signals(&s, sfd);
    if (s.qemu_done)
      break;
    if (s.blockd_done && s.phase < QUITTING) {
      /* The disks are gone: a power-down would hang on I/O. */
      s.phase = POWERING_DOWN;
      escalate(&s);
    }
    if (s.deadline != 0 && now_ms() >= s.deadline)
      escalate(&s);
  }
  read_qmp(&s);  /* the SHUTDOWN event may still sit in the socket */
  qmp_close(s.qmp);
  if (!s.qemu_done) {  /* poll failed */
    kill(qemu, SIGKILL);
    waitpid(qemu, &s.qemu_status, 0);
  }
  stop_blockd(&s);
  /* QEMU removes its listening sockets when it exits, unless killed. */
  if (l->qmp != NULL && lstat(l->qmp, &st) == 0 && S_ISSOCK(st.st_mode))
    unlink(l->qmp);
  return verdict(&s);
}

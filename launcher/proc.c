/* Child processes: start one with a clean signal state, wait for one with a
 * deadline, and say how one ended. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "launch.h"

/* Starts ARGV[0] (searched on PATH). OWN_GROUP puts it in a new process
 * group, so a Ctrl-C on the terminal reaches only the launcher; DEATH_SIGNAL
 * (if non-zero) is sent to it should the launcher die without cleaning up;
 * FDS (may be NULL) gives its stdin, stdout and stderr, -1 meaning "ours".
 * Returns the pid, or -1 with a message printed (including when exec fails). */
pid_t proc_spawn(char *const argv[], bool own_group, int death_signal, const int fds[3])
{
  int pipefd[2], err = 0;
  pid_t parent = getpid(), pid;
  ssize_t r;

  /* The child reports a failed exec through a close-on-exec pipe. */
  if (pipe2(pipefd, O_CLOEXEC) < 0) {
    launch_error("pipe: %m");
    return -1;
  }
  pid = fork();
  if (pid < 0) {
    launch_error("fork: %m");
    close(pipefd[0]);
    close(pipefd[1]);
    return -1;
  }
  if (pid == 0) {
    sigset_t none;

    close(pipefd[0]);
    /* The launcher blocks the signals it reads through a signalfd; the
     * mask and ignored dispositions survive exec, so reset both. */
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int s = 1; s < NSIG; s++)
      if (s != SIGKILL && s != SIGSTOP)
        signal(s, SIG_DFL);
    if (own_group)
      setpgid(0, 0);
    if (death_signal != 0) {
      prctl(PR_SET_PDEATHSIG, death_signal);
      if (getppid() != parent)  /* the launcher died before prctl */
        _exit(127);
    }
    for (int i = 0; fds != NULL && i < 3; i++)
      if (fds[i] >= 0 && fds[i] != i)
        dup2(fds[i], i);
    execvp(argv[0], argv);
    err = errno;
    r = write(pipefd[1], &err, sizeof err);
    (void)r;
    _exit(127);
  }
  close(pipefd[1]);
  do
    r = read(pipefd[0], &err, sizeof err);
  while (r < 0 && errno == EINTR);
  close(pipefd[0]);
  if (r == sizeof err) {
    waitpid(pid, NULL, 0);
    errno = err;
    launch_error("%s: %m", argv[0]);
    return -1;
  }
  debug("started %s as pid %d", argv[0], (int)pid);
  return pid;
}

/* Waits up to MS milliseconds for PID to exit. Returns 0 with *STATUS set,
 * or -ETIMEDOUT, or -errno. */
int proc_wait_timeout(pid_t pid, int *status, unsigned ms)
{
  const struct timespec tick = { 0, 20 * 1000 * 1000 };

  for (unsigned waited = 0;; waited += 20) {
    pid_t r = waitpid(pid, status, WNOHANG);

    if (r == pid)
      return 0;
    if (r < 0 && errno != EINTR)
      return -errno;
    if (waited >= ms)
      return -ETIMEDOUT;
    nanosleep(&tick, NULL);
  }
}

/* Returns a static description of a wait status: "exited with status 1",
 * "killed by signal KILL". */
char *proc_status_string(int status)
{
  static char buf[64];

  if (WIFEXITED(status))
    snprintf(buf, sizeof buf, "exited with status %d", WEXITSTATUS(status));
  else if (WIFSIGNALED(status))
    snprintf(buf, sizeof buf, "killed by signal %s",
             sigabbrev_np(WTERMSIG(status)) ? sigabbrev_np(WTERMSIG(status)) : "?");
  else
    snprintf(buf, sizeof buf, "ended with wait status %#x", status);
  return buf;
}

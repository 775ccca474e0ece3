/* Process-wide limits: how many client connections may be open at once.
 *
 * A connection takes a slot before it is accepted and gives it back when its
 * socket is closed, whichever thread closes it (a handshake thread, or the
 * worker that served it). The accept thread sleeps on an eventfd while every
 * slot is taken, so clients past the cap wait in the listen backlog instead
 * of costing descriptors and memory.
 */
#include <errno.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#include "core.h"

static unsigned max_conns = UINT32_MAX; /* the cap; none until limits_init */
static unsigned nr_conns;               /* slots taken (atomic) */
static bool waiting;                    /* the acceptor sleeps on efd (atomic) */
static int efd = -1;                    /* written when a slot frees while waiting */

/* Sets the connection cap and raises the descriptor limit to what the cap
 * needs. Returns 0 or -1 after logging. */
int limits_init(unsigned max_connections)
{
  struct rlimit rl;

  max_conns = max_connections;
  efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (efd == -1) {
    log_msg("eventfd: %m");
    return -1;
  }
  /* Every connection costs a socket, and the soft limit is often 1024:
   * take what the hard limit allows rather than fail at accept(). */
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) == -1)
      debug("setrlimit(RLIMIT_NOFILE): %m");
  }
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
      rl.rlim_cur < (rlim_t)max_conns + 64)
    log_msg("warning: %llu file descriptors allowed, fewer than --max-connections %u needs",
            (unsigned long long)rl.rlim_cur, max_conns);
  return 0;
}

/* Frees the eventfd. */
void limits_fini(void)
{
  if (efd >= 0)
    close(efd);
  efd = -1;
}

/* Takes a connection slot. Returns false, and arms the wake-up on
 * limits_conn_fd(), when every slot is taken. */
bool limits_conn_get(void)
{
  unsigned n = __atomic_load_n(&nr_conns, __ATOMIC_ACQUIRE);

  do {
    if (n >= max_conns) {
      __atomic_store_n(&waiting, true, __ATOMIC_SEQ_CST);
      /* A slot freed between the load and the flag would wake nobody:
       * look again now that the flag is visible. */
      n = __atomic_load_n(&nr_conns, __ATOMIC_SEQ_CST);
      if (n >= max_conns)
        return false;
      __atomic_store_n(&waiting, false, __ATOMIC_RELAXED);
    }
  } while (!__atomic_compare_exchange_n(&nr_conns, &n, n + 1, false, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE));
  return true;
}

/* Gives a connection slot back (any thread). */
void limits_conn_put(void)
{
  uint64_t one = 1;

  __atomic_sub_fetch(&nr_conns, 1, __ATOMIC_SEQ_CST);
  if (__atomic_exchange_n(&waiting, false, __ATOMIC_SEQ_CST) && efd >= 0 &&
      write(efd, &one, sizeof one) < 0 && errno != EAGAIN)
    log_msg("eventfd write: %m");
}

/* The eventfd that becomes readable when a slot frees after
 * limits_conn_get() failed; -1 before limits_init. */
int limits_conn_fd(void)
{
  return efd;
}

/* Whether a connection slot is free now (a hint: another thread may take it). */
bool limits_conn_get_idle(void)
{
  return __atomic_load_n(&nr_conns, __ATOMIC_RELAXED) < max_conns;
}

/* Connections open now, for messages and tests. */
unsigned limits_conn_count(void)
{
  return __atomic_load_n(&nr_conns, __ATOMIC_RELAXED);
}

/* The blocking pool: threads that run what must not run on a worker's event
 * loop (engines without a map for the range, qcow2, lseek for block
 * status). A finished job goes back to its worker as a task. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static struct pool_job *head, *tail; /* FIFO of queued jobs */
static bool stopping;                /* pool_stop called: exit when the queue is empty */
static unsigned nr_idle;             /* threads waiting for a job */
static pthread_t *threads;
static unsigned nr_threads;

/* Body of one pool thread. */
static void *pool_thread(void *arg)
{
  (void)arg;
  for (;;) {
    struct pool_job *job;

    pthread_mutex_lock(&lock);
    while (head == NULL && !stopping) {
      nr_idle++;
      pthread_cond_wait(&cond, &lock);
      nr_idle--;
    }
    job = head;
    if (job != NULL) {
      head = job->next;
      if (head == NULL)
        tail = NULL;
    }
    pthread_mutex_unlock(&lock);
    if (job == NULL)
      return NULL;
    job->run(job);
    worker_post(job->w, &job->done);
  }
}

/* Starts N blocking threads. Returns 0 or -1 after logging. */
int pool_start(unsigned n)
{
  threads = calloc(n, sizeof *threads);
  if (threads == NULL) {
    log_msg("out of memory");
    return -1;
  }
  stopping = false;
  for (nr_threads = 0; nr_threads < n; nr_threads++) {
    int e = pthread_create(&threads[nr_threads], NULL, pool_thread, NULL);
    if (e != 0) {
      errno = e;
      log_msg("pthread_create: %m");
      pool_stop();
      return -1;
    }
  }
  return 0;
}

/* Queues the N jobs linked from FIRST to LAST with one lock: a worker hands
 * over everything one pass of its loop produced at once. */
void pool_submit_batch(struct pool_job *first, struct pool_job *last, unsigned n)
{
  unsigned wake;

  last->next = NULL;
  pthread_mutex_lock(&lock);
  if (tail)
    tail->next = first;
  else
    head = first;
  tail = last;
  /* Wake one idle thread per job, no more: a thread busy now takes the next
   * job when it is done, and a woken thread that finds the queue empty has
   * cost two context switches for nothing (with 4 threads on 4 KiB writes,
   * futex wake-ups and waits were a third of blockd's CPU). */
  wake = n < nr_idle ? n : nr_idle;
  if (wake == nr_idle && wake > 1)
    pthread_cond_broadcast(&cond);
  else
    for (unsigned i = 0; i < wake; i++)
      pthread_cond_signal(&cond);
  pthread_mutex_unlock(&lock);
}

/* Stops the pool after the queued jobs have run. */
void pool_stop(void)
{
  pthread_mutex_lock(&lock);
  stopping = true;
  pthread_cond_broadcast(&cond);
  pthread_mutex_unlock(&lock);
  for (unsigned i = 0; i < nr_threads; i++)
    pthread_join(threads[i], NULL);
  free(threads);
  threads = NULL;
  nr_threads = 0;
}

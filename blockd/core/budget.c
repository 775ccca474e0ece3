/* The memory budget: payload bytes a worker's clients may hold together
 * (--max-memory, split evenly between workers so that admission needs no
 * lock). A client takes bytes before it reads a request's payload and gives
 * them back once the reply is gone.
 *
 * Fairness: a client may hold its share of the budget (the budget over the
 * worker's clients, between BUDGET_MIN_SHARE and BUDGET_MAX_SHARE; one
 * request is always allowed). When the budget itself is spent, clients wait
 * in line; a client whose own replies its peer has not taken waits for
 * those instead, so one that never reads cannot be handed each byte freed
 * for others. The line is served smallest request first: a client that pins
 * memory by never reading pins big buffers (small replies fit in socket
 * buffers and free theirs), so small requests first keeps real clients
 * moving; a request that has waited two stall timeouts goes first, so big
 * ones never starve.
 */
#include "core.h"

/* The bytes one client of W may hold now (clients that take no budget,
 * such as vhost-user devices and their queues, do not count). */
static uint64_t share(const struct worker *w)
{
  unsigned n = w->nr_budgeted;
  uint64_t s = w->mem_limit / (n ? n : 1);

  if (s < BUDGET_MIN_SHARE)
    s = BUDGET_MIN_SHARE;
  return s < BUDGET_MAX_SHARE ? s : BUDGET_MAX_SHARE;
}

/* Queues C, which waits for NEED bytes, behind the others. */
static void wait_in_line(struct client *c, uint32_t need)
{
  struct worker *w = c->w;

  c->budget_need = need;
  if (c->budget_waiting)
    return;
  c->budget_waiting = true;
  c->budget_since = w->now;
  c->wnext = NULL;
  c->wprev = w->wait_tail;
  if (w->wait_tail)
    w->wait_tail->wnext = c;
  else
    w->wait_head = c;
  w->wait_tail = c;
}

/* Takes C out of the line. */
void budget_unwait(struct client *c)
{
  struct worker *w = c->w;

  if (!c->budget_waiting)
    return;
  if (c->wprev)
    c->wprev->wnext = c->wnext;
  else
    w->wait_head = c->wnext;
  if (c->wnext)
    c->wnext->wprev = c->wprev;
  else
    w->wait_tail = c->wprev;
  c->wprev = c->wnext = NULL;
  c->budget_waiting = false;
  if (w->budget_turn == c)
    w->budget_turn = NULL;
}

/* Asks for NEED payload bytes for C, which has NR requests alive. */
enum budget_answer budget_take(struct client *c, uint32_t need, unsigned nr,
                               bool replies_waiting)
{
  struct worker *w = c->w;

  if (need == 0)
    return BUDGET_OK;
  if (nr > 0 && c->held + need > share(w))
    return BUDGET_OWN;
  if (w->mem_used + need <= w->mem_limit && (w->wait_head == NULL || w->budget_turn == c)) {
    w->budget_turn = NULL; /* one request a turn */
    budget_unwait(c);
    c->held += need;
    w->mem_used += need;
    return BUDGET_OK;
  }
  if (replies_waiting) {
    budget_unwait(c);
    return BUDGET_OWN;
  }
  wait_in_line(c, need);
  return BUDGET_QUEUED;
}

/* Charges BYTES to C whatever the budget: for a drain, which takes only
 * what has already arrived. */
void budget_charge(struct client *c, uint64_t bytes)
{
  c->held += bytes;
  c->w->mem_used += bytes;
}

/* Gives back BYTES that C held. */
void budget_put(struct client *c, uint64_t bytes)
{
  c->held -= bytes;
  c->w->mem_used -= bytes;
}

/* The waiter whose turn it is (see the top of this file). */
static struct client *pick(const struct worker *w)
{
  struct client *best = w->wait_head;

  if (w->now - best->budget_since >= 2 * (time_t)w->stall_timeout)
    return best;
  for (struct client *c = best->wnext; c; c = c->wnext)
    if (c->budget_need < best->budget_need)
      best = c;
  return best;
}

/* Lets waiting clients go on, one request a turn, while the budget lasts. */
void budget_resume(struct worker *w)
{
  while (w->wait_head != NULL) {
    struct client *c = pick(w);

    if (w->mem_used + c->budget_need > w->mem_limit)
      break;
    budget_unwait(c);
    w->budget_turn = c;
    c->ops->budget_resume(c);
    w->budget_turn = NULL;
  }
}

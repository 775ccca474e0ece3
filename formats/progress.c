/* progress: blockd-img's progress bar on a terminal, nothing elsewhere. */
#include <stdio.h>
#include <unistd.h>

#include "progress.h"

#define BAR_WIDTH 40

/* Draws the bar at PERCENT. */
static void draw(int percent)
{
  int fill = percent * BAR_WIDTH / 100;

  fprintf(stderr, "\r    (%3d%%) [", percent);
  for (int i = 0; i < BAR_WIDTH; i++)
    fputc(i < fill ? '#' : ' ', stderr);
  fputc(']', stderr);
  fflush(stderr);
}

void progress_start(struct progress *p, uint64_t total, bool always)
{
  /* A bar in a log file or a pipe is noise: terminals only, unless asked. */
  p->enabled = always || isatty(STDERR_FILENO) == 1;
  p->total = total;
  p->shown = -1;
  progress_update(p, 0);
}

void progress_update(struct progress *p, uint64_t done)
{
  int percent;

  if (!p->enabled)
    return;
  percent = p->total == 0 ? 100 : (int)((double)done * 100 / (double)p->total);
  if (percent > 100)
    percent = 100;
  if (percent == p->shown)
    return;
  p->shown = percent;
  draw(percent);
}

void progress_end(struct progress *p, bool complete)
{
  if (!p->enabled)
    return;
  if (complete && p->shown != 100)
    draw(100);
  fputc('\n', stderr);
  fflush(stderr);
}

/* A progress bar for blockd-img, drawn only when stderr is a terminal. */
#ifndef BLOCKD_PROGRESS_H
#define BLOCKD_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

/* One bar. */
struct progress {
  bool enabled;      /* stderr is a terminal, or asked for (-p) */
  uint64_t total;    /* work to do (bytes) */
  int shown;         /* last percentage drawn, -1 before the first */
};

/* progress.c */
/* Starts a bar for TOTAL bytes; a no-op unless stderr is a terminal or ALWAYS. */
void progress_start(struct progress *p, uint64_t total, bool always);
/* Redraws the bar at DONE bytes if the percentage moved. */
void progress_update(struct progress *p, uint64_t done);
/* Draws 100% (if COMPLETE) and ends the line. */
void progress_end(struct progress *p, bool complete);

#endif

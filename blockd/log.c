/* Messages on stderr, prefixed with the program name. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

bool verbose;
static const char *prog = "blockd";

/* Sets the program name that prefixes every message. */
void log_init(const char *progname)
{
  prog = progname;
}

/* Formats one line and writes it with a single write, so that lines from
 * several threads never interleave. */
static void vlog(const char *tag, const char *fmt, va_list ap)
{
  char line[1024];
  int saved = errno, n;

  n = snprintf(line, sizeof line, "%s: %s", prog, tag);
  if (n < 0 || (size_t)n >= sizeof line)
    n = 0;
  errno = saved; /* for %m */
  vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
  strcat(line, "\n");
  fputs(line, stderr);
  errno = saved;
}

/* Prints "blockd: MESSAGE" on stderr (with %m support). */
void nbd_log(const char *fmt, ...)
{
  va_list ap;

  va_start(ap, fmt);
  vlog("", fmt, ap);
  va_end(ap);
}

/* As nbd_log, for the control path, only with --verbose. */
void log_debug(const char *fmt, ...)
{
  va_list ap;

  va_start(ap, fmt);
  vlog("debug: ", fmt, ap);
  va_end(ap);
}

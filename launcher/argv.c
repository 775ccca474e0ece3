/* Argument vectors for the blockd and QEMU command lines, and how they print. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "launch.h"

/* Appends a copy of S. Returns 0 or -errno. */
int argv_add(struct argv *a, const char *s)
{
  if (a->n + 2 > a->cap) {
    size_t cap = a->cap ? a->cap * 2 : 32;
    char **v = realloc(a->v, cap * sizeof *v);

    if (v == NULL)
      return -ENOMEM;
    a->v = v;
    a->cap = cap;
  }
  a->v[a->n] = strdup(s);
  if (a->v[a->n] == NULL)
    return -ENOMEM;
  a->v[++a->n] = NULL;
  return 0;
}

/* Appends a formatted argument. Returns 0 or -errno. */
int argv_addf(struct argv *a, const char *fmt, ...)
{
  CLEANUP_FREE char *s = NULL;
  va_list ap;
  int r;

  va_start(ap, fmt);
  r = vasprintf(&s, fmt, ap);
  va_end(ap);
  if (r < 0) {
    s = NULL;
    return -ENOMEM;
  }
  return argv_add(a, s);
}

/* Frees every argument and the vector. */
void argv_free(struct argv *a)
{
  for (size_t i = 0; i < a->n; i++)
    free(a->v[i]);
  free(a->v);
  a->v = NULL;
  a->n = a->cap = 0;
}

/* True if S can be printed for a POSIX shell without quotes. */
static bool shell_safe(const char *s)
{
  if (*s == '\0')
    return false;
  for (; *s; s++)
    if (strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
               "-_./=:,+@%", *s) == NULL)
      return false;
  return true;
}

/* Prints the vector on one line, quoted so a shell can run it as is. */
void argv_print(const struct argv *a, FILE *fp)
{
  for (size_t i = 0; i < a->n; i++) {
    const char *s = a->v[i];

    if (i > 0)
      fputc(' ', fp);
    if (shell_safe(s)) {
      fputs(s, fp);
      continue;
    }
    fputc('\'', fp);
    for (; *s; s++) {
      if (*s == '\'')
        fputs("'\\''", fp);
      else
        fputc(*s, fp);
    }
    fputc('\'', fp);
  }
  fputc('\n', fp);
}

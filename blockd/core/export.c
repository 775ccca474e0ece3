/* The table of exports: open images by name, shared by every front end. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

static struct export *exports;
static size_t nr_exports;

/* Adds open image F as export NAME (taking F). Returns 0 or -1 after logging. */
int export_add(const char *name, struct fmt *f)
{
  struct export *n = realloc(exports, (nr_exports + 1) * sizeof *n);

  if (n == NULL || (name = strdup(name)) == NULL) {
    log_msg("out of memory");
    if (n != NULL)
      exports = n;
    fmt_close(f);
    return -1;
  }
  exports = n;
  exports[nr_exports].name = (char *)name;
  exports[nr_exports].fmt = f;
  nr_exports++;
  return 0;
}

/* Returns the export named NAME (LEN bytes), or NULL. */
struct export *export_find(const char *name, size_t len)
{
  for (size_t i = 0; i < nr_exports; i++)
    if (strlen(exports[i].name) == len && memcmp(exports[i].name, name, len) == 0)
      return &exports[i];
  return NULL;
}

/* Number of exports. */
size_t exports_count(void)
{
  return nr_exports;
}

/* Returns the I-th export, or NULL past the end. */
struct export *exports_get(size_t i)
{
  return i < nr_exports ? &exports[i] : NULL;
}

/* Flushes every writable export. Returns 0 or -1 after logging. */
int exports_flush_all(void)
{
  int ret = 0;

  for (size_t i = 0; i < nr_exports; i++) {
    struct fmt *f = exports[i].fmt;
    int r = fmt_flush(f);

    if (r < 0) {
      errno = -r;
      log_msg("%s: flush: %m", f->path);
      ret = -1;
    }
  }
  return ret;
}

/* Closes every export. */
void exports_close(void)
{
  for (size_t i = 0; i < nr_exports; i++) {
    fmt_close(exports[i].fmt);
    free(exports[i].name);
  }
  free(exports);
  exports = NULL;
  nr_exports = 0;
}

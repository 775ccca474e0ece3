/* Format registry, detection by content, and the common fields of an image. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cleanup.h"
#include "format.h"

/* Every format built in; raw last because it accepts anything. */
static const struct fmt_ops *const formats[] = {
#ifdef HAVE_QCOW2
  &fmt_qcow2_ops,
#endif
#ifdef HAVE_OVERLAY
  &fmt_overlay_ops,
#endif
  &fmt_raw_ops,
};

const struct fmt_ops *fmt_lookup(const char *name)
{
  for (size_t i = 0; i < ARRAY_SIZE(formats); i++)
    if (strcmp(formats[i]->name, name) == 0)
      return formats[i];
  return NULL;
}

const char *fmt_names(void)
{
  static char names[64];

  if (names[0] == '\0') {
    for (size_t i = ARRAY_SIZE(formats); i-- > 0;) {
      if (names[0] != '\0')
        strcat(names, ",");
      strcat(names, formats[i]->name);
    }
  }
  return names;
}

const struct fmt_ops *fmt_detect(const char *path, char *err, size_t errlen)
{
  CLEANUP_CLOSE int fd = open(path, O_RDONLY | O_CLOEXEC);
  unsigned char head[4096];
  ssize_t n;

  if (fd < 0) {
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return NULL;
  }
  n = pread(fd, head, sizeof head, 0);
  if (n < 0) {
    snprintf(err, errlen, "%s: read: %s", path, strerror(errno));
    return NULL;
  }
  for (size_t i = 0; i < ARRAY_SIZE(formats); i++)
    if (formats[i]->probe == NULL || formats[i]->probe(head, (size_t)n))
      return formats[i];
  return &fmt_raw_ops;
}

struct fmt *fmt_open(const char *path, const char *format, bool readonly, char *err,
                     size_t errlen)
{
  const struct fmt_ops *ops;

  if (format != NULL) {
    ops = fmt_lookup(format);
    if (ops == NULL) {
      snprintf(err, errlen, "%s: unknown format '%s' (built in: %s)", path, format, fmt_names());
      return NULL;
    }
  }
  else {
    ops = fmt_detect(path, err, errlen);
    if (ops == NULL)
      return NULL;
  }
  return ops->open(path, readonly, err, errlen);
}

void fmt_close(struct fmt *f)
{
  if (f != NULL)
    f->ops->close(f);
}

int fmt_init(struct fmt *f, const struct fmt_ops *ops, const char *path, uint64_t size,
             bool readonly)
{
  f->ops = ops;
  f->path = strdup(path);
  if (f->path == NULL)
    return -errno;
  f->size = size;
  f->readonly = readonly;
  f->block_min = 1;
  f->block_pref = 4096;
  f->block_max = 32 * 1024 * 1024;
  return 0;
}

void fmt_fini(struct fmt *f)
{
  free(f->path);
  f->path = NULL;
}

/* fmt-io: applies operations read from stdin to an image through the formats
 * library, so tests can fill overlays without a server.
 *
 *   fmt-io IMAGE < commands
 *   write OFFSET LENGTH\n<LENGTH bytes>   trim OFFSET LENGTH\n
 *   zero OFFSET LENGTH\n                  flush\n
 * Exit status 0, or 1 with a message on the first failure.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int main(int argc, char **argv)
{
  char err[1024], line[256], cmd[16];
  uint64_t off, len;
  struct fmt *f;
  int r = 0;

  if (argc != 2) {
    fprintf(stderr, "usage: fmt-io IMAGE < commands\n");
    return 2;
  }
  f = fmt_open(argv[1], NULL, false, err, sizeof err);
  if (f == NULL) {
    fprintf(stderr, "fmt-io: %s\n", err);
    return 1;
  }
  while (r == 0 && fgets(line, sizeof line, stdin) != NULL) {
    off = len = 0;
    if (sscanf(line, "%15s %" SCNu64 " %" SCNu64, cmd, &off, &len) < 1)
      continue;
    if (strcmp(cmd, "write") == 0) {
      char *buf = malloc(len ? len : 1);
      if (buf == NULL || fread(buf, 1, len, stdin) != len)
        r = -5;
      else
        r = f->ops->pwrite(f, buf, len, off, 0);
      free(buf);
    }
    else if (strcmp(cmd, "trim") == 0)
      r = f->ops->trim(f, len, off, 0);
    else if (strcmp(cmd, "zero") == 0)
      r = f->ops->zero(f, len, off, FMT_MAY_TRIM);
    else if (strcmp(cmd, "flush") == 0)
      r = f->ops->flush(f);
    else
      r = -22;
    if (r < 0)
      fprintf(stderr, "fmt-io: %s: %s %" PRIu64 " %" PRIu64 ": %s\n", argv[1], cmd, off, len,
              strerror(-r));
  }
  if (r == 0 && f->ops->flush != NULL)
    r = f->ops->flush(f);
  fmt_close(f);
  return r < 0 ? 1 : 0;
}

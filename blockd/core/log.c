/* Messages on stderr, prefixed with the program name. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "core.h"

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
  char prefix[64];
  int saved = errno;

  snprintf(prefix, sizeof prefix, "%s: %s", prog, tag);
  errno = saved; /* for %m */
  fmt_vprint_line(stderr, prefix, fmt, ap);
}

/* Prints "blockd: MESSAGE" on stderr (with %m support). */
void log_msg(const char *fmt, ...)
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

/* Writes LEN bytes of client data at S into OUT as printable text: bytes
 * outside printable ASCII, quotes and backslashes become \xHH, so that a
 * client cannot forge log lines or terminal escapes; over 64 bytes, the rest
 * is cut to "...". Returns OUT. */
const char *log_escape(const char *s, size_t len, char *out, size_t outlen)
{
  size_t o = 0;

  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];

    if (o + 8 >= outlen || i == 64) {
      snprintf(out + o, outlen - o, "...");
      return out;
    }
    if (c >= 0x20 && c < 0x7f && c != '\'' && c != '\\')
      out[o++] = (char)c;
    else
      o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", c);
  }
  out[o] = '\0';
  return out;
}

/* img-util: what blockd-img's commands share: messages, option values, output. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "img.h"

#define PROGNAME "blockd-img"

void img_die(int status, const char *fmt, ...)
{
  va_list ap;

  va_start(ap, fmt);
  fmt_vprint_line(stderr, PROGNAME ": ", fmt, ap);
  va_end(ap);
  if (status == EXIT_USAGE)
    fputs("Try '" PROGNAME " --help' for more information.\n", stderr);
  exit(status);
}

void img_warn(const char *fmt, ...)
{
  va_list ap;

  va_start(ap, fmt);
  fmt_vprint_line(stderr, PROGNAME ": ", fmt, ap);
  va_end(ap);
}

void img_allow_base_dir(const char *dir, int usage_status)
{
  int r = basepath_allow(dir);

  if (r < 0)
    img_die(usage_status, "--allow-base-dir %s: %s", dir, strerror(-r));
}

const char *img_format_arg(const char *opt, const char *name, int usage_status)
{
  if (!fmt_known(name))
    img_die(usage_status, "%s: unknown format '%s' (built in: %s)", opt, name, fmt_names());
  return name;
}

void img_rbd_spec(const char *arg, struct img_spec *s)
{
  char err[1024];

  if (spec_parse(arg, SPEC_RBD, s, err, sizeof err) < 0)
    img_die(EXIT_USAGE, "%s", err);
  if (s->readonly)
    img_die(EXIT_USAGE, "'%s': blockd-img takes no readonly here", arg);
}

const char *img_human(uint64_t n, char *buf, size_t len)
{
  static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
  double v = (double)n;
  size_t u = 0;

  while (v >= 1024 && u < ARRAY_SIZE(units) - 1) {
    v /= 1024;
    u++;
  }
  if (u == 0)
    snprintf(buf, len, "%" PRIu64 " B", n);
  else
    snprintf(buf, len, "%.3g %s", v, units[u]);
  return buf;
}

void img_json_string(const char *s)
{
  putchar('"');
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\')
      printf("\\%c", c);
    else if (fmt_is_control(c))
      printf("\\u%04x", c);
    else
      putchar(c);
  }
  putchar('"');
}

void img_print_name(const char *s)
{
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (fmt_is_control(c))
      printf("\\x%02x", c);
    else
      putchar(c);
  }
}

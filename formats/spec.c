/* spec: FILE[,option]... as blockd's --export and blockd-launch's --disk take
 * it: one parser, one set of option names for both programs. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Frees what spec_parse allocated. */
void spec_free(struct img_spec *s)
{
  free(s->path);
  free(s->format);
  free(s->serial);
  memset(s, 0, sizeof *s);
}

/* Copies the part of TEXT up to the first single ',' into a new string,
 * with ",," read as ','. Sets *END to the ',' or the final NUL. */
static char *take_path(const char *text, const char **end)
{
  char *out = malloc(strlen(text) + 1), *o = out;
  const char *p = text;

  if (out == NULL)
    return NULL;
  while (*p != '\0' && !(p[0] == ',' && p[1] != ',')) {
    *o++ = *p;
    p += p[0] == ',' ? 2 : 1;
  }
  *o = '\0';
  *end = p;
  return out;
}

/* Writes the names of the options ALLOWED takes into BUF, for messages. */
static const char *valid_names(unsigned allowed, char *buf, size_t len)
{
  snprintf(buf, len, "readonly (or ro), format=raw|qcow2|overlay, cache=default|none%s%s",
           (allowed & SPEC_SERIAL) ? ", serial=ID" : "", (allowed & SPEC_QUEUES) ? ", queues=N" : "");
  return buf;
}

/* Reads N of queues=N, the LEN bytes at TEXT, saturating at 1000000 (the
 * caller checks the range). Returns it, or -1 if it is not a number. */
static long take_count(const char *text, size_t len)
{
  long n = 0;

  if (len == 0)
    return -1;
  for (size_t i = 0; i < len; i++) {
    if (text[i] < '0' || text[i] > '9')
      return -1;
    n = n * 10 + (text[i] - '0');
    if (n > 1000000)
      n = 1000000;
  }
  return n;
}

int spec_parse(const char *text, unsigned allowed, struct img_spec *s, char *err, size_t errlen)
{
  const char *p;

  memset(s, 0, sizeof *s);
  s->queues = -1;
  s->path = take_path(text, &p);
  if (s->path == NULL) {
    snprintf(err, errlen, "%s", strerror(ENOMEM));
    return -1;
  }
  if (s->path[0] == '\0') {
    snprintf(err, errlen, "'%s': no file name", text);
    goto err;
  }
  while (*p == ',') {
    const char *opt = p + 1, *next = strchr(opt, ',');
    size_t len = next ? (size_t)(next - opt) : strlen(opt);
    char **dst = NULL;

    if ((len == 8 && strncmp(opt, "readonly", 8) == 0) || (len == 2 && strncmp(opt, "ro", 2) == 0))
      s->readonly = true;
    else if (len > 7 && strncmp(opt, "format=", 7) == 0)
      dst = &s->format;
    else if (len == 10 && strncmp(opt, "cache=none", 10) == 0)
      s->cache_none = true;
    else if (len == 13 && strncmp(opt, "cache=default", 13) == 0)
      s->cache_none = false;
    else if (len > 7 && strncmp(opt, "serial=", 7) == 0 && (allowed & SPEC_SERIAL))
      dst = &s->serial;
    else if (len >= 7 && strncmp(opt, "queues=", 7) == 0 && (allowed & SPEC_QUEUES)) {
      s->queues = take_count(opt + 7, len - 7);
      if (s->queues < 0) {
        snprintf(err, errlen, "'%s': queues=%.*s is not a number", text, (int)(len - 7), opt + 7);
        goto err;
      }
    }
    else {
      char names[128];

      snprintf(err, errlen, "'%s': unknown option '%.*s' (valid: %s)", text, (int)len, opt,
               valid_names(allowed, names, sizeof names));
      goto err;
    }
    if (dst != NULL) {
      free(*dst);
      *dst = strndup(opt + 7, len - 7);
      if (*dst == NULL) {
        snprintf(err, errlen, "%s", strerror(ENOMEM));
        goto err;
      }
    }
    p = next ? next : opt + len;
  }
  if (s->format != NULL && !fmt_known(s->format)) {
    snprintf(err, errlen, "'%s': unknown format '%s' (built in: %s)", text, s->format,
             fmt_names());
    goto err;
  }
  return 0;
err:
  spec_free(s);
  return -1;
}

char *spec_escape(const char *path)
{
  size_t n = strlen(path), commas = 0;
  char *out, *o;

  for (const char *c = path; *c; c++)
    commas += *c == ',';
  out = o = malloc(n + commas + 1);
  if (out == NULL)
    return NULL;
  for (; *path; path++) {
    *o++ = *path;
    if (*path == ',')
      *o++ = ',';
  }
  *o = '\0';
  return out;
}

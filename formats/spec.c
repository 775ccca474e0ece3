/* spec: FILE[,option]... as blockd's --export and blockd-launch's --disk take
 * it: one parser, one set of option names for both programs; and the rbd:
 * names of Ceph images. */
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
  free(s->conf);
  free(s->id);
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
  snprintf(buf, len, "readonly (or ro), format=raw|qcow2|overlay, cache=default|none%s%s%s",
           (allowed & SPEC_SERIAL) ? ", serial=ID" : "", (allowed & SPEC_QUEUES) ? ", queues=N" : "",
           (allowed & SPEC_RBD) ? "; for rbd: conf=FILE, id=USER" : "");
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

bool spec_is_rbd(const char *path)
{
  return strncmp(path, "rbd:", 4) == 0;
}

/* Copies the LEN bytes at P, a part of an rbd: name called WHAT, into OUT
 * (RBD_NAME_MAX + 1 bytes). Returns 0, or -1 with a message quoting NAME. */
static int take_name_part(const char *name, const char *what, const char *p, size_t len,
                          char *out, char *err, size_t errlen)
{
  if (len == 0) {
    snprintf(err, errlen, "'%s': no %s name (expected rbd:POOL/IMAGE[@SNAP])", name, what);
    return -1;
  }
  if (len > RBD_NAME_MAX) {
    snprintf(err, errlen, "'%.64s...': %s name longer than %d bytes", name, what, RBD_NAME_MAX);
    return -1;
  }
  /* Names go to the cluster and into log lines: no spaces or control bytes. */
  for (size_t i = 0; i < len; i++) {
    if ((unsigned char)p[i] <= ' ' || p[i] == 0x7f) {
      snprintf(err, errlen, "'%s': %s name has a space or control character", name, what);
      return -1;
    }
  }
  memcpy(out, p, len);
  out[len] = '\0';
  return 0;
}

int spec_rbd_parse(const char *path, struct spec_rbd *n, char *err, size_t errlen)
{
  const char *pool = path + 4, *slash, *image, *at;

  memset(n, 0, sizeof *n);
  if (!spec_is_rbd(path)) {
    snprintf(err, errlen, "'%s': not an rbd: name", path);
    return -1;
  }
  slash = strchr(pool, '/');
  if (slash == NULL) {
    snprintf(err, errlen, "'%s': expected rbd:POOL/IMAGE[@SNAP]", path);
    return -1;
  }
  image = slash + 1;
  at = strchr(image, '@');
  /* POOL/NAMESPACE/IMAGE is not supported (yet): refuse rather than guess. */
  if (strchr(image, '/') != NULL || memchr(pool, '@', (size_t)(slash - pool)) != NULL) {
    snprintf(err, errlen, "'%s': expected rbd:POOL/IMAGE[@SNAP] (no namespaces)", path);
    return -1;
  }
  if (at != NULL && strchr(at + 1, '@') != NULL) {
    snprintf(err, errlen, "'%s': more than one '@'", path);
    return -1;
  }
  if (take_name_part(path, "pool", pool, (size_t)(slash - pool), n->pool, err, errlen) < 0 ||
      take_name_part(path, "image", image, at ? (size_t)(at - image) : strlen(image), n->image,
                     err, errlen) < 0 ||
      (at != NULL &&
       take_name_part(path, "snapshot", at + 1, strlen(at + 1), n->snap, err, errlen) < 0))
    return -1;
  return 0;
}

/* Checks the rbd: options of S, parsed from TEXT. Returns 0 or -1 with ERR set. */
static int check_rbd(const char *text, const struct img_spec *s, char *err, size_t errlen)
{
  struct spec_rbd n;

  if (!spec_is_rbd(s->path)) {
    if (s->conf != NULL || s->id != NULL) {
      snprintf(err, errlen, "'%s': conf= and id= are for rbd: images", text);
      return -1;
    }
    return 0;
  }
  if (s->format != NULL || s->cache_none) {
    snprintf(err, errlen, "'%s': an rbd: image takes no %s", text,
             s->format != NULL ? "format=" : "cache=none (librbd's cache is always off)");
    return -1;
  }
  if (spec_rbd_parse(s->path, &n, err, errlen) < 0)
    return -1;
  if (s->id != NULL) {
    size_t len = strlen(s->id);

    if (strncmp(s->id, "client.", 7) == 0) {
      snprintf(err, errlen, "'%s': id= takes the user name without 'client.'", text);
      return -1;
    }
    if (len > 64 || strspn(s->id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                  "0123456789_.-") != len) {
      snprintf(err, errlen, "'%s': id= must be 1 to 64 letters, digits, '_', '.' or '-'", text);
      return -1;
    }
  }
  return 0;
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
    size_t skip = 7;
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
    else if (len > 5 && strncmp(opt, "conf=", 5) == 0 && (allowed & SPEC_RBD))
      dst = &s->conf, skip = 5;
    else if (len > 3 && strncmp(opt, "id=", 3) == 0 && (allowed & SPEC_RBD))
      dst = &s->id, skip = 3;
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
      *dst = strndup(opt + skip, len - skip);
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
  if ((allowed & SPEC_RBD) && check_rbd(text, s, err, errlen) < 0)
    goto err;
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

/* img-map: blockd-img map, where each virtual range of an image comes from:
 * the image itself (an overlay's owned clusters), a base of its chain, or no
 * image at all; data or zeroes; and where the bytes lie in which file.
 * --json prints qemu-img map --output=json's array, field for field. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "img.h"

/* The output, and the extent waiting to be merged with the next. */
struct map_out {
  bool json;              /* --json */
  bool printed;           /* an extent has been printed */
  struct fmt_layout cur;  /* pending extent; length 0 if none */
  uint64_t next;          /* end of the last extent reported */
};

/* Whether extent B continues A with nothing that would show differently
 * (qemu-img map merges on the same rule). */
static bool mergeable(const struct fmt_layout *a, const struct fmt_layout *b)
{
  if (a->length == 0 || a->offset + a->length != b->offset || a->data != b->data ||
      a->zero != b->zero ||
      a->present != b->present || a->depth != b->depth || (a->file == NULL) != (b->file == NULL))
    return false;
  return a->file == NULL ||
         (strcmp(a->file, b->file) == 0 && a->file_offset + a->length == b->file_offset);
}

/* Prints extent L in the chosen form. */
static void print_extent(struct map_out *m, const struct fmt_layout *l)
{
  if (m->json) {
    printf("%s{ \"start\": %" PRIu64 ", \"length\": %" PRIu64 ", \"depth\": %u,"
           " \"present\": %s, \"zero\": %s, \"data\": %s",
           m->printed ? ",\n" : "[", l->offset, l->length, l->depth,
           l->present ? "true" : "false", l->zero ? "true" : "false", l->data ? "true" : "false");
    if (l->file != NULL) {
      printf(", \"offset\": %" PRIu64 ", \"filename\": ", l->file_offset);
      img_json_string(l->file);
    }
    putchar('}');
  }
  else {
    if (!m->printed)
      printf("%-15s %-15s %-5s  %-5s  %-5s  %-15s %s\n", "Start", "Length", "Depth", "Where",
             "Reads", "Offset", "File");
    printf("%-15" PRIu64 " %-15" PRIu64 " %-5u  %-5s  %-5s  ", l->offset, l->length, l->depth,
           !l->present ? "none" : l->depth == 0 ? "owned" : "base",
           l->zero ? "zero" : "data");
    if (l->file != NULL) {
      printf("%-15" PRIu64 " ", l->file_offset);
      img_print_name(l->file);
    }
    else
      printf("%-15s -", "-");
    putchar('\n');
  }
  m->printed = true;
}

/* fmt_layout callback: merges L into the pending extent or prints that one. */
static int map_add(void *opaque, const struct fmt_layout *l)
{
  struct map_out *m = opaque;

  m->next = l->offset + l->length;
  if (mergeable(&m->cur, l)) {
    m->cur.length += l->length;
    return 0;
  }
  if (m->cur.length > 0)
    print_extent(m, &m->cur);
  m->cur = *l;
  return 0;
}

int img_map(int argc, char **argv)
{
  static const struct option opts[] = {
    { "json", no_argument, NULL, 'j' },
    { "format", required_argument, NULL, 'f' },
    { "allow-base-dir", required_argument, NULL, OPT_ALLOW_BASE_DIR },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  struct map_out m = { 0 };
  const char *format = NULL;
  char err[2048];
  struct fmt *f;
  int c;

  while ((c = getopt_long(argc, argv, "+f:h", opts, NULL)) != -1) {
    switch (c) {
    case 'j': m.json = true; break;
    case 'f': format = img_format_arg("map -f", optarg, EXIT_USAGE); break;
    case OPT_ALLOW_BASE_DIR: img_allow_base_dir(optarg, EXIT_USAGE); break;
    case 'h':
      printf("Usage: blockd-img map [-f FORMAT] [--json] [--allow-base-dir DIR]... FILE\n");
      return 0;
    default: img_die(EXIT_USAGE, "map: unknown option or missing argument: %s", argv[optind - 1]);
    }
  }
  if (argc - optind != 1)
    img_die(EXIT_USAGE, "map: expected one FILE");
  f = fmt_open(argv[optind], format, true, err, sizeof err);
  if (f == NULL)
    img_die(EXIT_FAILURE, "%s", err);
  for (uint64_t offset = 0; offset < f->size;) {
    uint64_t want = f->size - offset < EXTENT_WINDOW ? f->size - offset : EXTENT_WINDOW;
    int r = fmt_layout(f, want, offset, map_add, &m);

    if (r < 0)
      img_die(EXIT_FAILURE, "%s: at offset %" PRIu64 ": %s", f->path, offset, strerror(-r));
    if (m.next <= offset)
      img_die(EXIT_FAILURE, "%s: no extent reported at offset %" PRIu64, f->path, offset);
    offset = m.next;
  }
  if (m.cur.length > 0)
    print_extent(&m, &m.cur);
  if (m.json)
    printf("%s]\n", m.printed ? "" : "[");
  fmt_close(f);
  if (fflush(stdout) == EOF || ferror(stdout))
    img_die(EXIT_FAILURE, "standard output: write error");
  return 0;
}

/* img-check: blockd-img check, a consistency check of an overlay with
 * qemu-img check's report and exit status:
 *   0 no problem, 1 the check could not be completed, 2 corruptions,
 *   3 only leaked data (space, no harm), 63 the image has nothing this
 *   tool can check (raw, qcow2) or is of a version it does not know.
 * A bad command line exits 1 too, as in qemu-img: 2 must mean corruption.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "img.h"

#define CHECK_INCOMPLETE 1
#define CHECK_CORRUPT 2
#define CHECK_LEAKED 3
#define CHECK_UNSUPPORTED 63

/* Prints one finding, unless --json (then the counters tell). */
static void report(void *opaque, enum fmt_check_kind kind, const char *msg)
{
  static const char *const prefix[] = {
    [FMT_CHECK_CORRUPTION] = "ERROR: ",
    [FMT_CHECK_LEAK] = "Leaked: ",
    [FMT_CHECK_ERROR] = "Check failed: ",
    [FMT_CHECK_UNSUPPORTED] = "Unsupported: ",
    [FMT_CHECK_NOTE] = "",
  };
  const bool *json = opaque;

  if (*json) {
    if (kind != FMT_CHECK_NOTE)
      img_warn("%s%s", prefix[kind], msg);
    return;
  }
  fputs(prefix[kind], stdout);
  img_print_name(msg);
  putchar('\n');
}

/* Prints the counters as qemu-img check --output=json names them. */
static void print_json(const char *path, const struct fmt_check *c)
{
  printf("{\n    \"filename\": ");
  img_json_string(path);
  printf(",\n    \"format\": \"overlay\",\n    \"check-errors\": %" PRIu64
         ",\n    \"corruptions\": %" PRIu64 ",\n    \"leaks\": %" PRIu64
         ",\n    \"leaked-bytes\": %" PRIu64 ",\n    \"total-clusters\": %" PRIu64
         ",\n    \"allocated-clusters\": %" PRIu64 ",\n    \"image-end-offset\": %" PRIu64
         "\n}\n", c->check_errors, c->corruptions, c->leaks, c->leaked_bytes, c->total_clusters,
         c->allocated_clusters, c->end_offset);
}

/* Prints the summary qemu-img check prints. */
static void print_summary(const struct fmt_check *c)
{
  if (c->corruptions == 0 && c->leaks == 0 && c->check_errors == 0)
    printf("No errors were found on the image.\n");
  if (c->corruptions > 0)
    printf("\n%" PRIu64 " errors were found on the image.\n"
           "Data may be corrupted, or further writes to the image may corrupt it.\n",
           c->corruptions);
  if (c->leaks > 0)
    printf("\n%" PRIu64 " leaked clusters were found on the image (%" PRIu64 " bytes).\n"
           "This means waste of disk space, but no harm to data. Serving the overlay\n"
           "(a read-write open) gives the space back.\n",
           c->leaks, c->leaked_bytes);
  if (c->check_errors > 0)
    printf("\n%" PRIu64 " internal errors have occurred during the check.\n", c->check_errors);
  if (c->total_clusters > 0)
    printf("%" PRIu64 "/%" PRIu64 " = %.2f%% owned clusters\n", c->allocated_clusters,
           c->total_clusters, 100.0 * (double)c->allocated_clusters / (double)c->total_clusters);
  if (c->end_offset > 0)
    printf("Image end offset: %" PRIu64 "\n", c->end_offset);
}

int img_check(int argc, char **argv)
{
  static const struct option opts[] = {
    { "json", no_argument, NULL, 'j' },
    { "format", required_argument, NULL, 'f' },
    { "allow-base-dir", required_argument, NULL, OPT_ALLOW_BASE_DIR },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  bool json = false;
  struct fmt_check c = { .report = report, .opaque = &json };
  const char *format = NULL, *path;
  char err[2048];
  int opt;

  while ((opt = getopt_long(argc, argv, "+f:h", opts, NULL)) != -1) {
    switch (opt) {
    case 'j': json = true; break;
    case 'f': format = img_format_arg("check -f", optarg, CHECK_INCOMPLETE); break;
    case OPT_ALLOW_BASE_DIR: img_allow_base_dir(optarg, CHECK_INCOMPLETE); break;
    case 'h':
      printf("Usage: blockd-img check [-f FORMAT] [--json] [--allow-base-dir DIR]... FILE\n");
      return 0;
    default: img_die(CHECK_INCOMPLETE, "check: unknown option or missing argument: %s", argv[optind - 1]);
    }
  }
  if (argc - optind != 1)
    img_die(CHECK_INCOMPLETE, "check: expected one FILE");
  path = argv[optind];
  if (format == NULL) {
    format = fmt_detect(path, err, sizeof err);
    if (format == NULL)
      img_die(CHECK_INCOMPLETE, "%s", err);
  }
  if (strcmp(format, "overlay") != 0)
    img_die(CHECK_UNSUPPORTED, "%s: %s images have no metadata blockd-img can check%s", path,
            format, strcmp(format, "qcow2") == 0 ? " (qemu-img check can)" : "");

  overlay_check(path, &c);
  if (json)
    print_json(path, &c);
  else
    print_summary(&c);
  if (fflush(stdout) == EOF || ferror(stdout))
    img_die(CHECK_INCOMPLETE, "standard output: write error");
  if (c.unsupported)
    return CHECK_UNSUPPORTED;
  if (c.check_errors > 0)
    return CHECK_INCOMPLETE;
  if (c.corruptions > 0)
    return CHECK_CORRUPT;
  return c.leaks > 0 ? CHECK_LEAKED : 0;
}

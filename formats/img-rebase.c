/* img-rebase: blockd-img rebase, a base accepted again after it was copied
 * or touched without being changed (overlay-rebase.c checks it). */
#include <getopt.h>
#include <stdio.h>

#include "img.h"

int img_rebase(int argc, char **argv)
{
  static const struct option opts[] = {
    { "allow-base-dir", required_argument, NULL, OPT_ALLOW_BASE_DIR },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  struct overlay_rebase_result res;
  const char *newbase = NULL, *format = NULL;
  unsigned flags = 0;
  char err[8192];
  int c;

  while ((c = getopt_long(argc, argv, "+b:F:uh", opts, NULL)) != -1) {
    switch (c) {
    case 'b': newbase = optarg; break;
    case 'F': format = img_format_arg("rebase -F", optarg, EXIT_USAGE); break;
    case 'u': flags |= OVERLAY_REBASE_UNSAFE; break;
    case OPT_ALLOW_BASE_DIR: img_allow_base_dir(optarg, EXIT_USAGE); break;
    case 'h':
      printf("Usage: blockd-img rebase [-b NEWBASE [-F FORMAT]] [-u] [--allow-base-dir DIR]..."
             " OVERLAY\n");
      return 0;
    default: img_die(EXIT_USAGE, "rebase: unknown option or missing argument: %s", argv[optind - 1]);
    }
  }
  if (argc - optind != 1)
    img_die(EXIT_USAGE, "rebase: expected one OVERLAY");
  if (format != NULL && newbase == NULL)
    img_die(EXIT_USAGE, "rebase: -F FORMAT goes with -b NEWBASE");
  if (overlay_rebase(argv[optind], newbase, format, flags, &res, err, sizeof err) < 0)
    img_die(EXIT_FAILURE, "%s", err);
  img_print_name(argv[optind]);
  printf(": base ");
  img_print_name(res.base);
  printf(" accepted; checked: %s\n", res.verified);
  if (fflush(stdout) == EOF || ferror(stdout))
    img_die(EXIT_FAILURE, "standard output: write error");
  return 0;
}

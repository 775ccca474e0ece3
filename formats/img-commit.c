/* img-commit: blockd-img commit, an overlay's owned clusters written into
 * its base, the overlay emptied (overlay-commit.c has the order of writes
 * and what a crash leaves). */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>

#include "img.h"
#include "progress.h"

/* fmt_progress_fn for the bar. */
static void on_progress(void *opaque, uint64_t done, uint64_t total)
{
  struct progress *bar = opaque;

  bar->total = total;
  progress_update(bar, done);
}

int img_commit(int argc, char **argv)
{
  static const struct option opts[] = {
    { "progress", no_argument, NULL, 'p' },
    { "allow-base-dir", required_argument, NULL, OPT_ALLOW_BASE_DIR },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  struct overlay_commit_result res;
  struct progress bar;
  bool always = false;
  char err[8192], b[32];
  int c, r;

  while ((c = getopt_long(argc, argv, "+ph", opts, NULL)) != -1) {
    switch (c) {
    case 'p': always = true; break;
    case OPT_ALLOW_BASE_DIR: img_allow_base_dir(optarg, EXIT_USAGE); break;
    case 'h':
      printf("Usage: blockd-img commit [-p] [--allow-base-dir DIR]... OVERLAY\n");
      return 0;
    default: img_die(EXIT_USAGE, "commit: unknown option or missing argument: %s", argv[optind - 1]);
    }
  }
  if (argc - optind != 1)
    img_die(EXIT_USAGE, "commit: expected one OVERLAY");
  progress_start(&bar, 1, always); /* overlay_commit tells the total */
  r = overlay_commit(argv[optind], on_progress, &bar, &res, err, sizeof err);
  progress_end(&bar, r == 0);
  if (r < 0)
    img_die(EXIT_FAILURE, "%s", err);
  printf("Image committed: %" PRIu64 " clusters (%s of data) of ", res.clusters,
         img_human(res.bytes, b, sizeof b));
  img_print_name(argv[optind]);
  printf(" written into ");
  img_print_name(res.base);
  printf("; the overlay is empty\n");
  if (fflush(stdout) == EOF || ferror(stdout))
    img_die(EXIT_FAILURE, "standard output: write error");
  return 0;
}

/* blockd-img's private header: its commands, file by file, and the helpers
 * they share. Images are reached through format.h only. */
#ifndef BLOCKD_IMG_H
#define BLOCKD_IMG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cleanup.h"
#include "format.h"

#define EXIT_USAGE 2                /* bad command line (check: 1, see img-check.c) */
#define EXTENT_WINDOW (1ULL << 30)  /* virtual bytes asked of fmt_extents/fmt_layout at a time */

/* Option codes shared by the commands. */
enum { OPT_FORCE = 256, OPT_ALLOW_BASE_DIR };

/* img-util.c */
/* Prints "blockd-img: MESSAGE" and exits with STATUS (with a pointer to
 * --help when it is EXIT_USAGE). */
void img_die(int status, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
/* Prints "blockd-img: MESSAGE" on stderr. */
void img_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* --allow-base-dir DIR: bases may live beneath DIR too; dies with USAGE_STATUS if not a directory. */
void img_allow_base_dir(const char *dir, int usage_status);
/* -f/-F FORMAT: a format built in, or dies with USAGE_STATUS. */
const char *img_format_arg(const char *opt, const char *name, int usage_status);
/* Parses ARG, an rbd:POOL/IMAGE[@SNAP] name with [,conf=FILE][,id=USER],
 * into S (spec_free it); dies with EXIT_USAGE if it is malformed. */
void img_rbd_spec(const char *arg, struct img_spec *s);
/* Formats N bytes as "1.5 GiB" into BUF. */
const char *img_human(uint64_t n, char *buf, size_t len);
/* Writes S on stdout as a JSON string. */
void img_json_string(const char *s);
/* Writes the file name S on stdout with control characters as \xNN: names
 * come from image headers, and a terminal must not take them as commands. */
void img_print_name(const char *s);

/* img-map.c */
/* blockd-img map [-f FORMAT] [--json] FILE */
int img_map(int argc, char **argv);

/* img-check.c */
/* blockd-img check [-f FORMAT] [--json] FILE: qemu-img check's exit codes */
int img_check(int argc, char **argv);

/* img-commit.c */
/* blockd-img commit [-p] OVERLAY */
int img_commit(int argc, char **argv);

/* img-rebase.c */
/* blockd-img rebase [-b NEWBASE [-F FORMAT]] [-u] OVERLAY */
int img_rebase(int argc, char **argv);

#endif

/* Helpers shared by the fuzz targets: a private scratch directory per
 * process, and the small base images the corpora refer to.
 *
 * The corpora are made by make-corpus.py, which builds byte-identical base
 * files (same contents, same size, same mtime) so that the identity an
 * overlay header records matches the bases the fuzzer places beside it.
 * Change a constant or a builder here and make-corpus.py must follow.
 */
#ifndef BLOCKD_FUZZ_UTIL_H
#define BLOCKD_FUZZ_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Modification time of every base file (an overlay records it). */
#define FUZZ_MTIME_SEC 1234567890
#define FUZZ_MTIME_NSEC 123456789

/* base.raw: FUZZ_RAW_DATA bytes of fuzz_pattern, then a hole up to FUZZ_RAW_SIZE. */
#define FUZZ_RAW_SIZE (1024 * 1024)
#define FUZZ_RAW_DATA (256 * 1024)
/* small.raw: FUZZ_SMALL_SIZE bytes of fuzz_pattern, not a whole sector. */
#define FUZZ_SMALL_SIZE 5000

/* The tiny qcow2 of fuzz_qcow2_image: 512-byte clusters, 7 of them. */
#define FUZZ_QCOW2_CLUSTER 512
#define FUZZ_QCOW2_FILE_SIZE (7 * FUZZ_QCOW2_CLUSTER)
#define FUZZ_QCOW2_VIRTUAL_SIZE 65536

/* Byte I of the base files' contents. */
static inline uint8_t fuzz_pattern(uint64_t i)
{
  return (uint8_t)((i ^ (i >> 8) ^ (i >> 16)) * 0x9d + 1);
}

/* Creates a directory of our own under $TMPDIR, else /dev/shm (tmpfs: no
 * disk syncs), else /tmp, removed with its files at exit. Exits on failure. */
const char *fuzz_private_dir(const char *tag);
/* Writes NAME in DIR: LEN bytes of DATA, then extended (sparse) to SIZE if
 * larger; with FIXED_MTIME, stamped with FUZZ_MTIME_*. Returns 0 or -errno. */
int fuzz_write_file(const char *dir, const char *name, const void *data, size_t len,
                    uint64_t size, bool fixed_mtime);
/* Stamps DIR/NAME with FUZZ_MTIME_*. Returns 0 or -errno. */
int fuzz_set_mtime(const char *dir, const char *name);
/* Writes the tiny qcow2 v3 image into BUF (FUZZ_QCOW2_FILE_SIZE bytes): a
 * data cluster, a zero cluster, an unallocated one, another data cluster. */
void fuzz_qcow2_image(uint8_t buf[FUZZ_QCOW2_FILE_SIZE]);
/* Whether BLOCKD_FUZZ_VERBOSE is set: print why inputs are refused. */
bool fuzz_verbose(void);

#endif

/* bitmap: the overlay's map of owned clusters, in memory and on disk.
 *
 * Bits only ever go from 0 to 1.  Readers (the overlay's map path) test bits
 * with atomic loads and never lock; writers set bits with atomic ORs once the
 * cluster's data is in the file.  bitmap_sync() makes the on-disk copy catch up
 * with a strict order: data first (fdatasync), then the bitmap pages, then a
 * second fdatasync.  So a bit is never on disk before the data it vouches for,
 * and since bits only grow, a torn bitmap page is still a consistent state.
 */
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

#define PAGE_BYTES 4096u
#define PAGE_WORDS (PAGE_BYTES / 8)

/* Rounds N bits up to whole 4096-byte pages, in bytes. */
uint64_t bitmap_bytes(uint64_t nbits)
{
  uint64_t bytes = (nbits + 7) / 8;

  return (bytes + PAGE_BYTES - 1) / PAGE_BYTES * PAGE_BYTES;
}

/* Allocates an all-clear bitmap of NBITS bits. Returns 0 or -errno. */
int bitmap_init(struct bitmap *bm, uint64_t nbits)
{
  memset(bm, 0, sizeof *bm);
  bm->nbits = nbits;
  bm->bytes = bitmap_bytes(nbits);
  bm->pages = bm->bytes / PAGE_BYTES;
  bm->live = calloc(1, bm->bytes ? bm->bytes : 1);
  bm->durable = calloc(1, bm->bytes ? bm->bytes : 1);
  bm->stage = calloc(1, bm->bytes ? bm->bytes : 1);
  bm->dirty = calloc(1, bm->pages ? bm->pages : 1);
  bm->snap = calloc(1, bm->pages ? bm->pages : 1);
  if (bm->live == NULL || bm->durable == NULL || bm->stage == NULL || bm->dirty == NULL ||
      bm->snap == NULL) {
    bitmap_free(bm);
    return -ENOMEM;
  }
  return 0;
}

/* Frees the bitmap's memory. */
void bitmap_free(struct bitmap *bm)
{
  free(bm->live);
  free(bm->durable);
  free(bm->stage);
  free(bm->dirty);
  free(bm->snap);
  memset(bm, 0, sizeof *bm);
}

/* Reads the on-disk bitmap at OFFSET of FD. Returns 0 or -errno. */
int bitmap_load(struct bitmap *bm, int fd, uint64_t offset)
{
  size_t words = bm->bytes / 8;
  int r = file_pread_full(fd, bm->live, bm->bytes, offset);

  if (r < 0)
    return r;
  for (size_t i = 0; i < words; i++)
    bm->live[i] = le64toh(bm->live[i]);
  /* Bits past NBITS are padding: ignore whatever a writer left there. */
  for (uint64_t b = bm->nbits; b < (uint64_t)words * 64; b++)
    bm->live[b / 64] &= ~(1ULL << (b % 64));
  memcpy(bm->durable, bm->live, bm->bytes);
  return 0;
}

/* Tests bit I of the live map (owned, maybe not yet on disk). */
bool bitmap_test(const struct bitmap *bm, uint64_t i)
{
  return (__atomic_load_n(&bm->live[i / 64], __ATOMIC_ACQUIRE) >> (i % 64)) & 1;
}

/* Returns true if every bit in [FIRST, LAST] is set, in the durable map if
 * DURABLE, else in the live map. */
bool bitmap_all(const struct bitmap *bm, uint64_t first, uint64_t last, bool durable)
{
  const uint64_t *w = durable ? bm->durable : bm->live;

  for (uint64_t i = first; i <= last;) {
    uint64_t word = __atomic_load_n(&w[i / 64], __ATOMIC_ACQUIRE);
    if (i % 64 == 0 && last - i >= 63) {
      if (word != ~0ULL)
        return false;
      i += 64;
      continue;
    }
    if (!((word >> (i % 64)) & 1))
      return false;
    i++;
  }
  return true;
}

/* Returns true if no bit in [FIRST, LAST] is set in the live map. */
bool bitmap_none(const struct bitmap *bm, uint64_t first, uint64_t last)
{
  for (uint64_t i = first; i <= last;) {
    uint64_t word = __atomic_load_n(&bm->live[i / 64], __ATOMIC_ACQUIRE);
    if (i % 64 == 0 && last - i >= 63) {
      if (word != 0)
        return false;
      i += 64;
      continue;
    }
    if ((word >> (i % 64)) & 1)
      return false;
    i++;
  }
  return true;
}

/* Returns the first index >= I, at most END, whose bit differs from bit I,
 * and bit I in *SET.  Bits only grow, so a run found set stays set; a run
 * found clear may gain bits meanwhile (a concurrent write). */
uint64_t bitmap_run_end(const struct bitmap *bm, uint64_t i, uint64_t end, bool *set)
{
  bool v = bitmap_test(bm, i);

  *set = v;

  for (i++; i < end; i++) {
    if (i % 64 == 0 && end - i >= 64) {
      uint64_t word = __atomic_load_n(&bm->live[i / 64], __ATOMIC_ACQUIRE);
      if (word == (v ? ~0ULL : 0)) {
        i += 63;
        continue;
      }
    }
    if (bitmap_test(bm, i) != v)
      return i;
  }
  return end;
}

/* Sets bit I in the live map and marks its page for the next sync. Call it
 * only once the data the bit vouches for has been written to the file. */
void bitmap_set(struct bitmap *bm, uint64_t i)
{
  uint64_t mask = 1ULL << (i % 64);

  if (__atomic_fetch_or(&bm->live[i / 64], mask, __ATOMIC_ACQ_REL) & mask)
    return;
  /* Order matters for bitmap_sync: bit, then dirty page, then generation. */
  __atomic_store_n(&bm->dirty[i / 8 / PAGE_BYTES], 1, __ATOMIC_RELEASE);
  __atomic_fetch_add(&bm->set_gen, 1, __ATOMIC_ACQ_REL);
}

/* Returns true if the on-disk bitmap holds every bit set so far. */
bool bitmap_clean(const struct bitmap *bm)
{
  return __atomic_load_n(&bm->set_gen, __ATOMIC_ACQUIRE) ==
         __atomic_load_n(&bm->synced_gen, __ATOMIC_ACQUIRE);
}

/* Counts the bits set in the live map. */
uint64_t bitmap_count(const struct bitmap *bm)
{
  uint64_t n = 0;

  for (size_t i = 0; i < bm->bytes / 8; i++)
    n += (uint64_t)__builtin_popcountll(__atomic_load_n(&bm->live[i], __ATOMIC_ACQUIRE));
  return n;
}

/* Makes FD's data and then the bitmap at OFFSET durable. The caller
 * serializes calls (two syncs writing pages out of order could put an older
 * page on disk after a newer one). Returns 0 or -errno. */
int bitmap_sync(struct bitmap *bm, int fd, uint64_t offset)
{
  uint64_t gen = __atomic_load_n(&bm->set_gen, __ATOMIC_ACQUIRE);
  int r = 0;

  if (gen == __atomic_load_n(&bm->synced_gen, __ATOMIC_ACQUIRE))
    return fdatasync(fd) == -1 ? -errno : 0;

  /* Snapshot the dirty pages. A page's flag is cleared before its words are
   * read, so a bit set after the read leaves the page dirty for next time. */
  for (size_t p = 0; p < bm->pages; p++) {
    if (!__atomic_exchange_n(&bm->dirty[p], 0, __ATOMIC_ACQ_REL))
      continue;
    for (size_t w = p * PAGE_WORDS; w < (p + 1) * PAGE_WORDS; w++)
      bm->stage[w] = __atomic_load_n(&bm->live[w], __ATOMIC_ACQUIRE);
    bm->snap[p] = 1;
  }

  /* Every snapshotted bit was set after its data was written: this
   * fdatasync makes that data durable before any bit reaches the disk. */
  if (fdatasync(fd) == -1) {
    r = -errno;
    goto out;
  }
  for (size_t p = 0; p < bm->pages; p++) {
    if (!bm->snap[p])
      continue;
    uint64_t page[PAGE_WORDS];
    for (size_t w = 0; w < PAGE_WORDS; w++)
      page[w] = htole64(bm->stage[p * PAGE_WORDS + w]);
    r = file_pwrite_full(fd, page, PAGE_BYTES, offset + p * PAGE_BYTES);
    if (r < 0)
      goto out;
  }
  if (fdatasync(fd) == -1) {
    r = -errno;
    goto out;
  }
  for (size_t p = 0; p < bm->pages; p++)
    if (bm->snap[p])
      for (size_t w = p * PAGE_WORDS; w < (p + 1) * PAGE_WORDS; w++)
        __atomic_store_n(&bm->durable[w], bm->stage[w], __ATOMIC_RELEASE);
  __atomic_store_n(&bm->synced_gen, gen, __ATOMIC_RELEASE);
out:
  /* On failure the snapshot's pages are dirty again for the next try. */
  for (size_t p = 0; p < bm->pages; p++) {
    if (bm->snap[p] && r < 0)
      __atomic_store_n(&bm->dirty[p], 1, __ATOMIC_RELEASE);
    bm->snap[p] = 0;
  }
  return r;
}

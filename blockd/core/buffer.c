/* Payload buffers, recycled per worker.
 *
 * A request's buffer lives from its header to its reply, on one worker
 * thread. Allocating 256 KiB..32 MiB buffers from malloc each time means
 * mmap, page faults and munmap per request (a profile of nbdcopy reading
 * showed 6% of blockd's time there), so each worker keeps a small cache of
 * freed buffers by power-of-two size class, bounded in bytes, and emptied
 * once the worker has been idle for a second.
 *
 * The bound must hold what a busy client cycles through: a guest writing
 * 1 MiB blocks through QEMU keeps up to 16 requests of up to several MiB in
 * flight, and with a 16 MiB bound most of its buffers went back to malloc
 * and came back as fresh pages, so the server spent 3.6x the CPU per write
 * (36% of it copying the socket's bytes into cold memory) and its heap
 * grew with time.
 */
#include <malloc.h>
#include <stdlib.h>

#include "core.h"

/* Size class of LEN: buffers of 4 KiB << class. */
static unsigned size_class(size_t len)
{
  unsigned c = 0;

  while (((size_t)BUFFER_MIN << c) < len)
    c++;
  return c;
}

/* Returns a buffer of at least LEN bytes, page-aligned, or NULL. */
void *buffer_alloc(struct buffer_cache *bc, size_t len)
{
  unsigned c = size_class(len);
  void *buf;

  bc->busy = true;
  if (c < BUFFER_CLASSES && bc->free[c] != NULL) {
    buf = bc->free[c];
    bc->free[c] = *(void **)buf;
    bc->cached -= (size_t)BUFFER_MIN << c;
    return buf;
  }
  /* Page-aligned, so that O_DIRECT can use the same buffers. */
  if (posix_memalign(&buf, BUFFER_MIN, (size_t)BUFFER_MIN << c) != 0)
    return NULL;
  return buf;
}

/* Gives back a buffer of LEN bytes (as asked of buffer_alloc); NULL is fine. */
void buffer_free(struct buffer_cache *bc, void *buf, size_t len)
{
  unsigned c = size_class(len);
  size_t size = (size_t)BUFFER_MIN << c;

  if (buf == NULL)
    return;
  bc->busy = true;
  if (c >= BUFFER_CLASSES || bc->cached + size > BUFFER_CACHE_MAX) {
    free(buf);
    return;
  }
  *(void **)buf = bc->free[c];
  bc->free[c] = buf;
  bc->cached += size;
}

/* Frees every cached buffer. */
void buffer_cache_clear(struct buffer_cache *bc)
{
  for (unsigned c = 0; c < BUFFER_CLASSES; c++) {
    while (bc->free[c] != NULL) {
      void *next = *(void **)bc->free[c];
      free(bc->free[c]);
      bc->free[c] = next;
    }
  }
  bc->cached = 0;
}

void buffer_cache_tick(struct buffer_cache *bc)
{
  if (!bc->busy && bc->cached > 0)
    buffer_cache_clear(bc);
  bc->busy = false;
}

void buffers_init(void)
{
  /* glibc raises its mmap threshold each time a large mmapped block is
   * freed, after which such blocks come from the heap and a freed one stays
   * in the process. Fixed, every payload buffer of 128 KiB or more is its
   * own mapping, returned to the kernel when freed. */
  mallopt(M_MMAP_THRESHOLD, 128 * 1024);
}

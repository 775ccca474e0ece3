/* mem: the guest's memory, as the front-end shares it (SET_MEM_TABLE,
 * ADD_MEM_REG, REM_MEM_REG), and the translation of the addresses a guest
 * or a front-end hands us into our own.
 *
 * Every address comes from the guest or the front-end, so every range is
 * checked to lie whole inside one region (a buffer that crosses two is
 * split). A table is reference counted: requests in flight keep the table
 * their buffers were mapped with, so a new SET_MEM_TABLE while rings run
 * never unmaps memory io_uring may still be writing into.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vhost.h"

/* A new empty table with one reference, or NULL. */
struct vhost_mem *mem_new(void)
{
  struct vhost_mem *m = calloc(1, sizeof *m);

  if (m != NULL)
    m->refs = 1;
  return m;
}

/* Takes a reference (any worker: the rings of a device run on several). */
void mem_get(struct vhost_mem *m)
{
  __atomic_add_fetch(&m->refs, 1, __ATOMIC_RELAXED);
}

/* Unmaps region R. */
static void unmap(struct vhost_region *r)
{
  if (r->map != NULL)
    munmap(r->map, r->map_len);
  r->map = NULL;
}

/* Drops a reference; the last one unmaps everything. */
void mem_put(struct vhost_mem *m)
{
  /* The last one sees every other holder's use of the mappings. */
  if (m == NULL || __atomic_sub_fetch(&m->refs, 1, __ATOMIC_ACQ_REL) > 0)
    return;
  for (unsigned i = 0; i < m->nregions; i++)
    unmap(&m->regions[i]);
  free(m);
}

/* A new table with M's regions, sharing no mapping with M: each region is
 * mapped again (mremap of a shared mapping keeps the same pages). */
struct vhost_mem *mem_copy(const struct vhost_mem *m)
{
  struct vhost_mem *n = mem_new();

  if (n == NULL)
    return NULL;
  n->unsealed_logged = m->unsealed_logged;
  for (unsigned i = 0; i < m->nregions; i++) {
    struct vhost_region *r = &n->regions[i];
    void *map;

    *r = m->regions[i];
    map = mremap(m->regions[i].map, 0, r->map_len, MREMAP_MAYMOVE);
    if (map == MAP_FAILED) {
      r->map = NULL;
      n->nregions = i;
      mem_put(n);
      return NULL;
    }
    r->hva = (char *)map + (r->hva - (char *)r->map);
    r->map = map;
    n->nregions = i + 1;
  }
  return n;
}

/* Whether [A, A+ALEN) and [B, B+BLEN) overlap (lengths non-zero, no wrap). */
static bool overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
  return a < b + blen && b < a + alen;
}

/* Maps region R shared through FD into M. */
int mem_add(struct vhost_mem *m, const struct vhost_user_region *r, int fd, char *err,
            size_t errlen)
{
  struct vhost_region *n;
  struct stat st;
  uint64_t len;
  void *map;
  int seals;

  if (m->nregions == VHOST_MAX_REGIONS) {
    snprintf(err, errlen, "more than %d memory regions", VHOST_MAX_REGIONS);
    goto fail;
  }
  /* Checked arithmetic: every end below must be representable. */
  if (r->memory_size == 0 || r->guest_phys_addr > UINT64_MAX - r->memory_size ||
      r->userspace_addr > UINT64_MAX - r->memory_size ||
      r->mmap_offset > (uint64_t)INT64_MAX - r->memory_size ||
      r->mmap_offset + r->memory_size > SIZE_MAX) {
    snprintf(err, errlen, "memory region with impossible geometry");
    goto fail;
  }
  for (unsigned i = 0; i < m->nregions; i++) {
    const struct vhost_region *o = &m->regions[i];

    if (overlap(o->gpa, o->size, r->guest_phys_addr, r->memory_size) ||
        overlap(o->qva, o->size, r->userspace_addr, r->memory_size)) {
      snprintf(err, errlen, "memory regions overlap");
      goto fail;
    }
  }
  /* Only shared memory: a region must be a memfd, a file or hugetlbfs,
   * never something that could block or grow on access (a FIFO, a socket). */
  if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
    snprintf(err, errlen, "memory region fd is not a regular file");
    goto fail;
  }
  if ((uint64_t)st.st_size < r->mmap_offset + r->memory_size) {
    snprintf(err, errlen, "memory region beyond the end of its file");
    goto fail;
  }
  /* A file the front-end can shrink would turn our next look at a ring
   * into SIGBUS. QEMU's and rust-vmm's memfds come sealed; seal one that
   * is not if it allows, and say so once for one that cannot be. */
  seals = fcntl(fd, F_GET_SEALS);
  if (seals < 0 || !(seals & F_SEAL_SHRINK)) {
    if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK) == -1 && !m->unsealed_logged) {
      log_msg("a guest memory region that is not a sealed memfd: a front-end that shrinks "
              "it can crash blockd (QEMU: memory-backend-memfd keeps seal=on)");
      m->unsealed_logged = true;
    }
  }
  /* From offset 0, as libvhost-user does: mmap offsets must be page (or
   * huge page) aligned, and a region's mmap_offset often is not. */
  len = r->mmap_offset + r->memory_size;
  map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
  if (map == MAP_FAILED) {
    snprintf(err, errlen, "mmap of a memory region: %s", strerror(errno));
    goto fail;
  }
  close(fd);
  n = &m->regions[m->nregions++];
  n->gpa = r->guest_phys_addr;
  n->size = r->memory_size;
  n->qva = r->userspace_addr;
  n->map = map;
  n->map_len = len;
  n->hva = (char *)map + r->mmap_offset;
  return 0;
fail:
  close(fd);
  return -1;
}

/* Removes and unmaps the region of M that R describes. */
int mem_remove(struct vhost_mem *m, const struct vhost_user_region *r)
{
  for (unsigned i = 0; i < m->nregions; i++) {
    struct vhost_region *o = &m->regions[i];

    /* The spec matches on these three; QEMU sends mmap_offset 0. */
    if (o->gpa == r->guest_phys_addr && o->qva == r->userspace_addr &&
        o->size == r->memory_size) {
      unmap(o);
      m->regions[i] = m->regions[--m->nregions];
      return 0;
    }
  }
  return -1;
}

/* Our address of [ADDR, ADDR+LEN) in a region whose start is at field
 * offset BASE of struct vhost_region (gpa or qva); NULL if not whole inside one. */
static void *lookup(const struct vhost_mem *m, uint64_t addr, uint64_t len, bool by_qva)
{
  for (unsigned i = 0; i < m->nregions; i++) {
    const struct vhost_region *r = &m->regions[i];
    uint64_t start = by_qva ? r->qva : r->gpa;

    if (addr >= start && addr - start < r->size && len <= r->size - (addr - start))
      return r->hva + (addr - start);
  }
  return NULL;
}

/* Our address of the front-end's [QVA, QVA+LEN), all in one region. */
void *mem_qva(const struct vhost_mem *m, uint64_t qva, uint64_t len)
{
  return lookup(m, qva, len, true);
}

/* Our address of guest-physical [GPA, GPA+LEN), all in one region. */
void *mem_gpa(const struct vhost_mem *m, uint64_t gpa, uint64_t len)
{
  return lookup(m, gpa, len, false);
}

/* Appends guest-physical [GPA, GPA+LEN) to IOV, split at region edges. */
int mem_gpa_iov(const struct vhost_mem *m, uint64_t gpa, uint64_t len, struct iovec *iov,
                unsigned *n, unsigned max)
{
  if (gpa > UINT64_MAX - len)
    return -1;
  while (len > 0) {
    const struct vhost_region *r = NULL;

    for (unsigned i = 0; i < m->nregions; i++)
      if (gpa >= m->regions[i].gpa && gpa - m->regions[i].gpa < m->regions[i].size) {
        r = &m->regions[i];
        break;
      }
    if (r == NULL || *n == max)
      return -1;
    uint64_t in = r->size - (gpa - r->gpa);
    uint64_t take = len < in ? len : in;

    iov[*n].iov_base = r->hva + (gpa - r->gpa);
    iov[*n].iov_len = take;
    (*n)++;
    gpa += take;
    len -= take;
  }
  return 0;
}

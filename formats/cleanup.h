/* Scoped cleanup helpers shared by every part of blockd. */
#ifndef BLOCKD_CLEANUP_H
#define BLOCKD_CLEANUP_H

#include <stddef.h>
#include <stdlib.h>
#include <unistd.h>

static inline void cleanup_free(void *ptr) { free(*(void **)ptr); }
static inline void cleanup_close(int *fd)
{
  if (*fd >= 0)
    close(*fd);
}

/* Frees the pointer when it goes out of scope. */
#define CLEANUP_FREE __attribute__((cleanup(cleanup_free)))
/* Closes the file descriptor (if >= 0) when it goes out of scope. */
#define CLEANUP_CLOSE __attribute__((cleanup(cleanup_close)))

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
/* The struct of TYPE whose MEMBER is at PTR. */
#define container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

#endif

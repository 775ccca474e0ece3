/* libFuzzer entry point for the handshake and the request parser.
 *
 * Each input is what a client sends: it is written into one end of a
 * socketpair and blockd serves the other end exactly as it serves a real
 * client (handshake, then transmission on a private io_uring) over a small
 * sparse raw file. A thread drains blockd's replies so that it never blocks.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "nbd.h"

/* What the client thread sends. */
struct fuzz_client {
  int fd;               /* client end of the socketpair */
  const uint8_t *data;  /* the input */
  size_t size;
};

/* Sends the input, half-closes, then reads replies until blockd closes. */
static void *client_thread(void *arg)
{
  struct fuzz_client *c = arg;
  char buf[65536];
  size_t off = 0;

  while (off < c->size) {
    ssize_t n = send(c->fd, c->data + off, c->size - off, MSG_NOSIGNAL);
    if (n <= 0)
      break;
    off += (size_t)n;
  }
  shutdown(c->fd, SHUT_WR);
  while (recv(c->fd, buf, sizeof buf, 0) > 0)
    ;
  return NULL;
}

/* Creates the export and the blocking pool, once. */
static void setup(void)
{
  char path[] = "/tmp/blockd-fuzz.XXXXXX", err[256];
  int fd = mkstemp(path);
  struct fmt *f;

  if (fd == -1 || ftruncate(fd, 1024 * 1024) == -1) {
    perror("blockd-fuzz: temporary file");
    exit(1);
  }
  close(fd);
  f = fmt_open(path, "raw", false, err, sizeof err);
  unlink(path);
  if (f == NULL || export_add("", f) < 0 || pool_start(1) < 0) {
    fprintf(stderr, "blockd-fuzz: setup: %s\n", err);
    exit(1);
  }
  log_init("blockd-fuzz");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  static bool ready;
  struct fuzz_client c = { .data = data, .size = size };
  pthread_t t;
  int sv[2];

  if (!ready) {
    setup();
    ready = true;
  }
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1) {
    perror("socketpair");
    abort();
  }
  c.fd = sv[0];
  if (pthread_create(&t, NULL, client_thread, &c) != 0)
    abort();
  nbd_serve_one(sv[1]); /* closes sv[1] */
  pthread_join(t, NULL);
  close(sv[0]);
  return 0;
}

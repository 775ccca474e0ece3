/* libFuzzer entry point for the NBD negotiation alone.
 *
 * Each input is what a client sends during the handshake. It is written into
 * one end of a socketpair while blockd's handshake() runs on the other, with
 * no deadline; a client thread drains the replies so that neither side
 * blocks.
 * Unlike fuzz-server, nothing goes on to transmission: every execution is
 * option parsing. Two exports are registered, "" (writable) and "second"
 * (read-only), so that names, LIST and per-export meta contexts matter.
 */
#include <pthread.h>
#include <semaphore.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz-util.h"
#include "nbd.h"

/* The client: one thread for the whole run, handed each input in turn
 * (creating a thread per input costs more than the parsing). */
static struct {
  sem_t go, done;       /* input ready; input sent and replies drained */
  int fd;               /* client end of the socketpair */
  const uint8_t *data;  /* the input */
  size_t size;
} fuzz_client;

/* For each input: sends it, half-closes, then reads replies until blockd
 * closes its end. */
static void *client_thread(void *arg)
{
  char buf[65536];

  (void)arg;
  for (;;) {
    size_t off = 0;

    while (sem_wait(&fuzz_client.go) == -1)
      ;
    while (off < fuzz_client.size) {
      ssize_t n = send(fuzz_client.fd, fuzz_client.data + off, fuzz_client.size - off,
                       MSG_NOSIGNAL);
      if (n <= 0)
        break;
      off += (size_t)n;
    }
    shutdown(fuzz_client.fd, SHUT_WR);
    while (recv(fuzz_client.fd, buf, sizeof buf, 0) > 0)
      ;
    sem_post(&fuzz_client.done);
  }
  return NULL;
}

/* Opens DIR/NAME, a sparse raw file of SIZE bytes, as an export image. */
static struct fmt *open_raw(const char *dir, const char *name, uint64_t size, bool readonly)
{
  char path[4096], err[4352];
  struct fmt *f;

  if (fuzz_write_file(dir, name, NULL, 0, size, false) < 0) {
    perror("fuzz-handshake: temporary file");
    exit(1);
  }
  snprintf(path, sizeof path, "%s/%s", dir, name);
  f = fmt_open(path, "raw", readonly, err, sizeof err);
  if (f == NULL) {
    fprintf(stderr, "fuzz-handshake: %s\n", err);
    exit(1);
  }
  return f;
}

/* Registers the two exports, once. */
static void setup(void)
{
  const char *dir = fuzz_private_dir("fuzz-hs");
  pthread_t t;

  if (export_add("", open_raw(dir, "a.raw", 1024 * 1024, false)) < 0 ||
      export_add("second", open_raw(dir, "b.raw", 65536 + 5, true)) < 0) {
    fprintf(stderr, "fuzz-handshake: cannot register the exports\n");
    exit(1);
  }
  log_init("fuzz-handshake");
  if (sem_init(&fuzz_client.go, 0, 0) == -1 || sem_init(&fuzz_client.done, 0, 0) == -1 ||
      pthread_create(&t, NULL, client_thread, NULL) != 0 || pthread_detach(t) != 0) {
    fprintf(stderr, "fuzz-handshake: cannot start the client thread\n");
    exit(1);
  }
}

/* libFuzzer calls this once per input. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  static bool ready;
  struct conn_params p;
  int sv[2], r;

  if (!ready) {
    setup();
    ready = true;
  }
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1) {
    perror("socketpair");
    abort();
  }
  fuzz_client.fd = sv[0];
  fuzz_client.data = data;
  fuzz_client.size = size;
  sem_post(&fuzz_client.go);
  memset(&p, 0, sizeof p);
  r = handshake(sv[1], 0, false, &p);
  /* Entering transmission must name a registered export. */
  if (r == 1 && (p.exp == NULL || export_find(p.exp->name, strlen(p.exp->name)) != p.exp))
    abort();
  close(sv[1]);
  while (sem_wait(&fuzz_client.done) == -1)
    ;
  close(sv[0]);
  return 0;
}

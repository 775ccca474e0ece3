"""blockd when clients vanish with requests in flight: 60 connections each
fire a burst of reads, writes, flushes and block status and close at once
(half of them with a TCP-style reset, SO_LINGER 0; some in the middle of a
write payload); blockd survives, leaks no descriptors, its memory settles,
and it still serves correctly."""
import random
import socket
import struct
import time

import nbdraw as N
from itest import served, check, main, vmrss, nfds, check_no_fd_leak, check_still_serves, MiB

SIZE = 64 * MiB


def run():
    """60 bursts, each cut off by a close; then checks blockd."""
    rng = random.Random(7)
    with served(size=SIZE) as (b, disk):
        fds = nfds(b.proc.pid)
        for i in range(60):
            structured = bool(i % 2)
            c = N.Client(b.sock).handshake(structured=structured,
                                            meta=["base:allocation"] if structured else ())
            if i % 4 < 2:
                c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            try:
                for k in range(12):
                    off = rng.randrange(0, SIZE - MiB)
                    op = rng.choice(["read", "write", "flush", "status", "trim"])
                    if op == "read":
                        c.send_request(N.CMD_READ, off, MiB)
                    elif op == "write":
                        c.send_request(N.CMD_WRITE, off, MiB, data=b"\x5a" * MiB)
                    elif op == "flush":
                        c.send_request(N.CMD_FLUSH)
                    elif op == "trim":
                        c.send_request(N.CMD_TRIM, off, MiB)
                    elif structured:
                        c.send_request(N.CMD_BLOCK_STATUS, 0, SIZE)
                if i % 3 == 0:
                    # Half a write: header and some of the payload.
                    c.send(struct.pack(">IHHQQI", N.REQUEST_MAGIC, 0, N.CMD_WRITE, 999, 0, MiB)
                           + b"\x11" * 1000)
            except OSError:
                pass
            c.close()
            check(b.proc.poll() is None, "blockd died after abrupt close %d" % i)
        check_no_fd_leak(b, fds, "after 60 abrupt closes")
        time.sleep(0.5)
        rss = vmrss(b.proc.pid)
        print("RSS after 60 abrupt closes: %d MiB" % (rss // MiB))
        check(rss < 256 * MiB, "blockd RSS %d MiB after abrupt closes" % (rss // MiB))
        check_still_serves(b, "after abrupt closes")
        b.stop()


main(run)

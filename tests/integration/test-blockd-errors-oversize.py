"""blockd: a write of exactly the advertised maximum (32 MiB) works, a write
longer than that gets a clean disconnect and a log line (its payload cannot be
skipped safely), and blockd keeps serving others."""
import os
import struct

import nbdraw as N
from itest import served, check, main, wait_until, MiB, nfds, check_no_fd_leak

MAX = 32 * MiB


def run():
    """A maximal write works; one byte more drops the connection."""
    with served(size=64 * MiB) as (b, disk):
        fds = nfds(b.proc.pid)
        c = N.Client(b.sock).handshake(structured=True)
        check(c.block_size() == (1, 4096, MAX),
              "NBD_INFO_BLOCK_SIZE %r, expected (1, 4096, %d)" % (c.block_size(), MAX))
        data = os.urandom(MAX)
        r = c.write(0, data)
        check(r.error == 0, "write of 32 MiB: %r" % r)
        r = c.read(0, MAX)
        check(r.error == 0 and r.data == data, "read of 32 MiB: %r" % r)

        for structured in (False, True):
            c2 = N.Client(b.sock).handshake(structured=structured)
            before = len(b.logtext())
            c2.send(struct.pack(">IHHQQI", N.REQUEST_MAGIC, 0, N.CMD_WRITE, 7, 0, MAX + 1)
                    + b"\x44" * 4096)
            check(c2.wait_closed(10),
                  "blockd kept the connection open after a write of 32 MiB + 1")
            c2.close()
            check(wait_until(lambda: len(b.logtext()) > before, 10),
                  "blockd logged nothing about the oversized write")
            print("blockd logged: %s" % b.logtext()[before:].strip())
            check(b.proc.poll() is None, "blockd died after an oversized write")

        r = c.read(0, 4096)
        check(r.error == 0 and r.data == data[:4096],
              "first connection broken after another's oversized write: %r" % r)
        c.disconnect()
        check_no_fd_leak(b, fds, "after all clients closed")
        b.stop()


main(run)

"""Discard on an overlay over a non-zero base reads back as zeros, before and
after a blockd restart (SIGTERM) and after a kill -9 that follows a flush;
the overlay's allocated bytes fall accordingly."""
import os
import random
import signal

from fmtlib import TempDir, allocated, check, img, require
from testlib import Blockd


def restart(tmp, *args):
    """A new Blockd in TMP; a SIGKILLed one leaves its socket behind."""
    sock = os.path.join(tmp, "nbd.sock")
    if os.path.exists(sock):
        os.unlink(sock)
    return Blockd(*args, tmp=tmp)

require("qemu-img")
rng = random.Random(7)
SIZE = 16 << 20
M = 1 << 20

with TempDir() as d:
    j = lambda name: os.path.join(d, name)  # noqa: E731
    base = rng.randbytes(SIZE)
    with open(j("base.img"), "wb") as f:
        f.write(base)
    img("create", "-b", j("base.img"), j("ws.ovl"))
    model = bytearray(base)

    b = restart(d, j("ws.ovl"))
    with b:
        h = b.connect()
        # The overlay owns 8 MiB of data, flushed.
        data = rng.randbytes(8 * M)
        h.pwrite(data, 0)
        model[0:8 * M] = data
        h.flush()
        before = allocated(j("ws.ovl"))
        check(before >= 8 * M, "overlay allocated %d after writing 8 MiB" % before)
        # Discards: aligned over owned data, unaligned across clusters, and
        # over clusters the overlay never owned (base data must not resurface).
        for off, length in [(0, 4 * M), (5 * M + 12345, 700000), (10 * M, 3 * M),
                            (14 * M - 1000, 5000)]:
            h.trim(length, off)
            model[off:off + length] = bytes(length)
        for off, length in [(0, 4 * M), (5 * M + 12345, 700000), (10 * M, 3 * M),
                            (14 * M - 1000, 5000)]:
            check(h.pread(length, off) == bytes(length), "discarded %d+%d not zero" % (off, length))
        check(h.pread(SIZE, 0) == model, "export differs from model after discard")
        h.flush()
        after = allocated(j("ws.ovl"))
        print("overlay allocated: %d bytes after 8 MiB of writes, %d after discards" % (before, after))
        check(after <= before - 4 * M + 256 * 1024,
              "allocated bytes did not fall by the 4 MiB discarded: %d -> %d" % (before, after))
        h.shutdown()
        b.stop()

    b = restart(d, j("ws.ovl"))
    with b:
        h = b.connect()
        check(h.pread(SIZE, 0) == model, "export differs from model after restart")
        # More discards, flushed, then kill -9: they must survive.
        h.trim(M, 8 * M)
        model[8 * M:9 * M] = bytes(M)
        h.trim(100, 15 * M + 3)
        model[15 * M + 3:15 * M + 103] = bytes(100)
        h.flush()
        b.stop(signal.SIGKILL, expect=None)
    b = restart(d, j("ws.ovl"))
    with b:
        h = b.connect()
        check(h.pread(SIZE, 0) == model, "flushed discards lost after kill -9")
        h.shutdown()
        b.stop()
    with open(j("base.img"), "rb") as f:
        check(f.read() == base, "base changed")
    print("discarded ranges read zeros live, after restart and after kill -9; base unchanged")

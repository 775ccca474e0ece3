"""blockd: large structured reads go file -> pipe -> socket by page reference
(IORING_OP_SPLICE); every case that cannot (unaligned ranges that need one
pipe page more than a pipe holds, more reads in flight than pipes, a file
cut short under blockd, ranges an overlay takes from its base, simple
replies) must give the same bytes as the copy path, and holes still come
back as OFFSET_HOLE chunks."""
import os
import random
import shutil
import subprocess
import tempfile

import nbd

import nbdraw as N
from itest import served, check, main, MiB
from testlib import Blockd

SIZE = 16 * MiB


def pipes_of(pid):
    """How many pipe descriptors process PID holds."""
    n = 0
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, fd)).startswith("pipe:"):
                n += 1
        except FileNotFoundError:
            pass
    return n


def pipe_max():
    with open("/proc/sys/fs/pipe-max-size") as f:
        return int(f.read())


def run():
    rng = random.Random(12)
    with served(size=SIZE) as (b, disk):
        data = bytearray(rng.randbytes(SIZE))
        data[4 * MiB:6 * MiB] = bytes(2 * MiB)          # left a hole below
        with open(disk, "r+b") as f:
            f.write(data[:4 * MiB])
            f.seek(6 * MiB)
            f.write(data[6 * MiB:])
        data = bytes(data)

        h = b.connect(structured=True)
        # Page-aligned reads of 64 KiB .. 1 MiB: the spliced path.
        for off, n in ((0, MiB), (MiB, 65536), (8 * MiB, MiB), (SIZE - MiB, MiB)):
            check(h.pread(n, off) == data[off:off + n], "aligned read %d+%d: wrong data" % (off, n))
        if pipe_max() >= MiB:
            check(pipes_of(b.proc.pid) > 0,
                  "no pipe in blockd after aligned 1 MiB structured reads: not spliced")
        # Unaligned and odd lengths, across the hole's edges.
        for _ in range(200):
            n = rng.choice([65536, 65537, MiB, MiB - 1, 1000000, 300000])
            off = rng.randrange(0, SIZE - n)
            check(h.pread(n, off) == data[off:off + n], "read %d+%d: wrong data" % (off, n))
        # More reads in flight than a connection has pipes.
        bufs = []
        for i in range(32):
            off = rng.randrange(0, SIZE // 4096 - 256) * 4096
            buf = nbd.Buffer(MiB)
            bufs.append((off, buf, h.aio_pread(buf, off)))
        while h.aio_in_flight() > 0:
            h.poll(-1)
        for off, buf, cookie in bufs:
            check(h.aio_command_completed(cookie), "concurrent read at %d: not completed" % off)
            check(buf.to_bytearray() == data[off:off + MiB],
                  "concurrent read at %d: wrong data" % off)
        h.shutdown()

        # Holes: a 12-byte OFFSET_HOLE chunk, no data.
        c = N.Client(b.sock).handshake(structured=True)
        for off, n in ((4 * MiB, MiB), (4 * MiB + 65536, 65536)):
            r = c.read(off, n)
            types = [t for t, _, _ in r.chunks]
            check(r.error == 0 and r.data == bytes(n) and types == [N.REPLY_TYPE_OFFSET_HOLE],
                  "read of the hole at %d+%d: %r" % (off, n, r))
        r = c.read(4 * MiB - 65536, MiB)
        check(r.error == 0 and r.data == data[4 * MiB - 65536:5 * MiB - 65536],
              "read across data and hole: %r" % r)
        c.disconnect()

        # Simple replies: the copy path, same bytes.
        h = b.connect(structured=False)
        check(h.pread(MiB, 2 * MiB) == data[2 * MiB:3 * MiB], "simple 1 MiB read: wrong data")
        h.shutdown()

        # The file cut short under blockd: what lies past its end reads as
        # zeroes, as the copy path reads it; the connection goes on.
        os.truncate(disk, 10 * MiB + 12345)
        h = b.connect(structured=True)
        want = data[10 * MiB:10 * MiB + 12345] + bytes(MiB - 12345)
        check(h.pread(MiB, 10 * MiB) == want, "read across the cut file's end: wrong data")
        check(h.pread(MiB, 12 * MiB) == bytes(MiB), "read past the cut file's end: not zeroes")
        check(h.pread(MiB, 0) == data[:MiB], "read after the cut: wrong data")
        h.shutdown()
        b.stop()

    # An overlay: ranges it owns, ranges its base gives, and both in one
    # read (those take the copy path).
    img = os.environ.get("BLOCKD_IMG")
    if not img:
        print("BLOCKD_IMG not set: the overlay part was not run")
        return
    tmp = tempfile.mkdtemp(prefix="blockd-test.")
    try:
        base = os.path.join(tmp, "base.img")
        ws = os.path.join(tmp, "ws.ovl")
        bdata = rng.randbytes(4 * MiB)
        with open(base, "wb") as f:
            f.write(bdata)
        subprocess.run([img, "create", "-b", base, ws], check=True, stdout=subprocess.DEVNULL)
        with Blockd("--export", "ws=%s,format=overlay" % ws, tmp=tmp) as b:
            h = b.connect(name="ws")
            own = rng.randbytes(MiB)
            h.pwrite(own, MiB)
            want = bdata[:MiB] + own + bdata[2 * MiB:]
            for off, n in ((0, MiB), (MiB, MiB), (MiB // 2, MiB), (MiB + 4096, MiB), (3 * MiB, MiB)):
                check(h.pread(n, off) == want[off:off + n], "overlay read %d+%d: wrong data" % (off, n))
            h.shutdown()
            b.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


main(run)

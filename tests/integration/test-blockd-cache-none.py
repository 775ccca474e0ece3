"""blockd cache=none: an export's own file is read and written around the
host's page cache (O_DIRECT) where requests are aligned, or for reads of
64 KiB or more through it by splice with what they brought in dropped
behind them, so that a guest's disk is not cached twice; an export beside
it without cache=none fills the cache as before (the measurement can tell
them apart). Unaligned requests still work, through the cache. An overlay
with cache=none keeps its own data out of the cache too."""
import os
import random
import shutil
import subprocess
import tempfile
import time

import nbd

from itest import check, main, MiB
from testlib import Blockd, skip

WRITE = 16 * MiB
PAGE = os.sysconf("SC_PAGE_SIZE")


def cached(path):
    """Bytes of PATH in the page cache (fincore, util-linux)."""
    out = subprocess.run(["fincore", "-n", "-b", "-o", "RES", path], check=True,
                         capture_output=True, text=True).stdout
    return int(out.split()[0])


def drop(path):
    """Evicts PATH's clean pages from the page cache."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def move(h, data):
    """Writes DATA at 0 in 1 MiB requests, flushes, reads it back."""
    for off in range(0, len(data), MiB):
        h.pwrite(data[off:off + MiB], off)
    h.flush()
    got = b"".join(h.pread(MiB, off) for off in range(0, len(data), MiB))
    check(got == data, "data read back differs from what was written")


def run():
    if shutil.which("fincore") is None:
        skip("fincore (util-linux) not installed")
    rng = random.Random(7)
    tmp = tempfile.mkdtemp(prefix="blockd-test.")
    try:
        a, b_, base, ws = (os.path.join(tmp, n) for n in ("a.img", "b.img", "base.img", "ws.ovl"))
        for p in (a, b_):
            with open(p, "wb") as f:
                f.truncate(2 * WRITE)
        try:
            os.close(os.open(a, os.O_RDWR | os.O_DIRECT))
        except OSError as e:
            skip("the file system of %s refuses O_DIRECT: %s" % (tmp, e))
        with Blockd("--export", "a=%s,cache=none" % a, "--export", "b=%s" % b_, tmp=tmp) as srv:
            data = rng.randbytes(WRITE)
            for name, path in (("a", a), ("b", b_)):
                drop(path)
                h = srv.connect(name=name)
                move(h, data)
                h.shutdown()
            # Large reads of a cache=none export go through the page cache
            # by splice, and blockd drops what they brought in behind them,
            # the rest within its once-a-second sweeps (two after the last).
            deadline = time.monotonic() + 5
            while cached(a) > 0.05 * 2 * WRITE and time.monotonic() < deadline:
                time.sleep(0.2)
            ca, cb = cached(a), cached(b_)
            print("page cache after %d MiB written and read: cache=none %d KiB, default %d KiB"
                  % (2 * WRITE // MiB, ca // 1024, cb // 1024))
            check(ca <= 0.05 * 2 * WRITE,
                  "cache=none export: %d bytes of its file cached, more than 5%% of %d moved"
                  % (ca, 2 * WRITE))
            check(cb >= 0.5 * WRITE,
                  "default export: only %d bytes cached: the measurement cannot tell" % cb)

            # Aligned writes (O_DIRECT) over ranges that spliced reads and the
            # kernel's read-ahead just brought into the cache: what is read
            # next is what was written, never those pages.
            h = srv.connect(name="a")
            for rnd in range(3):
                new = rng.randbytes(4 * MiB)
                for off in range(0, len(new), MiB):
                    check(h.pread(MiB, off + MiB) is not None, "read failed")
                    h.pwrite(new[off:off + MiB], off)
                got = b"".join(h.pread(MiB, off) for off in range(0, len(new), MiB))
                check(got == new, "cache=none: a read after an aligned write saw older data")
                data = new + data[len(new):]
            # The same while spliced reads of that range are still in flight
            # on another connection (their pages held in the socket).
            w = srv.connect(name="a")
            for rnd in range(40):
                off = rng.randrange(0, 3) * MiB
                bufs = [nbd.Buffer(MiB) for _ in range(4)]
                for j, buf in enumerate(bufs):
                    h.aio_pread(buf, off + (j % 2) * MiB)
                new = rng.randbytes(2 * MiB)
                w.pwrite(new, off)
                while h.aio_in_flight() > 0:
                    h.poll(-1)
                data = data[:off] + new + data[off + 2 * MiB:]
                check(w.pread(2 * MiB, off) == new and h.pread(2 * MiB, off) == new,
                      "cache=none: a read after a write racing spliced reads saw older data")
            w.shutdown()
            h.shutdown()

            # Unaligned requests go through the cache, with the same bytes.
            h = srv.connect(name="a")
            piece = rng.randbytes(1000)
            h.pwrite(piece, 4097)
            want = data[:4097] + piece + data[5097:3 * MiB]
            check(h.pread(3 * MiB, 0) == want, "unaligned write on cache=none: wrong data")
            check(h.pread(333, 4090) == want[4090:4423], "unaligned read on cache=none: wrong data")
            h.shutdown()
            srv.stop()

        # An overlay: its own clusters around the cache.
        with open(base, "wb") as f:
            f.write(rng.randbytes(WRITE))
        subprocess.run([os.environ["BLOCKD_IMG"], "create", "-b", base, ws], check=True,
                       stdout=subprocess.DEVNULL)
        with Blockd("--export", "ws=%s,cache=none" % ws, tmp=tmp) as srv:
            drop(ws)
            h = srv.connect(name="ws")
            mine = rng.randbytes(WRITE // 2)
            for off in range(0, len(mine), MiB):
                h.pwrite(mine[off:off + MiB], off)
            h.pwrite(b"x" * 100, WRITE // 2 + 1000)     # a copy-up of one cluster
            h.flush()
            with open(base, "rb") as f:
                bdata = f.read()
            want = mine + bdata[WRITE // 2:WRITE // 2 + 1000] + b"x" * 100 + \
                bdata[WRITE // 2 + 1100:]
            got = b"".join(h.pread(MiB, off) for off in range(0, WRITE, MiB))
            check(got == want, "cache=none overlay: wrong data")
            h.shutdown()
            srv.stop()
            cw = cached(ws)
            print("overlay page cache after %d MiB written: %d KiB" % (WRITE // 2 // MiB, cw // 1024))
            check(cw <= 0.05 * WRITE, "cache=none overlay: %d bytes of its file cached" % cw)

        # Bad values are refused up front.
        r = subprocess.run([os.environ["BLOCKD"], "--export", "a=%s,cache=nothing" % a],
                           capture_output=True, text=True)
        check(r.returncode == 2 and "cache=default|none" in r.stderr,
              "cache=nothing: exit %d, %r" % (r.returncode, r.stderr))
        r = subprocess.run([os.environ["BLOCKD"], "--cache=off", a], capture_output=True, text=True)
        check(r.returncode == 2 and "--cache 'off'" in r.stderr,
              "--cache=off: exit %d, %r" % (r.returncode, r.stderr))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


main(run)

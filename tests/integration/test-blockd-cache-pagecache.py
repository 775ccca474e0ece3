"""blockd: NBD_CMD_CACHE really prefetches (fadvise WILLNEED): after the
file's pages are dropped from the page cache, a CACHE of 8 MiB makes exactly
that range resident (fincore), and the data reads back unchanged."""
import os
import shutil
import subprocess

import nbdraw as N
from itest import served, check, main, skip, wait_until, MiB


def resident(path):
    """Bytes of PATH in the page cache, from fincore."""
    out = subprocess.run(["fincore", "--bytes", "--raw", "--noheadings", "-o", "RES", path],
                         capture_output=True, text=True, check=True).stdout
    return int(out.strip())


def run():
    """Drop the cache, CACHE a range, check it is resident."""
    if shutil.which("fincore") is None:
        skip("fincore (util-linux) not installed")
    data = os.urandom(16 * MiB)
    with served(size=16 * MiB) as (b, disk):
        with open(disk, "r+b") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        if resident(disk) > MiB:
            skip("this file system keeps pages cached after POSIX_FADV_DONTNEED")
        c = N.Client(b.sock).handshake()
        check(c.eflags & N.FLAG_SEND_CACHE, "SEND_CACHE not advertised")
        r = c.request(N.CMD_CACHE, 4 * MiB, 8 * MiB)
        check(r.error == 0, "CACHE: %s" % N.errname(r.error))
        got = wait_until(lambda: resident(disk) >= 8 * MiB, 5)
        res = resident(disk)
        print("resident after CACHE of 8 MiB: %d KiB" % (res // 1024))
        check(got, "CACHE of 8 MiB left only %d KiB in the page cache" % (res // 1024))
        r = c.read(4 * MiB, 8 * MiB)
        check(r.error == 0 and r.data == data[4 * MiB:12 * MiB], "read after CACHE: wrong data")
        c.disconnect()
        b.stop()


main(run)

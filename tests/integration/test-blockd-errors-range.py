"""blockd: requests beyond the end of the export get the errors proto.md
names (EINVAL for read, trim, cache, block status; ENOSPC for write and write
zeroes), on simple and structured connections, and the connection keeps
working after each error."""
import os

import nbdraw as N
from itest import served, check, expect_error, main, MiB

SIZE = 1 * MiB


def still_works(c, what):
    """A read and a write after an error must succeed."""
    r = c.read(0, 4096)
    expect_error("read after %s" % what, r.error, 0)
    check(r.data == bytes(4096), "read after %s returned wrong data" % what)
    r = c.write(4096, b"\x5a" * 512)
    expect_error("write after %s" % what, r.error, 0)
    r = c.read(4096, 512)
    check(r.error == 0 and r.data == b"\x5a" * 512, "readback after %s" % what)
    c.write(4096, bytes(512))


def run(structured):
    """Out-of-range requests on a simple or structured connection."""
    with served(size=SIZE) as (b, disk):
        c = N.Client(b.sock).handshake(structured=structured,
                                        meta=["base:allocation"] if structured else ())
        check(c.size == SIZE, "export size %d, expected %d" % (c.size, SIZE))
        mode = "structured" if structured else "simple"
        reads = [(SIZE - 512, 1024), (SIZE, 1), (SIZE + 4096, 4096),
                 (1 << 63, 512), ((1 << 64) - 512, 1024)]
        for off, n in reads:
            what = "%s read %d+%d" % (mode, off, n)
            r = c.read(off, n)
            expect_error(what, r.error, N.EINVAL)
            check(r.data is None, what + ": data with an error")
            if structured:
                # proto.md: with structured replies a read never gets a simple reply.
                check(r.structured and any(t == N.REPLY_TYPE_ERROR for t, _, _ in r.chunks),
                      what + ": not an NBD_REPLY_TYPE_ERROR chunk")
            still_works(c, what)
        writes = [(SIZE - 512, 1024), (SIZE, 1), (SIZE + 4096, 4096)]
        for off, n in writes:
            what = "%s write %d+%d" % (mode, off, n)
            expect_error(what, c.write(off, b"\xff" * n).error, N.ENOSPC)
            still_works(c, what)
        what = "%s write wrapping past 2^64" % mode
        expect_error(what, c.write((1 << 64) - 512, b"\xff" * 1024).error,
                     (N.ENOSPC, N.EINVAL))
        still_works(c, what)
        # proto.md: trim beyond the end is EINVAL, write zeroes is ENOSPC.
        for cmd, name, err in ((N.CMD_TRIM, "trim", N.EINVAL),
                               (N.CMD_WRITE_ZEROES, "write_zeroes", N.ENOSPC)):
            what = "%s %s beyond the end" % (mode, name)
            expect_error(what, c.request(cmd, SIZE - 512, 1024).error, err)
            still_works(c, what)
        what = "%s cache beyond the end" % mode
        expect_error(what, c.request(N.CMD_CACHE, SIZE, 4096).error, N.EINVAL)
        still_works(c, what)
        if structured:
            what = "block status beyond the end"
            expect_error(what, c.request(N.CMD_BLOCK_STATUS, SIZE, 4096).error, N.EINVAL)
            still_works(c, what)
        c.disconnect()
        b.stop()
        check(os.path.getsize(disk) == SIZE,
              "%s: file size changed to %d" % (mode, os.path.getsize(disk)))
        with open(disk, "rb") as f:
            f.seek(SIZE - 512)
            check(f.read() == bytes(512), "%s: the last sector was written" % mode)


main(lambda: (run(structured=False), run(structured=True)))

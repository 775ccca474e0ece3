"""blockd and request lengths: a read longer than the maximum payload
(32 MiB) gets EINVAL or EOVERFLOW and the connection lives on; trims, zeroes
and caches longer than it are not a reason to disconnect (proto.md) and, when
they succeed, really cover the whole range; zero-length requests get an
answer (any) and the connection lives on."""
import nbdraw as N
from itest import served, check, expect_error, main, MiB

SIZE = 128 * MiB
MAX = 32 * MiB


def still_works(c, what):
    """A read after an error must still succeed."""
    r = c.read(0, 512)
    check(r.error == 0 and r.data is not None, "read after %s: %r" % (what, r))


def run(structured):
    """Long and zero lengths on a simple or structured connection."""
    mode = "structured" if structured else "simple"
    with served(size=SIZE) as (b, disk):
        c = N.Client(b.sock).handshake(structured=structured)
        for n in (MAX + 1, 2 * MAX, 0xFFFFFFFF):
            what = "%s read of %d bytes" % (mode, n)
            r = c.read(0, n)
            expect_error(what, r.error, (N.EINVAL, N.EOVERFLOW))
            still_works(c, what)

        # 100 MiB of data, then a 100 MiB trim / zero in one request each.
        for cmd, name in ((N.CMD_TRIM, "trim"), (N.CMD_WRITE_ZEROES, "write zeroes")):
            for i in range(100):
                c.write(i * MiB + 4096, b"\x5a" * 4096)
            what = "%s %s of 100 MiB" % (mode, name)
            r = c.request(cmd, 0, 100 * MiB)
            expect_error(what, r.error, (0, N.EINVAL, N.EOVERFLOW))
            still_works(c, what)
            if r.error == 0:
                for i in (0, 33, 64, 99):
                    rr = c.read(i * MiB + 4096, 4096)
                    check(rr.data == bytes(4096), "%s: MiB %d not zeroed" % (what, i))
        what = "%s cache of 100 MiB" % mode
        expect_error(what, c.request(N.CMD_CACHE, 0, 100 * MiB).error, (0, N.EINVAL, N.EOVERFLOW))
        still_works(c, what)

        for cmd in (N.CMD_READ, N.CMD_WRITE, N.CMD_TRIM, N.CMD_WRITE_ZEROES, N.CMD_CACHE):
            what = "%s zero-length command %d" % (mode, cmd)
            r = c.request(cmd, 4096, 0, data=b"")
            check(r.data in (None, b""), "%s: data %r" % (what, r.data))
            still_works(c, what)
        c.disconnect()
        check(b.proc.poll() is None, "blockd died")
        b.stop()


main(lambda: (run(False), run(True)))

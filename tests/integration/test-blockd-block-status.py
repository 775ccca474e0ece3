"""blockd with libnbd: base:allocation block status follows writes, trims and
zeroes (HOLE|ZERO over holes, 0 over data), REQ_ONE gives exactly one
extent, and extents never run past the request or the export."""
import errno

import nbd

from itest import served, check, main, extents, status_at, MiB

SIZE = 32 * MiB
HZ = nbd.STATE_HOLE | nbd.STATE_ZERO


def check_shape(ext, offset, count, what):
    """Extents start at OFFSET, are nonempty, known flags, inside the export."""
    check(ext, "%s: no extents" % what)
    check(ext[0][0] == offset, "%s: extents start at %d" % (what, ext[0][0]))
    for o, n, f in ext:
        check(n > 0, "%s: zero-length extent %r" % (what, ext))
        check(f & ~HZ == 0, "%s: unknown flags %r" % (what, ext))
        check(f != nbd.STATE_HOLE, "%s: HOLE without ZERO on a raw file %r" % (what, ext))
    end = ext[-1][0] + ext[-1][1]
    check(end <= SIZE, "%s: extents run past the export: %r" % (what, ext))


def run():
    """Block status over an empty file, after writes, trims and zeroes."""
    with served(size=SIZE) as (b, disk):
        h = b.connect()
        check(h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION), "base:allocation not negotiated")

        ext = extents(h, SIZE, 0)
        check_shape(ext, 0, SIZE, "empty file")
        check(all(f == HZ for _, _, f in ext), "empty file not all holes: %r" % ext)

        h.pwrite(b"\xab" * MiB, 4 * MiB)
        h.pwrite(b"\xcd" * 65536, 10 * MiB)
        ext = extents(h, SIZE, 0)
        check_shape(ext, 0, SIZE, "after writes")
        for off, want in ((0, HZ), (4 * MiB, 0), (5 * MiB - 1, 0), (6 * MiB, HZ),
                          (10 * MiB, 0), (10 * MiB + 65535, 0), (12 * MiB, HZ),
                          (SIZE - 1, HZ)):
            if off < ext[-1][0] + ext[-1][1]:
                check(status_at(ext, off) == want,
                      "after writes: flags at %d are %d, expected %d: %r"
                      % (off, status_at(ext, off), want, ext))

        ext = extents(h, MiB, 4 * MiB + 4096)
        check_shape(ext, 4 * MiB + 4096, MiB, "query in the middle of data")
        check(ext[0][2] == 0, "query in the middle of data: %r" % ext)

        for off in (0, 4 * MiB, 4 * MiB + 12345, 10 * MiB):
            ext = extents(h, SIZE - off, off, nbd.CMD_FLAG_REQ_ONE)
            check(len(ext) == 1, "REQ_ONE at %d gave %d extents: %r" % (off, len(ext), ext))
            check(ext[0][0] == off and ext[0][1] <= SIZE - off,
                  "REQ_ONE at %d: %r" % (off, ext))
        ext = extents(h, SIZE, 0, nbd.CMD_FLAG_REQ_ONE)
        check(ext == [(0, 4 * MiB, HZ)], "REQ_ONE at 0: %r, expected [(0, 4 MiB, 3)]" % ext)

        h.trim(MiB, 4 * MiB)
        h.zero(65536, 10 * MiB)
        ext = extents(h, SIZE, 0)
        check_shape(ext, 0, SIZE, "after trim and zero")
        check(all(f == HZ for _, _, f in ext), "after trim and zero: not all holes: %r" % ext)

        # A request ending past the export is the client's error (EINVAL).
        h.set_strict_mode(0)
        try:
            extents(h, 2 * MiB, SIZE - MiB)
            raise AssertionError("block status past the end succeeded")
        except nbd.Error as e:
            check(e.errnum == errno.EINVAL, "block status past the end: %s" % e)
        ext = extents(h, 4096, SIZE - 4096)
        check(ext == [(SIZE - 4096, 4096, HZ)], "last block: %r" % ext)
        h.shutdown()
        b.stop()


main(run)

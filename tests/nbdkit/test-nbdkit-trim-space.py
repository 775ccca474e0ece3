"""Space goes back to the host through the plugin as through blockd: st_blocks
of the image drop after a trim and after a zero that may punch, not after a
zero with NO_HOLE; every range reads back as zeroes, and block status reports
the hole."""
import os
import tempfile

from plugin_server import PluginServer

import nbd

from testlib import allocated, check, sparse_file

MiB = 1 << 20


def extents(h, length, offset):
    """[(offset, length, flags)] of base:allocation over the range."""
    out = []

    def cb(meta, off, ents, err):
        if meta == nbd.CONTEXT_BASE_ALLOCATION:
            pos = off
            for i in range(0, len(ents), 2):
                out.append((pos, ents[i], ents[i + 1]))
                pos += ents[i]
        return 0

    h.block_status(length, offset, cb)
    return out


def all_holes(h, length, offset):
    return all(f & nbd.STATE_HOLE for o, n, f in extents(h, length, offset)
               if o < offset + length)


with tempfile.TemporaryDirectory(prefix="nbdkit-test.") as tmp:
    img = sparse_file(os.path.join(tmp, "disk.img"), 32 * MiB)
    with PluginServer(img, tmp=tmp) as srv:
        h = srv.connect()
        h.pwrite(os.urandom(24 * MiB), 0)
        h.flush()
        full = allocated(img)
        check(full >= 24 * MiB, "24M written but %d allocated" % full)
        check(not all_holes(h, 8 * MiB, 0), "written data reported as a hole")

        h.trim(8 * MiB, 0)
        h.flush()
        after_trim = allocated(img)
        print("allocated: written %d, after 8M trim %d" % (full, after_trim))
        check(full - after_trim >= 8 * MiB, "trim gave back %d" % (full - after_trim))
        check(h.pread(8 * MiB, 0) == bytes(8 * MiB), "trimmed range does not read zeroes")
        check(all_holes(h, 8 * MiB, 0), "trimmed range not reported as a hole")

        # Zero with NO_HOLE: reads zeroes, the client asked to keep the space.
        h.zero(4 * MiB, 8 * MiB, nbd.CMD_FLAG_NO_HOLE)
        h.flush()
        check(h.pread(4 * MiB, 8 * MiB) == bytes(4 * MiB), "NO_HOLE zero does not read zeroes")
        check(allocated(img) >= after_trim - 64 * 1024, "NO_HOLE zero punched a hole")

        # Zero that may trim (no NO_HOLE), and a fast zero: both punch on raw.
        h.zero(4 * MiB, 12 * MiB)
        h.zero(4 * MiB, 16 * MiB, nbd.CMD_FLAG_FAST_ZERO | nbd.CMD_FLAG_FUA)
        h.flush()
        after_zero = allocated(img)
        print("allocated after 8M of punching zeroes: %d" % after_zero)
        check(after_trim - after_zero >= 8 * MiB,
              "zeroes gave back %d" % (after_trim - after_zero))
        check(h.pread(8 * MiB, 12 * MiB) == bytes(8 * MiB), "zeroed range does not read zeroes")
        h.shutdown()
        srv.stop()
print("PASS")

"""blockd: NBD_CMD_WRITE_ZEROES reads back as zeroes with and without
NO_HOLE; without NO_HOLE it frees the blocks, with NO_HOLE it keeps them
allocated; FAST_ZERO succeeds where zeroing is a punch, and never leaves the
data half-done."""
import errno

import nbd

from itest import served, check, main, allocated, nbd_errno, MiB

SIZE = 32 * MiB


def fill(h, off, n, byte):
    """Writes N bytes of BYTE at OFF through H."""
    h.pwrite(bytes([byte]) * n, off)


def run():
    """Every flavour of write zeroes."""
    with served(size=SIZE) as (b, disk):
        h = b.connect()
        check(h.can_zero() and h.can_fast_zero(), "can_zero/can_fast_zero false")

        # Without NO_HOLE: zeroes, and the space comes back.
        fill(h, 0, 8 * MiB, 0x11)
        h.flush()
        a0 = allocated(disk)
        h.zero(8 * MiB, 0)
        h.flush()
        check(h.pread(8 * MiB, 0) == bytes(8 * MiB), "zero: not zeroes")
        check(a0 - allocated(disk) >= 8 * MiB - 65536,
              "zero without NO_HOLE freed %d bytes of 8 MiB" % (a0 - allocated(disk)))

        # With NO_HOLE: zeroes, and the space stays allocated.
        fill(h, 8 * MiB, 8 * MiB, 0x22)
        h.flush()
        a0 = allocated(disk)
        h.zero(8 * MiB, 8 * MiB, nbd.CMD_FLAG_NO_HOLE)
        h.flush()
        check(h.pread(8 * MiB, 8 * MiB) == bytes(8 * MiB), "zero NO_HOLE: not zeroes")
        check(allocated(disk) >= a0 - 65536,
              "zero with NO_HOLE freed %d bytes" % (a0 - allocated(disk)))

        # Unaligned zeroes (inside blocks) must not touch the neighbours.
        fill(h, 16 * MiB, MiB, 0x33)
        h.zero(1000, 16 * MiB + 100)
        h.zero(5000, 16 * MiB + 70000, nbd.CMD_FLAG_NO_HOLE)
        want = bytearray(b"\x33" * MiB)
        want[100:1100] = bytes(1000)
        want[70000:75000] = bytes(5000)
        check(h.pread(MiB, 16 * MiB) == bytes(want), "unaligned zeroes: wrong data")

        # FAST_ZERO: punching a raw file is fast, so it must succeed.
        fill(h, 20 * MiB, 4 * MiB, 0x44)
        h.zero(4 * MiB, 20 * MiB, nbd.CMD_FLAG_FAST_ZERO)
        check(h.pread(4 * MiB, 20 * MiB) == bytes(4 * MiB), "FAST_ZERO: not zeroes")

        # FAST_ZERO with NO_HOLE: success (zeroes) or ENOTSUP (data untouched).
        fill(h, 24 * MiB, 4 * MiB, 0x55)
        err = nbd_errno(h.zero, 4 * MiB, 24 * MiB, nbd.CMD_FLAG_FAST_ZERO | nbd.CMD_FLAG_NO_HOLE)
        got = h.pread(4 * MiB, 24 * MiB)
        if err == 0:
            check(got == bytes(4 * MiB), "FAST_ZERO|NO_HOLE succeeded but not zeroes")
        else:
            check(err == errno.ENOTSUP, "FAST_ZERO|NO_HOLE: errno %d, expected ENOTSUP" % err)
            check(got == b"\x55" * (4 * MiB), "FAST_ZERO|NO_HOLE failed but changed data")

        # FUA combined with every zero flavour.
        for flags in (0, nbd.CMD_FLAG_NO_HOLE):
            fill(h, 28 * MiB, MiB, 0x66)
            h.zero(MiB, 28 * MiB, flags | nbd.CMD_FLAG_FUA)
            with open(disk, "rb") as f:
                f.seek(28 * MiB)
                check(f.read(MiB) == bytes(MiB), "zero FUA flags %d: file not zeroed" % flags)

        # Zeroes past the end: ENOSPC (proto.md).
        h.set_strict_mode(0)
        err = nbd_errno(h.zero, 2 * MiB, SIZE - MiB)
        check(err == errno.ENOSPC, "zero past the end: errno %d, expected ENOSPC" % err)
        h.shutdown()
        b.stop()


main(run)

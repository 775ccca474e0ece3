"""blockd with a 4 TiB export whose size is not a multiple of 4096: writes
and reads straddling the 2^32 and 2^40 boundaries and the odd last bytes
land where they should (no 32-bit truncation anywhere), block status over
4 GiB - 1 bytes of hole is one exact answer, and the file stays sparse."""
import os

import nbdraw as N
from itest import served, check, main, allocated, MiB

SIZE = (4 << 40) + 1234          # 4 TiB + 1234 bytes


def run():
    """Boundary writes on a huge sparse export, checked by NBD and in the file."""
    with served(size=SIZE) as (b, disk):
        for structured in (False, True):
            c = N.Client(b.sock).handshake(structured=structured,
                                            meta=["base:allocation"] if structured else ())
            check(c.size == SIZE, "size %d, expected %d" % (c.size, SIZE))
            places = [(1 << 32) - 100, (1 << 33) + 7, (1 << 40) - 3000, (3 << 40) + 12345,
                      SIZE - 5000]
            for i, off in enumerate(places):
                data = bytes([(i * 37 + structured) & 0xFF or 1]) * 5000
                r = c.write(off, data)
                check(r.error == 0, "write at %d: %s" % (off, N.errname(r.error)))
                r = c.read(off - 100, 5100)
                check(r.error == 0 and r.data == bytes(100) + data,
                      "read back at %d: wrong data" % off)
                with open(disk, "rb") as f:
                    f.seek(off)
                    check(f.read(5000) == data, "the file at %d lacks the write" % off)
                # Each write is trimmed again below, so the same offset modulo
                # 2^32 must read as zeroes: otherwise something truncated it.
                low = off & 0xFFFFFFFF
                if off >= 1 << 32 and low + 5000 <= 1 << 32:
                    r = c.read(low, 5000)
                    check(r.data == bytes(5000),
                          "write at %d also hit %d (32-bit truncation)" % (off, low))
                check(c.request(N.CMD_TRIM, off, 5000).error == 0, "trim at %d" % off)
            r = c.read(SIZE - 1234, 1234)
            check(r.error == 0 and len(r.data) == 1234, "read of the odd tail: %r" % r)
            r = c.write(SIZE - 1, b"\x99")
            check(r.error == 0, "write of the last byte: %s" % N.errname(r.error))
            r = c.write(SIZE - 1, b"\x99\x99")
            check(r.error == N.ENOSPC, "write one past the end: %s" % N.errname(r.error))
            if structured:
                cid = c.contexts["base:allocation"]
                r = c.request(N.CMD_BLOCK_STATUS, 1 << 41, 0xFFFFFFFF)
                check(r.error == 0, "block status of 4 GiB: %s" % N.errname(r.error))
                ext = r.extents[cid]
                total = sum(n for n, _ in ext)
                check(0 < total <= 0xFFFFFFFF and ext[0][1] == 3,
                      "block status over 4 GiB of hole: %r" % ext[:4])
                r = c.request(N.CMD_BLOCK_STATUS, SIZE - 4096, 4096, N.CMD_FLAG_REQ_ONE)
                ext = r.extents[cid]
                check(len(ext) == 1 and ext[0][0] <= 4096, "REQ_ONE at the end: %r" % ext)
            c.disconnect()
        b.stop()
        a = allocated(disk)
        print("allocated after the test: %d KiB of a %d TiB file" % (a // 1024, SIZE >> 40))
        check(a < 4 * MiB, "the 4 TiB file has %d KiB allocated" % (a // 1024))
        check(os.path.getsize(disk) == SIZE, "file size changed")


main(run)

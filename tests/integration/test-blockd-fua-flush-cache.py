"""blockd with libnbd: FUA writes, write zeroes and trims land in the file,
FLUSH and CACHE succeed (also over whole ranges and the whole export), and the
flags that announce them are advertised."""
import nbd

from itest import served, check, main, nbd_errno, MiB

SIZE = 16 * MiB


def run():
    """FUA, flush and cache through libnbd."""
    with served(size=SIZE) as (b, disk):
        h = b.connect()
        for name in ("can_fua", "can_flush", "can_cache", "can_trim", "can_zero"):
            check(getattr(h, name)(), name + " is false")
        check(h.get_size() == SIZE, "size %d" % h.get_size())

        data = bytes(range(256)) * 256          # 64 KiB
        h.pwrite(data, 3 * MiB + 17, nbd.CMD_FLAG_FUA)
        # FUA's promise: the data is in the file before the reply.
        with open(disk, "rb") as f:
            f.seek(3 * MiB + 17)
            check(f.read(len(data)) == data, "FUA write is not in the file")
        check(h.pread(len(data), 3 * MiB + 17) == data, "FUA write: wrong readback")

        h.zero(4096, 3 * MiB + 4096, nbd.CMD_FLAG_FUA)
        h.trim(4096, 3 * MiB + 8192, nbd.CMD_FLAG_FUA)
        got = h.pread(len(data), 3 * MiB + 17)
        want = bytearray(data)
        for start in (3 * MiB + 4096, 3 * MiB + 8192):
            want[start - 3 * MiB - 17:start - 3 * MiB - 17 + 4096] = bytes(4096)
        check(got == bytes(want), "zero/trim with FUA: wrong readback")

        h.flush()
        h.cache(MiB, 3 * MiB)
        h.cache(SIZE, 0)
        h.cache(1, SIZE - 1)
        check(h.pread(len(data), 3 * MiB + 17) == bytes(want), "data changed by CACHE")

        # Many FUA writes in a row, each visible in the file at once.
        for i in range(16):
            blk = bytes([i + 1]) * 4096
            h.pwrite(blk, 8 * MiB + i * 4096, nbd.CMD_FLAG_FUA)
            with open(disk, "rb") as f:
                f.seek(8 * MiB + i * 4096)
                check(f.read(4096) == blk, "FUA write %d is not in the file" % i)

        # Out of range CACHE is an error, not a crash.
        h.set_strict_mode(0)
        err = nbd_errno(h.cache, 4096, SIZE)
        check(err != 0, "CACHE beyond the end succeeded")
        h.flush()
        h.shutdown()
        b.stop()


main(run)

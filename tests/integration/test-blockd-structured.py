"""blockd: reads work with structured replies off (simple replies, no block
status: EINVAL if asked anyway) and on (OFFSET_DATA / OFFSET_HOLE chunks that
cover the request exactly); block status needs a meta context (EINVAL)."""
import errno

import nbd

import nbdraw as N
from itest import served, check, main, MiB

SIZE = 8 * MiB


def run():
    """Reads and block status with structured replies off and on."""
    with served(size=SIZE) as (b, disk):
        data = bytes(range(256)) * 4096      # 1 MiB
        with open(disk, "r+b") as f:
            f.seek(2 * MiB)
            f.write(data)

        # Off: libnbd with structured replies not requested.
        h = b.connect(structured=False)
        check(not h.get_structured_replies_negotiated(), "structured replies negotiated")
        check(not h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION),
              "base:allocation without structured replies")
        check(not h.can_df(), "DF advertised without structured replies")
        check(h.pread(MiB, 2 * MiB) == data, "simple read: wrong data")
        check(h.pread(MiB, 0) == bytes(MiB), "simple read of a hole: wrong data")
        check(h.pread(3 * MiB, MiB) == bytes(MiB) + data + bytes(MiB),
              "simple read across data and holes: wrong data")
        h.shutdown()

        # Off, raw: every reply is simple, and block status is refused.
        c = N.Client(b.sock).handshake(structured=False)
        r = c.read(2 * MiB, 4096)
        check(not r.structured and r.data == data[:4096], "raw simple read: %r" % r)
        r = c.request(N.CMD_BLOCK_STATUS, 0, SIZE)
        check(not r.structured and r.error == N.EINVAL,
              "block status on a simple connection: %r (expected simple EINVAL)" % r)
        r = c.read(2 * MiB, 4096)
        check(r.error == 0 and r.data == data[:4096], "read after block status: %r" % r)
        c.disconnect()

        # On: the chunks of a read cover it exactly, data as data.
        h = b.connect(structured=True)
        check(h.get_structured_replies_negotiated(), "structured replies not negotiated")
        chunks = []

        def cb(sub, off, status, err):
            chunks.append((off, len(sub), status, bytes(sub)))
            return 0

        buf = h.pread_structured(3 * MiB, MiB, cb)
        check(buf == bytes(MiB) + data + bytes(MiB), "structured read: wrong data")
        covered = sum(n for _, n, _, _ in chunks)
        check(covered == 3 * MiB, "structured read chunks cover %d bytes" % covered)
        for off, n, status, sub in chunks:
            check(status in (nbd.READ_DATA, nbd.READ_HOLE), "chunk status %d" % status)
            if status == nbd.READ_HOLE:
                check(off + n <= 2 * MiB or off >= 3 * MiB,
                      "hole chunk %d+%d over written data" % (off, n))
        h.shutdown()

        # On, raw, no meta context: block status is EINVAL, the rest goes on.
        c = N.Client(b.sock).handshake(structured=True)
        r = c.read(0, 8192)
        check(r.structured and r.error == 0 and r.data == bytes(8192),
              "raw structured read of a hole: %r" % r)
        r = c.read(2 * MiB - 4096, 8192)
        check(r.structured and r.error == 0 and r.data == bytes(4096) + data[:4096],
              "raw structured read across a hole and data: %r" % r)
        # A read entirely inside a hole is where OFFSET_HOLE pays most.
        for off, n in ((0, 65536), (4 * MiB, 4 * MiB)):
            r = c.read(off, n)
            check(r.error == 0 and r.data == bytes(n), "read of a hole: %r" % r)
            types = [t for t, _, _ in r.chunks]
            check(N.REPLY_TYPE_OFFSET_HOLE in types and N.REPLY_TYPE_OFFSET_DATA not in types,
                  "read of a %d-byte hole at %d: chunk types %r, expected OFFSET_HOLE"
                  % (n, off, types))
        r = c.request(N.CMD_BLOCK_STATUS, 0, SIZE)
        check(r.error == N.EINVAL, "block status without a meta context: %r" % r)
        check(r.structured, "error reply on a structured connection is not structured")
        check(all(t == N.REPLY_TYPE_ERROR for t, _, _ in r.chunks),
              "error reply chunks: %r" % [t for t, _, _ in r.chunks])
        r = c.read(2 * MiB, 4096)
        check(r.error == 0 and r.data == data[:4096], "read after block status: %r" % r)
        # A structured error for a read: an ERROR chunk, no data chunk.
        r = c.read(SIZE, 4096)
        check(r.error == N.EINVAL and r.structured and r.data is None,
              "structured read error: %r" % r)
        c.disconnect()
        b.stop()


main(run)

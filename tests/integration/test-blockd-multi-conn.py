"""blockd: CAN_MULTI_CONN is advertised and true.  Four connections write
disjoint regions at once (aio, many requests in flight each), a FLUSH on one
of them covers them all, and another reads everything back."""
import hashlib

import nbd

from itest import served, check, main, MiB

CONNS = 4
REGION = 4 * MiB
CHUNK = 256 * 1024


def chunk_data(conn, i):
    """The CHUNK bytes connection CONN writes as its chunk I."""
    return hashlib.sha256(b"%d/%d" % (conn, i)).digest() * (CHUNK // 32)


def run(threads):
    """Four connections, THREADS workers."""
    with served("--threads", str(threads), size=CONNS * REGION) as (b, disk):
        hs = [b.connect() for _ in range(CONNS)]
        for h in hs:
            check(h.can_multi_conn(), "can_multi_conn is false")

        bufs = []
        cookies = []
        for c, h in enumerate(hs):
            for i in range(REGION // CHUNK):
                buf = nbd.Buffer.from_bytearray(bytearray(chunk_data(c, i)))
                bufs.append(buf)
                cookies.append((h, h.aio_pwrite(buf, c * REGION + i * CHUNK)))
        # Drive all four connections until every write is acknowledged.
        while any(h.aio_in_flight() for h in hs):
            for h in hs:
                if h.aio_in_flight():
                    h.poll(0)
            hs[0].poll(10)
        for h, ck in cookies:
            check(h.aio_command_completed(ck), "write %d not completed" % ck)

        hs[1].flush()
        reader = hs[3]
        for c in range(CONNS):
            for i in range(REGION // CHUNK):
                got = reader.pread(CHUNK, c * REGION + i * CHUNK)
                check(got == chunk_data(c, i),
                      "conn %d chunk %d: wrong data read on another connection" % (c, i))
        # A fresh connection sees the same thing.
        h = b.connect()
        check(h.pread(CHUNK, 2 * REGION) == chunk_data(2, 0), "fresh connection: wrong data")
        h.shutdown()
        for h in hs:
            h.shutdown()
        b.stop()
        with open(disk, "rb") as f:
            for c in range(CONNS):
                f.seek(c * REGION + REGION - CHUNK)
                check(f.read(CHUNK) == chunk_data(c, REGION // CHUNK - 1),
                      "conn %d: last chunk not in the file" % c)


# One worker for all four connections, and one worker each.
main(lambda: (run(1), run(4)))

"""blockd under a reproducible random mix of pipelined requests from four
connections (simple and structured): writes (some FUA), trims, write zeroes
(with and without NO_HOLE), reads and caches, many in flight at once and
replied to in any order.  Every read is checked against a model of the disk,
and so is block status: an extent claiming ZERO must read as zeroes."""
import os
import random

import nbdraw as N
from itest import served, check, main, MiB

SLOT = 64 * 1024
SLOTS = 256
SIZE = SLOT * SLOTS
BATCHES = 60
PER_BATCH = 40


def run():
    """BATCHES batches of PER_BATCH random requests on disjoint slots."""
    seed = int(os.environ.get("SEED", "0")) or random.randrange(1, 1 << 30)
    print("SEED=%d (set SEED to replay)" % seed)
    rng = random.Random(seed)
    model = bytearray(SIZE)
    # More workers than cores, so the four connections land on different rings.
    with served("--threads", "4", size=SIZE) as (b, disk):
        conns = [N.Client(b.sock).handshake(structured=bool(i % 2),
                                             meta=["base:allocation"] if i % 2 else ())
                 for i in range(4)]
        nops = {}
        for batch in range(BATCHES):
            slots = rng.sample(range(SLOTS), PER_BATCH)
            sent = []      # (conn, cookie, op, off, n, payload)
            for s in slots:
                c = rng.choice(conns)
                start = s * SLOT + rng.randrange(0, SLOT - 1)
                n = rng.randrange(1, s * SLOT + SLOT - start + 1)
                op = rng.choice(["write", "write", "read", "read", "trim", "zero",
                                 "zero_nohole", "cache", "write_fua"])
                payload = None
                if op.startswith("write"):
                    payload = rng.randbytes(n) if rng.random() < 0.7 else bytes([rng.randrange(256)]) * n
                    flags = N.CMD_FLAG_FUA if op == "write_fua" else 0
                    ck = c.send_request(N.CMD_WRITE, start, n, flags, payload)
                elif op == "read":
                    ck = c.send_request(N.CMD_READ, start, n)
                elif op == "trim":
                    ck = c.send_request(N.CMD_TRIM, start, n)
                elif op == "zero":
                    ck = c.send_request(N.CMD_WRITE_ZEROES, start, n)
                elif op == "zero_nohole":
                    ck = c.send_request(N.CMD_WRITE_ZEROES, start, n, N.CMD_FLAG_NO_HOLE)
                else:
                    ck = c.send_request(N.CMD_CACHE, start, n)
                sent.append((c, ck, op, start, n, payload))
                nops[op] = nops.get(op, 0) + 1
            replies = {}
            for c in conns:
                while c.pending:
                    r = c.recv_reply()
                    replies[(id(c), r.cookie)] = r
            for c, ck, op, start, n, payload in sent:
                r = replies[(id(c), ck)]
                what = "batch %d %s %d+%d (seed %d)" % (batch, op, start, n, seed)
                check(r.error == 0, "%s: %s" % (what, N.errname(r.error)))
                if op == "read":
                    if r.data != bytes(model[start:start + n]):
                        bad = next(i for i in range(n) if r.data[i] != model[start + i])
                        raise AssertionError("%s: wrong data at %d" % (what, start + bad))
                elif op.startswith("write"):
                    model[start:start + n] = payload
                elif op in ("trim", "zero", "zero_nohole"):
                    # A trimmed range reads as zeroes on a sparse raw file.
                    model[start:start + n] = bytes(n)
            if batch % 10 == 9:
                c = conns[1]
                r = c.request(N.CMD_BLOCK_STATUS, 0, SIZE)
                check(r.error == 0, "block status: %r" % r)
                off = 0
                for length, flags in r.extents[c.contexts["base:allocation"]]:
                    if flags & N.STATE_ZERO:
                        check(not any(model[off:off + length]),
                              "block status says ZERO over data at %d+%d (seed %d)"
                              % (off, length, seed))
                    off += length
                check(0 < off, "block status covered nothing")
        # Finally the whole disk, through a fresh structured connection and the file.
        c = N.Client(b.sock).handshake(structured=True)
        for o in range(0, SIZE, 4 * MiB):
            r = c.read(o, min(4 * MiB, SIZE - o))
            check(r.data == bytes(model[o:o + len(r.data)]), "final read at %d differs" % o)
        for x in conns + [c]:
            x.disconnect()
        b.stop()
        with open(disk, "rb") as f:
            check(f.read() == bytes(model), "the file differs from the model (seed %d)" % seed)
    print("ops: %s" % ", ".join("%s %d" % kv for kv in sorted(nops.items())))


main(run)

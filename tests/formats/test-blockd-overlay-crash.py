"""Crash loop: writes, trims and zeroes through blockd on an overlay, with
FLUSH and FUA; blockd is killed with SIGKILL at a random moment, 24 times.
After each restart every byte covered by a FLUSH or FUA reply reads back,
bytes of unacknowledged operations are old or new, and no byte outside any
operation ever changes (copy-up must not clobber neighbours)."""
import os
import random
import signal
import threading
import time

import nbd

from fmtlib import TempDir, check, img, require
from testlib import Blockd


def restart(tmp, *args):
    """A new Blockd in TMP; a SIGKILLed one leaves its socket behind."""
    sock = os.path.join(tmp, "nbd.sock")
    if os.path.exists(sock):
        os.unlink(sock)
    return Blockd(*args, tmp=tmp)

require("qemu-img")
seed = int(os.environ.get("SEED", random.randrange(1 << 30)))
print("SEED=%d" % seed)
rng = random.Random(seed)
SIZE = 16 << 20
CLUSTER = 4096
SLOT = 3 * CLUSTER          # each slot gets one operation inside it
NSLOTS = SIZE // SLOT
KILLS = 24
PER_RUN = NSLOTS // KILLS


def op_of(s):
    r = random.Random(s * 7919 + seed)
    kind = r.choice(["write", "write", "write", "trim", "zero"])
    off = s * SLOT + r.randrange(SLOT - 1)
    length = min(1 + r.randrange(2 * CLUSTER), (s + 1) * SLOT - off)
    return kind, off, length, r.random() < 0.25, r.random() < 0.3, r.randbytes(length)


with TempDir() as d:
    j = lambda name: os.path.join(d, name)  # noqa: E731
    base = random.Random(seed + 1).randbytes(SIZE)
    with open(j("base.img"), "wb") as f:
        f.write(base)
    img("create", "-c", "4K", "-b", j("base.img"), j("ws.ovl"))
    durable = set()
    touched = set()
    for k in range(KILLS):
        slots = range(k * PER_RUN, (k + 1) * PER_RUN)
        b = restart(d, j("ws.ovl"))
        with b:
            h = b.connect()
            delay = rng.uniform(0.0, 0.12)
            killer = threading.Timer(delay, lambda: b.proc.send_signal(signal.SIGKILL))
            killer.start()
            acks = ops = 0
            done_upto = slots.start
            try:
                for s in slots:
                    kind, off, length, fua, flush, buf = op_of(s)
                    touched.add(s)
                    flags = nbd.CMD_FLAG_FUA if fua else 0
                    if kind == "write":
                        h.pwrite(buf, off, flags)
                    elif kind == "trim":
                        h.trim(length, off, flags)
                    else:
                        h.zero(length, off, flags)
                    if fua:
                        durable.add(s)
                        acks += 1
                    if flush:
                        h.flush()
                        durable.update(range(done_upto, s + 1))
                        acks += 1
                        done_upto = s + 1
                    ops += 1
            except nbd.Error:
                pass  # killed mid-request: that request was never acknowledged
            killer.join()
            b.proc.kill()
            b.proc.wait()
        # Restart and check every byte.
        b = restart(d, j("ws.ovl"))
        with b:
            h = b.connect()
            got = h.pread(SIZE, 0)
            h.shutdown()
            b.stop()
        for s in range(NSLOTS):
            kind, off, length, fua, flush, buf = op_of(s)
            lo, hi = s * SLOT, (s + 1) * SLOT
            new = buf if kind == "write" else bytes(length)
            outside = got[lo:off] + got[off + length:hi]
            check(outside == base[lo:off] + base[off + length:hi],
                  "kill %d: slot %d: bytes outside the %s changed" % (k, s, kind))
            inside = got[off:off + length]
            if s not in touched:
                check(inside == base[off:off + length], "kill %d: untouched slot %d changed" % (k, s))
            elif s in durable:
                check(inside == new, "kill %d: slot %d: acknowledged %s %d+%d lost"
                      % (k, s, kind, off, length))
            else:
                check(all(g in (o, n) for g, o, n in zip(inside, base[off:off + length], new)),
                      "kill %d: slot %d: unacknowledged %s is neither old nor new" % (k, s, kind))
        print("kill %2d at %3.0f ms, after %2d of %d operations: %2d acknowledgements, "
              "every durable byte intact" % (k + 1, delay * 1000, ops, len(slots), acks))

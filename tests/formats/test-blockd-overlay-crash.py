"""Crash loop: writes, trims and zeroes through blockd on an overlay, with
FLUSH and FUA; blockd is killed with SIGKILL at a random moment, 24 times.

The disk is cut into slots of three clusters; each slot has one byte range.
A slot's first operation makes its clusters the overlay's (blockd's
synchronous path: copy-up, bitmap); later rewrites of slots whose first
operation is durable hit owned clusters through blockd's map path (io_uring
writes, FUA and FLUSH there). After each restart every byte covered by a
FLUSH or FUA reply holds that version or a later one, and no byte outside a
slot's range ever changes (copy-up must not clobber neighbours)."""
import os
import random
import signal
import threading
import time

import nbd

from fmtlib import TempDir, check, img, require
from testlib import Blockd

require("qemu-img")
seed = int(os.environ.get("SEED", random.randrange(1 << 30)))
print("SEED=%d" % seed)
rng = random.Random(seed)
SIZE = 16 << 20
CLUSTER = 4096
SLOT = 3 * CLUSTER
NSLOTS = SIZE // SLOT
KILLS = 24
PER_RUN = NSLOTS // KILLS


def restart(tmp, *args):
    """A new Blockd in TMP; a SIGKILLed one leaves its socket behind, and
    its io_uring may hold the image's lock a little after the process is
    reaped (the kernel drops a dead ring's files asynchronously)."""
    sock = os.path.join(tmp, "nbd.sock")
    for attempt in range(50):
        if os.path.exists(sock):
            os.unlink(sock)
        try:
            return Blockd(*args, tmp=tmp)
        except RuntimeError as e:
            if "locked by another process" not in str(e) or attempt == 49:
                raise
            time.sleep(0.1)


def range_of(s):
    """Slot S's byte range: unaligned, often straddling clusters."""
    r = random.Random(s * 7919 + seed)
    off = s * SLOT + r.randrange(SLOT - 1)
    return off, min(1 + r.randrange(2 * CLUSTER), (s + 1) * SLOT - off)


with TempDir() as d:
    j = lambda name: os.path.join(d, name)  # noqa: E731
    base = random.Random(seed + 1).randbytes(SIZE)
    with open(j("base.img"), "wb") as f:
        f.write(base)
    img("create", "-c", "4K", "-b", j("base.img"), j("ws.ovl"))
    versions = {}   # slot -> list of contents of its range, oldest first
    durable = {}    # slot -> index of the newest version known durable
    for k in range(KILLS):
        # New slots, then rewrites of slots already durable (owned clusters).
        plan = [(s, rng.choice(["write", "write", "write", "trim", "zero"]))
                for s in range(k * PER_RUN, (k + 1) * PER_RUN)]
        old = [s for s in durable if durable[s] >= 0]
        plan += [(s, "write") for s in rng.sample(old, min(len(old), PER_RUN // 2))]
        rng.shuffle(plan)
        b = restart(d, j("ws.ovl"))
        done = []   # (slot, version) completed since the last flush
        acks = ops = 0
        with b:
            h = b.connect()
            delay = rng.uniform(0.0, 0.15)
            killer = threading.Timer(delay, lambda: b.proc.send_signal(signal.SIGKILL))
            killer.start()
            try:
                for s, kind in plan:
                    off, length = range_of(s)
                    data = rng.randbytes(length) if kind == "write" else bytes(length)
                    versions.setdefault(s, []).append(data)
                    v = len(versions[s]) - 1
                    fua = rng.random() < 0.25
                    flags = nbd.CMD_FLAG_FUA if fua else 0
                    if kind == "write":
                        h.pwrite(data, off, flags)
                    elif kind == "trim":
                        h.trim(length, off, flags)
                    else:
                        h.zero(length, off, flags)
                    ops += 1
                    done.append((s, v))
                    if fua:
                        durable[s] = max(durable.get(s, -1), v)
                        acks += 1
                    if rng.random() < 0.3:
                        h.flush()
                        for ds, dv in done:
                            durable[ds] = max(durable.get(ds, -1), dv)
                        done.clear()
                        acks += 1
            except nbd.Error:
                pass  # killed mid-request: that request was never acknowledged
            killer.join()
            b.proc.kill()
            b.proc.wait()
        b = restart(d, j("ws.ovl"))
        with b:
            h = b.connect()
            got = h.pread(SIZE, 0)
            h.shutdown()
            b.stop()
        for s in range(NSLOTS):
            off, length = range_of(s)
            lo, hi = s * SLOT, (s + 1) * SLOT
            check(got[lo:off] + got[off + length:hi] == base[lo:off] + base[off + length:hi],
                  "kill %d: slot %d: bytes outside its range changed" % (k, s))
            first = durable.get(s, -1)
            allowed = ([base[off:off + length]] if first < 0 else []) + versions.get(s, [])[max(first, 0):]
            inside = got[off:off + length]
            if inside in allowed:
                continue
            for i in range(length):
                if all(inside[i] != a[i] for a in allowed):
                    raise AssertionError(
                        "kill %d: slot %d byte %d: %#x is neither the durable version %d nor later"
                        % (k, s, off + i, inside[i], first))
        print("kill %2d at %3.0f ms, after %2d of %d operations: %2d acknowledgements, "
              "every durable byte intact" % (k + 1, delay * 1000, ops, len(plan), acks))

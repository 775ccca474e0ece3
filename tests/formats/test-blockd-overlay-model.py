"""An overlay over a qcow2 base (itself backed, compressed, with zero
clusters), written through blockd: random aligned and unaligned writes,
trims and zeroes straddling clusters, issued many at a time on two
connections. The export must equal the test's model, before and after a
restart; block status zero extents must read as zeroes; the base is unchanged."""
import os
import random

import nbd

from fmtlib import TempDir, check, img, random_disk, require, run, sha, write_sparse
from testlib import Blockd

require("qemu-img", "qemu-io")
seed = int(os.environ.get("SEED", random.randrange(1 << 30)))
print("SEED=%d" % seed)
rng = random.Random(seed)
SIZE = 32 << 20
CLUSTER = 65536


def random_batch(n):
    """N operations whose byte ranges do not overlap each other."""
    taken = []
    ops = []
    while len(ops) < n:
        if rng.random() < 0.4:
            off = rng.randrange(SIZE // CLUSTER) * CLUSTER
            length = CLUSTER * rng.randint(1, 2)
        else:
            off = rng.randrange(SIZE - 1)
            length = rng.randint(1, CLUSTER + 3000)
        length = min(length, SIZE - off)
        if any(off < e and s < off + length for s, e in taken):
            continue
        taken.append((off, off + length))
        k = rng.random()
        ops.append(("write" if k < 0.6 else "trim" if k < 0.8 else "zero", off, length))
    return ops


def check_export(h, model, what):
    for off in range(0, SIZE, 4 << 20):
        got = h.pread(4 << 20, off)
        if got != model[off:off + (4 << 20)]:
            bad = next(i for i in range(len(got)) if got[i] != model[off + i])
            raise AssertionError("%s: byte %d reads %#x, model %#x"
                                 % (what, off + bad, got[bad], model[off + bad]))
    zeros = []

    def cb(meta, offset, entries, err):
        if meta == nbd.CONTEXT_BASE_ALLOCATION:
            for i in range(0, len(entries), 2):
                zeros.append((offset, entries[i], entries[i + 1]))
                offset += entries[i]
        return 0
    pos = 0
    while pos < SIZE:
        zeros.clear()
        h.block_status(SIZE - pos, pos, cb)
        for off, length, flags in zeros:
            if flags & nbd.STATE_ZERO:
                check(model[off:off + length] == bytes(length),
                      "%s: block status says %d+%d is zero, model disagrees" % (what, off, length))
        pos = zeros[-1][0] + zeros[-1][1]


with TempDir() as d:
    j = lambda name: os.path.join(d, name)  # noqa: E731
    write_sparse(j("src.raw"), random_disk(rng, SIZE, 0.5))
    run("qemu-img", "convert", "-c", "-O", "qcow2", j("src.raw"), j("comp.qcow2"))
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", "comp.qcow2", "-F", "qcow2",
        j("base.qcow2"))
    run("qemu-io", "-c", "write -P 0x5a 1M 3M", "-c", "write -z 20M 1M", "-c", "discard 5M 64k",
        j("base.qcow2"))
    run("qemu-img", "convert", "-O", "raw", j("base.qcow2"), j("base.ref"))
    model = bytearray(open(j("base.ref"), "rb").read())
    base_sums = (sha(j("base.qcow2")), sha(j("comp.qcow2")))
    img("create", "-b", j("base.qcow2"), "-F", "qcow2", j("ws.ovl"))

    b = Blockd(j("ws.ovl"), tmp=d)
    with b:
        hs = [b.connect(), b.connect()]
        check(not hs[0].is_read_only() and hs[0].can_trim() and hs[0].can_zero(),
              "overlay export should be writable with trim and zero")
        for batch in range(25):
            ops = random_batch(12)
            cookies = []
            for i, (kind, off, length) in enumerate(ops):
                h = hs[i % 2]
                fua = nbd.CMD_FLAG_FUA if rng.random() < 0.1 else 0
                if kind == "write":
                    buf = rng.randbytes(length)
                    model[off:off + length] = buf
                    cookies.append((h, h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(buf)),
                                                    off, flags=fua)))
                elif kind == "trim":
                    model[off:off + length] = bytes(length)
                    cookies.append((h, h.aio_trim(length, off, flags=fua)))
                else:
                    model[off:off + length] = bytes(length)
                    cookies.append((h, h.aio_zero(length, off, flags=fua)))
            for h, c in cookies:
                while not h.aio_command_completed(c):
                    h.poll(-1)
            if batch % 8 == 7:
                hs[0].flush()
        check_export(hs[0], model, "live")
        check_export(hs[1], model, "second connection")
        for h in hs:
            h.shutdown()
        b.stop()
    with Blockd(j("ws.ovl"), tmp=d) as b2:
        h = b2.connect()
        check_export(h, model, "after restart")
        h.shutdown()
        b2.stop()
    check((sha(j("base.qcow2")), sha(j("comp.qcow2"))) == base_sums, "base files changed")
    info = img("info", j("ws.ovl")).stdout
    print(info.strip())
    print("export equals the model before and after restart; base checksums unchanged")

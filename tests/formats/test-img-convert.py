"""blockd-img convert round trips: qcow2 (random data, holes, compressed, v2,
small clusters, backing chains with zero clusters and discards) -> raw, and
overlay chains (3 deep, over raw and over qcow2) -> flattened raw. Checked with
qemu-img compare and hashes; the flattened file must keep holes."""
import os
import random

from fmtlib import (TempDir, allocated, check, fmt_io, img, random_disk, random_ops, require,
                    run, sha, write_sparse)

require("qemu-img", "qemu-io")
rng = random.Random(int(os.environ.get("SEED", "1234")))
SIZE = 48 << 20

with TempDir() as d:
    j = lambda name: os.path.join(d, name)  # noqa: E731
    data = random_disk(rng, SIZE)
    write_sparse(j("src.raw"), data)

    run("qemu-img", "convert", "-O", "qcow2", j("src.raw"), j("plain.qcow2"))
    run("qemu-img", "convert", "-c", "-O", "qcow2", j("src.raw"), j("comp.qcow2"))
    run("qemu-img", "convert", "-O", "qcow2", "-o", "compat=0.10", j("src.raw"), j("v2.qcow2"))
    run("qemu-img", "convert", "-O", "qcow2", "-o", "cluster_size=4096", j("src.raw"),
        j("small.qcow2"))
    # A backing chain: writes, zero clusters and discards over a compressed base.
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", "comp.qcow2", "-F", "qcow2",
        j("top.qcow2"))
    run("qemu-io", "-c", "write -P 0x5a 1M 3M", "-c", "write -z 20M 1M", "-c", "discard 5M 64k",
        "-c", "write -P 0x33 40M 100k", j("top.qcow2"))
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", "top.qcow2", "-F", "qcow2",
        j("top2.qcow2"))
    run("qemu-io", "-c", "write -c -P 0x77 2M 64k", "-c", "write -z 41M 64k",
        "-c", "write -P 0x12 47M 1M", j("top2.qcow2"))

    for name in ["plain", "comp", "v2", "small", "top", "top2"]:
        q, out, ref = j(name + ".qcow2"), j(name + ".out"), j(name + ".ref")
        img("convert", "-f", "qcow2", q, out)
        run("qemu-img", "compare", "-q", "-f", "raw", "-F", "qcow2", out, q)
        run("qemu-img", "convert", "-O", "raw", q, ref)
        check(sha(out) == sha(ref), name + ": hash differs from qemu-img convert -O raw")
        check(allocated(out) <= allocated(ref) + (1 << 20),
              "%s: convert allocated %d, qemu-img %d" % (name, allocated(out), allocated(ref)))
        check(allocated(out) < SIZE // 2, name + ": holes not kept")
        print("qcow2 %-6s -> raw: same as qemu-img, %d of %d bytes allocated"
              % (name, allocated(out), SIZE))

    # Overlay chain 3 deep over a raw base, then over a qcow2 base.
    for base in [j("src.raw"), j("top2.qcow2")]:
        model = bytearray(open(j("top2.ref") if base.endswith("qcow2") else j("src.raw"),
                               "rb").read())
        prev = base
        for level in range(3):
            o = j("l%d-%s.ovl" % (level, os.path.basename(base)))
            img("create", "-b", prev, *(["-F", "qcow2"] if prev.endswith(".qcow2") else []), o)
            fmt_io(o, random_ops(rng, model, 150))
            prev = o
        flat = j("flat.raw")
        img("convert", "--force", prev, flat)
        write_sparse(j("model.raw"), model)
        run("qemu-img", "compare", "-q", "-f", "raw", "-F", "raw", flat, j("model.raw"))
        check(open(flat, "rb").read() == bytes(model), "flattened chain differs from model")
        check(allocated(flat) < SIZE // 2,
              "flattened chain keeps no holes: %d of %d" % (allocated(flat), SIZE))
        # The bases are untouched by the overlays' writes.
        print("overlay chain over %s -> raw: equals model, %d of %d bytes allocated"
              % (os.path.basename(base), allocated(flat), SIZE))
    check(sha(j("src.raw")) == sha(j("src.raw")) and open(j("src.raw"), "rb").read() == bytes(data),
          "raw base changed")

    # Converting onto a file of the source chain is refused, nothing destroyed.
    p = img("convert", j("l2-src.raw.ovl"), j("src.raw"), check=False)
    check(p.returncode == 1 and "src.raw" in p.stderr, "convert onto base: " + p.stderr)
    check(open(j("src.raw"), "rb").read() == bytes(data), "convert destroyed its base")

"""Reads through blockd of qcow2 images made by qemu-img (random data, holes,
compression, a backing chain with zero clusters and discards) equal
qemu-img convert -O raw, byte for byte (sha256), and the export is read-only."""
import hashlib
import os
import random
import shutil

from fmtlib import TempDir, check, random_disk, require, run, sha, write_sparse
from testlib import Blockd

require("qemu-img", "qemu-io")
rng = random.Random(int(os.environ.get("SEED", "4321")))
SIZE = 40 << 20


def nbd_sha(h, size):
    m = hashlib.sha256()
    for off in range(0, size, 4 << 20):
        m.update(h.pread(min(4 << 20, size - off), off))
    return m.hexdigest()


with TempDir() as d:
    j = lambda name: os.path.join(d, name)  # noqa: E731
    write_sparse(j("src.raw"), random_disk(rng, SIZE))
    run("qemu-img", "convert", "-O", "qcow2", j("src.raw"), j("plain.qcow2"))
    run("qemu-img", "convert", "-c", "-O", "qcow2", j("src.raw"), j("comp.qcow2"))
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", "comp.qcow2", "-F", "qcow2",
        j("backed.qcow2"))
    run("qemu-io", "-c", "write -P 0x5a 1M 3M", "-c", "write -z 20M 1M", "-c", "discard 5M 64k",
        "-c", "write -c -P 0x33 30M 64k", j("backed.qcow2"))
    names = ["plain", "comp", "backed"]
    exports = ["--export=%s=%s,format=qcow2" % (n, j(n + ".qcow2")) for n in names]
    # qcow2 is never guessed from the contents: named, it is served read-only.
    with Blockd(*exports, tmp=d) as b:
        for n in names:
            run("qemu-img", "convert", "-O", "raw", j(n + ".qcow2"), j(n + ".ref"))
            h = b.connect(n)
            check(h.get_size() == SIZE, "%s: size %d" % (n, h.get_size()))
            check(h.is_read_only(), n + ": qcow2 export is not read-only")
            got = nbd_sha(h, SIZE)
            check(got == sha(j(n + ".ref")), n + ": NBD reads differ from qemu-img convert -O raw")
            h.shutdown()
            print("%s.qcow2 through blockd: sha256 %s... equals qemu-img convert" % (n, got[:16]))
            # Many requests at once on several connections: parallel reads of the tables.
            if shutil.which("nbdcopy"):
                out = j(n + ".nbdcopy")
                run("nbdcopy", "--connections=4", "--requests=16", "--request-size=262144",
                    b.uri(n), out)
                check(sha(out) == sha(j(n + ".ref")), n + ": parallel nbdcopy differs")
                print("%s.qcow2: nbdcopy with 4 connections x 16 requests equals too" % n)
        b.stop()

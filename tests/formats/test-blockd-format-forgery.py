"""A guest controls every byte of its raw disk, so nothing it writes may
change how the disk is opened next time:
- a qcow2 header naming another tenant's image as backing file, written into
  a raw disk, is not followed: without format= blockd refuses to guess
  (exit 2, one line), with format=raw it serves the raw bytes;
- a blockd overlay header can never be written at the start of a disk, by a
  whole write, by a write that completes an earlier partial one, or by a
  zero that turns its last byte into the magic's NUL (EPERM, logged once);
  the same through an overlay (its virtual disk can be flattened to raw);
- an overlay file is not served writable as format=raw (its guest could
  rewrite the header)."""
import os
import subprocess

import nbd
from fmtlib import TempDir, check, img, require, run
from testlib import Blockd, BLOCKD

MiB = 1 << 20


def eperm(fn, *args):
    """FN(*ARGS) must fail with EPERM."""
    try:
        fn(*args)
    except nbd.Error as e:
        check(e.errnum == 1, "expected EPERM, got %s" % e)
        return
    raise AssertionError("a forged overlay header was written")


def refuses(*args, want):
    """blockd ARGS exits 2 with WANT in one line, serving nothing."""
    p = subprocess.run([BLOCKD, "--unix", "/nonexistent/s", *args], capture_output=True, text=True,
                       timeout=10)
    check(p.returncode == 2 and want in p.stderr and p.stderr.count("\n") == 1,
          "blockd %s: exit %d, %r" % (args, p.returncode, p.stderr))
    print("refused: " + p.stderr.strip())


def main():
    require("qemu-img")
    with TempDir() as d:
        a, b = os.path.join(d, "a"), os.path.join(d, "b")
        os.mkdir(a)
        os.mkdir(b)
        secret_raw = os.path.join(b, "secret.raw")
        with open(secret_raw, "wb") as f:
            f.write(b"SECRET!!" * (MiB // 8))
        secret = os.path.join(b, "secret.qcow2")
        run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", secret_raw, secret)
        lure = os.path.join(d, "lure.qcow2")
        run("qemu-img", "create", "-q", "-f", "qcow2", "-b", secret, "-F", "qcow2", lure, "1M")
        header = open(lure, "rb").read()
        disk = os.path.join(a, "disk.raw")
        img("create", "-s", "1M", disk)

        # The guest writes the lure into its raw disk: allowed, it is data.
        with Blockd(disk, tmp=a) as srv:
            h = srv.connect()
            h.pwrite(header, 0)
            h.flush()
            h.shutdown()
            srv.stop()
        refuses(disk, want="starts like a qcow2 image")
        with Blockd("--export", "=%s,format=raw" % disk, tmp=a) as srv:
            h = srv.connect()
            first = h.pread(4096, 0)
            check(first[:4] == b"QFI\xfb" and b"SECRET" not in h.pread(MiB, 0),
                  "format=raw did not serve the raw bytes")
            h.shutdown()
            srv.stop()
        print("a qcow2 header in a raw disk is never followed")

        # The overlay magic at the start of a disk, every way round.
        ovl = os.path.join(a, "ws.ovl")
        img("create", "-s", "1M", os.path.join(a, "base.raw"))
        img("create", "-b", os.path.join(a, "base.raw"), ovl)
        forged = open(ovl, "rb").read(4096)
        magic = forged[:8]
        for target, fmt in ((disk, "raw"), (ovl, "overlay")):
            with Blockd("--export", "=%s,format=%s" % (target, fmt), tmp=a) as srv:
                h = srv.connect()
                eperm(h.pwrite, forged, 0)
                eperm(h.pwrite, magic, 0)
                h.pwrite(b"B", 0)
                eperm(h.pwrite, magic[1:], 1)                # completes a partial write
                h.pwrite(magic[:7] + b"x", 0)                # harmless on its own
                eperm(h.zero, 1, 7)                          # the NUL by a zero
                eperm(h.trim, 1, 7)                          # or by a trim
                h.pwrite(b"\0" * 8, 0)
                h.pwrite(b"ordinary data", 0)                # the head is writable
                check(h.pread(13, 0) == b"ordinary data", "ordinary write at 0")
                h.shutdown()
                srv.stop()
                log = srv.logtext()
                check(log.count(target + ": refused a write that would put a blockd overlay"
                                         " header") == 1, "the refusal is not logged once: " + log)
            print("%s: the overlay magic cannot be written at the start of the disk" % fmt)

        refuses("--export", "=%s,format=raw" % ovl, want="is a blockd overlay")
        with Blockd("--export", "=%s,format=raw,readonly" % ovl, tmp=a) as srv:
            h = srv.connect()
            check(h.pread(8, 0) == magic, "read-only container view")
            h.shutdown()
            srv.stop()
        print("an overlay's container is served as raw only read-only")


main()
print("PASS")

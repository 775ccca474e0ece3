"""blockd-img check on overlays damaged on purpose, one defect at a time:
each must be found, with qemu-img check's exit code (0 clean, 1 check not
completed, 2 corruptions, 3 leaks only, 63 nothing to check or an unknown
version) and a line naming what is wrong:
- clean overlays (fresh, and with owned data, trims and copy-ups) exit 0 and
  count their owned clusters;
- data in the data area of unowned clusters, and past the data area: leaks,
  counted in clusters and bytes; a read-write open punches them (check is 0
  again);
- corrupt header fields, bitmap bits past the last cluster, a truncated
  file: corruptions; an unknown version or incompat bit: 63;
- the base changed (content, size, mtime) or missing: a corruption naming the
  identity check that failed;
- a served overlay (blockd holds it for writing): 1, not a guess;
- raw and qcow2: 63; bad usage: 1."""
import json
import os
import shutil
import subprocess

from fmtlib import (BLOCKD_IMG, TempDir, check, fmt_io, img, patch_overlay, require, run)

KiB = 1024
MiB = 1 << 20
CS = 64 * KiB


def checked(path, want_rc, *want_text, opts=()):
    """blockd-img check PATH exits WANT_RC with each of WANT_TEXT in its output."""
    p = subprocess.run([BLOCKD_IMG, "check", *opts, path], capture_output=True, text=True,
                       timeout=30)
    out = p.stdout + p.stderr
    check(p.returncode == want_rc, "%s: check exited %d, wanted %d:\n%s"
          % (os.path.basename(path), p.returncode, want_rc, out))
    for t in want_text:
        check(t in out, "%s: %r not in check's output:\n%s" % (os.path.basename(path), t, out))
    first = [ln for ln in out.splitlines() if ln.startswith(("ERROR", "Leaked", "Unsupported",
                                                             "Check failed", "blockd-img"))]
    print("%s: exit %d%s" % (os.path.basename(path), p.returncode,
                              (": " + first[0]) if first else ""))
    return p


def counters(path):
    p = subprocess.run([BLOCKD_IMG, "check", "--json", path], capture_output=True, text=True,
                       timeout=30)
    return p.returncode, json.loads(p.stdout)


def data_offset(path):
    import struct
    with open(path, "rb") as f:
        f.seek(56)
        return struct.unpack("<Q", f.read(8))[0]


def poke(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def main():
    require("qemu-img")
    with TempDir() as d:
        os.chdir(d)
        with open("base.raw", "wb") as f:
            f.write(os.urandom(4 * MiB))

        def fresh(name):
            img("create", "--force", "-b", "base.raw", name)
            return name

        # Clean: fresh, then owned data, a trim and a partial write (copy-up).
        checked(fresh("ws.ovl"), 0, "No errors were found", "0/64 = 0.00% owned clusters")
        fmt_io("ws.ovl", b"write 0 65536\n" + b"\x11" * CS + b"trim 131072 131072\n"
               b"write 300000 10\n" + b"\x22" * 10)
        rc, c = counters("ws.ovl")
        check(rc == 0 and c["allocated-clusters"] == 4 and c["corruptions"] == 0 and
              c["leaks"] == 0, "ws.ovl after writes: %d %s" % (rc, c))
        checked("ws.ovl", 0, "4/64 = 6.25% owned clusters")

        # Leaks: data written behind the engine's back into unowned clusters
        # 8-9 and 20 (not 0, which is owned), then past the data area.
        leak = fresh("leak.ovl")
        do = data_offset(leak)
        fmt_io(leak, b"write 0 65536\n" + b"\x33" * CS)
        poke(leak, do + 8 * CS, b"\x44" * (2 * CS))
        poke(leak, do + 20 * CS + 4096, b"\x55" * 4096)
        poke(leak, do + 0 + 100, b"\x66")  # owned: not a leak
        checked(leak, 3, "clusters 8-9 (virtual bytes 524288-655359) are not owned but hold"
                " 131072 bytes", "clusters 20-20", "3 leaked clusters were found")
        rc, c = counters(leak)
        check(rc == 3 and c["leaks"] == 3 and c["leaked-bytes"] == 2 * CS + 4096 and
              c["corruptions"] == 0, "leak.ovl counters: %d %s" % (rc, c))
        # A read-write open gives leaked space back.
        fmt_io(leak, b"flush\n")
        checked(leak, 0, "No errors were found")
        with open(leak, "ab") as f:
            f.write(b"\x77" * 8192)
        checked(leak, 3, "8192 bytes of data past the end of the data area")

        # Header fields.
        patch_overlay(fresh("cb.ovl"), cluster_bits=40)
        checked("cb.ovl", 2, "ERROR: cb.ovl: corrupt overlay header: cluster_bits 40 is not 12 to 24")
        patch_overlay(fresh("bs.ovl"), bitmap_size=8192)
        checked("bs.ovl", 2, "corrupt overlay header: bitmap_size 8192 is not the 4096 bytes 64"
                " clusters take")
        poke(fresh("rsv.ovl"), 84, b"\x01")
        checked("rsv.ovl", 2, "corrupt overlay header: a reserved field is not 0")
        poke(fresh("magic.ovl"), 0, b"BLKDOVX\0")
        checked("magic.ovl", 63, "raw images have no metadata")  # no magic: not an overlay
        checked("magic.ovl", 2, "magic.ovl: not a blockd overlay", opts=("-f", "overlay"))
        patch_overlay(fresh("v2.ovl"), version=2)
        checked("v2.ovl", 63, "Unsupported: v2.ovl: overlay format version 2 not supported")
        patch_overlay(fresh("inc.ovl"), incompat=1 << 40)
        checked("inc.ovl", 63, "overlay uses unknown features 0x10000000000")

        # The bitmap: a bit past the last cluster (64 clusters: bit 64 is in
        # byte 8 of the bitmap, at file offset 4096).
        poke(fresh("pad.ovl"), 4096 + 8, b"\x01")
        checked("pad.ovl", 2, "the bitmap has 1 bits set past its last cluster (63), the first"
                " at bit 64")

        # Truncated: owned clusters 0 and 63, the file cut inside cluster 62.
        trunc = fresh("trunc.ovl")
        fmt_io(trunc, b"write 0 65536\n" + b"\x12" * CS + b"write %d 65536\n" % (63 * CS) +
               b"\x13" * CS)
        os.truncate(trunc, data_offset(trunc) + 62 * CS + 100)
        checked(trunc, 2, "shorter than its data area (%d): truncated; 1 owned clusters lie past"
                " its end" % (data_offset(trunc) + 4 * MiB))

        # The base: touched, rewritten, resized, gone.
        shutil.copy("base.raw", "b2.raw")
        img("create", "-b", "b2.raw", "id.ovl")
        checked("id.ovl", 0, "base b2.raw (raw): identity as recorded")
        os.utime("b2.raw", (1, 1))
        checked("id.ovl", 2, "base image b2.raw changed since the overlay was created",
                "modification time")
        img("create", "--force", "-b", "b2.raw", "id.ovl")
        poke("b2.raw", 100, b"\xff\xfe")
        checked("id.ovl", 2, "first 64 KiB")
        img("create", "--force", "-b", "b2.raw", "id.ovl")
        with open("b2.raw", "ab") as f:
            f.write(b"\0" * 4096)
        checked("id.ovl", 2, "virtual size")
        os.unlink("b2.raw")
        checked("id.ovl", 2, "ERROR: id.ovl: cannot open base image: b2.raw: No such file")

        # Several defects at once are all reported.
        multi = fresh("multi.ovl")
        poke(multi, data_offset(multi) + 5 * CS, b"\x01" * 4096)
        poke(multi, 4096 + 8, b"\x80")
        rc, c = counters(multi)
        check(rc == 2 and c["corruptions"] == 1 and c["leaks"] == 1,
              "multi.ovl: %d %s" % (rc, c))

        # Nothing to check, and bad usage (exit 1: 2 means corruption).
        checked("base.raw", 63, "raw images have no metadata")
        run("qemu-img", "create", "-q", "-f", "qcow2", "q.qcow2", "1M")
        checked("q.qcow2", 63, "(qemu-img check can)", opts=("-f", "qcow2"))
        checked("q.qcow2", 1, "starts like a qcow2 image")
        checked("nonexistent.ovl", 1, "nonexistent.ovl: No such file or directory")
        checked("ws.ovl", 1, "check: unknown option", opts=("--bogus",))

        # Served: blockd holds the overlay for writing, the check says so.
        blockd = os.environ.get("BLOCKD", "")
        if not os.access(blockd, os.X_OK):
            print("blockd not built: the served case is left out")
            return
        p = subprocess.Popen([blockd, "--unix", os.path.join(d, "s.sock"), "--pidfile",
                              os.path.join(d, "s.pid"), "ws.ovl"], stderr=subprocess.DEVNULL)
        try:
            for _ in range(200):
                if os.path.exists("s.pid") and os.path.getsize("s.pid") > 0:
                    break
                check(p.poll() is None, "blockd exited at start")
                subprocess.run(["sleep", "0.05"])
            checked("ws.ovl", 1, "ws.ovl: locked by another process that writes it")
        finally:
            p.terminate()
            p.wait(timeout=20)
        checked("ws.ovl", 0, "No errors were found")
    print("ok")


if __name__ == "__main__":
    main()

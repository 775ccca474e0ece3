"""blockd-img rebase, and what a changed base's refusal says:
- a touched base: the refusal names the modification time (both values) and
  the rebase command; rebase accepts it after checking size and first 64 KiB,
  and the overlay reads as before;
- a copy made without -p while the original is still there: every cluster
  the overlay reads from its base is compared; a copy differing in such a
  cluster is refused (header untouched), one differing only in a cluster the
  overlay owns is accepted;
- the original gone: size and first 64 KiB are checked; a copy whose head
  differs is refused (and -u accepts it);
- a base whose content changed: the refusal names the check that failed and
  says how to recover;
- refused: a served overlay, a base of another size, a base outside the
  allowed directories (accepted with --allow-base-dir), an overlay left by an
  interrupted commit, bad usage (exit 2)."""
import os
import shutil
import subprocess
import time

from fmtlib import (TempDir, check, fmt_io, img, patch_overlay, require, run, sha)

MiB = 1 << 20
CS = 65536
BLOCKD = os.environ.get("BLOCKD", "")


def refused(args, want, rc=1):
    p = img(*args, check=False)
    out = p.stderr + p.stdout  # check reports on stdout
    check(p.returncode == rc and want in out,
          "%s: exit %d, %r (wanted %r)" % (" ".join(args), p.returncode, out, want))
    print("%s: refused: %s" % (" ".join(args), out.strip().splitlines()[0]))
    return out


def rebased(args, want):
    p = img(*args)
    check(want in p.stdout, "%s: %r (wanted %r)" % (" ".join(args), p.stdout, want))
    print("%s: %s" % (" ".join(args), p.stdout.strip()))


def reads(ovl, expect):
    img("convert", "--force", ovl, "r.raw")
    p = run("qemu-img", "compare", "-f", "raw", "-F", "raw", "r.raw", expect, check=False)
    check(p.returncode == 0, "%s does not read as %s: %s" % (ovl, expect, p.stdout + p.stderr))


def header(path):
    with open(path, "rb") as f:
        return f.read(4096)


def main():
    require("qemu-img")
    with TempDir() as d:
        os.chdir(d)
        with open("base.raw", "wb") as f:
            f.write(os.urandom(4 * MiB))
        img("create", "-b", "base.raw", "ws.ovl")
        fmt_io("ws.ovl", b"write 0 4096\n" + b"\x01" * 4096 + b"write %d 10\n" % (3 * CS) +
               b"\x02" * 10)  # owns clusters 0 and 3
        img("convert", "ws.ovl", "expect.raw")

        # Touched: only the mtime differs.
        os.utime("base.raw", (1000, 1000))
        e = refused(("info", "ws.ovl"), "only its modification time differs")
        check("1970-01-01 00:16:40.000000000 UTC" in e and "'blockd-img rebase ws.ovl'" in e,
              "mtime refusal lacks the values or the way out: " + e)
        refused(("check", "ws.ovl"), "only its modification time differs", rc=2)
        rebased(("rebase", "ws.ovl"), "checked: its virtual size, file size and first 64 KiB")
        reads("ws.ovl", "expect.raw")
        check(img("check", "ws.ovl", check=False).returncode == 0, "check after rebase")

        # A copy without -p, original still there: compared cluster by cluster.
        os.mkdir("new")
        shutil.copyfile("base.raw", "new/copy.raw")
        shutil.copyfile("base.raw", "new/bad.raw")
        with open("new/bad.raw", "r+b") as f:
            f.seek(2 * MiB + 12345)
            flipped = bytes([f.read(1)[0] ^ 0xff])
            f.seek(2 * MiB + 12345)
            f.write(flipped)
        before = header("ws.ovl")
        refused(("rebase", "-b", "new/bad.raw", "ws.ovl"),
                "new/bad.raw differs from the recorded base base.raw at offset %d" % (2 * MiB + 12345))
        check(header("ws.ovl") == before, "a refused rebase changed the header")
        shutil.copyfile("base.raw", "new/owned.raw")
        with open("new/owned.raw", "r+b") as f:
            f.seek(3 * CS + 100)  # cluster 3: the overlay owns it
            f.write(b"\x55" * 100)
        rebased(("rebase", "-b", "new/owned.raw", "ws.ovl"), "checked: every cluster it reads")
        reads("ws.ovl", "expect.raw")
        rebased(("rebase", "-b", "new/copy.raw", "ws.ovl"), "checked: every cluster it reads")
        check("base: new/copy.raw (raw)" in img("info", "ws.ovl").stdout, "base not recorded")
        reads("ws.ovl", "expect.raw")

        # The original gone: only size and head can be checked.
        shutil.copyfile("new/copy.raw", "moved.raw")
        os.unlink("new/copy.raw")
        refused(("info", "ws.ovl"), "cannot open base image: new/copy.raw: No such file")
        refused(("rebase", "ws.ovl"), "new/copy.raw: No such file")
        shutil.copyfile("moved.raw", "head.raw")
        with open("head.raw", "r+b") as f:
            f.write(b"\xee" * 16)
        refused(("rebase", "-b", "head.raw", "ws.ovl"), "(its first 64 KiB differs) and that base"
                " is not there to compare with: not rebased (-u accepts")
        rebased(("rebase", "-b", "moved.raw", "ws.ovl"), "first 64 KiB (the rest cannot be"
                " compared without the original)")
        reads("ws.ovl", "expect.raw")

        # Changed content: the refusal names the check and the way out.
        with open("moved.raw", "r+b") as f:
            f.write(b"\xdd" * 16)
        e = refused(("info", "ws.ovl"), "(its first 64 KiB differ from when the overlay was made)")
        check("Put that image back, or give a copy of it with 'blockd-img rebase -b COPY ws.ovl'"
              in e, "no way out in: " + e)
        rebased(("rebase", "-u", "-b", "head.raw", "ws.ovl"), "only its virtual size (-u)")
        with open("head.raw", "ab") as f:
            f.write(b"\0" * 4096)
        refused(("info", "ws.ovl"), "(its virtual size differs: 4198400 bytes, 4194304 when the")
        refused(("rebase", "-u", "ws.ovl"), "head.raw is 4198400 bytes, the base the overlay was"
                " made on 4194304: not rebased")

        # The base policy applies to a new base at once.
        os.mkdir("elsewhere")
        shutil.copyfile("moved.raw", "elsewhere/b.raw")
        img("create", "-b", "moved.raw", "new/w.ovl")
        refused(("rebase", "-u", "-b", "elsewhere/b.raw", "new/w.ovl"),
                "outside the image's directory and every allowed directory")
        rebased(("rebase", "-u", "--allow-base-dir", d, "-b", "elsewhere/b.raw", "new/w.ovl"),
                "accepted")
        check("base: ../elsewhere/b.raw (raw)" in img("info", "--allow-base-dir", d,
                                                      "new/w.ovl").stdout, "relative base path")

        # An interrupted commit must be finished, not rebased.
        img("create", "-b", "moved.raw", "c.ovl")
        patch_overlay("c.ovl", incompat=1)
        refused(("rebase", "c.ovl"), "a commit into its base was interrupted")
        refused(("rebase", "-F", "raw", "c.ovl"), "-F FORMAT goes with -b NEWBASE", rc=2)
        refused(("rebase",), "expected one OVERLAY", rc=2)

        # A served overlay is not rebased.
        if not os.access(BLOCKD, os.X_OK):
            print("blockd not built: the served case is left out")
            return
        img("create", "--force", "-b", "moved.raw", "s.ovl")
        p = subprocess.Popen([BLOCKD, "--unix", os.path.join(d, "s.sock"), "--pidfile",
                              os.path.join(d, "s.pid"), "s.ovl"], stderr=subprocess.DEVNULL)
        try:
            for _ in range(200):
                if os.path.exists("s.pid") and os.path.getsize("s.pid") > 0:
                    break
                check(p.poll() is None, "blockd exited at start")
                time.sleep(0.05)
            refused(("rebase", "s.ovl"), "s.ovl: locked by another process that writes it: not rebased")
        finally:
            p.terminate()
            p.wait(timeout=20)
        check(sha("moved.raw") != "", "moved.raw")
    print("ok")


if __name__ == "__main__":
    main()

"""blockd-img commit: an overlay's owned clusters written into its base.

- random writes, trims and zeroes on an overlay over a raw base (data and
  holes): after commit, qemu-img compare finds the base identical to the
  overlay's content taken before (a flat copy by blockd-img convert, checked
  against a byte model), trimmed clusters are holes in the base, and the
  overlay is empty, valid (check exits 0) and still reads the same;
- a chain base.raw <- mid.ovl <- top.ovl: top into mid (an overlay base),
  then mid into base.raw;
- refused, with base and overlay unchanged and the overlay still valid:
  while blockd serves the overlay, while blockd serves another overlay of
  the same base, while blockd or qemu-storage-daemon serves the base itself; a base that changed
  since the overlay was made; a qcow2 base;
- a progress bar on a terminal, or with -p, and none on a pipe without -p;
- killed midway (the progress bar blocks on a full 4 KiB pipe, then
  SIGKILL): the overlay refuses to open and check reports the interrupted
  commit, and a second commit finishes it with the expected content;
- other overlays of the base are refused afterwards (their base changed)."""
import fcntl
import json
import os
import random
import signal
import struct
import subprocess
import termios
import time

from fmtlib import (BLOCKD_IMG, TempDir, check, fmt_io, img, random_disk, random_ops, require,
                    run, sha, write_sparse)

MiB = 1 << 20
CS = 65536
BLOCKD = os.environ.get("BLOCKD", "")


def same(a, b, what):
    p = run("qemu-img", "compare", "-f", "raw", "-F", "raw", a, b, check=False)
    check(p.returncode == 0, "%s: qemu-img compare %s %s exited %d: %s"
          % (what, a, b, p.returncode, (p.stdout + p.stderr).strip()))
    print("%s: qemu-img compare: %s" % (what, p.stdout.strip()))


def flat(ovl, out):
    """The content OVL reads, as a raw file OUT."""
    img("convert", "--force", ovl, out)
    return out


def commit_fails(ovl, want):
    p = img("commit", ovl, check=False)
    check(p.returncode == 1 and want in p.stderr,
          "commit %s: exit %d, %r (wanted %r)" % (ovl, p.returncode, p.stderr, want))
    print("commit %s refused: %s" % (ovl, p.stderr.strip()))


class Served:
    """blockd serving ARGS in directory D until the with-block ends."""

    def __init__(self, d, *args):
        self.d, self.args = d, args

    def __enter__(self):
        pid = os.path.join(self.d, "s.pid")
        if os.path.exists(pid):
            os.unlink(pid)
        self.p = subprocess.Popen([BLOCKD, "--unix", os.path.join(self.d, "s.sock"), "--pidfile",
                                   pid, *self.args], stderr=subprocess.DEVNULL)
        for _ in range(200):
            if os.path.exists(pid) and os.path.getsize(pid) > 0:
                return self
            check(self.p.poll() is None, "blockd %s exited at start" % (self.args,))
            time.sleep(0.05)
        raise AssertionError("blockd did not start")

    def __exit__(self, *exc):
        self.p.terminate()
        self.p.wait(timeout=20)


def main():
    require("qemu-img", "qemu-storage-daemon")
    if not os.access(BLOCKD, os.X_OK):
        import sys
        print("SKIP: BLOCKD not built", file=sys.stderr)
        sys.exit(77)
    rng = random.Random(13)
    size = 16 * MiB
    with TempDir() as d:
        os.chdir(d)
        model = random_disk(rng, size, grain=CS)
        write_sparse("base.raw", model)
        base0 = sha("base.raw")
        img("create", "-b", "base.raw", "ws.ovl")
        img("create", "-b", "base.raw", "other.ovl")
        fmt_io("ws.ovl", random_ops(rng, model, 300) + b"trim 0 131072\nzero 262144 65536\n")
        model[0:131072] = bytes(131072)
        model[262144:327680] = bytes(65536)
        write_sparse("expect.raw", model)
        same(flat("ws.ovl", "before.raw"), "expect.raw", "ws.ovl before commit")

        # Refused while anything holds the overlay or the base.
        with Served(d, "ws.ovl"):
            commit_fails("ws.ovl", "ws.ovl: locked by another process that writes it: not committed")
        with Served(d, "other.ovl"):
            commit_fails("ws.ovl", "ws.ovl: cannot write its base image: base.raw: locked by another"
                         " process that refuses writers: not committed")
        with Served(d, "--readonly", "base.raw"):
            commit_fails("ws.ovl", "base.raw: locked by another process that refuses writers")
        # qemu-storage-daemon exporting the base read-only holds its locks too.
        qsd = subprocess.Popen(["qemu-storage-daemon", "--blockdev",
                                "driver=file,filename=base.raw,node-name=f,read-only=on",
                                "--nbd-server", "addr.type=unix,addr.path=%s/q.sock" % d,
                                "--export", "type=nbd,id=e,node-name=f",
                                "--pidfile", "%s/q.pid" % d],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            # The pidfile is written once every option (the export too) is done.
            for _ in range(200):
                if os.path.exists("q.pid") and os.path.getsize("q.pid") > 0:
                    break
                check(qsd.poll() is None, "qemu-storage-daemon exited at start")
                time.sleep(0.05)
            commit_fails("ws.ovl", "base.raw: locked by another process that")
        finally:
            qsd.terminate()
            qsd.wait(timeout=20)
        check(sha("base.raw") == base0, "a refused commit changed the base")
        check(img("check", "ws.ovl", check=False).returncode == 0, "refused commit broke ws.ovl")

        # The commit itself, with -p on a pipe.
        p = img("commit", "-p", "ws.ovl")
        check("Image committed:" in p.stdout and "the overlay is empty" in p.stdout and
              "(100%)" in p.stderr, "commit output: %r %r" % (p.stdout, p.stderr))
        print(p.stdout.strip())
        same("base.raw", "expect.raw", "base.raw after commit")
        same(flat("ws.ovl", "after.raw"), "expect.raw", "ws.ovl after commit")
        c = img("check", "ws.ovl")
        check("0/256 = 0.00% owned clusters" in c.stdout, "ws.ovl not empty:\n" + c.stdout)
        check(os.stat("ws.ovl").st_blocks * 512 <= 16384,
              "ws.ovl still holds %d bytes" % (os.stat("ws.ovl").st_blocks * 512))
        # Trimmed and zeroed clusters are holes in the base, not written zeroes.
        m = json.loads(run("qemu-img", "map", "--output=json", "-f", "raw", "base.raw").stdout)
        check(m[0]["start"] == 0 and m[0]["length"] >= 131072 and not m[0]["data"],
              "base.raw's first two clusters are not a hole: %s" % m[:2])
        # other.ovl was made on the old base: refused now, saying why.
        o = img("info", "other.ovl", check=False)
        check(o.returncode == 1 and "changed since the overlay was created" in o.stderr,
              "other.ovl after commit: %d %r" % (o.returncode, o.stderr))
        # A second commit of the empty overlay changes nothing; no bar on a pipe.
        s1 = sha("base.raw")
        p = img("commit", "ws.ovl")
        check("Image committed: 0 clusters" in p.stdout and p.stderr == "",
              "second commit: %r %r" % (p.stdout, p.stderr))
        check(sha("base.raw") == s1, "an empty commit changed the base")
        # On a terminal the bar is drawn without -p.
        fmt_io("ws.ovl", b"write 0 65536\n" + bytes(model[0:65536]))
        master, slave = os.openpty()
        p = subprocess.run([BLOCKD_IMG, "commit", "ws.ovl"], stdout=subprocess.DEVNULL,
                           stderr=slave, timeout=30)
        os.close(slave)
        bar = os.read(master, 4096).decode(errors="replace")
        os.close(master)
        check(p.returncode == 0 and "(100%) [####" in bar, "no bar on a terminal: %r" % bar)
        same("base.raw", "expect.raw", "base.raw after a second commit")

        # A chain: top into mid (an overlay), then mid into the raw base.
        img("create", "-b", "base.raw", "mid.ovl")
        fmt_io("mid.ovl", random_ops(rng, model, 60))
        img("create", "-b", "mid.ovl", "top.ovl")
        fmt_io("top.ovl", random_ops(rng, model, 60))
        write_sparse("expect2.raw", model)
        img("commit", "top.ovl")
        same(flat("top.ovl", "t.raw"), "expect2.raw", "top.ovl after commit into mid.ovl")
        same(flat("mid.ovl", "m.raw"), "expect2.raw", "mid.ovl after top.ovl committed")
        img("commit", "mid.ovl")
        same("base.raw", "expect2.raw", "base.raw after mid.ovl committed")
        # top.ovl named mid.ovl, whose header changed: refused, saying why.
        check("changed since" in img("info", "top.ovl", check=False).stderr, "top.ovl still opens")

        # Refused: a base changed since the overlay was made, a qcow2 base.
        img("create", "--force", "-b", "base.raw", "ws.ovl")
        fmt_io("ws.ovl", b"write 0 4096\n" + b"\x01" * 4096)
        os.utime("base.raw", (1, 1))
        s1 = sha("base.raw")
        commit_fails("ws.ovl", "changed since the overlay was created")
        check(sha("base.raw") == s1, "commit over a changed base wrote it")
        run("qemu-img", "create", "-q", "-f", "qcow2", "q.qcow2", "1M")
        img("create", "-b", "q.qcow2", "-F", "qcow2", "q.ovl")
        commit_fails("q.ovl", "its base is qcow2, which blockd cannot write")

        # Killed midway: 128 scattered owned clusters, the bar writing into
        # a 4 KiB pipe nobody reads, so commit blocks part way; then SIGKILL.
        img("create", "--force", "-b", "base.raw", "k.ovl")
        base1 = sha("base.raw")
        model = bytearray(open("base.raw", "rb").read())
        ops = bytearray()
        for i in range(0, 256, 2):
            buf = rng.randbytes(CS)
            ops += b"write %d %d\n" % (i * CS, CS) + buf
            model[i * CS:(i + 1) * CS] = buf
        fmt_io("k.ovl", bytes(ops))
        write_sparse("expect3.raw", model)
        r, w = os.pipe()
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 4096)
        k = subprocess.Popen([BLOCKD_IMG, "commit", "-p", "k.ovl"], stdout=subprocess.DEVNULL,
                             stderr=w)
        os.close(w)
        try:
            deadline = time.time() + 20
            while time.time() < deadline and k.poll() is None:
                # Full (less than one more bar's worth free): commit is blocked.
                n = struct.unpack("i", fcntl.ioctl(r, termios.FIONREAD, b"\0" * 4))[0]
                if n > 4096 - 64:
                    break
                time.sleep(0.01)
            check(k.poll() is None, "commit finished before its pipe filled")
            k.send_signal(signal.SIGKILL)
            k.wait()
        finally:
            if k.poll() is None:
                k.kill()
                k.wait()
        bar = os.read(r, 65536).decode()
        os.close(r)
        print("killed at %s" % bar.strip().split("\r")[-1].strip())
        check(sha("base.raw") != base1, "killed commit had not written the base yet")
        i = img("info", "k.ovl", check=False)
        check(i.returncode == 1 and "a commit into its base was interrupted" in i.stderr,
              "k.ovl after the kill: %d %r" % (i.returncode, i.stderr))
        print("k.ovl after the kill: " + i.stderr.strip())
        c = img("check", "k.ovl", check=False)
        check(c.returncode == 2 and "interrupted" in c.stdout, "check after the kill: %d %r"
              % (c.returncode, c.stdout))
        print(img("commit", "k.ovl").stdout.strip())
        same("base.raw", "expect3.raw", "base.raw after the interrupted commit was finished")
        same(flat("k.ovl", "k.raw"), "expect3.raw", "k.ovl after the finished commit")
        check(img("check", "k.ovl", check=False).returncode == 0, "k.ovl not clean")
    print("ok")


if __name__ == "__main__":
    main()

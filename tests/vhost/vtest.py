"""Glue for the vhost-user tests: blockd serving vhost-user-blk devices on
sockets in a private directory, removed when the test ends (pass, fail or
meson's SIGTERM), with blockd's log printed if the test fails; checks that
blockd is alive, serves a fresh front-end and holds no more descriptors."""
import contextlib
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

from testlib import Blockd, sparse_file, allocated, check, skip, main  # noqa: F401  (re-exported)
import vuclient as V

MiB = 1 << 20
BLOCKD_IMG = os.environ.get("BLOCKD_IMG")


def prerequisites():
    """Skips (77) where vhost-user cannot be tried. A blockd that crashes
    must not leave a core file behind either."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
    for name in ("memfd_create", "eventfd"):
        if not hasattr(os, name):
            skip("this Python has no os.%s (needs 3.10 on Linux)" % name)
    try:
        os.close(os.memfd_create("probe", os.MFD_CLOEXEC))
    except OSError as e:
        skip("memfd_create: %s" % e)


@contextlib.contextmanager
def served(*devices, args=(), files=(), verbose=True):
    """Yields (blockd, tmp) with blockd serving vhost-user-blk DEVICES.

    Each device is (socket name, image name, options), e.g.
    ("vda.sock", "disk.img", "queues=4,serial=abc"); FILES are (name, size)
    sparse files created in tmp first (or (name, callable(path)) to make
    them some other way). ARGS go on blockd's command line too (@TMP@ is
    the directory)."""
    prerequisites()
    tmp = tempfile.mkdtemp(prefix="blockd-vhost.")
    b = None
    try:
        for name, size in files:
            path = os.path.join(tmp, name)
            if callable(size):
                size(path)
            else:
                sparse_file(path, size)
        argv = [a.replace("@TMP@", tmp) for a in args] + (["-v"] if verbose else [])
        for sock, image, opts in devices:
            spec = "%s=%s" % (os.path.join(tmp, sock), os.path.join(tmp, image))
            argv += ["--vhost-user-blk", spec + ("," + opts if opts else "")]
        b = Blockd(*argv, tmp=tmp, unix=False)
        b.start()
        b.dir = tmp
        try:
            yield b, tmp
        except BaseException:
            print("---- blockd log ----\n" + b.logtext()[-20000:], file=sys.stderr)
            raise
    finally:
        if b is not None:
            if b.proc is not None and b.proc.poll() is None:
                b.proc.kill()
                b.proc.wait()
            b.log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def sock(b, name="vda.sock"):
    return os.path.join(b.dir, name)


def img(b, name="disk.img"):
    return os.path.join(b.dir, name)


def nfds(pid):
    """Open file descriptors of PID."""
    return len(os.listdir("/proc/%d/fd" % pid))


def wait_until(cond, timeout=5.0, step=0.02):
    """Polls COND until true or TIMEOUT seconds; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(step)


def alive(b, what):
    check(b.proc.poll() is None, "%s: blockd died (exit %s)" % (what, b.proc.returncode))


def check_no_fd_leak(b, base, what, timeout=5.0):
    """blockd holds no more descriptors than BASE (waiting a little for closes)."""
    wait_until(lambda: b.proc.poll() is not None or nfds(b.proc.pid) <= base, timeout)
    alive(b, what)
    n = nfds(b.proc.pid)
    check(n <= base, "%s: blockd holds %d descriptors, %d before" % (what, n, base))


def check_still_serves(b, what, path=None, sector=8, byte=0x42):
    """A fresh, well-behaved front-end can write 4 KiB and read it back."""
    alive(b, what)
    data = bytes([byte]) * 4096
    with V.GuestMemory() as mem, V.Frontend(path or sock(b)) as fe:
        fe.start(mem)
        fe.write(0, sector, data)
        got = fe.read(0, sector, 4096)
        check(got == data, "%s: a fresh front-end read back other data" % what)


def writes_in_flight(fe, q=0, n=32, size=MiB, sector=65536, seed=0):
    """Puts N durable (write-through) writes of SIZE bytes in flight on queue
    Q, one indirect descriptor each, and waits until blockd has taken them
    all. Guest memory must hold N * SIZE bytes of buffers. Returns (the
    requests, how many were not yet completed when all were taken)."""
    fe.set_config(V.WRITEBACK_OFFSET, b"\x00")
    vq = fe.vqs[q]
    reqs = [vq.blk_request(V.T_OUT, sector + k * (size // 512), out=pattern(size, seed + k),
                           indirect=True) for k in range(n)]
    vq.kick()
    wait_until(lambda: vq.avail_event() == vq.avail_idx, 5, 0.001)
    return reqs, (vq.avail_event() - vq.used_idx()) & 0xffff


def log_mark(b):
    """The length of blockd's log now: log_since(b, mark) is what came after."""
    return len(b.logtext())


def log_since(b, mark):
    return b.logtext()[mark:]


def wait_log(b, mark, text, timeout=5.0):
    """Waits until TEXT appears in blockd's log after MARK; returns whether it did."""
    return wait_until(lambda: text in log_since(b, mark), timeout)


def log_tail(b, n=15):
    """The last N lines of blockd's log, without the connect/leave chatter."""
    lines = [ln for ln in b.logtext().splitlines()
             if not ln.endswith(("a front-end connected", "the front-end left"))]
    return "\n".join(lines[-n:])


def file_bytes(path, offset, n):
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(n)


def pattern(n, seed):
    """N bytes nobody would write by accident, different for each SEED."""
    block = bytes((seed * 131 + i * 7 + (i >> 8)) & 0xff for i in range(4096))
    return (block * (n // 4096 + 1))[:n]


def img_create(*args):
    """Runs blockd-img (skips without it)."""
    if not BLOCKD_IMG:
        skip("BLOCKD_IMG is not set (blockd-img not built)")
    r = subprocess.run([BLOCKD_IMG, *args], capture_output=True, text=True)
    check(r.returncode == 0, "blockd-img %s: %s" % (" ".join(args), r.stderr))


class Cases:
    """Runs named cases one after the other, each on its own, and reports
    every failure at the end (one bug must not hide the next). A case that
    kills blockd gets a fresh one for the cases after it (RESTART)."""

    def __init__(self, restart):
        self.restart = restart
        self.failed = []
        self.ran = 0

    def run(self, b, name, fn, *args, stops=False):
        """Runs FN(B, *ARGS); blockd must be alive after it unless it STOPS
        blockd itself. Returns the blockd for the next case."""
        self.ran += 1
        t = time.monotonic()
        try:
            fn(b, *args)
            if not stops:
                alive(b, "after the case")
            print("ok   %-55s %.2fs" % (name, time.monotonic() - t))
        except Exception:
            print("FAIL %-55s %.2fs" % (name, time.monotonic() - t))
            traceback.print_exc()
            print("---- blockd log (last lines) ----\n" + log_tail(b), file=sys.stderr)
            self.failed.append(name)
            if b.proc.poll() is not None and not stops:
                b = self.restart(b)
        return b

    def finish(self):
        if self.failed:
            raise AssertionError("%d of %d cases failed: %s"
                                 % (len(self.failed), self.ran, ", ".join(self.failed)))

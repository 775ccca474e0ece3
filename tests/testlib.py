"""Shared helpers for the Python tests (run with /usr/bin/python3, which has nbd).

Each test gets a temporary directory and a blockd started on a unix socket in
it; everything is stopped and removed when the test ends, pass or fail.
"""
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback

SKIP = 77
BUILDDIR = os.environ.get("BUILDDIR", "build")


def _terminated(signum, frame):
    """meson stops a test that runs past its timeout with SIGTERM: unwind
    like an exception, so that with-blocks and finally clauses stop the
    servers and remove the temporary directories. (A test blocked inside a
    C call that retries on EINTR, such as libnbd's poll, cannot unwind: meson
    kills it after its grace period.)"""
    sys.exit(128 + signum)


signal.signal(signal.SIGTERM, _terminated)
BLOCKD = os.environ.get("BLOCKD", os.path.join(BUILDDIR, "blockd", "blockd"))


def main(fn):
    """Runs FN(); a failed check prints FAIL and the traceback, exit 1.
    (SIGTERM unwinds like an exception: see _terminated above.)"""
    try:
        fn()
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc()
        print("FAIL", file=sys.stderr)
        sys.exit(1)
    print("PASS")


def skip(msg):
    print("SKIP:", msg, file=sys.stderr)
    sys.exit(SKIP)


try:
    import nbd  # noqa: F401
except ImportError:
    skip("python3-libnbd is not installed (run with /usr/bin/python3)")


class Blockd:
    """A blockd process serving on a private unix socket."""

    def __init__(self, *args, tmp=None, unix=True):
        """ARGS follow blockd's own; UNIX=False leaves out --unix (for --listen)."""
        self._own_tmp = tmp is None
        self.unix = unix
        self.tmp = tmp or tempfile.mkdtemp(prefix="blockd-test.")
        self.sock = os.path.join(self.tmp, "nbd.sock")
        self.pidfile = os.path.join(self.tmp, "blockd.pid")
        self.log = open(os.path.join(self.tmp, "blockd.log"), "ab")
        self.args = args
        self.proc = None

    def start(self):
        if os.path.exists(self.pidfile):
            os.unlink(self.pidfile)
        self.proc = subprocess.Popen(
            [BLOCKD, *(["--unix", self.sock] if self.unix else []), "--pidfile", self.pidfile,
             *self.args],
            stderr=self.log)
        deadline = time.time() + 10
        while time.time() < deadline:
            if os.path.exists(self.pidfile) and os.path.getsize(self.pidfile) > 0:
                return self
            if self.proc.poll() is not None:
                raise RuntimeError("blockd exited at start: " + self.logtext())
            time.sleep(0.05)
        raise RuntimeError("blockd did not write its pidfile")

    def uri(self, name=""):
        return "nbd+unix:///%s?socket=%s" % (name, self.sock)

    def connect(self, name="", structured=True, meta=True):
        """Returns a connected nbd.NBD handle."""
        h = nbd.NBD()
        h.set_request_structured_replies(structured)
        if meta:
            h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
        h.set_export_name(name)
        h.connect_unix(self.sock)
        return h

    def logtext(self):
        self.log.flush()
        with open(os.path.join(self.tmp, "blockd.log"), "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self, sig=signal.SIGTERM, expect=0):
        """Stops blockd with SIG and checks its exit status (None: any)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("blockd did not exit after signal %d" % sig)
        if expect is not None and rc != expect:
            raise AssertionError("blockd exited %d, expected %d: %s" % (rc, expect, self.logtext()))
        return rc

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        finally:
            self.log.close()
            if self._own_tmp:
                subprocess.run(["rm", "-rf", self.tmp])


def sparse_file(path, size):
    """Creates a sparse file of SIZE bytes."""
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def allocated(path):
    return os.stat(path).st_blocks * 512


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)

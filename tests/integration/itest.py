"""Glue for the integration tests in Python: a blockd serving a fresh sparse
file in a private directory, removed when the test ends, with blockd's log
printed if the test fails."""
import contextlib
import os
import shutil
import sys
import tempfile
import time

from testlib import Blockd, sparse_file, allocated, check, skip, main  # noqa: F401  (re-exported)

MiB = 1 << 20


@contextlib.contextmanager
def served(*args, size=64 * MiB, disk="disk.img", extra_files=()):
    """Yields (blockd, disk path) with blockd serving a sparse file of SIZE.

    ARGS go before the file on blockd's command line; DISK=None serves no
    lone FILE (use --export in ARGS, with EXTRA_FILES created in tmp first:
    a list of (name, size))."""
    tmp = tempfile.mkdtemp(prefix="blockd-test.")
    try:
        for name, fsize in extra_files:
            sparse_file(os.path.join(tmp, name), fsize)
        argv = [a.replace("@TMP@", tmp) for a in args]
        path = None
        if disk is not None:
            path = sparse_file(os.path.join(tmp, disk), size)
            argv.append(path)
        b = Blockd(*argv, tmp=tmp)
        try:
            with b:
                try:
                    yield b, path
                except BaseException:
                    print("---- blockd log ----\n" + b.logtext(), file=sys.stderr)
                    raise
        finally:
            # Blockd.__exit__ does not run if start() itself is interrupted.
            if b.proc is not None and b.proc.poll() is None:
                b.proc.kill()
                b.proc.wait()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def vmrss(pid):
    """Resident set size of PID in bytes, from /proc/PID/status."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS for pid %d" % pid)


def expect_error(what, got, want):
    """Checks an NBD error number; WANT may be a tuple of acceptable ones."""
    from nbdraw import errname
    wants = want if isinstance(want, tuple) else (want,)
    check(got in wants, "%s: got %s, expected %s"
          % (what, errname(got), "/".join(errname(w) for w in wants)))


def wait_until(cond, timeout=5, step=0.05):
    """Polls COND until true or TIMEOUT seconds; returns its last value."""
    deadline = time.time() + timeout
    while True:
        v = cond()
        if v or time.time() >= deadline:
            return v
        time.sleep(step)


def extents(h, count, offset, flags=0):
    """base:allocation extents from libnbd handle H: [(offset, length, flags)]."""
    got = []

    def cb(context, off, entries, err):
        if context != "base:allocation":
            return 0
        o = off
        for i in range(0, len(entries), 2):
            got.append((o, entries[i], entries[i + 1]))
            o += entries[i]
        return 0

    h.block_status(count, offset, cb, flags)
    return got


def status_at(ext, offset):
    """The flags of the extent in EXT covering OFFSET."""
    for o, n, f in ext:
        if o <= offset < o + n:
            return f
    raise AssertionError("no extent covers offset %d: %r" % (offset, ext))


def nbd_errno(fn, *args, **kw):
    """Calls FN; returns the errno of the nbd.Error it raises, 0 if none."""
    import nbd
    try:
        fn(*args, **kw)
    except nbd.Error as e:
        return e.errnum or -1
    return 0


def nfds(pid):
    """Open file descriptors of PID."""
    return len(os.listdir("/proc/%d/fd" % pid))


def check_no_fd_leak(b, base, what):
    """Once every client is gone, blockd holds no more descriptors than BASE."""
    wait_until(lambda: nfds(b.proc.pid) <= base, 10)
    n = nfds(b.proc.pid)
    check(n <= base, "%s: blockd holds %d descriptors, %d before (leaked connections?)"
          % (what, n, base))


def check_still_serves(b, what, byte=0x42):
    """A new client can write 4 KiB at offset 0 and read it back."""
    import nbdraw
    data = bytes([byte]) * 4096
    c = nbdraw.Client(b.sock).handshake()
    r = c.write(0, data)
    check(r.error == 0, "write %s: %r" % (what, r))
    r = c.read(0, 4096)
    check(r.error == 0 and r.data == data, "read %s: %r" % (what, r))
    c.disconnect()

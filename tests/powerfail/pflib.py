"""Shared by the powerfail tests: faultfs mounted on a private directory,
blockd serving images on it, and faultfs's control commands.

Everything a test starts is stopped, unmounted and removed when it ends, pass
or fail: `with powerfail_rig() as rig` unwinds on exceptions, and main() turns
SIGTERM (meson's timeout) into an exception. Should the test itself be killed
with SIGKILL, faultfs and blockd die with it (PR_SET_PDEATHSIG) and faultfs's
auto_unmount has fusermount3 unmount the file system."""
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import nbd

from testlib import BLOCKD, check, main, skip  # noqa: F401  (re-exported)

FAULTFS = os.environ.get("FAULTFS", "")
BLOCKD_IMG = os.environ.get("BLOCKD_IMG", os.path.join(os.environ.get("BUILDDIR", "build"),
                                                       "formats", "blockd-img"))
CTL = ".faultfs"
_PR_SET_PDEATHSIG = 1


def _die_with_parent(sig):
    """A preexec_fn: the child gets SIG when the test process dies."""
    libc = ctypes.CDLL(None, use_errno=True)

    def fn():
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
    return fn


def require_faultfs():
    """Skips (exit 77, one line) unless faultfs can be mounted here."""
    if not FAULTFS or not os.access(FAULTFS, os.X_OK):
        skip(os.environ.get("FAULTFS_MISSING", "faultfs not built (FAULTFS not set)"))
    if os.geteuid() != 0:
        skip("needs root to mount faultfs")
    if not os.path.exists("/dev/fuse"):
        skip("no /dev/fuse")
    if shutil.which("fusermount3") is None:
        skip("fusermount3 not installed (Debian package fuse3)")
    if not os.access(BLOCKD_IMG, os.X_OK):
        skip("blockd-img not built")


class FaultFS:
    """faultfs mounted on DIR/mnt while started."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.mnt = os.path.join(tmp, "mnt")
        self.logpath = os.path.join(tmp, "faultfs.log")
        self.proc = None

    def path(self, name):
        return os.path.join(self.mnt, name)

    def start(self):
        os.makedirs(self.mnt, exist_ok=True)
        with open(self.logpath, "ab") as log:
            self.proc = subprocess.Popen([FAULTFS, self.mnt], stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL,
                                         preexec_fn=_die_with_parent(signal.SIGTERM))
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.mounted():
                try:
                    self.counters()
                    return self
                except OSError:
                    pass
            if self.proc.poll() is not None:
                skip("faultfs could not mount (exit %d): %s"
                     % (self.proc.returncode, self.logtext().strip().replace("\n", "; ")))
            time.sleep(0.02)
        self.stop()
        skip("faultfs did not mount within 10 s")

    def mounted(self):
        with open("/proc/self/mountinfo") as f:
            return any(line.split()[4] == self.mnt for line in f)

    def logtext(self):
        try:
            with open(self.logpath, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def ctl(self, cmd):
        """Runs one control command; raises OSError if faultfs refuses it."""
        fd = os.open(self.path(CTL), os.O_WRONLY)
        try:
            os.write(fd, cmd.encode())
        finally:
            os.close(fd)

    def counters(self):
        """The control file's counters: {"writes": N, "fsyncs": N, ...}."""
        with open(self.path(CTL)) as f:
            return {k: int(v) for k, v in (w.split("=") for w in f.read().split())}

    def cut(self, seed, mode):
        self.ctl("cut %d %s" % (seed, mode))

    def stop(self):
        """Stops faultfs and makes sure nothing stays mounted."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.mounted():
            # A process (or a dead faultfs) still holds it: detach it anyway.
            if subprocess.run(["fusermount3", "-u", "-z", self.mnt],
                              stderr=subprocess.DEVNULL).returncode != 0:
                subprocess.run(["umount", "-l", self.mnt], stderr=subprocess.DEVNULL)


class Server:
    """blockd on a unix socket in TMP serving ARGS, restartable after SIGKILL."""

    def __init__(self, tmp, *args):
        self.tmp = tmp
        self.args = args
        self.sock = os.path.join(tmp, "nbd.sock")
        self.pidfile = os.path.join(tmp, "blockd.pid")
        self.logpath = os.path.join(tmp, "blockd.log")
        self.proc = None
        self.starts = 0          # successful starts
        self.lock_retries = 0    # starts retried because the old OFD lock lingered

    def start(self):
        """Starts blockd and waits for its pidfile. A just-killed blockd's OFD
        lock can outlive it for a moment (its io_uring is torn down after it is
        reaped), so "locked by another process" is retried for a while."""
        deadline = time.time() + 10
        while True:
            for f in (self.sock, self.pidfile):
                if os.path.exists(f):
                    os.unlink(f)
            mark = os.path.getsize(self.logpath) if os.path.exists(self.logpath) else 0
            with open(self.logpath, "ab") as log:
                self.proc = subprocess.Popen(
                    [BLOCKD, "--unix", self.sock, "--pidfile", self.pidfile, *self.args],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                    preexec_fn=_die_with_parent(signal.SIGKILL))
            while time.time() < deadline:
                if os.path.exists(self.pidfile) and os.path.getsize(self.pidfile) > 0:
                    self.starts += 1
                    return self
                if self.proc.poll() is not None:
                    break
                time.sleep(0.005)
            else:
                self.kill()
                raise AssertionError("blockd did not write its pidfile within 10 s")
            text = self.logtext()[mark:]
            if "locked by another process" in text and time.time() < deadline:
                self.lock_retries += 1
                time.sleep(0.02)
                continue
            raise AssertionError("blockd exited %s at start: %s" % (self.proc.returncode, text))

    def connect(self, name=""):
        h = nbd.NBD()
        h.set_request_structured_replies(True)
        h.set_export_name(name)
        h.connect_unix(self.sock)
        return h

    def kill(self):
        """SIGKILL, and wait until it is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def logtext(self):
        try:
            with open(self.logpath, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""


def _identity(pid):
    """PID and its start time: a pid, but never the same for two processes."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return "%d %s" % (pid, f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError):
        return ""


def sweep(prefix):
    """Removes what a test killed with SIGKILL left behind: directories of
    ours whose owner is gone and whose faultfs is no longer mounted (it
    unmounts itself when its parent dies). Parallel tests are left alone."""
    top = tempfile.gettempdir()
    with open("/proc/self/mountinfo") as f:
        mounts = set(line.split()[4] for line in f)
    for name in os.listdir(top):
        d = os.path.join(top, name)
        if not name.startswith(prefix) or os.path.join(d, "mnt") in mounts:
            continue
        try:
            with open(os.path.join(d, "owner")) as f:
                owner = f.read()
        except OSError:
            continue
        if owner and _identity(int(owner.split()[0])) != owner:
            shutil.rmtree(d, ignore_errors=True)


class Rig:
    """A private directory TMP with faultfs FS mounted on TMP/mnt, and the
    blockd servers started in it."""

    PREFIX = "blockd-powerfail."

    def __init__(self):
        sweep(self.PREFIX)
        self.tmp = tempfile.mkdtemp(prefix=self.PREFIX)
        with open(os.path.join(self.tmp, "owner"), "w") as f:
            f.write(_identity(os.getpid()))
        self.fs = FaultFS(self.tmp)
        self.servers = []

    def server(self, *args):
        """A new (not yet started) Server in TMP, killed when the rig goes."""
        s = Server(self.tmp, *args)
        self.servers.append(s)
        return s

    def close(self):
        try:
            for s in self.servers:
                s.kill()
        finally:
            self.fs.stop()
            if self.fs.mounted():
                print("WARNING: %s is still mounted" % self.fs.mnt, file=sys.stderr)
            else:
                shutil.rmtree(self.tmp, ignore_errors=True)


@contextlib.contextmanager
def powerfail_rig():
    """Yields a Rig with faultfs mounted; on the way out, pass or fail, its
    servers are killed, faultfs stopped and unmounted, the directory removed."""
    rig = Rig()
    try:
        rig.fs.start()
        yield rig
    finally:
        rig.close()


def img(*args):
    """Runs blockd-img ARGS; raises with its output if it fails."""
    r = subprocess.run([BLOCKD_IMG, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        raise AssertionError("blockd-img %s: exit %d: %s"
                             % (" ".join(args), r.returncode, r.stdout.decode(errors="replace")))
    return r.stdout.decode()


def fsync_file(path):
    """Makes PATH's data durable (on faultfs: commits its log)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def nbd_errno(fn, *args):
    """Calls FN(*ARGS); returns the errno of the nbd.Error it raises, 0 if none."""
    try:
        fn(*args)
    except nbd.Error as e:
        return e.errnum or -1
    return 0

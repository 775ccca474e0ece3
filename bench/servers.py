"""NBD servers under test: their command lines, starting, readiness, clean
stop, and what /proc and perf say about their CPU, syscalls and memory."""
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1 << 20
SERVER_NAMES = ["blockd", "nbdkit-file", "qsd", "nbdkit-plugin", "ceiling"]
# The protocol ceiling: nbdkit's null plugin does no I/O at all (reads are
# zeros, writes are dropped), so what it reaches is what the NBD client and
# the socket can take.
CEILING = "ceiling"
# Guest mode only: the same servers as vhost-user-blk back-ends.
VHOST_NAMES = ["blockd-vhost", "qsd-vhost"]
# --rbd: blockd and qemu-storage-daemon's rbd driver on one Ceph RBD image.
RBD_NAMES = ["blockd-rbd", "qsd-rbd"]
# Another blockd binary (--blockd-alt), to measure a change side by side.
ALT = "blockd-alt"
# blockd with --cache=none: its file is read and written around the page
# cache; run on request (--servers), its cache is measured from empty.
DIRECT = "blockd-direct"
# No server: fio itself on a file of its own, O_DIRECT through io_uring: what
# the device gives at the job's queue depth, which blockd-direct cannot pass
# (the others read and write the page cache). Run on request; it has
# no trim job (fio trims block devices only).
FILE_DIRECT = "fio-direct"


def log(msg):
    """Prints a progress line to stderr."""
    print("bench: " + msg, file=sys.stderr, flush=True)


def set_pdeathsig():
    """Child pre-exec hook: get SIGTERM if the runner dies without cleaning up."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)       # PR_SET_PDEATHSIG
    except OSError:
        pass


def rbd_parts(image):
    """Splits rbd:POOL/IMAGE,conf=FILE into (POOL, IMAGE, FILE)."""
    name, conf = image[len("rbd:"):].split(",conf=", 1)
    pool, img = name.split("/", 1)
    return pool, img, conf


# qemu-storage-daemon's request buffers come from glibc's malloc; left to
# its defaults, a 1 MiB buffer is mapped fresh and faulted in page by page
# for each request, and page faults are dear on a paravirtualised VM like
# the one these figures are taken on (1 MiB reads: 195-236 IOPS, against
# 3133-3342 with these two settings, which keep buffers in the heap). Set
# so that the peer runs at its best.
QSD = ["env", "MALLOC_MMAP_THRESHOLD_=%d" % (64 * MIB),
       "MALLOC_TRIM_THRESHOLD_=%d" % (256 * MIB), "qemu-storage-daemon"]


def server_argv(name, paths, sock, pidfile, image):
    """Returns the command line that serves IMAGE on SOCK for server NAME
    (for the rbd servers IMAGE is rbd:POOL/IMAGE,conf=FILE)."""
    if name == "blockd-rbd":
        return [paths["blockd"], "--unix", sock, "--pidfile", pidfile, "--export", "=" + image]
    if name == "qsd-rbd":
        # cache.direct=on is how QEMU's rbd driver sets rbd_cache=false (off,
        # it turns librbd's write-back cache on); blockd forces it off.
        pool, img, conf = rbd_parts(image)
        return [*QSD,
                "--blockdev", "driver=rbd,node-name=rbd0,pool=%s,image=%s,conf=%s,"
                "cache.direct=on,discard=unmap" % (pool, img, conf),
                "--nbd-server", "addr.type=unix,addr.path=" + sock,
                "--export", "type=nbd,id=e0,node-name=rbd0,name=,writable=on",
                "--pidfile", pidfile]
    if name in ("blockd", "blockd-alt"):
        prog = paths["blockd" if name == "blockd" else "blockd_alt"]
        return [prog, "--unix", sock, "--pidfile", pidfile, image]
    if name == DIRECT:
        return [paths["blockd"], "--unix", sock, "--pidfile", pidfile, "--cache=none", image]
    if name == "blockd-vhost":
        return [paths["blockd"], "--pidfile", pidfile, "--vhost-user-blk",
                "%s=%s,queues=2" % (sock, image)]
    if name == "qsd-vhost":
        return [*QSD,
                "--blockdev", "driver=file,node-name=file0,filename=" + image +
                ",aio=io_uring,cache.direct=off,discard=unmap",
                "--export", "type=vhost-user-blk,id=e0,node-name=file0,addr.type=unix,"
                "addr.path=%s,writable=on,num-queues=2" % sock,
                "--pidfile", pidfile]
    if name == "nbdkit-file":
        return ["nbdkit", "--foreground", "--exit-with-parent", "--unix", sock,
                "--pidfile", pidfile, "file", "file=" + image]
    if name == "nbdkit-plugin":
        return ["nbdkit", "--foreground", "--exit-with-parent", "--unix", sock,
                "--pidfile", pidfile, paths["plugin"], "file=" + image]
    if name == CEILING:
        return ["nbdkit", "--foreground", "--exit-with-parent", "--unix", sock,
                "--pidfile", pidfile, "null", "size=%d" % os.path.getsize(image)]
    if name == "qsd":
        # --nbd-server must come before --export (qemu 7.2 refuses otherwise).
        return [*QSD,
                "--blockdev", "driver=file,node-name=file0,filename=" + image +
                ",aio=io_uring,cache.direct=off,discard=unmap",
                "--nbd-server", "addr.type=unix,addr.path=" + sock,
                "--export", "type=nbd,id=e0,node-name=file0,name=,writable=on",
                "--pidfile", pidfile]
    raise ValueError(name)


def server_missing(name, paths):
    """Returns why server NAME cannot run here, or None if it can."""
    if name == FILE_DIRECT:
        return None
    if name in ("blockd", "blockd-alt", "blockd-vhost", DIRECT, "blockd-rbd"):
        p = paths["blockd_alt" if name == "blockd-alt" else "blockd"]
        if p is None:
            return "blockd-alt needs --blockd-alt PATH"
        return None if os.access(p, os.X_OK) else "%s not built (%s)" % (name, p)
    if name == "nbdkit-plugin":
        if not shutil.which("nbdkit"):
            return "nbdkit not installed"
        p = paths["plugin"]
        return None if os.path.exists(p) else "nbdkit plugin not built (%s)" % p
    prog = {"nbdkit-file": "nbdkit", "qsd": "qemu-storage-daemon", "qsd-rbd": "qemu-storage-daemon",
            "qsd-vhost": "qemu-storage-daemon", CEILING: "nbdkit"}[name]
    return None if shutil.which(prog) else prog + " not installed"


def server_version(name, paths):
    """Returns the first line of the server's --version output."""
    prog = {"blockd": paths["blockd"], "blockd-alt": paths.get("blockd_alt"),
            "blockd-vhost": paths["blockd"], DIRECT: paths["blockd"], "nbdkit-file": "nbdkit",
            "nbdkit-plugin": "nbdkit", "qsd": "qemu-storage-daemon",
            "qsd-vhost": "qemu-storage-daemon", CEILING: "nbdkit",
            "blockd-rbd": paths["blockd"], "qsd-rbd": "qemu-storage-daemon"}.get(name)
    if prog is None:
        return ""
    try:
        out = subprocess.run([prog, "--version"], capture_output=True,
                             text=True, timeout=10).stdout
        return out.splitlines()[0] if out else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def drop_cache(path):
    """Evicts PATH's (clean, fsynced) pages from the page cache."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def cached_kib(path):
    """KiB of PATH in the page cache (fincore), or None if unknown."""
    try:
        out = subprocess.run(["fincore", "-n", "-b", "-o", "RES", path], check=True,
                             capture_output=True, text=True).stdout
        return int(out.split()[0]) // 1024
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def fill_images(paths, size):
    """Creates every file in PATHS as fill_image does, a MiB of each in turn.
    Filled one after the other, the first file got measurably slower 4 KiB
    buffered writes (about 1.25x the CPU in an A/A run, following the file,
    not the server): the page cache's large folios are handed out from what
    free memory holds at the time, and ext4's write_begin walks a folio's
    buffer heads.  Interleaved, every file gets the same mix."""
    block = bytearray(os.urandom(MIB))
    fds = [os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600) for p in paths]
    try:
        for fd in fds:
            os.ftruncate(fd, size)
        done = 0
        while done < size:
            n = min(MIB, size - done)
            block[0:8] = done.to_bytes(8, "little")   # no two blocks alike
            for fd in fds:
                os.pwrite(fd, block[:n], done)
            done += n
        for fd in fds:
            os.fsync(fd)
    finally:
        for fd in fds:
            os.close(fd)


def fill_image(path, size, refill=False):
    """Makes PATH a SIZE-byte file full of non-zero data, synced to disk.
    REFILL rewrites an existing file in place (a server may have it open)."""
    block = bytearray(os.urandom(MIB))
    flags = os.O_WRONLY if refill else os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(path, flags, 0o600)
    try:
        os.ftruncate(fd, size)
        done = 0
        while done < size:
            n = min(MIB, size - done)
            block[0:8] = done.to_bytes(8, "little")   # no two blocks alike
            os.pwrite(fd, block[:n], done)
            done += n
        os.fsync(fd)
    finally:
        os.close(fd)


def proc_cpu_ticks(pid):
    """Returns utime+stime in clock ticks of every thread of PID, dead ones too."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # After the comm field: state is field 3, utime 14, stime 15 (proc(5)).
    return int(fields[11]) + int(fields[12])


def proc_thread_ticks(pid):
    """Returns {tid: (name, ticks)} for every live thread of PID; io_uring's
    io-wq workers show as "iou-wrk-N", its SQPOLL thread as "iou-sqp-N"."""
    out = {}
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return out
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                text = f.read()
        except OSError:
            continue        # exited meanwhile
        name = text[text.index("(") + 1:text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        out[tid] = (name, int(fields[11]) + int(fields[12]))
    return out


def thread_cpu_split(before, after):
    """Returns CPU seconds per thread kind between two proc_thread_ticks
    samples: io-wq workers, SQPOLL threads, and the server's own threads.
    Threads that exited in between are missing (their time is not lost from
    proc_cpu_ticks, only from this split)."""
    split = {}
    for tid, (name, ticks) in after.items():
        kind = ("io-wq" if name.startswith("iou-wrk") else
                "sqpoll" if name.startswith("iou-sqp") else "server threads")
        delta = ticks - before.get(tid, (name, 0))[1]
        split[kind] = split.get(kind, 0) + delta / CLK_TCK
    return split


def proc_status_kib(pid, key):
    """Returns a kB value (VmHWM, VmRSS, ...) from /proc/PID/status."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


class Server:
    """A running NBD server: its process, socket and image file."""

    def __init__(self, name, argv, sock, pidfile, image, logpath):
        self.name = name          # one of SERVER_NAMES
        self.argv = argv          # the exact command line
        self.sock = sock          # unix socket path
        self.pidfile = pidfile    # pidfile written by the server once ready
        self.image = image        # the test file it serves
        self.logpath = logpath    # its stderr/stdout
        self.proc = None          # subprocess.Popen once started
        self.exit_status = None   # exit status after stop()
        self.hwm_kib = None       # highest VmHWM of earlier runs (--rbd restarts it)

    def uri(self):
        """Returns the NBD URI of the default export."""
        return "nbd+unix:///?socket=" + self.sock

    def start(self, timeout=30):
        """Starts the server and waits until its socket accepts connections.
        May be called again after stop()."""
        self.exit_status = None
        for path in (self.pidfile, self.sock):
            if os.path.exists(path):
                os.unlink(path)     # left by an earlier run of this server
        with open(self.logpath, "ab") as logf:
            # A session of its own: a Ctrl-C on the terminal must not reach
            # the server, we stop it ourselves with SIGTERM.
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                         stdout=logf, stderr=logf,
                                         start_new_session=True,
                                         preexec_fn=set_pdeathsig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited at start with status %d: %s" %
                                   (self.name, self.proc.returncode, self.logtail()))
            if os.path.exists(self.pidfile) and os.path.getsize(self.pidfile) > 0 \
                    and self._connects():
                return
            time.sleep(0.05)
        raise RuntimeError("%s not ready after %ds: %s" % (self.name, timeout, self.logtail()))

    def _connects(self):
        """Returns True if the unix socket accepts a connection."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(self.sock)
            return True
        except OSError:
            return False
        finally:
            s.close()

    def check_alive(self):
        """Raises RuntimeError if the server has died."""
        if self.proc.poll() is not None:
            raise RuntimeError("%s died (status %d): %s" %
                               (self.name, self.proc.returncode, self.logtail()))

    def cpu_ticks(self):
        """Returns the server's CPU time so far in clock ticks."""
        return proc_cpu_ticks(self.proc.pid)

    def peak_rss_kib(self):
        """Returns the server's peak RSS (VmHWM) in KiB, the highest of every
        run when it was restarted."""
        now = None
        if self.proc is not None and self.proc.poll() is None:
            now = proc_status_kib(self.proc.pid, "VmHWM")
        seen = [k for k in (now, self.hwm_kib) if k is not None]
        return max(seen) if seen else None

    def stop(self, timeout=20):
        """SIGTERMs the server, waits, SIGKILLs it if it hangs; returns the status."""
        if self.proc is None or self.exit_status is not None:
            return self.exit_status
        if self.proc.poll() is None:
            self.hwm_kib = self.peak_rss_kib()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log("%s did not exit %ds after SIGTERM, killing it" % (self.name, timeout))
                self.proc.kill()
                self.proc.wait()
        self.exit_status = self.proc.returncode
        return self.exit_status

    def logtail(self, n=800):
        """Returns the end of the server's log."""
        try:
            with open(self.logpath, errors="replace") as f:
                return f.read()[-n:].strip()
        except OSError:
            return ""


class PerfStat:
    """perf stat counting one process's syscalls and context switches."""

    EVENTS = "raw_syscalls:sys_enter,context-switches,task-clock"

    def __init__(self, pid, outpath):
        self.outpath = outpath    # perf's CSV output
        self.proc = subprocess.Popen(
            ["perf", "stat", "-x,", "-o", outpath, "-p", str(pid), "-e", self.EVENTS],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, preexec_fn=set_pdeathsig)
        time.sleep(0.2)           # let perf attach before the load starts

    def finish(self):
        """Stops perf and returns {event: count}."""
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        counts = {}
        try:
            with open(self.outpath) as f:
                for line in f:
                    parts = line.strip().split(",")
                    if len(parts) < 3 or line.startswith("#"):
                        continue
                    try:
                        counts[parts[2]] = float(parts[0])
                    except ValueError:
                        pass    # "<not counted>"
        except OSError:
            pass
        return counts

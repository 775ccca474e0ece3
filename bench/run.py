#!/usr/bin/python3
"""Side-by-side fio benchmark of NBD servers: blockd, nbdkit's file plugin,
qemu-storage-daemon (aio=io_uring, discard=unmap) and nbdkit with the blockd
plugin.

Every server is started on its own unix socket and its own filled sparse test
file, all at once, then each fio job runs against each server in turn (job by
job, so the servers are compared close together in time).  For every job and
server it records IOPS, MB/s, the server's CPU seconds per million I/Os
(utime+stime of all its threads, from /proc/PID/stat) and, once at the end,
the server's peak RSS (VmHWM).  Every figure is also given as a ratio to the
baseline server (blockd unless told otherwise) from the same run.

See bench/README.md for the commands behind the published figures.
Exit status: 0 ok, 1 a server or job failed, 2 usage error, 77 a
prerequisite (fio's nbd engine, a server) is missing.
"""
import argparse
import ctypes
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

SKIP = 77
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1 << 20


class Job:
    """One fio workload: a name and the fio options that define it."""

    def __init__(self, name, rw, bs, iodepth, numjobs=1, title=""):
        self.name = name          # short name used in tables and JSON
        self.rw = rw              # fio rw= (randread, write, trim, ...)
        self.bs = bs              # fio bs=
        self.iodepth = iodepth    # fio iodepth= per connection
        self.numjobs = numjobs    # fio numjobs=: one NBD connection each
        self.title = title        # human description for the table


# Reads first (on the filled file), then writes, trim last: a trim leaves
# holes that would turn later reads into hole reads.
JOBS = [
    Job("randread-4k", "randread", "4k", 32, title="4k random read, QD32"),
    Job("randread-4k-2conn", "randread", "4k", 32, numjobs=2,
        title="4k random read, 2 connections x QD32"),
    Job("seqread-1m", "read", "1m", 8, title="1 MiB sequential read, QD8"),
    Job("randwrite-4k", "randwrite", "4k", 32, title="4k random write, QD32"),
    Job("seqwrite-1m", "write", "1m", 8, title="1 MiB sequential write, QD8"),
    Job("trim-64k", "trim", "64k", 8, title="64 KiB sequential trim, QD8"),
]

SERVER_NAMES = ["blockd", "nbdkit-file", "qsd", "nbdkit-plugin"]


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


def server_argv(name, paths, sock, pidfile, image):
    """Returns the command line that serves IMAGE on SOCK for server NAME."""
    if name == "blockd":
        return [paths["blockd"], "--unix", sock, "--pidfile", pidfile, image]
    if name == "nbdkit-file":
        return ["nbdkit", "--foreground", "--exit-with-parent", "--unix", sock,
                "--pidfile", pidfile, "file", "file=" + image]
    if name == "nbdkit-plugin":
        return ["nbdkit", "--foreground", "--exit-with-parent", "--unix", sock,
                "--pidfile", pidfile, paths["plugin"], "file=" + image]
    if name == "qsd":
        # --nbd-server must come before --export (qemu 7.2 refuses otherwise).
        return ["qemu-storage-daemon",
                "--blockdev", "driver=file,node-name=file0,filename=" + image +
                ",aio=io_uring,cache.direct=off,discard=unmap",
                "--nbd-server", "addr.type=unix,addr.path=" + sock,
                "--export", "type=nbd,id=e0,node-name=file0,name=,writable=on",
                "--pidfile", pidfile]
    raise ValueError(name)


def server_missing(name, paths):
    """Returns why server NAME cannot run here, or None if it can."""
    if name == "blockd":
        p = paths["blockd"]
        return None if os.access(p, os.X_OK) else "blockd not built (%s)" % p
    if name == "nbdkit-plugin":
        if not shutil.which("nbdkit"):
            return "nbdkit not installed"
        p = paths["plugin"]
        return None if os.path.exists(p) else "nbdkit plugin not built (%s)" % p
    prog = {"nbdkit-file": "nbdkit", "qsd": "qemu-storage-daemon"}[name]
    return None if shutil.which(prog) else prog + " not installed"


def server_version(name, paths):
    """Returns the first line of the server's --version output."""
    prog = {"blockd": paths["blockd"], "nbdkit-file": "nbdkit",
            "nbdkit-plugin": "nbdkit", "qsd": "qemu-storage-daemon"}[name]
    try:
        out = subprocess.run([prog, "--version"], capture_output=True,
                             text=True, timeout=10).stdout
        return out.splitlines()[0] if out else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def fio_has_nbd():
    """Returns True if fio is installed and built with the nbd engine."""
    if not shutil.which("fio"):
        return False
    r = subprocess.run(["fio", "--enghelp=nbd"], capture_output=True, text=True)
    return r.returncode == 0 and "uri" in r.stdout


def proc_cpu_ticks(pid):
    """Returns utime+stime in clock ticks of every thread of PID, dead ones too."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # After the comm field: state is field 3, utime 14, stime 15 (proc(5)).
    return int(fields[11]) + int(fields[12])


def proc_status_kib(pid, key):
    """Returns a kB value (VmHWM, VmRSS, ...) from /proc/PID/status."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def fill_image(path, size):
    """Creates PATH as a SIZE-byte file full of non-zero data, synced to disk."""
    block = bytearray(os.urandom(MIB))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
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


def fs_type(path):
    """Returns the file system type of the mount holding PATH."""
    best, kind = "", "?"
    real = os.path.realpath(path)
    with open("/proc/mounts") as f:
        for line in f:
            dev, mnt, typ = line.split()[:3]
            mnt = mnt.replace("\\040", " ")
            if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, kind = mnt, "%s (%s on %s)" % (typ, dev, mnt)
    return kind


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

    def uri(self):
        """Returns the NBD URI of the default export."""
        return "nbd+unix:///?socket=" + self.sock

    def start(self, timeout=30):
        """Starts the server and waits until its socket accepts connections."""
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

    def stop(self, timeout=20):
        """SIGTERMs the server, waits, SIGKILLs it if it hangs; returns the status."""
        if self.proc is None or self.exit_status is not None:
            return self.exit_status
        if self.proc.poll() is None:
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


def fio_argv(job, uri, runtime, outpath):
    """Returns the fio command line for JOB against URI."""
    return ["fio", "--name=" + job.name, "--ioengine=nbd", "--uri=" + uri,
            "--rw=" + job.rw, "--bs=" + job.bs, "--iodepth=%d" % job.iodepth,
            "--numjobs=%d" % job.numjobs, "--group_reporting",
            "--time_based", "--runtime=%gs" % runtime, "--norandommap",
            "--output-format=json", "--output=" + outpath]


def perf_start(pid, outpath):
    """Starts perf stat counting syscalls and context switches of PID."""
    return subprocess.Popen(
        ["perf", "stat", "-x,", "-o", outpath, "-p", str(pid), "-e",
         "raw_syscalls:sys_enter,context-switches,task-clock"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, preexec_fn=set_pdeathsig)


def perf_finish(proc, outpath):
    """Stops perf stat and returns {event: count} from its CSV output."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    counts = {}
    try:
        with open(outpath) as f:
            for line in f:
                parts = line.strip().split(",")
                if len(parts) >= 3 and not line.startswith("#"):
                    try:
                        counts[parts[2]] = float(parts[0])
                    except ValueError:
                        pass
    except OSError:
        pass
    return counts


def run_job(job, srv, runtime, tmp, use_perf):
    """Runs fio JOB against SRV; returns the measured figures as a dict."""
    out = os.path.join(tmp, "fio-%s-%s.json" % (job.name, srv.name))
    argv = fio_argv(job, srv.uri(), runtime, out)
    pid = srv.proc.pid
    perf = perf_start(pid, out + ".perf") if use_perf else None
    if perf:
        time.sleep(0.2)       # let perf attach before the load starts
    t0 = time.monotonic()
    c0 = proc_cpu_ticks(pid)
    fio = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    try:
        fio_log, _ = fio.communicate()
    finally:
        if fio.poll() is None:
            fio.kill()
            fio.wait()
    c1 = proc_cpu_ticks(pid)
    wall = time.monotonic() - t0
    counts = perf_finish(perf, out + ".perf") if perf else {}
    res = {"job": job.name, "server": srv.name, "fio_argv": argv,
           "fio_status": fio.returncode, "iops": 0.0, "mbps": 0.0,
           "total_ios": 0, "server_cpu_s": (c1 - c0) / CLK_TCK, "wall_s": wall}
    if fio.returncode != 0 or not os.path.exists(out):
        res["error"] = fio_log.strip()[-800:]
        return res
    with open(out) as f:
        text = f.read()
    data = json.loads(text[text.index("{"):])   # skip any banner before the JSON
    lat_mean, lat_n = 0.0, 0
    p99 = 0.0
    for j in data["jobs"]:
        if j.get("error"):
            res["error"] = "fio job error %d" % j["error"]
        res["fio_usr_cpu"] = j.get("usr_cpu")
        res["fio_sys_cpu"] = j.get("sys_cpu")
        for ddir in ("read", "write", "trim"):
            d = j[ddir]
            res["iops"] += d["iops"]
            res["mbps"] += d["bw_bytes"] / 1e6
            res["total_ios"] += d["total_ios"]
            clat = d.get("lat_ns", {})
            if d["total_ios"] and clat.get("N"):
                lat_mean += clat["mean"] * clat["N"]
                lat_n += clat["N"]
                pct = d.get("clat_ns", {}).get("percentile", {})
                p99 = max(p99, pct.get("99.000000", 0.0))
    res["lat_mean_us"] = lat_mean / lat_n / 1000 if lat_n else None
    res["clat_p99_us"] = p99 / 1000 if p99 else None
    if res["total_ios"]:
        res["server_cpu_s_per_mio"] = res["server_cpu_s"] / res["total_ios"] * 1e6
        res["server_cpu_pct"] = 100.0 * res["server_cpu_s"] / wall
    if counts:
        ios = res["total_ios"] or 1
        res["syscalls_per_io"] = counts.get("raw_syscalls:sys_enter", 0) / ios
        res["ctxsw_per_io"] = counts.get("context-switches", 0) / ios
    return res


def median(values):
    """Returns the median of VALUES, ignoring None; None if there are none."""
    v = sorted(x for x in values if x is not None)
    if not v:
        return None
    m = len(v) // 2
    return v[m] if len(v) % 2 else (v[m - 1] + v[m]) / 2


def median_result(runs):
    """Folds repeated runs of one job on one server into one result: each
    figure is the median over the runs, and the runs are kept under "runs"."""
    if len(runs) == 1:
        return runs[0]
    res = dict(runs[0])
    for k in ("iops", "mbps", "server_cpu_s_per_mio", "server_cpu_pct", "fio_usr_cpu",
              "fio_sys_cpu", "lat_mean_us", "clat_p99_us", "syscalls_per_io", "ctxsw_per_io"):
        if any(k in r for r in runs):
            res[k] = median(r.get(k) for r in runs)
    res["total_ios"] = sum(r["total_ios"] for r in runs)
    res["server_cpu_s"] = sum(r["server_cpu_s"] for r in runs)
    errors = [r["error"] for r in runs if r.get("error")]
    if errors:
        res["error"] = errors[0]
    else:
        res.pop("error", None)
    res["runs"] = runs
    return res


def ratio(a, b):
    """Returns a/b, or None when either is missing or b is zero."""
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt(v, unit=""):
    """Formats a figure compactly (97.1k, 2034, 0.52)."""
    if v is None:
        return "-"
    if unit == "k" and v >= 10000:
        return "%.1fk" % (v / 1000)
    if v >= 100:
        return "%.0f" % v
    if v >= 10:
        return "%.1f" % v
    return "%.2f" % v


def fmtx(v):
    """Formats a ratio as 1.23x."""
    return "-" if v is None else "%.2fx" % v


def print_table(results, servers, baseline, peak_rss, out=sys.stdout):
    """Prints the results table, job by job, with ratios to BASELINE."""
    w = max(len(s) for s in servers) + 2
    hdr = ("  %-*s %9s %7s %9s %7s %11s %7s %7s %7s" %
           (w, "server", "IOPS", "x", "MB/s", "x", "CPU s/MIO", "x", "srvCPU%", "fioCPU%"))
    for job in JOBS:
        rows = [r for r in results if r["job"] == job.name]
        if not rows:
            continue
        print("%s (%s)" % (job.name, job.title), file=out)
        print(hdr, file=out)
        for r in rows:
            fiocpu = None
            if r.get("fio_usr_cpu") is not None:
                fiocpu = r["fio_usr_cpu"] + r["fio_sys_cpu"]
            rx = r.get("ratio", {})
            print("  %-*s %9s %7s %9s %7s %11s %7s %7s %7s%s" % (
                w, r["server"], fmt(r["iops"], "k"), fmtx(rx.get("iops")),
                fmt(r["mbps"]), fmtx(rx.get("mbps")),
                fmt(r.get("server_cpu_s_per_mio")), fmtx(rx.get("server_cpu_s_per_mio")),
                fmt(r.get("server_cpu_pct")), fmt(fiocpu),
                ("   syscalls/IO %.2f  ctxsw/IO %.2f" % (r["syscalls_per_io"], r.get("ctxsw_per_io") or 0)) if r.get("syscalls_per_io") is not None else ""),
                file=out)
        print(file=out)
    print("peak RSS (VmHWM at the end of the run)", file=out)
    base = peak_rss.get(baseline)
    for s in servers:
        kib = peak_rss.get(s)
        print("  %-*s %9s MiB %7s" % (w, s, fmt(kib / 1024 if kib else None),
                                      fmtx(ratio(kib, base))), file=out)


def add_ratios(results, baseline):
    """Adds to each result its figures as ratios to BASELINE's for the same job."""
    for r in results:
        base = next((b for b in results if b["job"] == r["job"] and b["server"] == baseline), None)
        if base is None:
            continue
        r["ratio"] = {k: ratio(r.get(k), base.get(k))
                      for k in ("iops", "mbps", "server_cpu_s_per_mio")}


def parse_args(argv):
    """Parses the command line; exits 2 on a usage error."""
    p = argparse.ArgumentParser(
        prog="bench/run.py",
        description="fio over NBD, side by side: blockd, nbdkit file, "
                    "qemu-storage-daemon and nbdkit with the blockd plugin.")
    p.add_argument("--build",
                   help="meson build directory holding blockd/blockd and "
                        "formats/nbdkit-blockd-plugin.so (default: $BLOCKD and "
                        "$NBDKIT_PLUGIN if set, else under $BUILDDIR or ./build)")
    p.add_argument("--servers",
                   help="comma-separated subset of %s (default: all, the plugin "
                        "only if built)" % ",".join(SERVER_NAMES))
    p.add_argument("--jobs", help="comma-separated subset of %s" %
                   ",".join(j.name for j in JOBS))
    p.add_argument("--quick", action="store_true",
                   help="smoke mode: 1 s per job on a 64 MiB file; fails unless "
                        "every server answered every job")
    p.add_argument("--runtime", type=float, help="seconds per job (default 10, quick 1)")
    p.add_argument("--repeat", type=int, default=1,
                   help="run every job N times per server, in rotating order, and "
                        "report the median of each figure (default 1)")
    p.add_argument("--size", help="test file size, e.g. 1G, 64M (default 1G, quick 64M)")
    p.add_argument("--dir", help="where the socket and test files go "
                   "(default: a new directory in $TMPDIR)")
    p.add_argument("--baseline", default="blockd",
                   help="server the ratios are relative to (default blockd)")
    p.add_argument("--json", help="write all results to this JSON file")
    p.add_argument("--perf", action="store_true",
                   help="also count the server's syscalls and context switches "
                        "per I/O with perf stat (adds some overhead)")
    p.add_argument("--guest", action="store_true",
                   help="run fio inside a guest started by blockd-launch "
                        "(not implemented yet, see bench/README.md)")
    args = p.parse_args(argv)
    if args.servers:
        args.server_list = [s.strip() for s in args.servers.split(",") if s.strip()]
        bad = [s for s in args.server_list if s not in SERVER_NAMES]
        if bad or not args.server_list:
            p.error("unknown server %s (known: %s)" % (",".join(bad), ",".join(SERVER_NAMES)))
    else:
        args.server_list = None
    names = [j.name for j in JOBS]
    if args.jobs:
        args.job_list = [s.strip() for s in args.jobs.split(",") if s.strip()]
        bad = [s for s in args.job_list if s not in names]
        if bad or not args.job_list:
            p.error("unknown job %s (known: %s)" % (",".join(bad), ",".join(names)))
    else:
        args.job_list = names
    if args.runtime is None:
        args.runtime = 1.0 if args.quick else 10.0
    if args.runtime <= 0:
        p.error("--runtime must be positive")
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    try:
        args.size_bytes = parse_size(args.size or ("64M" if args.quick else "1G"))
    except ValueError as e:
        p.error(str(e))
    if args.size_bytes < MIB or args.size_bytes % MIB:
        p.error("--size must be a positive multiple of 1 MiB")
    return args


def parse_size(text):
    """Parses 64M, 1G, 1073741824 into bytes."""
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().rstrip("B").rstrip("I")
    try:
        if t and t[-1] in mult:
            return int(float(t[:-1]) * mult[t[-1]])
        return int(t)
    except ValueError:
        raise ValueError("bad size: %r" % text) from None


def on_sigterm(signum, frame):
    """Turns SIGTERM/SIGHUP into KeyboardInterrupt so cleanup runs."""
    raise KeyboardInterrupt


def main(argv):
    """Runs the benchmark; returns the exit status."""
    args = parse_args(argv)
    # Even when started with SIGINT ignored (a background job), a SIGINT
    # must stop the run and clean up.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGHUP, on_sigterm)
    if args.guest:
        print("bench: --guest is not implemented yet (needs blockd-launch); "
              "see bench/README.md", file=sys.stderr)
        return SKIP
    # An explicit --build wins; otherwise meson test's environment decides.
    env = {} if args.build else os.environ
    build = os.path.abspath(args.build or os.environ.get("BUILDDIR", "build"))
    paths = {"blockd": env.get("BLOCKD") or os.path.join(build, "blockd", "blockd"),
             "plugin": env.get("NBDKIT_PLUGIN") or
             os.path.join(build, "formats", "nbdkit-blockd-plugin.so")}
    if not fio_has_nbd():
        print("SKIP: fio with the nbd engine is not installed", file=sys.stderr)
        return SKIP
    servers = args.server_list
    if servers is None:
        servers = [s for s in SERVER_NAMES
                   if s != "nbdkit-plugin" or not server_missing(s, paths)]
    for s in servers:
        why = server_missing(s, paths)
        if why:
            print("SKIP: %s" % why, file=sys.stderr)
            return SKIP
    if args.perf and not shutil.which("perf"):
        print("bench: --perf needs perf (linux-perf)", file=sys.stderr)
        return 2
    baseline = args.baseline if args.baseline in servers else servers[0]
    if baseline != args.baseline:
        log("baseline %s not in this run, ratios are to %s" % (args.baseline, baseline))
    jobs = [j for j in JOBS if j.name in args.job_list]

    if args.dir:
        os.makedirs(args.dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="blockd-bench.", dir=args.dir)
    running = []
    results = []
    peak_rss = {}
    status = 0
    try:
        for name in servers:
            image = os.path.join(tmp, name + ".img")
            log("filling %s (%d MiB)" % (image, args.size_bytes // MIB))
            fill_image(image, args.size_bytes)
            sock = os.path.join(tmp, name + ".sock")
            pidfile = os.path.join(tmp, name + ".pid")
            srv = Server(name, server_argv(name, paths, sock, pidfile, image),
                         sock, pidfile, image, os.path.join(tmp, name + ".log"))
            running.append(srv)
            srv.start()
            log("%s ready, pid %d" % (name, srv.proc.pid))
        for job in jobs:
            runs = {srv.name: [] for srv in running}
            for rnd in range(args.repeat):
                # Rotate the order each round so no server always runs first
                # (or right after another's writes).
                k = rnd % len(running)
                for srv in running[k:] + running[:k]:
                    # Write back what the previous job dirtied, so its
                    # writeback is not charged to this one.
                    os.sync()
                    log("%s on %s%s" % (job.name, srv.name,
                                        " (round %d)" % (rnd + 1) if args.repeat > 1 else ""))
                    if srv.proc.poll() is not None:
                        raise RuntimeError("%s died (status %d): %s" %
                                           (srv.name, srv.proc.returncode, srv.logtail()))
                    r = run_job(job, srv, args.runtime, tmp, args.perf)
                    runs[srv.name].append(r)
                    if r.get("error") or not r["iops"] > 0:
                        log("FAIL: %s on %s: %s" % (job.name, srv.name,
                                                   r.get("error", "zero IOPS")))
                        status = 1
            for srv in running:
                results.append(median_result(runs[srv.name]))
        for srv in running:
            peak_rss[srv.name] = proc_status_kib(srv.proc.pid, "VmHWM")
    except KeyboardInterrupt:
        log("interrupted, cleaning up")
        status = 130
    except RuntimeError as e:
        log("FAIL: %s" % e)
        status = 1
    finally:
        for srv in running:
            rc = srv.stop()
            if rc != 0 and status == 0:
                log("FAIL: %s exited with status %s on SIGTERM: %s" % (srv.name, rc, srv.logtail()))
                status = 1
        shutil.rmtree(tmp, ignore_errors=True)
    if status == 130:
        return status

    add_ratios(results, baseline)
    if results:
        print_table(results, [s.name for s in running], baseline, peak_rss)
    if args.json:
        meta = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
            "cpu_model": cpu_model(),
            "filesystem": fs_type(args.dir or tempfile.gettempdir()),
            "cache_mode": "buffered (page cache), file filled and fsynced before the run",
            "fio": subprocess.run(["fio", "--version"], capture_output=True,
                                  text=True).stdout.strip(),
            "file_size": args.size_bytes, "runtime_s": args.runtime,
            "quick": args.quick, "repeat": args.repeat, "baseline": baseline, "clk_tck": CLK_TCK,
            "mb": "1e6 bytes",
        }
        doc = {"meta": meta,
               "servers": {s.name: {"argv": s.argv, "version": server_version(s.name, paths),
                                    "peak_rss_kib": peak_rss.get(s.name),
                                    "exit_status": s.exit_status} for s in running},
               "jobs": [vars(j) for j in jobs],
               "results": results}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
    expected = len(jobs) * len(running)
    if status == 0 and len(results) != expected:
        status = 1
    return status


def cpu_model():
    """Returns the CPU model name from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

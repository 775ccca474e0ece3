#!/usr/bin/python3
"""Side-by-side fio benchmark of NBD servers: blockd, nbdkit's file plugin,
qemu-storage-daemon (aio=io_uring, discard=unmap) and nbdkit with the blockd
plugin.

Every server is started on its own unix socket and its own filled test file,
all at once; then each fio job runs against each server in turn (job by job,
so the servers are compared close together in time).  For every job and
server it records IOPS, MB/s, the server's CPU seconds per million I/Os
(utime+stime of all its threads, from /proc/PID/stat) and, at the end, the
server's peak RSS (VmHWM).  Every figure is also given as a ratio to the
baseline server (blockd unless told otherwise) from the same run.  --guest
runs the same jobs inside a QEMU guest instead (see guest.py).  --rbd puts
blockd and qemu-storage-daemon's rbd driver on one image of a throwaway Ceph
cluster and measures the cluster's daemons too (see rbdmode.py).

See bench/README.md for the commands behind the published figures.
Exit status: 0 ok, 1 a server or job failed, 2 usage error, 77 a
prerequisite (fio's nbd engine, a server, Ceph) is missing, 130 interrupted.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True      # no __pycache__ in the source tree
import guest  # noqa: E402
import rbdmode  # noqa: E402
from fio import JOBS, fio_figures, fio_has_nbd, fio_nbd_argv, fio_version
from report import add_ratios, machine_meta, median_result, print_table, ratio
from servers import (ALT, CEILING, DIRECT, FILE_DIRECT, cached_kib, drop_cache, CLK_TCK, RBD_NAMES,
                     SERVER_NAMES, VHOST_NAMES, PerfStat, Server, fill_image, fill_images, log,
                     proc_cpu_ticks, proc_thread_ticks, server_argv, server_missing,
                     server_version, thread_cpu_split)

SKIP = 77
MIB = 1 << 20


def daemon_ticks(pids):
    """Returns {name: CPU ticks so far} of the daemons in PIDS ({name: pid})."""
    return {name: proc_cpu_ticks(pid) for name, pid in pids.items() if pid}


def run_host_job(job, srv, runtime, tmp, use_perf, daemons=None, direct=None):
    """Runs fio JOB on this host against SRV; returns the figures as a dict.
    DAEMONS ({name: pid}, the Ceph OSD and monitor) are measured like SRV.
    DIRECT, with SRV None, is a run without a server: (name, fio engine
    options, environment): --rbd's fio-rbd, and fio-direct."""
    name = srv.name if srv else direct[0]
    out = os.path.join(tmp, "fio-%s-%s.json" % (job.name, name))
    if srv:
        argv, env = fio_nbd_argv(job, srv.uri(), runtime, out), None
    else:
        argv, env = ["fio", *job.options(runtime), *direct[1], "--output=" + out], direct[2]
    use_perf = use_perf and srv is not None
    perf = PerfStat(srv.proc.pid, out + ".perf") if use_perf else None
    t0 = time.monotonic()
    th0 = proc_thread_ticks(srv.proc.pid) if use_perf else None
    c0 = srv.cpu_ticks() if srv else None
    d0 = daemon_ticks(daemons or {})
    fio = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, env=env)
    try:
        fio_log, _ = fio.communicate()
    finally:
        if fio.poll() is None:
            fio.kill()
            fio.wait()
    c1 = srv.cpu_ticks() if srv else None
    d1 = daemon_ticks(daemons or {})
    split = thread_cpu_split(th0, proc_thread_ticks(srv.proc.pid)) if use_perf else None
    wall = time.monotonic() - t0
    counts = perf.finish() if perf else {}
    res = {"job": job.name, "server": name, "fio_argv": argv,
           "fio_status": fio.returncode, "iops": 0.0, "mbps": 0.0, "total_ios": 0,
           "server_cpu_s": (c1 - c0) / CLK_TCK if srv else None, "wall_s": wall}
    for d in d1:
        res[d + "_cpu_s"] = (d1[d] - d0[d]) / CLK_TCK
    try:
        if fio.returncode != 0:
            raise ValueError("fio exited %d" % fio.returncode)
        with open(out) as f:
            res.update(fio_figures(f.read()))
    except (OSError, ValueError) as e:
        res["error"] = "%s: %s" % (e, fio_log.strip()[-600:])
        return res
    if res["total_ios"]:
        if srv:
            res["server_cpu_s_per_mio"] = res["server_cpu_s"] / res["total_ios"] * 1e6
            res["server_cpu_pct"] = 100.0 * res["server_cpu_s"] / wall
        for d in d1:
            res[d + "_cpu_s_per_mio"] = res[d + "_cpu_s"] / res["total_ios"] * 1e6
            res[d + "_cpu_pct"] = 100.0 * res[d + "_cpu_s"] / wall
    if counts:
        ios = res["total_ios"] or 1
        res["syscalls_per_io"] = counts.get("raw_syscalls:sys_enter", 0) / ios
        res["ctxsw_per_io"] = counts.get("context-switches", 0) / ios
    if split is not None:
        res["server_cpu_split_s"] = split
    return res


def run_rbd_job(args, job, srv, tmp, cluster, name):
    """--rbd: starts SRV on the shared image, runs JOB against it, stops it;
    returns the result.  The image is refilled first for a refill job.
    Without SRV, fio's own rbd engine runs as NAME (fio-rbd)."""
    if job.refill:
        rbdmode.fill_image(cluster, args.size_bytes)
    if srv is None:
        return run_host_job(job, None, args.runtime, tmp, False, rbdmode.cluster_pids(cluster),
                            (name, rbdmode.fio_options(), rbdmode.fio_env(cluster)))
    srv.start()
    try:
        r = run_host_job(job, srv, args.runtime, tmp, args.perf, rbdmode.cluster_pids(cluster))
    finally:
        rc = srv.stop()
    if rc != 0 and not r.get("error"):
        r["error"] = "%s exited with status %s on SIGTERM: %s" % (srv.name, rc, srv.logtail())
    return r


def no_such_run(name, job):
    """Whether NAME cannot run JOB at all: fio-direct has no trim (fio trims
    block devices only)."""
    return name == FILE_DIRECT and job.rw == "trim"


def run_host(args, jobs, targets, tmp, cluster=None):
    """Host mode: fio's nbd engine against every server, job by job; returns
    one (median) result per job and server, and whether all answered.  With
    CLUSTER (--rbd) each server runs only for its own fio run (see rbdmode)."""
    results, ok = [], True
    for job in jobs:
        runs = {t.name: [] for t in targets}
        for rnd in range(args.repeat):
            # Rotate the order each round so no server always runs first
            # (or right after another's writes).
            k = rnd % len(targets)
            for t in targets[k:] + targets[:k]:
                srv = t.server
                if no_such_run(t.name, job):
                    continue
                if job.refill and t.name != CEILING and cluster is None:
                    # Trims must punch data, not the holes an earlier round left.
                    fill_image(srv.image, args.size_bytes, refill=True)
                    if srv.name == DIRECT:
                        drop_cache(srv.image)   # the refill went through the cache
                # Write back what the previous job dirtied, so its writeback
                # is not charged to this one.
                os.sync()
                log("%s on %s%s" % (job.name, t.name,
                                    " (round %d)" % (rnd + 1) if args.repeat > 1 else ""))
                if cluster is not None:
                    r = run_rbd_job(args, job, srv, tmp, cluster, t.name)
                elif srv is None:
                    r = run_host_job(job, None, args.runtime, tmp, False, None,
                                     (t.name, ["--ioengine=io_uring", "--direct=1",
                                               "--filename=" + t.image], None))
                else:
                    srv.check_alive()
                    r = run_host_job(job, srv, args.runtime, tmp, args.perf)
                runs[t.name].append(r)
                if r.get("error") or not r["iops"] > 0:
                    log("FAIL: %s on %s: %s" % (job.name, t.name, r.get("error", "zero IOPS")))
                    ok = False
        results += [median_result(runs[t.name]) for t in targets if runs[t.name]]
    return results, ok


class Target:
    """One thing under test: a name, its test file, and its server (None for
    the guest mode's qemu-file reference, where QEMU opens the file, for
    fio-direct, where fio does, and for blockd under blockd-launch, which
    starts its own)."""

    def __init__(self, name, image, server, launched=False):
        self.name = name          # server name as in --servers
        self.image = image        # its filled test file
        self.server = server      # Server, or None
        self.launched = launched  # guest mode: blockd-launch runs it
        self.peak_rss_kib = None  # guest mode: measured by guest.py
        # How the guest's disk reaches it: nbd, vhost-user, or file (qemu-file).
        # rbd: --rbd's qemu-rbd, QEMU's own rbd driver.
        self.transport = ("vhost-user" if name in VHOST_NAMES else
                          "file" if name == guest.REFERENCE else
                          "rbd" if name == rbdmode.GUEST_REFERENCE else "nbd")


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
                        "only if built), or on request %s (blockd --cache=none) and %s "
                        "(fio O_DIRECT on a file, no server, no trim); with --guest also "
                        "%s (default: %s)"
                        % (",".join(SERVER_NAMES), DIRECT, FILE_DIRECT,
                           ",".join(VHOST_NAMES + [guest.REFERENCE]),
                           ",".join(guest.DEFAULT_SERVERS)))
    p.add_argument("--blockd-alt", metavar="PATH",
                   help="another blockd binary, run as server %s (e.g. a copy built "
                        "before a change: A/B in one run)" % ALT)
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
    p.add_argument("--dir", help="where the sockets and test files go "
                   "(default: a new directory in $TMPDIR)")
    p.add_argument("--baseline",
                   help="server the ratios are relative to (default blockd; with --rbd "
                        "qsd-rbd, the peer the RBD targets are set against)")
    p.add_argument("--json", help="write all results to this JSON file")
    p.add_argument("--perf", action="store_true",
                   help="also count the server's syscalls and context switches "
                        "per I/O with perf stat, and split its CPU between its own "
                        "threads and io_uring's io-wq workers (adds some overhead)")
    p.add_argument("--guest", action="store_true",
                   help="run fio inside a QEMU guest on a virtio-blk disk backed by "
                        "each server over NBD or vhost-user, and by QEMU's own file "
                        "driver as the reference (see bench/README.md)")
    p.add_argument("--rbd", action="store_true",
                   help="start a throwaway single-node Ceph cluster and compare %s on "
                        "one RBD image, each server running alone for each fio run or "
                        "guest boot; also reports the OSD's and the monitor's CPU per I/O"
                        % " and ".join(RBD_NAMES))
    args = p.parse_args(argv)
    if args.rbd:
        known = RBD_NAMES + [rbdmode.GUEST_REFERENCE if args.guest else rbdmode.HOST_REFERENCE]
    else:
        known = SERVER_NAMES + [ALT, DIRECT] + (VHOST_NAMES + [guest.REFERENCE] if args.guest
                                                else [FILE_DIRECT])
    if args.baseline is None:
        args.baseline = "qsd-rbd" if args.rbd else "blockd"
    if args.rbd and args.blockd_alt:
        p.error("--blockd-alt is not for --rbd")
    if args.servers:
        args.server_list = [s.strip() for s in args.servers.split(",") if s.strip()]
        bad = [s for s in args.server_list if s not in known]
        if bad or not args.server_list or len(set(args.server_list)) != len(args.server_list):
            p.error("bad server list %r (known: %s)" % (args.servers, ",".join(known)))
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
    if args.perf and args.guest:
        p.error("--perf is for the host mode")
    try:
        args.size_bytes = parse_size(args.size or ("64M" if args.quick else "1G"))
    except ValueError as e:
        p.error(str(e))
    if args.size_bytes < MIB or args.size_bytes % MIB:
        p.error("--size must be a positive multiple of 1 MiB")
    return args


def on_sigterm(signum, frame):
    """Turns SIGTERM/SIGHUP into KeyboardInterrupt so cleanup runs."""
    raise KeyboardInterrupt


def tool_paths(args):
    """Returns where blockd and the nbdkit plugin are: an explicit --build
    wins, otherwise meson test's environment ($BLOCKD, $NBDKIT_PLUGIN)."""
    env = {} if args.build else os.environ
    build = os.path.abspath(args.build or os.environ.get("BUILDDIR", "build"))
    return {"build": build, "from_env": not args.build,
            "blockd_alt": os.path.abspath(args.blockd_alt) if args.blockd_alt else None,
            "blockd": env.get("BLOCKD") or os.path.join(build, "blockd", "blockd"),
            "plugin": env.get("NBDKIT_PLUGIN") or
            os.path.join(build, "formats", "nbdkit-blockd-plugin.so")}


def choose_servers(args, paths):
    """Returns the servers to run, or exits 77 naming the one that cannot."""
    servers = args.server_list
    if args.rbd:
        return choose_rbd_servers(args, paths)
    if servers is None and args.guest:
        servers = [s for s in guest.DEFAULT_SERVERS
                   if s == guest.REFERENCE or not server_missing(s, paths)]
    elif servers is None:
        servers = [s for s in SERVER_NAMES
                   if s != "nbdkit-plugin" or not server_missing(s, paths)]
        if paths["blockd_alt"]:
            servers.insert(1, ALT)
    for s in servers:
        why = None if s == guest.REFERENCE else server_missing(s, paths)
        if why:
            print("SKIP: %s" % why, file=sys.stderr)
            sys.exit(SKIP)
    return servers


def choose_rbd_servers(args, paths):
    """--rbd: returns the servers to run, or exits 77 naming what is missing.
    By default a server whose prerequisite is missing is left out (QEMU's rbd
    driver comes in qemu-block-extra, which the CI does not install), as long
    as blockd-rbd can run; a server named in --servers must run."""
    # The smoke test (--quick) is about the servers: no fio-rbd unless named.
    servers = args.server_list or RBD_NAMES + (
        [rbdmode.GUEST_REFERENCE] if args.guest else [] if args.quick else [rbdmode.HOST_REFERENCE])

    def why(s):
        if s == rbdmode.HOST_REFERENCE and not rbdmode.fio_has_rbd():
            return "fio without its rbd engine"
        if s not in (rbdmode.GUEST_REFERENCE, rbdmode.HOST_REFERENCE):
            w = server_missing(s, paths)
            if w:
                return w
        return rbdmode.missing([s], paths)
    if args.server_list is None and not why("blockd-rbd"):
        for s in list(servers):
            w = why(s)
            if w:
                log("leaving out %s: %s" % (s, w))
                servers.remove(s)
    for s in servers:
        w = why(s)
        if w:
            print("SKIP: %s" % w, file=sys.stderr)
            sys.exit(SKIP)
    return servers


def write_json(path, args, meta, targets, jobs, results, peak_rss, paths, page_cache=None):
    """Writes every figure, the machine facts and the exact commands as JSON."""
    doc = {"meta": meta,
           "servers": {t.name: {"argv": t.server.argv if t.server else None,
                                "under_blockd_launch": t.launched,
                                "version": server_version(t.name, paths),
                                "peak_rss_kib": peak_rss.get(t.name),
                                "page_cache_kib": (page_cache or {}).get(t.name),
                                "peak_rss_ratio": ratio(peak_rss.get(t.name),
                                                        peak_rss.get(meta["baseline"])),
                                "exit_status": t.server.exit_status if t.server else None}
                       for t in targets},
           "jobs": [vars(j) for j in jobs],
           "results": results}
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


def start_file_targets(args, names, tmp, paths, targets):
    """Fills a test file per server and starts the servers on them, adding
    each to TARGETS as it starts (so the caller stops it if a later one fails)."""
    # Every file is filled before any server starts, so no server is
    # running while another's file is written.
    log("filling %d files of %d MiB in %s" % (len(names), args.size_bytes // MIB, tmp))
    # The ceiling reads no file: its own stays a hole of the same size.
    fill_images([os.path.join(tmp, n + ".img") for n in names if n != CEILING],
                args.size_bytes)
    if CEILING in names:
        with open(os.path.join(tmp, CEILING + ".img"), "wb") as f:
            f.truncate(args.size_bytes)
    for n in (DIRECT, FILE_DIRECT):
        if n in names:
            drop_cache(os.path.join(tmp, n + ".img"))
    for name in names:
        image = os.path.join(tmp, name + ".img")
        srv = None
        launched = (args.guest and name in ("blockd", "blockd-vhost")
                    and guest.launcher(paths) is not None)
        if name not in (guest.REFERENCE, FILE_DIRECT) and not launched:
            srv = Server(name, server_argv(name, paths, os.path.join(tmp, name + ".sock"),
                                           os.path.join(tmp, name + ".pid"), image),
                         os.path.join(tmp, name + ".sock"), os.path.join(tmp, name + ".pid"),
                         image, os.path.join(tmp, name + ".log"))
        targets.append(Target(name, image, srv, launched))
        if srv:
            srv.start()
            log("%s ready, pid %d" % (name, srv.proc.pid))


def add_rbd_targets(args, names, tmp, paths, cluster, targets):
    """--rbd: creates and fills the one image every server serves in turn, and
    adds a target per server (none is started: see rbdmode)."""
    log("filling rbd/%s, %d MiB, twice" % (rbdmode.IMAGE, args.size_bytes // MIB))
    rbdmode.create_image(cluster, args.size_bytes)
    # Twice: the first pass creates the objects, and the first overwrite of
    # an object costs the memstore OSD several times a later one. Filled
    # once, whichever server ran the first sequential writes got 0.2x the
    # IOPS at 4-5x the OSD CPU per write (guest mode, either order).
    for _ in range(2):
        rbdmode.fill_image(cluster, args.size_bytes)
    image = rbdmode.spec(cluster)
    for name in names:
        srv = None
        launched = (args.guest and name == "blockd-rbd" and guest.launcher(paths) is not None)
        if name not in (rbdmode.GUEST_REFERENCE, rbdmode.HOST_REFERENCE) and not launched:
            sock, pidfile = os.path.join(tmp, name + ".sock"), os.path.join(tmp, name + ".pid")
            srv = Server(name, server_argv(name, paths, sock, pidfile, image), sock, pidfile,
                         image, os.path.join(tmp, name + ".log"))
        targets.append(Target(name, image, srv, launched))


def main(argv):
    """Runs the benchmark; returns the exit status."""
    args = parse_args(argv)
    # Even when started with SIGINT ignored (a background job), a SIGINT
    # must stop the run and clean up.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGHUP, on_sigterm)
    paths = tool_paths(args)
    if args.guest:
        why = guest.missing(paths)
        if why:
            print("SKIP: %s" % why, file=sys.stderr)
            return SKIP
    elif not fio_has_nbd():
        print("SKIP: fio with the nbd engine is not installed", file=sys.stderr)
        return SKIP
    if args.perf and not shutil.which("perf"):
        print("bench: --perf needs perf (apt-get install linux-perf)", file=sys.stderr)
        return 2
    names = choose_servers(args, paths)
    baseline = args.baseline if args.baseline in names else names[0]
    if baseline != args.baseline:
        log("baseline %s not in this run, ratios are to %s" % (args.baseline, baseline))
    jobs = [j for j in JOBS if j.name in args.job_list]

    if args.dir:
        os.makedirs(args.dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="blockd-bench.", dir=args.dir)
    targets, results, peak_rss, page_cache = [], [], {}, {}
    cluster = None
    status = 0
    try:
        if args.rbd:
            log("starting a Ceph cluster in %s" % tmp)
            cluster = rbdmode.start_cluster(os.path.join(tmp, "ceph"), args.size_bytes)
            add_rbd_targets(args, names, tmp, paths, cluster, targets)
        else:
            start_file_targets(args, names, tmp, paths, targets)
        if args.guest:
            results, ok = guest.run_guest(args, jobs, targets, tmp, paths, cluster)
        else:
            results, ok = run_host(args, jobs, targets, tmp, cluster)
        status = 0 if ok else 1
        for t in targets:
            peak_rss[t.name] = t.server.peak_rss_kib() if t.server else t.peak_rss_kib
        if DIRECT in names or FILE_DIRECT in names:
            for t in targets:
                page_cache[t.name] = cached_kib(t.image)
    except KeyboardInterrupt:
        log("interrupted, cleaning up")
        status = 130
    except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as e:
        log("FAIL: %s" % e)
        status = 1
    finally:
        for t in targets:
            if not t.server:
                continue
            rc = t.server.stop()
            if rc != 0 and status == 0:
                log("FAIL: %s exited with status %s on SIGTERM: %s"
                    % (t.name, rc, t.server.logtail()))
                status = 1
        # After the servers: blockd flushes to the cluster on its way out.
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    if status == 130:
        return status

    add_ratios(results, baseline)
    if results:
        print_table(jobs, results, names, baseline, peak_rss)
    if page_cache:
        print("page cache held by each server's file at the end (fincore; %s started from"
              " an empty cache, the others from a cached file)"
              % " and ".join(n for n in (DIRECT, FILE_DIRECT) if n in names))
        for n in names:
            if page_cache.get(n) is not None:
                print("  %-14s %8.1f MiB" % (n, page_cache[n] / 1024))
    if args.json:
        meta = machine_meta(args.dir or tempfile.gettempdir())
        meta.update({
            "mode": "guest" if args.guest else "host",
            "cache_mode": "buffered (host page cache); each file filled and fsynced first",
            "fio": fio_version(), "file_size": args.size_bytes, "runtime_s": args.runtime,
            "quick": args.quick, "repeat": args.repeat, "baseline": baseline,
            "clk_tck": CLK_TCK, "mb": "1e6 bytes"})
        if args.guest:
            meta["guest"] = guest.describe(args)
        if args.rbd:
            meta["cache_mode"] = ("librbd cache off (blockd: always; qsd: cache.direct=on); "
                                  "the image filled and flushed first")
            meta["ceph"] = rbdmode.describe()
        write_json(args.json, args, meta, targets, jobs, results, peak_rss, paths, page_cache)
    expected = sum(not no_such_run(t.name, j) for t in targets for j in jobs)
    if status == 0 and len(results) != expected:
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

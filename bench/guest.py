"""Guest mode: the same fio jobs run inside a QEMU guest, on a virtio-blk
disk backed by each NBD server, by blockd and qemu-storage-daemon as
vhost-user-blk back-ends, and, as the reference, by QEMU's own file driver
with aio=io_uring.

blockd runs the way users run it: through blockd-launch (its private blockd,
its QEMU command line; --transport vhost-user for blockd-vhost).  The other
servers and the reference get the very same QEMU command line (taken from
`blockd-launch --dry-run` with the same transport) with only the disk
swapped: the -blockdev for NBD and the file, the vhost-user socket for
qsd-vhost.  Without blockd-launch a built-in command line of the same shape
is used, and blockd is started like the other servers.

The guest is the launcher's tiny one (launcher/guest/mkguest.sh: the cloud
kernel, busybox, the virtio modules, an /init that runs a script given on
the kernel command line), plus a second initramfs archive holding fio, the
libraries it links and the job script.  The script prints markers around
each fio run on the serial console; the runner samples the server's CPU
time at the markers and parses fio's JSON from between them."""
import base64
import glob
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import rbdmode
from fio import fio_figures
from servers import (CLK_TCK, fill_image, log, proc_cpu_ticks, proc_status_kib, rbd_parts,
                     set_pdeathsig)

REFERENCE = "qemu-file"     # the guest disk on QEMU's own file driver
DEFAULT_SERVERS = ["blockd", "blockd-vhost", "qsd", "qsd-vhost", REFERENCE]
MEMORY = "1G"               # guest RAM: fio and its libraries live in the initramfs
CPUS = 2                    # guest vCPUs
QEMU = "qemu-system-x86_64"
HERE = os.path.dirname(os.path.abspath(__file__))
MKGUEST = os.path.join(HERE, "..", "launcher", "guest", "mkguest.sh")
MARK = "BENCH-"             # prefix of the markers the guest script prints


def missing(paths):
    """Returns why guest mode cannot run here, or None if it can."""
    for prog in (QEMU, "fio", "cpio", "ldd"):
        if not shutil.which(prog):
            return prog + " not installed"
    if not os.path.exists(MKGUEST):
        return "launcher/guest/mkguest.sh not found"
    return None


def accel():
    """Returns the QEMU accelerator: $BENCH_ACCEL, else tcg.  Not kvm by
    default: here /dev/kvm opens but guests hang, so tcg is the safe choice."""
    return os.environ.get("BENCH_ACCEL", "tcg")


def launcher(paths):
    """Returns the blockd-launch to use, or None if it is not built."""
    p = os.environ.get("BLOCKD_LAUNCH") if paths.get("from_env") else None
    p = p or os.path.join(paths["build"], "launcher", "blockd-launch")
    return p if os.access(p, os.X_OK) else None


def describe(args):
    """Returns the guest setup behind the guest-mode figures."""
    return {"qemu": QEMU, "accel": accel(), "memory": MEMORY, "cpus": CPUS,
            "disk": "virtio-blk-pci", "fio_engine": "io_uring, direct=1, /dev/vda",
            "nbd_blockdev": "driver=nbd,server.type=unix,discard=unmap,detect-zeroes=unmap",
            "vhost_user": "vhost-user-blk-pci, num-queues=%d, guest RAM "
                          "memory-backend-memfd,share=on" % CPUS,
            "file_blockdev": "driver=file,aio=io_uring,cache.direct=off,discard=unmap,"
                             "detect-zeroes=unmap"}


def job_script(jobs, runtime):
    """Returns the guest shell script that runs every job on /dev/vda."""
    fio = os.path.realpath(shutil.which("fio"))
    lines = ["echo %sSTART" % MARK]
    for job in jobs:
        opts = " ".join(job.options(runtime))
        lines += [
            "echo %sBEGIN %s" % (MARK, job.name),
            "%s %s --ioengine=io_uring --direct=1 --filename=/dev/vda "
            "--output=/tmp/fio.json > /tmp/fio.log 2>&1; rc=$?" % (fio, opts),
            "echo %sDONE %s $rc" % (MARK, job.name),
            "cat /tmp/fio.json /tmp/fio.log",
            "echo %sEND %s" % (MARK, job.name),
        ]
    lines.append("echo %sFINISH" % MARK)
    return "\n".join(lines) + "\n"


def cpio_archive(root, out):
    """Writes the directory tree ROOT as an uncompressed newc cpio to OUT."""
    names = subprocess.run(["find", ".", "-print0"], cwd=root, check=True,
                           capture_output=True).stdout
    names = b"\0".join(sorted(n for n in names.split(b"\0") if n)) + b"\0"
    with open(out, "wb") as f:
        subprocess.run(["cpio", "--null", "-o", "-H", "newc", "--owner", "0:0", "--quiet"],
                       cwd=root, input=names, stdout=f, check=True)


def fio_files():
    """Returns fio and every shared library it needs, as absolute paths."""
    fio = os.path.realpath(shutil.which("fio"))
    out = subprocess.run(["ldd", fio], capture_output=True, text=True, check=True).stdout
    files = [fio]
    for line in out.splitlines():
        parts = line.split()
        if "=>" in parts and len(parts) > parts.index("=>") + 1:
            p = parts[parts.index("=>") + 1]
        elif parts and parts[0].startswith("/"):
            p = parts[0]        # the dynamic loader
        else:
            continue
        if p.startswith("/"):
            files.append(p)
    return files


def build_initrd(tmp, jobs, runtime):
    """Builds the guest kernel and an initramfs with fio and the job script;
    returns (kernel, initrd)."""
    gdir = os.path.join(tmp, "guest")
    subprocess.run(["bash", MKGUEST, gdir], check=True, stdout=subprocess.DEVNULL)
    root = os.path.join(tmp, "fioroot")
    for f in fio_files():
        # Keep each library's path: the guest's loader looks in the same places.
        dst = os.path.join(root, f.lstrip("/"))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy(f, dst)
    with open(os.path.join(root, "bench.sh"), "w") as f:
        f.write(job_script(jobs, runtime))
    extra = os.path.join(tmp, "fio.cpio")
    cpio_archive(root, extra)
    shutil.rmtree(root)
    # The kernel unpacks concatenated archives in turn.  Ours is uncompressed
    # (TCG need not inflate 80 MB) and goes first, like early microcode: after
    # a compressed archive the kernel refuses an uncompressed one ("invalid
    # magic at start of compressed archive").
    initrd = os.path.join(gdir, "bench-initrd.img")
    with open(initrd, "wb") as out:
        for part in (extra, os.path.join(gdir, "initrd.img")):
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out)
    os.unlink(extra)
    return os.path.join(gdir, "vmlinuz"), initrd


def append_line():
    """Returns the guest kernel command line: run /bench.sh, then power off."""
    run = base64.b64encode(b"sh /bench.sh\n").decode()
    return "console=ttyS0 panic=-1 quiet blockd.run=" + run


def launch_argv(paths, kernel, initrd, image, transport, dry_run=False):
    """Returns the blockd-launch command line booting the bench guest on IMAGE
    over TRANSPORT (nbd or vhost-user)."""
    argv = [launcher(paths), "--kernel", kernel, "--initrd", initrd, "--append", append_line(),
            "--disk", image, "--memory", MEMORY, "--cpus", str(CPUS), "--accel", accel(),
            "--transport", transport]
    return argv + (["--dry-run"] if dry_run else [])


def launch_template(paths, kernel, initrd, image, transport):
    """Returns blockd-launch's QEMU command line (from --dry-run) for IMAGE
    over TRANSPORT, or None without blockd-launch."""
    if not launcher(paths):
        return None
    out = subprocess.run(launch_argv(paths, kernel, initrd, image, transport, dry_run=True),
                         capture_output=True, text=True, check=True,
                         env=dict(os.environ, BLOCKD=paths["blockd"])).stdout
    for line in out.splitlines():
        argv = shlex.split(line)
        if argv and os.path.basename(argv[0]).startswith("qemu-system"):
            return argv
    raise RuntimeError("blockd-launch --dry-run printed no QEMU command line: " + out)


def qemu_argv(kernel, initrd, target, template):
    """Returns the QEMU command line booting the bench guest on TARGET's disk:
    TEMPLATE (blockd-launch's, for the target's transport) with the disk
    swapped, or a built-in line of the same shape."""
    if target.transport == "vhost-user":
        chardev = "socket,id=vhost0,path=" + target.server.sock
    elif target.transport == "rbd":
        # --rbd's reference: QEMU's own rbd driver, librbd's cache off as in
        # qsd-rbd (cache.direct=on is what turns it off).
        pool, img, conf = rbd_parts(target.image)
        disk = ("driver=rbd,node-name=disk0,pool=%s,image=%s,conf=%s,cache.direct=on,"
                "discard=unmap,detect-zeroes=unmap" % (pool, img, conf))
    elif target.server:
        disk = ("driver=nbd,node-name=disk0,server.type=unix,server.path=%s,export=,"
                "discard=unmap,detect-zeroes=unmap" % target.server.sock)
    else:
        disk = ("driver=file,node-name=disk0,filename=%s,aio=io_uring,cache.direct=off,"
                "discard=unmap,detect-zeroes=unmap" % target.image)
    if template is None:
        argv = [QEMU, "-accel", accel(), "-m", MEMORY, "-smp", str(CPUS),
                "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio",
                "-no-reboot", "-kernel", kernel, "-initrd", initrd, "-append", append_line()]
        if target.transport == "vhost-user":
            return argv + ["-object", "memory-backend-memfd,id=ram,size=%s,share=on" % MEMORY,
                           "-numa", "node,memdev=ram", "-chardev", chardev,
                           "-device", "vhost-user-blk-pci,chardev=vhost0,num-queues=%d" % CPUS]
        return argv + ["-blockdev", disk, "-device", "virtio-blk-pci,drive=disk0"]
    argv, i = [], 0
    while i < len(template):
        a = template[i]
        nxt = template[i + 1] if i + 1 < len(template) else ""
        # The launcher's private QMP socket: its directory does not exist.
        if a == "-qmp" or (a == "-chardev" and ",id=qmp," in nxt + ",") or \
                (a == "-mon" and nxt.startswith("chardev=qmp,")):
            i += 2
            continue
        if a == "-chardev" and target.transport == "vhost-user" and ",id=vhost0," in nxt + ",":
            argv += [a, chardev]
            i += 2
            continue
        if a == "-blockdev":
            argv += [a, disk]
            i += 2
            continue
        if a == "-device" and template[i + 1].startswith("virtio-blk-pci,"):
            # Same device, drive renamed to our node.
            opts = [o if not o.startswith("drive=") else "drive=disk0"
                    for o in template[i + 1].split(",")]
            argv += [a, ",".join(opts)]
            i += 2
            continue
        argv.append(a)
        i += 1
    return argv


class Sampler:
    """Where a boot's server CPU and memory are read: the Server we started,
    blockd-launch's private blockd (found by its pidfile), or nothing."""

    def __init__(self, server, rundir):
        self.server = server      # Server, or None
        self.rundir = rundir      # XDG_RUNTIME_DIR given to blockd-launch, or None
        self.pid = server.proc.pid if server else None
        self.peak_rss_kib = None  # VmHWM read at the end of the jobs

    def find(self):
        """Returns the server's pid, looking for blockd-launch's blockd.pid."""
        if self.pid is None and self.rundir:
            for pf in glob.glob(os.path.join(self.rundir, "*", "blockd.pid")):
                try:
                    with open(pf) as f:
                        self.pid = int(f.read().strip())
                except (OSError, ValueError):
                    pass
        return self.pid

    def cpu_ticks(self):
        """Returns the server's CPU ticks so far, or None without a server."""
        pid = self.find()
        return proc_cpu_ticks(pid) if pid else None

    def sample_rss(self):
        """Reads the server's peak RSS now, while it still runs."""
        if self.find():
            self.peak_rss_kib = proc_status_kib(self.pid, "VmHWM")


def boot(target, kernel, initrd, jobs, runtime, tmp, paths, template, daemons=None):
    """Boots one guest on TARGET's disk, runs every job; returns the results.
    DAEMONS ({name: pid}, --rbd's OSD and monitor) are measured per job like
    the server."""
    logpath = os.path.join(tmp, "guest-%s.log" % target.name)
    env = None
    rundir = None
    if target.launched:
        rundir = tempfile.mkdtemp(prefix="rt.", dir=tmp)
        argv = launch_argv(paths, kernel, initrd, target.image, target.transport)
        env = dict(os.environ, BLOCKD=paths["blockd"], XDG_RUNTIME_DIR=rundir)
    else:
        argv = qemu_argv(kernel, initrd, target, template[target.transport])
    srv = Sampler(target.server, rundir)
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=set_pdeathsig, env=env)
    # Boot (about 10 s under TCG) + every job + margin; then QEMU is killed.
    timer = threading.Timer(120 + len(jobs) * (runtime + 60), proc.kill)
    timer.start()
    results, cur, body, c0, t0 = {}, None, [], 0, 0.0
    try:
        with open(logpath, "w") as logf:
            for raw in proc.stdout:
                line = raw.decode(errors="replace").rstrip("\r\n")
                logf.write(line + "\n")
                word = line.split()
                if not word or not word[0].startswith(MARK):
                    if cur is not None:
                        body.append(line)
                    continue
                tag = word[0][len(MARK):]
                if tag == "BEGIN":
                    cur, body = word[1], []
                    c0 = srv.cpu_ticks()
                    d0 = {n: proc_cpu_ticks(p) for n, p in (daemons or {}).items() if p}
                    t0 = time.monotonic()
                elif tag == "DONE" and cur:
                    wall = time.monotonic() - t0
                    c1 = srv.cpu_ticks()
                    d1 = {n: proc_cpu_ticks(p) for n, p in (daemons or {}).items() if p}
                    cpu = (c1 - c0) / CLK_TCK if c0 is not None and c1 is not None else None
                    results[cur] = {"job": cur, "server": target.name, "wall_s": wall,
                                    "server_cpu_s": cpu, "fio_status": int(word[2]),
                                    "iops": 0.0, "mbps": 0.0, "total_ios": 0}
                    for n in d1:
                        results[cur][n + "_cpu_s"] = (d1[n] - d0[n]) / CLK_TCK
                elif tag == "END" and cur in results:
                    r = results[cur]
                    try:
                        r.update(fio_figures("\n".join(body)))
                    except ValueError as e:
                        r["error"] = "%s: %s" % (e, "\n".join(body)[-600:])
                    if r["fio_status"]:
                        r["error"] = "guest fio exited %d: %s" % (r["fio_status"],
                                                                  "\n".join(body)[-600:])
                    if r["server_cpu_s"] is not None and r["total_ios"]:
                        r["server_cpu_s_per_mio"] = r["server_cpu_s"] / r["total_ios"] * 1e6
                        r["server_cpu_pct"] = 100.0 * r["server_cpu_s"] / r["wall_s"]
                    for n in (daemons or {}):
                        if r.get(n + "_cpu_s") is not None and r["total_ios"]:
                            r[n + "_cpu_s_per_mio"] = r[n + "_cpu_s"] / r["total_ios"] * 1e6
                            r[n + "_cpu_pct"] = 100.0 * r[n + "_cpu_s"] / r["wall_s"]
                    cur = None
                elif tag == "FINISH":
                    srv.sample_rss()
        proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            # blockd-launch turns SIGTERM into a guest power-off and stops its
            # blockd; QEMU just exits.
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    if srv.peak_rss_kib is not None:
        target.peak_rss_kib = max(target.peak_rss_kib or 0, srv.peak_rss_kib)
    status_error = None
    if proc.returncode != 0:
        status_error = "%s exited with status %d: %s" % (os.path.basename(argv[0]),
                                                         proc.returncode, tail(logpath))
    out = []
    for job in jobs:
        r = results.get(job.name)
        if r is None:
            r = {"job": job.name, "server": target.name, "iops": 0.0, "mbps": 0.0,
                 "total_ios": 0, "error": "no result from the guest (%s exited %s); console ends: %s"
                 % (os.path.basename(argv[0]), proc.returncode, tail(logpath))}
        if status_error and not r.get("error"):
            r["error"] = status_error
        r["guest_argv"] = argv
        out.append(r)
    return out


def tail(path, n=600):
    """Returns the end of a log file."""
    try:
        with open(path, errors="replace") as f:
            return f.read()[-n:].strip()
    except OSError:
        return ""


def boot_alone(target, kernel, initrd, jobs, runtime, tmp, paths, template, cluster):
    """--rbd: boot() with TARGET's server (if it is ours) running only for
    this boot, and the cluster's daemons measured too."""
    if target.server:
        target.server.start()
    try:
        results = boot(target, kernel, initrd, jobs, runtime, tmp, paths, template,
                       rbdmode.cluster_pids(cluster))
    finally:
        rc = target.server.stop() if target.server else 0
    if rc != 0:
        for r in results:
            r.setdefault("error", "%s exited with status %s on SIGTERM: %s"
                         % (target.name, rc, target.server.logtail()))
    return results


def run_guest(args, jobs, targets, tmp, paths, cluster=None):
    """Guest mode: one boot per target (and round); returns one (median)
    result per job and target, and whether all answered.  With CLUSTER
    (--rbd) every target is on the one image, and a server runs only for its
    own boot (see rbdmode)."""
    from report import median_result
    log("building the guest (kernel, busybox, fio)")
    kernel, initrd = build_initrd(tmp, jobs, args.runtime)
    template = {}
    for transport in ("nbd", "vhost-user"):
        template[transport] = launch_template(paths, kernel, initrd, targets[0].image, transport)
    # The file reference runs on the NBD line: the same RAM and disk device.
    template["file"] = template["rbd"] = template["nbd"]
    if template["nbd"] is None:
        log("blockd-launch not built: QEMU started directly for every server")
    runs = {t.name: {j.name: [] for j in jobs} for t in targets}
    ok, booted = True, False
    for rnd in range(args.repeat):
        k = rnd % len(targets)
        for t in targets[k:] + targets[:k]:
            if booted if cluster is not None else rnd > 0:
                # The last boot's trims left holes (on the file, or on the
                # image every --rbd target shares); start from data again.
                if cluster is not None:
                    rbdmode.fill_image(cluster, args.size_bytes)
                else:
                    fill_image(t.image, args.size_bytes, refill=True)
            booted = True
            os.sync()
            log("guest on %s%s" % (t.name, " (round %d)" % (rnd + 1) if args.repeat > 1 else ""))
            if cluster is not None:
                for r in boot_alone(t, kernel, initrd, jobs, args.runtime, tmp, paths, template,
                                    cluster):
                    runs[t.name][r["job"]].append(r)
                    if r.get("error") or not r["iops"] > 0:
                        log("FAIL: %s on %s: %s" % (r["job"], t.name, r.get("error", "zero IOPS")))
                        ok = False
                continue
            if t.server:
                t.server.check_alive()
            for r in boot(t, kernel, initrd, jobs, args.runtime, tmp, paths, template):
                runs[t.name][r["job"]].append(r)
                if r.get("error") or not r["iops"] > 0:
                    log("FAIL: %s on %s: %s" % (r["job"], t.name, r.get("error", "zero IOPS")))
                    ok = False
    results = [median_result(runs[t.name][j.name]) for j in jobs for t in targets]
    return results, ok

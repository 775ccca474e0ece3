#!/usr/bin/python3
"""A throwaway single-node Ceph cluster: one monitor and one memstore OSD,
both on 127.0.0.1 only, cephx off, and the pool "rbd" (size 1, 8 PGs).
Used by the rbd tests (cephlib.sh, through `serve`) and by bench/run.py --rbd
(as a module).  Monitor commands go through one librados connection instead
of one `ceph` CLI run (1-2 s each) per command.

  cephcluster.py serve DIR   starts a cluster in DIR, writes DIR/ready
                             ("MON_PID OSD_PID PORT") once pool rbd takes
                             writes, and stops it on SIGTERM/SIGINT/SIGHUP

The daemons run in the foreground as our children with PR_SET_PDEATHSIG, so
they die with us even if we are killed.  Needs Debian's python (rados).
Exit status: 0 stopped on a signal, 1 the cluster did not start.
"""
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid

PROGRAMS = ("ceph-mon", "ceph-osd", "monmaptool", "ceph", "rbd")
POOL = "rbd"


def missing():
    """Returns why a cluster cannot start here, or None if it can."""
    for prog in PROGRAMS:
        if not shutil.which(prog):
            return "%s not installed (Debian: ceph-mon ceph-osd ceph-common)" % prog
    try:
        import rados  # noqa: F401
    except ImportError:
        return "python3-rados not importable by %s" % sys.executable
    return None


def free_port():
    """Returns a TCP port nobody listens on at 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def conf_text(topdir, port, fsid, memstore_bytes):
    """Returns the configuration every daemon and client of the cluster reads."""
    return """[global]
fsid = {fsid}
mon host = v2:127.0.0.1:{port}
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
auth cluster required = none
auth service required = none
auth client required = none
# One OSD: one copy, and no warning about it.
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon allow pool delete = true
osd crush chooseleaf type = 0
# Without these the monitor waits about a second per map change (start in
# 11-13 s instead of 3).
paxos propose interval = 0.01
paxos min wait = 0.001
mon mgr mkfs grace = 3600
# A directory on a nearly full disk must not stop the monitor.
mon data avail crit = 0
mon data avail warn = 0
log file = {d}/log/$name.log
run dir = {d}/run
keyring = /dev/null
# A slow shared machine: no client waits minutes for a missing cluster.
client mount timeout = 10

[mon]
mon data = {d}/mon
admin socket = {d}/run/$name.asok

[osd]
osd data = {d}/osd
osd objectstore = memstore
memstore device bytes = {memstore_bytes}
osd op num shards = 1
osd op num threads per shard = 2
osd max object name len = 256
osd max object namespace len = 64
admin socket = {d}/run/$name.asok
""".format(d=topdir, port=port, fsid=fsid, memstore_bytes=memstore_bytes)


def set_pdeathsig():
    """Child pre-exec hook: get SIGTERM when the parent dies."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
    except OSError:
        pass


class Cluster:
    """One monitor and one memstore OSD in DIR, started by start(), stopped
    (OSD first: an OSD whose monitor went first waits 5 s for it) by stop()."""

    def __init__(self, topdir, memstore_bytes=1 << 30):
        self.dir = topdir                   # everything of the cluster lives here
        self.conf = os.path.join(topdir, "ceph.conf")
        self.memstore_bytes = memstore_bytes  # the OSD's capacity (held in RAM)
        self.port = None                    # the monitor's TCP port
        self.mon = None                     # ceph-mon's Popen
        self.osd = None                     # ceph-osd's Popen

    def env(self):
        """Returns os.environ with CEPH_CONF pointing at this cluster."""
        return dict(os.environ, CEPH_CONF=self.conf)

    def _run(self, name, argv):
        """Runs a setup step, its output in DIR/NAME.out; raises RuntimeError."""
        out = os.path.join(self.dir, name + ".out")
        with open(out, "wb") as f:
            rc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=f,
                                env=self.env(), timeout=60).returncode
        if rc != 0:
            raise RuntimeError("%s failed (%d): %s" % (argv[0], rc, self.logs(out)))

    def _daemon(self, name, argv):
        """Starts a daemon in the foreground, its output in DIR/NAME.out (a
        pipe to us would never close)."""
        with open(os.path.join(self.dir, name + ".out"), "wb") as f:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=f,
                                    env=self.env(), preexec_fn=set_pdeathsig)

    def start(self):
        """Starts the monitor and the OSD and creates pool rbd; returns once
        the pool takes writes.  Raises RuntimeError (the caller stops)."""
        for sub in ("mon", "osd", "log", "run"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        self.port = free_port()
        fsid = str(uuid.uuid4())
        with open(self.conf, "w") as f:
            f.write(conf_text(self.dir, self.port, fsid, self.memstore_bytes))
        monmap = os.path.join(self.dir, "monmap")
        self._run("monmap", ["monmaptool", "--create", "--fsid", fsid, "--addv", "a",
                             "[v2:127.0.0.1:%d]" % self.port, monmap])
        self._run("mkfs-mon", ["ceph-mon", "--mkfs", "-i", "a", "--monmap", monmap])
        self.mon = self._daemon("mon", ["ceph-mon", "-f", "-i", "a"])
        osd_uuid = str(uuid.uuid4())
        osd_id = self.command(prefix="osd new", uuid=osd_uuid).decode().strip()
        if osd_id != "0":
            raise RuntimeError("ceph: osd new gave id %r" % osd_id)
        self._run("mkfs-osd", ["ceph-osd", "--mkfs", "-i", "0", "--osd-uuid", osd_uuid])
        self.osd = self._daemon("osd", ["ceph-osd", "-f", "-i", "0"])
        self.create_pool(POOL)

    def _connect(self):
        """Returns a connected rados.Rados; waits for the monitor to answer
        (client mount timeout), so no polling."""
        import rados
        cluster = rados.Rados(conffile=self.conf, conf={"rados_osd_op_timeout": "20",
                                                        "rados_mon_op_timeout": "20"})
        try:
            cluster.connect(timeout=20)
        except rados.Error as e:
            raise RuntimeError("ceph: no monitor: %s: %s" % (e, self.logs())) from None
        return cluster

    def command(self, **cmd):
        """Runs one monitor command; returns its output.  Raises RuntimeError."""
        cluster = self._connect()
        try:
            ret, out, err = cluster.mon_command(json.dumps(cmd), b"", timeout=20)
        finally:
            cluster.shutdown()
        if ret != 0:
            raise RuntimeError("ceph: %s: %s (%d)" % (cmd["prefix"], err, ret))
        return out

    def create_pool(self, name):
        """Creates pool NAME for RBD and waits until it takes writes."""
        self.command(prefix="osd pool create", pool=name, pg_num=8, pgp_num=8)
        self.command(prefix="osd pool application enable", pool=name, app="rbd")
        cluster = self._connect()
        try:
            # The first write waits until the OSD is up and the PGs are active.
            with cluster.open_ioctx(name) as io:
                io.write_full("cephcluster-probe", b"x")
                io.remove_object("cephcluster-probe")
        except Exception as e:
            raise RuntimeError("ceph: pool %s takes no writes: %s: %s"
                               % (name, e, self.logs())) from None
        finally:
            cluster.shutdown()

    def pids(self):
        """Returns {"ceph-mon": pid, "ceph-osd": pid} of the running daemons."""
        return {n: p.pid for n, p in (("ceph-mon", self.mon), ("ceph-osd", self.osd))
                if p is not None and p.poll() is None}

    def stop(self):
        """Stops the OSD, then the monitor: SIGTERM, SIGKILL after 5 s."""
        for p in (self.osd, self.mon):
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.osd = self.mon = None

    def logs(self, *extra, n=600):
        """Returns the end of the daemons' output and logs, for a failure."""
        names = list(extra) + [os.path.join(self.dir, f) for f in ("mon.out", "osd.out")]
        logdir = os.path.join(self.dir, "log")
        if os.path.isdir(logdir):
            names += [os.path.join(logdir, f) for f in sorted(os.listdir(logdir))]
        out = []
        for path in names:
            try:
                with open(path, errors="replace") as f:
                    text = f.read()[-n:].strip()
            except OSError:
                continue
            if text:
                out.append("%s: %s" % (os.path.basename(path), text))
        return "\n".join(out)


def on_signal(signum, frame):
    """Turns SIGTERM/SIGHUP into KeyboardInterrupt so the cluster is stopped."""
    raise KeyboardInterrupt


def serve(topdir):
    """Starts a cluster in TOPDIR, announces it in TOPDIR/ready, and runs it
    until a signal; returns the exit status."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    cluster = Cluster(topdir)
    t0 = time.monotonic()
    try:
        cluster.start()
        # Said before DIR/ready appears: cephlib.sh shows our output then.
        print("ceph: cluster up in %.0f s (mon 127.0.0.1:%d)"
              % (time.monotonic() - t0, cluster.port), file=sys.stderr, flush=True)
        pids = cluster.pids()
        ready = os.path.join(topdir, "ready")
        with open(ready + ".tmp", "w") as f:
            f.write("%d %d %d\n" % (pids["ceph-mon"], pids["ceph-osd"], cluster.port))
        os.rename(ready + ".tmp", ready)
        while True:
            signal.pause()
    except KeyboardInterrupt:
        return 0
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        print(e, file=sys.stderr)
        return 1
    finally:
        cluster.stop()


def main(argv):
    """Runs the command line; returns the exit status."""
    if len(argv) != 2 or argv[0] != "serve":
        print(__doc__.strip(), file=sys.stderr)
        return 2
    return serve(argv[1])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

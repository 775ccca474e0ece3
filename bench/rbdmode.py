"""The --rbd mode's cluster side: a throwaway single-node Ceph cluster
(tests/rbd/cephcluster.py), the one RBD image every server serves in turn,
its fill, and what the monitor and the OSD spend.

Both servers serve the same image, and librbd's exclusive lock means only one
may hold it writable at a time (blockd keeps the lock and does not hand it
over), so in this mode a server runs only for the length of one fio run (or
one guest boot): started on the image, measured, stopped, then the next."""
import glob
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "rbd"))
import cephcluster  # noqa: E402

from servers import MIB  # noqa: E402

GUEST_REFERENCE = "qemu-rbd"    # guest mode: QEMU's own rbd driver opens the image
# Host mode: fio's own rbd engine, librbd inside fio and no server: what the
# cluster gives one client, the ceiling the servers are measured against.
HOST_REFERENCE = "fio-rbd"
IMAGE = "bench"                 # the image's name in pool rbd


def spec(cluster):
    """Returns the image as blockd takes it: rbd:POOL/IMAGE,conf=FILE."""
    return "rbd:%s/%s,conf=%s" % (cephcluster.POOL, IMAGE, cluster.conf)


def qemu_rbd_driver():
    """Returns the path of QEMU's rbd block module (Debian: qemu-block-extra),
    or None.  A QEMU with the driver built in, not as a module, is not seen."""
    for pattern in ("/usr/lib/*/qemu/block-rbd.so", "/usr/lib/qemu/block-rbd.so",
                    "/usr/lib64/qemu/block-rbd.so"):
        found = glob.glob(pattern)
        if found:
            return found[0]
    return None


def blockd_has_rbd(blockd):
    """Returns True if the blockd binary links librbd (meson test says so in
    $BLOCKD_RBD, for the blockd in $BLOCKD)."""
    if os.environ.get("BLOCKD_RBD") in ("yes", "no") and os.environ.get("BLOCKD") == blockd:
        return os.environ["BLOCKD_RBD"] == "yes"
    try:
        out = subprocess.run(["ldd", blockd], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "librbd" in out


def missing(names, paths):
    """Returns why the --rbd mode cannot run NAMES here, or None."""
    why = cephcluster.missing()
    if why:
        return why
    try:
        import rbd  # noqa: F401
    except ImportError:
        return "python3-rbd not importable by %s" % sys.executable
    if "blockd-rbd" in names and os.access(paths["blockd"], os.X_OK) \
            and not blockd_has_rbd(paths["blockd"]):
        return "blockd built without librbd (librbd-dev)"
    if any(n in ("qsd-rbd", GUEST_REFERENCE) for n in names) and qemu_rbd_driver() is None:
        return "QEMU's rbd driver is not installed (Debian: qemu-block-extra)"
    return None


def start_cluster(topdir, size):
    """Starts the cluster in TOPDIR, sized for one SIZE-byte image (memstore
    holds every object in RAM); returns the cephcluster.Cluster.  The caller
    stops it, also when this raises."""
    cluster = cephcluster.Cluster(topdir, memstore_bytes=max(1 << 30, 2 * size + (256 << 20)))
    try:
        cluster.start()
    except RuntimeError:
        cluster.stop()
        raise
    return cluster


def create_image(cluster, size):
    """Creates the bench image (the default features: layering, exclusive-lock,
    object-map, fast-diff, deep-flatten).  Raises RuntimeError."""
    import rados
    import rbd
    try:
        with rados.Rados(conffile=cluster.conf) as conn:
            with conn.open_ioctx(cephcluster.POOL) as io:
                rbd.RBD().create(io, IMAGE, size)
    except (rados.Error, rbd.Error) as e:
        raise RuntimeError("rbd create %s/%s: %s" % (cephcluster.POOL, IMAGE, e)) from None


def fill_image(cluster, size):
    """Writes every byte of the image with non-zero data, as servers.fill_image
    does a file (a random MiB stamped with its offset), and returns once the
    cluster has it all.  No server may hold the image meanwhile."""
    import rados
    import rbd
    try:
        _fill(cluster, size)
    except (rados.Error, rbd.Error, OSError) as e:
        raise RuntimeError("filling %s/%s: %s" % (cephcluster.POOL, IMAGE, e)) from None


def _fill(cluster, size):
    """fill_image's writes."""
    import rados
    import rbd
    block = bytearray(os.urandom(MIB))
    with rados.Rados(conffile=cluster.conf) as conn:
        with conn.open_ioctx(cephcluster.POOL) as io:
            with rbd.Image(io, IMAGE) as img:
                done, pending = 0, []
                while done < size or pending:
                    # A few writes in flight: one at a time is much slower.
                    if done < size and len(pending) < 8:
                        n = min(MIB, size - done)
                        block[0:8] = done.to_bytes(8, "little")
                        pending.append(img.aio_write(bytes(block[:n]), done, None))
                        done += n
                        continue
                    c = pending.pop(0)
                    c.wait_for_complete_and_cb()
                    if c.get_return_value() < 0:
                        raise OSError(-c.get_return_value(), "rbd write of the bench image")
                img.flush()


def fio_has_rbd():
    """Returns True if fio is built with its rbd engine."""
    try:
        r = subprocess.run(["fio", "--enghelp=rbd"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return r.returncode == 0 and "rbdname" in r.stdout


def fio_options():
    """Returns fio's options for the image through its own rbd engine."""
    return ["--ioengine=rbd", "--pool=" + cephcluster.POOL, "--rbdname=" + IMAGE,
            "--clientname=admin"]


def fio_env(cluster):
    """Returns the environment for fio-rbd: the cluster's configuration with
    librbd's cache off, as in both servers (librbd's default is on)."""
    conf = os.path.join(cluster.dir, "fio-rbd.conf")
    if not os.path.exists(conf):
        with open(cluster.conf) as f:
            text = f.read()
        with open(conf, "w") as f:
            f.write(text + "\n[client]\nrbd cache = false\n")
    return dict(os.environ, CEPH_CONF=conf)


def cluster_pids(cluster):
    """Returns {"osd": pid, "mon": pid} of the running daemons."""
    p = cluster.pids()
    return {"osd": p.get("ceph-osd"), "mon": p.get("ceph-mon")}


def describe():
    """Returns the cluster setup behind the --rbd figures, for the JSON."""
    try:
        version = subprocess.run(["ceph-osd", "--version"], capture_output=True, text=True,
                                 timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        version = ""
    return {"version": version,
            "cluster": "1 monitor, 1 OSD (memstore, objects in RAM), 127.0.0.1, cephx off, "
                       "pool %s size 1 with 8 PGs, osd op num shards 1 x 2 threads" % cephcluster.POOL,
            "image": "%s/%s, 4 MiB objects, default features, served by one server at a time"
                     % (cephcluster.POOL, IMAGE)}


"""blockd out of file descriptors (RLIMIT_NOFILE lowered to 40 with
prlimit): clients beyond the limit are refused or left waiting, blockd does
not spin on accept (no CPU burnt while full), the connections it has keep
working, and once they close new clients are served again."""
import shutil
import subprocess
import time

import nbdraw as N
from itest import served, check, main, skip, MiB


def cpu_ticks(pid):
    """utime + stime of PID in clock ticks."""
    st = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return int(st[11]) + int(st[12])      # utime + stime


def run():
    """Fills blockd's descriptor table, then checks spin and recovery."""
    if shutil.which("prlimit") is None:
        skip("prlimit (util-linux) not installed")
    with served(size=MiB) as (b, disk):
        subprocess.run(["prlimit", "--pid", str(b.proc.pid), "--nofile=40:40"], check=True)
        conns = []
        for i in range(100):
            try:
                conns.append(N.Client(b.sock, timeout=1).handshake(structured=False))
            except (OSError, N.Closed, N.ProtocolError):
                break
        print("connections accepted under a 40-descriptor limit: %d" % len(conns))
        check(5 <= len(conns) < 100, "%d connections under a 40-descriptor limit" % len(conns))
        # More clients knocking while full: blockd must not busy-loop.
        extra = []
        for i in range(5):
            try:
                extra.append(N.Client(b.sock, timeout=0.2))
            except OSError:
                pass
        c0 = cpu_ticks(b.proc.pid)
        time.sleep(1.5)
        used = cpu_ticks(b.proc.pid) - c0
        print("CPU ticks used in 1.5 s while out of descriptors: %d" % used)
        check(used < 15, "blockd burnt %d ticks in 1.5 s out of descriptors (spinning?)" % used)
        for i, c in enumerate(conns):
            r = c.read(0, 512)
            check(r.error == 0, "connection %d broken while out of descriptors: %r" % (i, r))
        for c in conns + extra:
            c.close()
        deadline = time.time() + 10
        while True:
            try:
                c = N.Client(b.sock, timeout=2).handshake()
                break
            except (OSError, N.Closed):
                check(time.time() < deadline, "no new client served after the others closed")
        r = c.read(0, 512)
        check(r.error == 0, "read after recovering: %r" % r)
        c.disconnect()
        check(b.proc.poll() is None, "blockd died")
        b.stop()


main(run)

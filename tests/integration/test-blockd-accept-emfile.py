#!/usr/bin/python3
"""Out of file descriptors: blockd leaves new clients in the backlog and
retries, instead of spinning on accept (an earlier blockd burned a whole core
and logged hundreds of thousands of lines). Once clients go away, it serves
again."""
import os
import resource
import socket
import subprocess
import time

from itest import main, served, check

CLIENTS = 40


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run():
    # blockd inherits a limit of 32 descriptors: a dozen idle clients use the rest.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (32, hard))
    with served("--threads", "1") as (b, path):
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        socks = []
        for _ in range(CLIENTS):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(b.sock)
            socks.append(s)
        time.sleep(0.5)
        before = cpu_seconds(b.proc.pid)
        time.sleep(2)
        used = cpu_seconds(b.proc.pid) - before
        check(used < 0.5, "blockd used %.2f s of CPU in 2 s while out of descriptors" % used)
        lines = b.logtext().count("accept:")
        check(lines <= 2, "blockd logged %d accept errors in 2 s" % lines)
        for s in socks:
            s.close()
        # Served again once descriptors are free (handshakes of the closed
        # clients end at once: they see EOF).
        time.sleep(0.5)
        r = subprocess.run(["nbdinfo", "--size", b.uri()], capture_output=True, text=True,
                           timeout=20)
        check(r.returncode == 0, "nbdinfo after the flood: %s" % r.stderr)


main(run)

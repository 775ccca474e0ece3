"""blockd under a flood of clients that queue big reads and never read the
replies (32 clients x eight 16 MiB reads: 4 GiB asked for). The payload held
in memory stays within --max-memory: blockd's peak RSS stays under the
budget plus a fixed overhead, instead of growing with the clients. A real
client is served within the stall timeout plus 2 s (the flooders are dropped
at the stall timeout), and blockd gives the memory back afterwards."""
import socket
import time

import nbdraw as N
from itest import served, check, main, MiB, wait_until

BUDGET = 128 * MiB
STALL = 3
CLIENTS = 32
READS = 8
READ = 16 * MiB
# Besides the budget: per-worker buffer caches (16 MiB each, 2 workers),
# receive buffers, thread stacks, the binary. Measured near 40 MiB.
OVERHEAD = 64 * MiB


def status(pid, field):
    """A size field (VmRSS, VmHWM) of /proc/PID/status, in bytes."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no %s for pid %d" % (field, pid))


def run():
    with served("--threads", "2", "--max-memory", "%dM" % (BUDGET // MiB),
                "--stall-timeout", str(STALL), size=64 * MiB) as (b, disk):
        # Data, not holes: every reply carries its 16 MiB.
        with open(disk, "r+b") as f:
            for i in range(64):
                f.write(bytes([i + 1]) * MiB)
        pid = b.proc.pid
        base = status(pid, "VmRSS")
        flooders = []
        for i in range(CLIENTS):
            c = N.Client(b.sock, timeout=30).handshake(structured=False)
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            for k in range(READS):
                c.send_request(N.CMD_READ, (k * READ) % (48 * MiB), READ)
            flooders.append(c)
        time.sleep(1)
        hwm = status(pid, "VmHWM")
        print("flood: %d clients asked for %d MiB; blockd RSS %d MiB at start, peak %d MiB"
              " (budget %d MiB)" % (CLIENTS, CLIENTS * READS * READ // MiB, base // MiB,
                                    hwm // MiB, BUDGET // MiB))
        check(hwm <= BUDGET + OVERHEAD,
              "peak RSS %d MiB over the budget %d MiB + %d MiB" % (hwm // MiB, BUDGET // MiB,
                                                                   OVERHEAD // MiB))
        # A real client: it may wait for the flooders to be dropped, no longer.
        t = time.time()
        h = b.connect()
        data = h.pread(4096, 5 * MiB)
        took = time.time() - t
        print("a real client read 4 KiB after %.2f s (bound %d s)" % (took, STALL + 2))
        check(data == bytes([6]) * 4096, "real client: wrong data")
        check(took <= STALL + 2, "real client waited %.2f s" % took)
        h.shutdown()
        # The flooders holding the budget are dropped at the stall timeout
        # (the others get their turn, then stall too, round after round).
        wait_until(lambda: b.logtext().count("has not read its replies") >= BUDGET // READ // 2,
                   STALL + 3)
        dropped = b.logtext().count("has not read its replies")
        print("flooders dropped for unread replies so far: %d" % dropped)
        check(dropped >= (BUDGET // READ) // 2,
              "only %d flooders dropped: %s" % (dropped, b.logtext()[-1500:]))
        for c in flooders:
            c.close()
        # Everything but the caches goes back once the flooders are gone.
        back = wait_until(lambda: status(pid, "VmRSS") <= base + 40 * MiB, 5)
        print("RSS after the flood: %d MiB" % (status(pid, "VmRSS") // MiB))
        check(back, "RSS stays at %d MiB after the flood" % (status(pid, "VmRSS") // MiB))
        b.stop()


main(run)

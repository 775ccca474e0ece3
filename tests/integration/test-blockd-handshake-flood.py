"""A flood of silent connections on two listening sockets at once (127.0.0.1
and ::1): blockd never starts more handshakes than it has slots (an earlier
accept loop wrote past its slot table and crashed here), keeps evicting the
oldest silent ones as fast as new ones come, and a real client still gets
through its handshake and a read within 5 s while two threads flood 10,000
silent connections a second (typically well under 1 s; the old loop
evicted 100 a second). Runs alone: other tests' CPU use makes floods slower
to serve on a 2-core machine. Under AddressSanitizer every accept costs
several times as much, so the flood is 2,000 a second there: past what
blockd can accept the flood fills the listen backlog, and a real client's
SYN waits out TCP's retransmissions whatever blockd does."""
import os
import socket
import threading
import time

import nbdraw as N
from itest import check, main, MiB
from testlib import Blockd, sparse_file, skip

FLOOD_SECONDS = 4
PATIENCE = 5.0
# Silent connections a second, per flooding thread.
RATE = 1000 if os.environ.get("BLOCKD_SANITIZED") else 5000


def free_port():
    """A TCP port free on both 127.0.0.1 and ::1 right now."""
    for _ in range(50):
        s4 = socket.socket(socket.AF_INET)
        s4.bind(("127.0.0.1", 0))
        port = s4.getsockname()[1]
        s6 = socket.socket(socket.AF_INET6)
        try:
            s6.bind(("::1", port))
            return port
        except OSError:
            continue
        finally:
            s4.close()
            s6.close()
    raise AssertionError("no port free on both 127.0.0.1 and ::1")


def flood(addrs, stop, opened):
    """Connects silently, round robin over ADDRS, RATE times a second,
    until STOP is set."""
    held = []
    i = 0
    start = time.time()
    while not stop.is_set():
        ahead = i / RATE - (time.time() - start)
        if ahead > 0:
            time.sleep(ahead)
        fam, addr = addrs[i % len(addrs)]
        i += 1
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(addr)
        except BlockingIOError:
            pass
        except OSError:
            s.close()
            time.sleep(0.001)
            continue
        held.append(s)
        opened[0] += 1
        # Keep the newest few hundred open; older ones close, as a real
        # flood of short-lived probes would.
        if len(held) > 400:
            held.pop(0).close()
    for s in held:
        s.close()


def real_client(port):
    """Handshake and a 512-byte read over TCP; returns seconds taken."""
    t = time.time()
    sock = socket.create_connection(("127.0.0.1", port), timeout=PATIENCE + 5)
    c = N.Client(sock=sock).handshake()
    r = c.read(0, 512)
    check(r.error == 0, "read: %r" % r)
    c.disconnect()
    return time.time() - t


def run():
    if not socket.has_ipv6:
        skip("no IPv6")
    try:
        s6 = socket.socket(socket.AF_INET6)
        s6.bind(("::1", 0))
        s6.close()
    except OSError:
        skip("::1 is not configured")
    port = free_port()
    b = Blockd("--listen", "127.0.0.1:%d" % port, "--listen", "[::1]:%d" % port, unix=False)
    sparse_file(os.path.join(b.tmp, "disk.img"), MiB)
    b.args += (os.path.join(b.tmp, "disk.img"),)
    with b:
        addrs = [(socket.AF_INET, ("127.0.0.1", port)), (socket.AF_INET6, ("::1", port))]
        stop = threading.Event()
        opened = [0]
        threads = [threading.Thread(target=flood, args=(addrs, stop, opened)) for _ in range(2)]
        for t in threads:
            t.start()
        worst = 0.0
        try:
            deadline = time.time() + FLOOD_SECONDS
            tries = 0
            while time.time() < deadline:
                time.sleep(0.3)
                check(b.proc.poll() is None, "blockd died under the flood (exit %s): %s"
                      % (b.proc.returncode, b.logtext()[-2000:]))
                try:
                    took = real_client(port)
                except (socket.timeout, N.Closed, OSError) as e:
                    raise AssertionError("a real client got nowhere during the flood: %r" % e)
                worst = max(worst, took)
                tries += 1
        finally:
            stop.set()
            for t in threads:
                t.join()
        print("flood: %d silent connections in %d s on two sockets; %d real clients, slowest"
              " %.3f s" % (opened[0], FLOOD_SECONDS, tries, worst))
        check(b.proc.poll() is None, "blockd died under the flood")
        check(worst < PATIENCE, "a real client took %.2f s (bound %.1f s)" % (worst, PATIENCE))
        check(real_client(port) < PATIENCE, "slow after the flood")
        b.stop()


main(run)

#!/usr/bin/python3
"""SIGTERM while clients stream writes: blockd answers what it has received,
stops reading, and exits 0 promptly (not after its 10 s drain timeout), every
time. A write payload still being received when reading stops must not be
freed under the kernel's feet (an earlier blockd did, and hung here)."""
import signal
import struct
import threading
import time

from itest import main, served, check
import nbdraw as R

ROUNDS = 8
CONNS = 4
WRITE = 1 << 20


def stream(c, stop):
    """Sends 1 MiB writes until STOP or the server goes; replies are drained
    by a second thread so the server never blocks on us."""
    def drain():
        try:
            while c.sock.recv(65536):
                pass
        except OSError:
            pass
    t = threading.Thread(target=drain, daemon=True)
    t.start()
    piece = b"\xa5" * 4096
    cookie = 0
    try:
        while not stop.is_set():
            cookie += 1
            off = (cookie % 32) * WRITE
            c.sock.sendall(struct.pack(">IHHQQI", R.REQUEST_MAGIC, 0, R.CMD_WRITE, cookie, off,
                                       WRITE))
            # Small sends: blockd is often in the middle of a payload.
            for _ in range(WRITE // len(piece)):
                c.sock.sendall(piece)
    except OSError:
        pass


def run():
    for rnd in range(ROUNDS):
        with served("--threads", "1") as (b, path):
            stop = threading.Event()
            clients = [R.Client(b.sock).handshake(structured=True) for _ in range(CONNS)]
            threads = [threading.Thread(target=stream, args=(c, stop), daemon=True)
                       for c in clients]
            for t in threads:
                t.start()
            time.sleep(0.5)
            start = time.time()
            b.proc.send_signal(signal.SIGTERM)
            rc = b.proc.wait(timeout=30)
            took = time.time() - start
            stop.set()
            for c in clients:
                c.close()
            check(rc == 0, "round %d: blockd exited %d on SIGTERM" % (rnd, rc))
            check(took < 5, "round %d: blockd took %.1f s to stop" % (rnd, took))
            check("still has replies" not in b.logtext(),
                  "round %d: blockd waited on clients: %s" % (rnd, b.logtext()))


main(run)

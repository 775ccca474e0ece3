"""blockd with clients that connect and never speak: 100 idle connections
(more than blockd handles handshakes at once) must not keep a real client out;
it gets through its handshake and a read within 10 s, and the idle ones are
dropped in the end without harm."""
import socket
import time

import nbdraw as N
from itest import served, check, main, MiB

IDLE = 100
PATIENCE = 10


def run():
    """Idle connections first, then a real client against the clock."""
    with served(size=MiB) as (b, disk):
        idle = []
        try:
            for i in range(IDLE):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(b.sock)
                idle.append(s)
            t = time.time()
            try:
                c = N.Client(b.sock, timeout=PATIENCE).handshake()
                r = c.read(0, 512)
            except (socket.timeout, N.Closed, OSError) as e:
                raise AssertionError("with %d idle connections a real client got nowhere in"
                                     " %d s (%r): idle clients lock others out"
                                     % (IDLE, PATIENCE, e))
            took = time.time() - t
            print("with %d idle connections: handshake and read in %.2f s" % (IDLE, took))
            check(r.error == 0, "read: %r" % r)
            c.disconnect()
        finally:
            for s in idle:
                s.close()
        check(b.proc.poll() is None, "blockd died")
        b.stop()


main(run)

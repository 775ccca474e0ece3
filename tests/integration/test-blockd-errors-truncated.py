"""blockd: a client that sends part of a request header (or part of a
write's payload, or part of the handshake) and then EOF gets a clean close;
blockd lives on and serves other clients."""
import socket
import struct

import nbdraw as N
from itest import served, check, main, nfds, check_no_fd_leak


def half_close(c):
    """Shuts the client's sending side: the server sees EOF."""
    c.sock.shutdown(socket.SHUT_WR)


def run():
    """Four truncations, then other clients."""
    with served() as (b, disk):
        fds = nfds(b.proc.pid)
        other = N.Client(b.sock).handshake()
        cases = []

        c = N.Client(b.sock).handshake(structured=False)
        c.send(struct.pack(">IHHQQI", N.REQUEST_MAGIC, 0, N.CMD_READ, 1, 0, 512)[:10])
        cases.append(("truncated request header", c))

        c = N.Client(b.sock).handshake(structured=True)
        c.send(struct.pack(">IHHQQI", N.REQUEST_MAGIC, 0, N.CMD_WRITE, 1, 0, 4096)
               + b"\x22" * 100)
        cases.append(("truncated write payload", c))

        c = N.Client(b.sock)
        c.recv_exact(18)
        c.send(b"\0\0")
        cases.append(("truncated client flags", c))

        c = N.Client(b.sock)
        c.greeting()
        c.send(struct.pack(">QII", N.IHAVEOPT, N.OPT_GO, 100) + b"\0\0\0\x05ab")
        cases.append(("truncated option", c))

        for what, c in cases:
            half_close(c)
            check(c.wait_closed(10), "%s: blockd did not close the connection" % what)
            c.close()
            check(b.proc.poll() is None, "%s: blockd died" % what)

        r = other.read(0, 4096)
        check(r.error == 0 and r.data == bytes(4096), "other connection broken: %r" % r)
        n = N.Client(b.sock).handshake()
        check(n.write(0, b"\x33" * 512).error == 0, "new connection: write failed")
        n.disconnect()
        other.disconnect()
        check_no_fd_leak(b, fds, "after all clients closed")
        b.stop()
        with open(disk, "rb") as f:
            check(f.read(512) == b"\x33" * 512, "the new connection's write is not in the file")


main(run)

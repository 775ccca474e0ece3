"""blockd: a request with a bad magic (or a bad option magic during the
handshake) makes blockd close that connection and log a line; other
connections and the server are unaffected."""
import struct

import nbdraw as N
from itest import served, check, main, wait_until, nfds, check_no_fd_leak


def run():
    """Bad magics on two kinds of connection and in the handshake."""
    with served() as (b, disk):
        fds = nfds(b.proc.pid)
        other = N.Client(b.sock).handshake(structured=True)
        check(other.write(0, b"\x11" * 4096).error == 0, "write on the other connection")

        for structured in (False, True):
            c = N.Client(b.sock).handshake(structured=structured)
            check(c.read(0, 512).error == 0, "read before the bad magic")
            before = len(b.logtext())
            c.send(struct.pack(">IHHQQI", 0x25609514, 0, N.CMD_READ, 99, 0, 512))
            check(c.wait_closed(10), "blockd kept the connection open after a bad request magic")
            c.close()
            check(wait_until(lambda: len(b.logtext()) > before, 10),
                  "blockd logged nothing about the bad request magic")
            print("blockd logged: %s" % b.logtext()[before:].strip())
            check(b.proc.poll() is None, "blockd died after a bad request magic")

        # A bad IHAVEOPT magic on an option during the handshake.
        c = N.Client(b.sock)
        c.greeting()
        before = len(b.logtext())
        c.send(struct.pack(">QII", 0x1122334455667788, N.OPT_GO, 0))
        check(c.wait_closed(10), "blockd kept the connection open after a bad option magic")
        c.close()
        check(b.proc.poll() is None, "blockd died after a bad option magic")

        # The other connection still works, and new ones are accepted.
        r = other.read(0, 4096)
        check(r.error == 0 and r.data == b"\x11" * 4096, "other connection broken: %r" % r)
        n = N.Client(b.sock).handshake(structured=False)
        r = n.read(0, 4096)
        check(r.error == 0 and r.data == b"\x11" * 4096, "new connection broken: %r" % r)
        n.disconnect()
        other.disconnect()
        check_no_fd_leak(b, fds, "after all clients closed")
        b.stop()


main(run)

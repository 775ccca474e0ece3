"""blockd handshake under bad input: unknown client flags drop the
connection (proto.md MUST); oversized or inconsistent options get an error
reply or a clean close, never unbounded memory; unknown NBD_INFO requests are
ignored; after each the server lives and serves many clients at once."""
import struct
import time

import nbdraw as N
from itest import served, check, main, vmrss, MiB, nfds, check_no_fd_leak

LIMIT = 256 * MiB


def new(b):
    """A connection past the greeting, in option haggling."""
    c = N.Client(b.sock)
    c.greeting()
    return c


def error_or_close(c, option, what, allowed):
    """The server answers OPTION with an error in ALLOWED, or closes.
    Returns True if the connection is still usable."""
    try:
        opt, reply, payload = c.recv_option_reply()
    except (N.Closed, OSError):
        return False
    check(opt == option, "%s: reply for option %d" % (what, opt))
    check(reply in allowed, "%s: reply 0x%x, expected one of %s"
          % (what, reply, ["0x%x" % a for a in allowed]))
    return True


def usable(c, what):
    """The handshake can go on: GO works and a read succeeds."""
    c.opt_go("")
    r = c.read(0, 512)
    check(r.error == 0, "%s: read after the handshake: %r" % (what, r))
    c.disconnect()


def run():
    """Bad handshakes one by one, then 64 clients at once."""
    with served(size=4 * MiB) as (b, disk):
        fds = nfds(b.proc.pid)
        # Unknown client flags: the server MUST drop the connection.
        for flags in (N.FLAG_FIXED_NEWSTYLE | 1 << 2, N.FLAG_FIXED_NEWSTYLE | 1 << 31):
            c = N.Client(b.sock)
            c.recv_exact(18)
            try:
                c.send(struct.pack(">I", flags))
                c.send_option(N.OPT_GO, c._go_payload("", ()))
            except OSError:
                pass        # already dropped
            check(c.wait_closed(10), "client flags 0x%x: connection not dropped" % flags)
            c.close()

        # An option claiming 4 GiB of data: error or close, and no 4 GiB buffer.
        c = new(b)
        try:
            c.send(struct.pack(">QII", N.IHAVEOPT, N.OPT_GO, 0xFFFFFFFF) + b"\0" * 4096)
        except OSError:
            pass            # dropped at the header: fine
        time.sleep(0.5)
        rss = vmrss(b.proc.pid)
        check(rss < LIMIT, "blockd RSS %d MiB after a 4 GiB option header" % (rss // MiB))
        try:
            c.sock.settimeout(5)
            c.recv_option_reply()   # an error reply is fine, then it may close
        except (N.Closed, OSError):
            pass
        c.close()

        # An unknown option with 1 MiB of data: skipped with an error, or close.
        c = new(b)
        try:
            c.send_option(300, b"\xaa" * MiB)
        except OSError:
            pass            # dropped before reading it all: fine
        if error_or_close(c, 300, "1 MiB unknown option",
                          (N.REP_ERR_UNSUP, N.REP_ERR_TOO_BIG, N.REP_ERR_INVALID)):
            usable(c, "after a 1 MiB unknown option")
        else:
            c.close()

        # GO with an export name over 4096 bytes.
        c = new(b)
        c.send_option(N.OPT_GO, c._go_payload("x" * 5000, ()))
        if error_or_close(c, N.OPT_GO, "GO with a 5000-byte name",
                          (N.REP_ERR_INVALID, N.REP_ERR_TOO_BIG, N.REP_ERR_UNKNOWN)):
            usable(c, "after a 5000-byte name")
        else:
            c.close()

        # GO whose name length runs past the option's data.
        c = new(b)
        c.send_option(N.OPT_GO, struct.pack(">I", 100) + b"abc")
        if error_or_close(c, N.OPT_GO, "GO with a name past the data", (N.REP_ERR_INVALID,)):
            usable(c, "after a bad GO")
        else:
            c.close()

        # GO whose info request count runs past the data.
        c = new(b)
        c.send_option(N.OPT_GO, struct.pack(">IH", 0, 5) + struct.pack(">H", 3))
        if error_or_close(c, N.OPT_GO, "GO with too few info requests", (N.REP_ERR_INVALID,)):
            usable(c, "after a bad info count")
        else:
            c.close()

        # SET_META_CONTEXT with a query length past the data.
        c = new(b)
        c.opt_structured_reply()
        c.send_option(N.OPT_SET_META_CONTEXT,
                      struct.pack(">II", 0, 1) + struct.pack(">I", 1000) + b"base:")
        if error_or_close(c, N.OPT_SET_META_CONTEXT, "meta context past the data",
                          (N.REP_ERR_INVALID,)):
            usable(c, "after a bad meta context")
        else:
            c.close()

        # Unknown NBD_INFO requests are ignored (proto.md MUST).
        c = new(b)
        infos = c.opt_go("", infos=(1234, N.INFO_BLOCK_SIZE, 0xFFFF))
        check(c.size == 4 * MiB and c.block_size() == (1, 4096, 32 * MiB),
              "GO with unknown info requests: size %r block size %r" % (c.size, c.block_size()))
        check(1234 not in infos and 0xFFFF not in infos, "unknown info types answered")
        c.disconnect()

        # Many clients at once, each doing real work.
        clients = [N.Client(b.sock).handshake(structured=bool(i % 2)) for i in range(64)]
        for i, c in enumerate(clients):
            c.send_request(N.CMD_WRITE, i * 4096, 4096, data=bytes([i]) * 4096)
        for i, c in enumerate(clients):
            r = c.recv_reply()
            check(r.error == 0, "client %d: write failed" % i)
        for i, c in enumerate(clients):
            r = c.read(((i + 1) % 64) * 4096, 4096)
            check(r.error == 0 and r.data == bytes([(i + 1) % 64]) * 4096,
                  "client %d: wrong data from another client's write" % i)
            c.disconnect()
        check(b.proc.poll() is None, "blockd died")
        check_no_fd_leak(b, fds, "after all clients closed")
        b.stop()


main(run)

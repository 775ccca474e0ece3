"""blockd: SIGTERM with requests in flight drains them: blockd exits 0, every
write it acknowledged is in the file, every request it had fully received gets
a reply (done, or ESHUTDOWN if not started), and an idle connection does not
keep it alive."""
import array
import fcntl
import hashlib
import signal
import struct
import termios
import threading
import time

import nbdraw as N
from itest import served, check, main, wait_until, MiB

COUNT = 64
LEN = MiB


def pattern(i):
    """The LEN bytes of write I."""
    return hashlib.sha256(b"%d" % i).digest() * (LEN // 32)


def run():
    """SIGTERM in the middle of a stream of writes."""
    with served(size=COUNT * LEN) as (b, disk):
        idle = N.Client(b.sock).handshake()
        c = N.Client(b.sock).handshake(structured=False)
        c.sock.settimeout(30)

        def sender():
            """Streams COUNT writes until blockd stops reading."""
            try:
                for i in range(COUNT):
                    c.send(struct.pack(">IHHQQI", N.REQUEST_MAGIC, 0, N.CMD_WRITE, i + 1,
                                       i * LEN, LEN) + pattern(i))
            except OSError:
                pass      # blockd stopped reading: fine, it is shutting down

        for i in range(COUNT):
            c.pending[i + 1] = (N.CMD_WRITE, LEN, i * LEN)
        t = threading.Thread(target=sender)
        t.start()
        replies = [c.recv_reply()]          # blockd is busy with our writes
        b.proc.send_signal(signal.SIGTERM)
        t0 = time.time()
        try:
            while len(replies) < COUNT:
                replies.append(c.recv_reply())
        except (N.Closed, OSError):
            pass
        t.join(30)
        rc = b.proc.wait(timeout=30)
        print("blockd exited %.2f s after SIGTERM" % (time.time() - t0))
        check(rc == 0, "blockd exited %d after SIGTERM: %s" % (rc, b.logtext()))
        c.close()
        idle.close()

        ok = [r.cookie for r in replies if r.error == 0]
        bad = [(r.cookie, N.errname(r.error)) for r in replies
               if r.error not in (0, N.ESHUTDOWN)]
        print("writes sent %d, acknowledged %d, other replies %d"
              % (COUNT, len(ok), len(replies) - len(ok)))
        check(not bad, "unexpected errors during shutdown: %r" % bad)
        with open(disk, "rb") as f:
            for cookie in ok:
                i = cookie - 1
                f.seek(i * LEN)
                check(f.read(LEN) == pattern(i),
                      "write %d was acknowledged but is not in the file" % i)


def unread(sock):
    """Bytes we sent on the unix socket SOCK that the peer has not read yet
    (SIOCOUTQ counts them until the receiver consumes them)."""
    buf = array.array("i", [0])
    fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, buf, True)
    return buf[0]


def run_received(sig):
    """Every request blockd has read off the socket before SIGTERM is answered."""
    n, ln = 16, 65536
    with served(size=n * ln) as (b, disk):
        c = N.Client(b.sock).handshake(structured=True)
        for i in range(n):
            c.send_request(N.CMD_WRITE, i * ln, ln, data=pattern(i)[:ln])
        check(wait_until(lambda: unread(c.sock) == 0, 10),
              "blockd did not read 16 small writes in 10 s (%d bytes unread)" % unread(c.sock))
        b.proc.send_signal(sig)
        replies = []
        try:
            while len(replies) < n:
                replies.append(c.recv_reply())
        except (N.Closed, OSError):
            pass
        rc = b.proc.wait(timeout=30)
        check(rc == 0, "blockd exited %d after signal %d: %s" % (rc, sig, b.logtext()))
        check(len(replies) == n, "blockd read %d writes but answered only %d before exiting"
              % (n, len(replies)))
        # proto.md lets a server shutting down answer requests it has not
        # started with ESHUTDOWN; anything acknowledged must be on disk.
        bad = [(r.cookie, N.errname(r.error)) for r in replies
               if r.error not in (0, N.ESHUTDOWN)]
        check(not bad, "errors for writes received before SIGTERM: %r" % bad)
        ok = [r.cookie for r in replies if r.error == 0]
        print("received before signal %d: %d writes, %d done, %d ESHUTDOWN"
              % (sig, n, len(ok), n - len(ok)))
        with open(disk, "rb") as f:
            for cookie in ok:
                i = cookie - 1
                f.seek(i * ln)
                check(f.read(ln) == pattern(i)[:ln], "write %d acknowledged, not in the file" % i)


# CONTRACT: SIGINT behaves like SIGTERM.
main(lambda: (run(), run_received(signal.SIGTERM), run_received(signal.SIGINT)))

"""Connection and time limits. --max-connections 8: a ninth client is
greeted but its negotiation waits until one of the eight leaves, then gets
through within 1 s. --idle-timeout: a connection without requests is closed
after it. --stall-timeout: a client that leaves a request header or a write
payload unfinished is dropped after it, and the slot goes to a waiting
client. blockd's descriptors come back each time."""
import socket
import struct
import time

import nbdraw as N
from itest import served, check, main, MiB, nfds, check_no_fd_leak

CAP = 8
STALL = 2
IDLE = 3


def negotiates(c, timeout):
    """Sends GO on greeted client C; True if the server answers within
    TIMEOUT seconds (the rest of the answer is read later)."""
    c.sock.settimeout(timeout)
    c.send_option(N.OPT_GO, struct.pack(">IH", 0, 0))
    try:
        return len(c.sock.recv(1, socket.MSG_PEEK)) > 0
    except socket.timeout:
        return False


def run():
    with served("--max-connections", str(CAP), "--stall-timeout", str(STALL),
                "--idle-timeout", str(IDLE), size=MiB) as (b, disk):
        base = nfds(b.proc.pid)
        # Eight clients in transmission fill every slot.
        clients = [N.Client(b.sock).handshake() for _ in range(CAP)]
        waiting = N.Client(b.sock)
        waiting.greeting()
        check(not negotiates(waiting, 1),
              "a ninth client negotiated past --max-connections %d" % CAP)
        t = time.time()
        clients.pop().disconnect()
        waiting.sock.settimeout(2)
        check(len(waiting.sock.recv(1, socket.MSG_PEEK)) > 0,
              "the waiting client did not negotiate after a slot freed")
        took = time.time() - t
        print("cap %d: the ninth client waited, then negotiated %.3f s after a slot freed"
              % (CAP, took))
        check(took < 1, "negotiated only after %.2f s" % took)
        waiting.close()

        # Idle connections close after --idle-timeout; busy ones stay.
        busy = clients.pop()
        t = time.time()
        while time.time() - t < IDLE + 2:
            check(busy.read(0, 512).error == 0, "a busy client was closed")
            time.sleep(0.5)
        for c in clients:
            check(c.wait_closed(3), "an idle client was not closed after %d s" % IDLE)
        busy.disconnect()
        print("idle clients closed after %d s, a busy one kept" % IDLE)

        # Unfinished header, unfinished write payload: dropped at the stall timeout.
        half = N.Client(b.sock).handshake()
        hdr = struct.pack(">IHHQQI", N.REQUEST_MAGIC, 0, N.CMD_READ, 1, 0, 512)
        half.send(hdr[:10])
        partial = N.Client(b.sock).handshake()
        partial.send(struct.pack(">IHHQQI", N.REQUEST_MAGIC, 0, N.CMD_WRITE, 1, 0, 65536) +
                     b"x" * 1000)
        t = time.time()
        check(half.wait_closed(STALL + 3), "a half-sent header was not dropped")
        check(partial.wait_closed(STALL + 3), "a half-sent write was not dropped")
        print("unfinished requests dropped after %.1f s (stall timeout %d s)"
              % (time.time() - t, STALL))
        log = b.logtext()
        check("left a request unfinished" in log, "no log line for the stalled clients: " + log)
        check_no_fd_leak(b, base, "after the limits")
        c = N.Client(b.sock).handshake()
        check(c.read(0, 512).error == 0, "blockd no longer serves")
        c.disconnect()
        b.stop()


main(run)

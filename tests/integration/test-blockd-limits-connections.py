"""Connection and time limits. --max-connections 8: a ninth client waits in
the listen backlog (no greeting) until one of the eight leaves, then gets
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


def greets(sock_path, timeout):
    """Connects; True if the server greets within TIMEOUT seconds."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(sock_path)
    try:
        return len(s.recv(18)) > 0, s
    except socket.timeout:
        return False, s


def run():
    with served("--max-connections", str(CAP), "--stall-timeout", str(STALL),
                "--idle-timeout", str(IDLE), size=MiB) as (b, disk):
        base = nfds(b.proc.pid)
        # Eight clients in transmission fill every slot.
        clients = [N.Client(b.sock).handshake() for _ in range(CAP)]
        ok, waiting = greets(b.sock, 1)
        check(not ok, "a ninth client was greeted past --max-connections %d" % CAP)
        t = time.time()
        clients.pop().disconnect()
        waiting.settimeout(2)
        check(len(waiting.recv(18)) > 0, "the waiting client was not greeted after a slot freed")
        took = time.time() - t
        print("cap %d: the ninth client waited, then was greeted %.3f s after a slot freed"
              % (CAP, took))
        check(took < 1, "greeted only after %.2f s" % took)
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

"""blockd: memory in flight per connection is bounded.  A client floods 2000
writes of 1 MiB without reading a reply, another asks for 2000 reads of 1 MiB
and never reads the data: blockd's resident memory stays under 256 MiB, and
once the clients go away blockd still serves others."""
import os
import select
import struct
import subprocess
import time

import nbdraw as N
from itest import served, check, main, vmrss, MiB, nfds, check_no_fd_leak, check_still_serves
from testlib import BLOCKD

LIMIT = 256 * MiB
COUNT = 2000
SIZE = 64 * MiB


def flood_writes(b, peak):
    """Sends up to COUNT 1 MiB writes without reading; returns how many went."""
    c = N.Client(b.sock).handshake(structured=False)
    c.sock.setblocking(False)
    payload = os.urandom(MiB)
    sent = 0            # requests completely sent
    buf = b""
    last_progress = time.time()
    while sent < COUNT:
        if not buf:
            buf = struct.pack(">IHHQQI", N.REQUEST_MAGIC, 0, N.CMD_WRITE, sent + 1,
                              (sent % (SIZE // MiB)) * MiB, MiB) + payload
        _, w, _ = select.select([], [c.sock], [], 0.2)
        peak[0] = max(peak[0], vmrss(b.proc.pid))
        if w:
            try:
                n = c.sock.send(buf)
            except BlockingIOError:
                n = 0
            if n:
                buf = buf[n:]
                last_progress = time.time()
                if not buf:
                    sent += 1
        # The server may stop reading us once its bound is reached: that is
        # the point.  Two seconds without progress means it did.
        if time.time() - last_progress > 2:
            break
    time.sleep(0.5)
    peak[0] = max(peak[0], vmrss(b.proc.pid))
    c.close()
    return sent


def flood_reads(b, peak):
    """Asks for COUNT 1 MiB reads and never reads the data; returns how many went."""
    c = N.Client(b.sock).handshake(structured=True)
    c.sock.setblocking(False)
    reqs = b"".join(struct.pack(">IHHQQI", N.REQUEST_MAGIC, 0, N.CMD_READ, i + 1,
                                (i % (SIZE // MiB)) * MiB, MiB) for i in range(COUNT))
    deadline = time.time() + 4
    while reqs and time.time() < deadline:
        _, w, _ = select.select([], [c.sock], [], 0.2)
        if w:
            try:
                reqs = reqs[c.sock.send(reqs):]
            except BlockingIOError:
                pass
        peak[0] = max(peak[0], vmrss(b.proc.pid))
    # Give blockd time to do whatever it will with what it got.
    for _ in range(20):
        time.sleep(0.1)
        peak[0] = max(peak[0], vmrss(b.proc.pid))
    c.close()
    return COUNT - len(reqs) // 28


def asan_quarantine():
    """Under AddressSanitizer freed memory sits in a 256 MiB quarantine and
    counts in RSS; shrink it so the bound measures blockd, not ASan."""
    out = subprocess.run(["ldd", BLOCKD], capture_output=True, text=True).stdout
    if "libasan" in out:
        opts = os.environ.get("ASAN_OPTIONS", "")
        os.environ["ASAN_OPTIONS"] = (opts + ":" if opts else "") + \
            "quarantine_size_mb=8:thread_local_quarantine_size_kb=256"
        print("AddressSanitizer build: ASAN_OPTIONS=%s" % os.environ["ASAN_OPTIONS"])


def run():
    """Both floods, then a normal client."""
    asan_quarantine()
    with served(size=SIZE) as (b, disk):
        fds = nfds(b.proc.pid)
        base = vmrss(b.proc.pid)
        peak = [base]
        sent = flood_writes(b, peak)
        print("writes sent before blockd pushed back: %d of %d; RSS %d MiB -> peak %d MiB"
              % (sent, COUNT, base // MiB, peak[0] // MiB))
        check(peak[0] < LIMIT, "blockd RSS reached %d MiB flooding writes" % (peak[0] // MiB))
        check(b.proc.poll() is None, "blockd died under a write flood")

        peak2 = [vmrss(b.proc.pid)]
        got = flood_reads(b, peak2)
        print("reads sent: %d of %d; RSS peak %d MiB" % (got, COUNT, peak2[0] // MiB))
        check(peak2[0] < LIMIT, "blockd RSS reached %d MiB with unread replies"
              % (peak2[0] // MiB))
        check(b.proc.poll() is None, "blockd died under a read flood")

        check_still_serves(b, "after the floods", 0x77)
        check_no_fd_leak(b, fds, "after all clients closed")
        b.stop()


main(run)

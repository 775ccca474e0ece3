"""blockd with a client that asks for 64 MiB of reads and then reads the
replies slowly: another connection on the same (single) worker is served
meanwhile, and the slow client still gets every byte right once it reads
(partial sends resume correctly)."""
import hashlib
import time

import nbdraw as N
from itest import served, check, main, MiB

SIZE = 65 * MiB      # reads cover the first 64, the other client writes the last
READ = 16 * MiB     # far more than socket buffers hold


def block(i):
    """The MiB of pattern I."""
    return hashlib.sha256(b"%d" % i).digest() * (MiB // 32)


def run():
    """Big reads left unread while another client works."""
    with served("--threads", "1", size=SIZE) as (b, disk):
        with open(disk, "r+b") as f:
            for i in range(SIZE // MiB):
                f.write(block(i))
        for structured in (False, True):
            slow = N.Client(b.sock, timeout=60).handshake(structured=structured)
            cookies = {slow.send_request(N.CMD_READ, k * READ, READ): k for k in range(4)}
            other = N.Client(b.sock).handshake(structured=not structured)
            t0 = time.time()
            worst = 0.0
            for i in range(200):
                t = time.time()
                r = other.read((i % 64) * MiB, 4096)
                worst = max(worst, time.time() - t)
                check(r.error == 0 and r.data == block(i % 64)[:4096],
                      "other connection: wrong read while a client is slow")
                r = other.write(SIZE - 4096, b"\x01" * 4096)
                check(r.error == 0, "other connection: write failed while a client is slow")
            print("%s: 400 requests on another connection in %.2f s, slowest %.3f s"
                  % ("structured" if structured else "simple", time.time() - t0, worst))
            check(worst < 2, "another connection waited %.2f s behind a slow reader" % worst)
            # Now drain slowly: small recv calls, with pauses.
            want = b"".join(block(i) for i in range(SIZE // MiB))
            for n in range(4):
                r = slow.recv_reply()
                k = cookies[r.cookie]     # replies may come in any order
                check(r.error == 0, "slow read %d: %s" % (k, N.errname(r.error)))
                check(r.data == want[k * READ:(k + 1) * READ],
                      "slow read %d: wrong data" % k)
                if n == 0:
                    time.sleep(0.2)
            other.disconnect()
            slow.disconnect()
        b.stop()


main(run)

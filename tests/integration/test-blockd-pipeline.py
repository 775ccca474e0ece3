"""blockd with many requests in flight on one connection: replies may come
in any order but each echoes its cookie (any 64-bit value) exactly once with
the right data; NBD_CMD_DISC after a burst still carries out every write
(proto.md: "The server MUST handle all outstanding requests")."""
import hashlib
import os

import nbdraw as N
from itest import served, check, main, MiB

SIZE = 16 * MiB


def blob(i, n):
    """N bytes of pattern I."""
    return (hashlib.sha256(b"%d" % i).digest() * (n // 32 + 1))[:n]


def burst(b, structured):
    """64 writes in flight, then reads, flush, cache and block status in flight."""
    c = N.Client(b.sock).handshake(structured=structured,
                                    meta=["base:allocation"] if structured else ())
    # Writes of odd sizes to disjoint places, with extreme cookies.
    writes = {}
    cookies = [0, 1, (1 << 64) - 1, 1 << 63, 0x0102030405060708] + \
              [1000 + i for i in range(59)]
    for i, ck in enumerate(cookies):
        n = 512 + i * 4099
        off = i * 256 * 1024
        c.send_request(N.CMD_WRITE, off, n, data=blob(i, n), cookie=ck)
        writes[ck] = (off, n, i)
    seen = set()
    for _ in cookies:
        r = c.recv_reply()
        check(r.cookie in writes and r.cookie not in seen, "bad cookie %d" % r.cookie)
        check(r.error == 0, "write cookie %d: %s" % (r.cookie, N.errname(r.error)))
        seen.add(r.cookie)
    # Reads, flush, block status and cache mixed, all in flight together.
    reads = {}
    for i, ck in enumerate(cookies):
        off, n, j = writes[ck]
        rc = c.send_request(N.CMD_READ, off, n, cookie=ck ^ 0x5555)
        reads[rc] = (off, n, j)
    extra = [c.send_request(N.CMD_FLUSH, cookie=77777),
             c.send_request(N.CMD_CACHE, 0, MiB, cookie=77778)]
    if structured:
        extra.append(c.send_request(N.CMD_BLOCK_STATUS, 0, SIZE, cookie=77779))
    got = {}
    for _ in range(len(reads) + len(extra)):
        r = c.recv_reply()
        check(r.cookie not in got, "cookie %d answered twice" % r.cookie)
        got[r.cookie] = r
    for ck, (off, n, j) in reads.items():
        r = got.get(ck)
        check(r is not None, "read cookie %d never answered" % ck)
        check(r.error == 0 and r.data == blob(j, n), "read %d+%d: wrong data" % (off, n))
    for ck in extra:
        check(ck in got and got[ck].error == 0, "cookie %d: %r" % (ck, got.get(ck)))
    c.disconnect()


def disc_after_burst(b, disk):
    """32 writes followed at once by NBD_CMD_DISC."""
    c = N.Client(b.sock).handshake(structured=False)
    n = 65536
    for i in range(32):
        c.send_request(N.CMD_WRITE, 8 * MiB + i * n, n, data=blob(100 + i, n))
    c.disconnect()      # DISC right behind the writes, no reply read
    # A new connection must see all 32 writes.
    d = N.Client(b.sock).handshake(structured=True)
    for i in range(32):
        r = d.read(8 * MiB + i * n, n)
        check(r.error == 0 and r.data == blob(100 + i, n),
              "write %d sent before NBD_CMD_DISC was lost" % i)
    d.disconnect()


def run():
    """Bursts on both kinds of connection, then DISC."""
    with served(size=SIZE) as (b, disk):
        burst(b, False)
        burst(b, True)
        disc_after_burst(b, disk)
        check(b.proc.poll() is None, "blockd died")
        b.stop()


main(run)

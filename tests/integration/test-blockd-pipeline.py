"""blockd with many requests in flight on one connection: replies may come
in any order but each echoes its cookie (any 64-bit value) exactly once with
the right data; NBD_CMD_DISC after a burst still carries out every write
(proto.md: "The server MUST handle all outstanding requests")."""
import hashlib
import socket

import nbdraw as N
from itest import served, check, main, wait_until, MiB

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


def send_writes(c, base, seed, count=32, n=65536):
    """COUNT writes of N bytes of pattern SEED + i from BASE, replies unread."""
    for i in range(count):
        c.send_request(N.CMD_WRITE, base + i * n, n, data=blob(seed + i, n))


def unwritten(b, base, seed, count=32, n=65536):
    """Indexes of the writes of send_writes(BASE, SEED) a new connection
    does not see."""
    d = N.Client(b.sock).handshake(structured=True)
    bad = []
    for i in range(count):
        r = d.read(base + i * n, n)
        if r.error != 0 or r.data != blob(seed + i, n):
            bad.append(i)
    d.disconnect()
    return bad


def unwritten_after(b, base, seed, count=32, timeout=5):
    """unwritten(), polled until empty or TIMEOUT seconds: a client that
    closes without reading its replies cannot know when its writes land."""
    bad = []

    def landed():
        bad[:] = unwritten(b, base, seed, count)
        return not bad
    wait_until(landed, timeout=timeout, step=0.2)
    return bad


def disc_after_burst(b):
    """Writes followed at once by NBD_CMD_DISC: the server carries out every
    one before it closes the connection, and also when the client closes
    its end at once without reading a reply."""
    # DISC, then wait for the server's close: every write is done by then.
    c = N.Client(b.sock).handshake(structured=False)
    send_writes(c, 8 * MiB, 100)
    c.send_request(N.CMD_DISC)
    check(c.wait_closed(), "server did not close after NBD_CMD_DISC")
    c.close()
    bad = unwritten(b, 8 * MiB, 100)
    check(not bad, "writes %s sent before NBD_CMD_DISC were not done when "
          "the server closed" % bad)
    # DISC and close at once: replies to the earlier writes then meet a
    # closed socket while later ones may still be unread.
    c = N.Client(b.sock).handshake(structured=False)
    send_writes(c, 10 * MiB, 200)
    c.disconnect()
    bad = unwritten_after(b, 10 * MiB, 200)
    check(not bad, "writes %s sent before NBD_CMD_DISC were lost" % bad)


def replies_refused(b):
    """A client that shuts its reading end before sending: every reply
    fails (EPIPE), and the writes it goes on sending are still carried out,
    not dropped with the first failed reply."""
    c = N.Client(b.sock).handshake(structured=False)
    c.sock.shutdown(socket.SHUT_RD)
    try:
        send_writes(c, 12 * MiB, 300, count=64)
        c.send_request(N.CMD_DISC)
    except OSError as e:
        check(False, "server dropped the connection at the first refused "
              "reply: %s" % e)
    c.close()
    bad = unwritten_after(b, 12 * MiB, 300, count=64)
    check(not bad, "writes %s sent after the first refused reply were lost" % bad)


def run():
    """Bursts on both kinds of connection, then DISC."""
    with served(size=SIZE) as (b, disk):
        burst(b, False)
        burst(b, True)
        disc_after_burst(b)
        replies_refused(b)
        check(b.proc.poll() is None, "blockd died")
        b.stop()


main(run)

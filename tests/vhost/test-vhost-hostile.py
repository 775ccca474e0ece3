"""Hostile front-ends and guests against blockd's vhost-user-blk device.

Each case does one bad thing and checks blockd's answer to it: the ring
breaks (one log line naming the fault, the err eventfd written, nothing
more taken from the ring, the connection and other rings alive), or the
connection is dropped with a log line, or a refusal is acked non-zero.
After each case blockd must be alive, serve a fresh well-behaved
front-end, and hold no more descriptors than before the case."""
import os
import socket
import struct
import time

import vuclient as V
from vtest import (served, sock, check, main, pattern, wait_until, nfds, alive,
                   check_no_fd_leak, check_still_serves, log_mark, log_since, wait_log,
                   writes_in_flight, Cases, MiB)

SIZE = 64 * MiB
QUEUES = 4
MEM = 8 * MiB
NUM = 16                                 # queue size of the rings the cases break


def conn(b, ack=True, queues=1, num=NUM, mem=None, **kw):
    """A front-end with QUEUES rings running; REPLY_ACK negotiated if ACK."""
    fe = V.Frontend(sock(b))
    protocol = None if ack else ~(1 << V.P_REPLY_ACK)
    fe.start(mem or fe.own(V.GuestMemory([(0, MEM, 0)])), queues=queues, num=num,
             protocol=protocol, **kw)
    return fe


def broken(b, fe, vq, mark, why, used_before=None):
    """Checks ring VQ broke: WHY in the log, the err eventfd written, nothing
    used; the connection still answers and another ring still works."""
    check(wait_log(b, mark, why), "no log line %r; log: %r" % (why, log_since(b, mark)[-600:]))
    check("the guest broke the ring" in log_since(b, mark), "ring not reported broken")
    check(vq.err_signalled(), "err eventfd not written")
    if used_before is not None:
        check(vq.used_idx() == used_before, "a broken chain was completed")
    fe.get_features()                               # the connection lives
    # A valid request on the broken ring is not taken any more.
    used = vq.used_idx()
    vq.free = list(range(vq.num))
    vq.pending = {}
    vq.blk_request(V.T_IN, 0, in_len=512)
    vq.kick()
    time.sleep(0.1)
    check(vq.used_idx() == used, "a broken ring went on processing")


def dropped(b, fe, mark, why):
    """Checks blockd dropped the connection, logging WHY."""
    check(fe.closed(5), "connection not dropped")
    check(wait_log(b, mark, why), "no log line %r; log: %r" % (why, log_since(b, mark)[-600:]))


def raw_chain(fe, vq, descs, head=0, publish=True):
    """Writes DESCS ([(index, addr, len, flags, next)]) into VQ's table and
    makes HEAD available; returns the used index before."""
    used = vq.used_idx()
    for i, addr, length, flags, nxt in descs:
        vq.write_desc(vq.desc, i, addr, length, flags, nxt)
    vq.put_avail(head)
    if publish:
        vq.publish()
        vq.kick()
    return used


def hdr_buf(fe, rtype=V.T_IN, sector=0):
    g = fe.mem.alloc(16)
    fe.mem.write(g, struct.pack("<IIQ", rtype, 0, sector))
    return g


# ---- the guest breaks its ring ------------------------------------------------

def ring_case(descs_fn, why, negotiate=None, extra=None):
    """A case: a connection with 2 rings, ring 0 gets the chain DESCS_FN(fe, vq)
    makes, which must break it with WHY; ring 1 must still work."""
    def case(b):
        mark = log_mark(b)
        with conn(b, queues=2, **(negotiate or {})) as fe:
            vq = fe.vqs[0]
            descs, head = descs_fn(fe, vq)
            used = raw_chain(fe, vq, descs, head)
            broken(b, fe, vq, mark, why, used)
            check(fe.read(1, 0, 4096) is not None, "the other ring stopped too")
            if extra:
                extra(b, fe, vq)
    return case


N, W, I = V.DESC_F_NEXT, V.DESC_F_WRITE, V.DESC_F_INDIRECT


def outside(fe, vq):
    h = hdr_buf(fe)
    return [(0, h, 16, N, 1), (1, 1 << 30, 4096, W | N, 2), (2, fe.mem.alloc(1), 1, W, 0)], 0


def straddling_end(fe, vq):
    h = hdr_buf(fe)
    return [(0, h, 16, N, 1), (1, MEM - 100, 4096, W | N, 2), (2, fe.mem.alloc(1), 1, W, 0)], 0


def wrapping(fe, vq):
    h = hdr_buf(fe)
    return [(0, h, 16, N, 1), (1, (1 << 64) - 16, 32, W | N, 2), (2, fe.mem.alloc(1), 1, W, 0)], 0


def self_loop(fe, vq):
    h = hdr_buf(fe)
    return [(0, h, 16, N, 1), (1, fe.mem.alloc(512), 512, W | N, 1)], 0


def long_loop(fe, vq):
    # 0 -> 1 -> ... -> NUM-1 -> 0: a chain as long as the queue, then around again.
    h = hdr_buf(fe, V.T_OUT)
    return [(i, h, 16, N, (i + 1) % NUM) for i in range(NUM)], 0


def next_past_table(fe, vq):
    h = hdr_buf(fe)
    return [(0, h, 16, N, NUM + 5)], 0


def head_past_table(fe, vq):
    return [], NUM + 3


def indirect_table(fe, entries):
    t = fe.mem.alloc(16 * len(entries), 16)
    for i, (addr, length, flags, nxt) in enumerate(entries):
        fe.mem.write(t + 16 * i, V.DESC.pack(addr, length, flags, nxt))
    return t


def nested_indirect(fe, vq):
    h = hdr_buf(fe)
    inner = indirect_table(fe, [(h, 16, N, 1), (fe.mem.alloc(1), 1, W, 0)])
    outer = indirect_table(fe, [(inner, 32, I, 0)])
    return [(0, outer, 16, I, 0)], 0


def indirect_len(length):
    def make(fe, vq):
        h = hdr_buf(fe)
        t = indirect_table(fe, [(h, 16, N, 1), (fe.mem.alloc(1), 1, W, 0)])
        return [(0, t, length, I, 0)], 0
    return make


def indirect_outside(fe, vq):
    return [(0, MEM - 16, 32, I, 0)], 0


def indirect_with_next(fe, vq):
    h = hdr_buf(fe)
    t = indirect_table(fe, [(h, 16, N, 1), (fe.mem.alloc(1), 1, W, 0)])
    return [(0, t, 32, I | N, 1), (1, fe.mem.alloc(1), 1, W, 0)], 0


def indirect_loop(fe, vq):
    h = hdr_buf(fe)
    t = indirect_table(fe, [(h, 16, N, 1), (fe.mem.alloc(8), 8, W | N, 1)])
    return [(0, t, 32, I, 0)], 0


def no_status(fe, vq):
    h = hdr_buf(fe, V.T_OUT)
    return [(0, h, 16, N, 1), (1, fe.mem.alloc(512), 512, 0, 0)], 0


def short_header(fe, vq):
    h = hdr_buf(fe)
    return [(0, h, 8, N, 1), (1, fe.mem.alloc(513), 513, W, 0)], 0


def readable_after_writable(fe, vq):
    h = hdr_buf(fe, V.T_OUT)
    return [(0, h, 16, N, 1), (1, fe.mem.alloc(1), 1, W | N, 2), (2, fe.mem.alloc(512), 512, 0, 0)], 0


def too_many_buffers(fe, vq):
    # One indirect table of 300 one-byte buffers: more than blockd gathers.
    h = hdr_buf(fe, V.T_OUT)
    bufs = [(h, 16, N, 1)] + [(fe.mem.alloc(1), 1, N, i + 2) for i in range(298)] + \
        [(fe.mem.alloc(1), 1, W, 0)]
    return [(0, indirect_table(fe, bufs), 16 * len(bufs), I, 0)], 0


def case_avail_jump(b):
    """avail->idx more than the queue size ahead of what was taken."""
    mark = log_mark(b)
    with conn(b) as fe:
        vq = fe.vqs[0]
        used = vq.used_idx()
        vq.mem.set_u16(vq.avail + 2, NUM + 1)
        vq.kick()
        broken(b, fe, vq, mark, "more entries available than the queue holds", used)


def case_device_must_not_write_readable(b):
    """An IN request whose data buffer is device-readable: nothing is read into it."""
    with conn(b) as fe:
        vq = fe.vqs[0]
        h = hdr_buf(fe)
        data = fe.mem.alloc(4096)
        fe.mem.write(data, b"\x5a" * 4096)
        st = fe.mem.alloc(1)
        req = V.Request(vq, 0, [0, 1, 2], [(h, 16), (data, 4096)], [(st, 1)], st)
        vq.pending[0] = req
        for i in (0, 1, 2):
            vq.free.remove(i)
        raw_chain(fe, vq, [(0, h, 16, N, 1), (1, data, 4096, N, 2), (2, st, 1, W, 0)])
        vq.wait([req])
        check(fe.mem.read(data, 4096) == b"\x5a" * 4096, "the device wrote a readable buffer")
        check(req.status() in (V.S_OK, V.S_IOERR), "status %s" % V.status_name(req.status()))


def case_inflight_beyond_queue(b):
    """A guest that republishes heads still in flight: blockd must not keep more
    requests in flight than the queue has entries (libvhost-user stops at
    'Virtqueue size exceeded'); otherwise a guest grows blockd's memory at will."""
    with V.GuestMemory([(0, 16 * MiB, 0)]) as mem, conn(b, num=8, mem=mem) as fe:
        fe.set_config(V.WRITEBACK_OFFSET, b"\x00")       # slow, durable writes
        vq = fe.vqs[0]
        heads = [vq.blk_request(V.T_OUT, 8 * i, out=pattern(65536, i), indirect=True).head
                 for i in range(8)]
        vq.kick()
        worst = 0
        rss0 = rss(b)
        deadline = time.monotonic() + 1
        while time.monotonic() < deadline and worst < 4096:
            if vq.avail_event() != vq.avail_idx:       # not all taken yet
                continue
            for h in heads:
                vq.put_avail(h)
            vq.publish()
            vq.kick()
            taken = (vq.avail_event() - vq.used_idx()) & 0xffff
            if taken < 0x8000:                         # else avail_event is stale
                worst = max(worst, taken)
        grown = rss(b) - rss0
        # Let them finish before the front-end goes (a case of its own).
        wait_until(lambda: vq.used_idx() == vq.avail_event(), 60, 0.05)
    # Seen from the guest: taken (avail_event) but not yet on the used ring.
    # That counts requests done but published only at the end of blockd's
    # pass too, so up to twice the queue size is fair.
    print("  at most %d requests taken and not yet used on a queue of 8, RSS grew by %d MiB"
          % (worst, grown // MiB))
    check(worst <= 16, "%d requests in flight on a queue of 8 (RSS +%d MiB)"
          % (worst, grown // MiB))


def rss(b):
    with open("/proc/%d/status" % b.proc.pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def case_disconnect_in_flight(b):
    """The front-end vanishes with writes in flight (a VMM killed): blockd
    finishes them, forgets the session and serves the next one. (Tried until
    writes were in flight at the close three times.)"""
    exercised = 0
    for attempt in range(6):
        with V.GuestMemory([(0, 40 * MiB, 0)]) as mem, conn(b, num=64, mem=mem) as fe:
            _, inflight = writes_in_flight(fe)
        exercised += inflight > 0
        wait_until(lambda: b.proc.poll() is not None, 1)
        alive(b, "front-end closed with %d writes in flight (attempt %d)" % (inflight, attempt))
        if exercised == 3:
            break
    print("  %d closes with writes in flight" % exercised)


def case_kick_storm(b):
    """Thousands of kicks, with and without work: blockd stays responsive."""
    with conn(b, queues=2) as fe:
        vq = fe.vqs[0]
        reqs = [vq.blk_request(V.T_IN, i * 8, in_len=4096, indirect=True) for i in range(8)]
        for i in range(20000):
            os.eventfd_write(vq.kick_fd, 1)
            if i % 1000 == 0:
                os.eventfd_write(fe.vqs[1].kick_fd, 1000)
        vq.wait(reqs)
        t = time.monotonic()
        fe.get_features()
        check(time.monotonic() - t < 1, "blockd slow to answer after a kick storm")
        fe.write(1, 0, pattern(4096, 1))


def case_err_fd_kept(b):
    """QEMU sends SET_VRING_ERR once, when the device is created, and not on
    each start: a ring stopped (GET_VRING_BASE) and restarted must still
    report its breaking on that eventfd (libvhost-user keeps it too)."""
    mark = log_mark(b)
    with conn(b) as fe:
        vq = fe.vqs[0]
        fe.read(0, 0, 512)
        base = fe.get_vring_base(0)
        # QEMU's restart: NUM, BASE, ADDR, KICK, CALL, ENABLE; no ERR.
        fe.set_vring_num(0, vq.num)
        fe.set_vring_base(0, base)
        fe.set_vring_addr(0, *vq.addrs())
        fe.set_vring_fd(V.SET_VRING_KICK, 0, vq.kick_fd)
        fe.set_vring_fd(V.SET_VRING_CALL, 0, vq.call_fd)
        fe.set_vring_enable(0, True)
        fe.read(0, 0, 512)
        used = raw_chain(fe, vq, *self_loop(fe, vq))
        check(wait_log(b, mark, "a descriptor chain that loops"), "ring not broken")
        check(vq.err_signalled(), "the err eventfd given before the restart was not written")
        check(vq.used_idx() == used, "a broken chain was completed")


def case_rings_misaligned_in_blockd(b):
    """A region whose mmap_offset is odd: ring addresses aligned for the
    front-end land misaligned in blockd's mapping, where the ring fields are
    read as aligned 16- and 32-bit atomics (undefined behaviour; UBSan stops
    on it: found by fuzz-vhost). blockd must refuse such rings, in
    SET_MEM_TABLE or in SET_VRING_ADDR."""
    with V.GuestMemory([(0, 4 * MiB, 1)]) as mem, V.Frontend(sock(b)) as fe:
        fe.negotiate()
        table = fe.set_mem_table(mem, ack=True)
        if table != 0:
            return                                   # refused with the region: fine
        vq = V.Virtqueue(mem, 0, NUM)
        fe.vqs[0] = vq
        fe.set_vring_num(0, NUM)
        check(fe.set_vring_addr(0, *vq.addrs(), ack=True) != 0,
              "rings at front-end addresses 0x%x/0x%x/0x%x accepted, at offset +1 in blockd's "
              "mapping (misaligned)" % vq.addrs())


def case_rings_removed(b):
    """The memory holding the rings goes away while they run (REM_MEM_REG,
    or a SET_MEM_TABLE without it): the rings break, nothing crashes."""
    for how in ("REM_MEM_REG", "SET_MEM_TABLE"):
        mark = log_mark(b)
        with V.GuestMemory([(0, 4 * MiB, 0)]) as mem, V.Frontend(sock(b)) as fe:
            fe.negotiate()
            fe.mem = mem
            fe.add_mem_reg(mem.regions[0])
            vq = fe.setup_queue(0, NUM)
            fe.read(0, 0, 4096)
            other = mem.add_region(8 * MiB, MiB)
            if how == "REM_MEM_REG":
                fe.rem_mem_reg(mem.regions[0])
            else:
                fe.set_mem_table(mem, regions=[other])
            check(wait_log(b, mark, "its rings are outside the new guest memory"),
                  "%s: rings not reported broken" % how)
            check(vq.err_signalled(), "%s: err eventfd not written" % how)
            vq.blk_request(V.T_IN, 0, in_len=512)
            vq.kick()
            fe.get_features()


def case_memory_replaced_in_flight(b):
    """A SET_MEM_TABLE of other memory (a new memfd, same addresses) while
    writes are in flight: they finish in the memory they started in."""
    with V.GuestMemory([(0, 40 * MiB, 0)]) as mem, conn(b, num=64, mem=mem) as fe:
        _, inflight = writes_in_flight(fe)
        print("  %d writes in flight at the SET_MEM_TABLE" % inflight)
        with V.GuestMemory([(0, 40 * MiB, 0)]) as other:
            fe.set_mem_table(other)
            fe.get_features()
            time.sleep(1)
        alive(b, "memory replaced under writes in flight")


def case_memory_shrunk(b):
    """The front-end truncates guest memory blockd has mapped (a memfd it did
    not seal, but could): blockd's next look at a ring would be SIGBUS, so
    the memfd must be sealed against shrinking by the time SET_MEM_TABLE is
    answered, and the truncation must fail."""
    with V.GuestMemory([(0, 4 * MiB, 0)], seal=False) as mem, \
            conn(b, mem=mem) as fe:
        fe.read(0, 0, 4096)
        fd = mem.regions[0].fd
        try:
            os.ftruncate(fd, 0)
            shrunk = True
        except PermissionError:
            shrunk = False
        if shrunk:
            # Give the pages back before anyone looks at them (blockd only
            # does when kicked, and we do not kick).
            os.ftruncate(fd, 4 * MiB)
        check(not shrunk, "the front-end could truncate guest memory blockd has mapped "
              "(a kick now would kill blockd with SIGBUS)")
        fe.read(0, 0, 4096)


def case_replies_unread(b):
    """A front-end that never reads its replies is dropped, not waited for."""
    mark = log_mark(b)
    fe = V.Frontend(sock(b))
    try:
        fe.sock.setblocking(False)
        msg = V.HEADER.pack(V.GET_FEATURES, V.VERSION, 0)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                fe.sock.send(msg * 64)
            except BlockingIOError:
                time.sleep(0.01)
            except (BrokenPipeError, ConnectionResetError):
                break
        fe.sock.setblocking(True)
        check(fe.closed(5), "connection not dropped")
        # A full socket buffer shows as EAGAIN on a whole reply, or as a
        # partial one.
        check(wait_until(lambda: "send: Resource temporarily unavailable" in log_since(b, mark)
                         or "does not take its replies" in log_since(b, mark)),
              "no log line; log: %r" % log_since(b, mark)[-300:])
    finally:
        fe.close()


def case_vanish_during_drain(b):
    """GET_VRING_BASE with writes in flight, and the front-end gone before
    the reply: the reply fails, the session ends cleanly."""
    with V.GuestMemory([(0, 40 * MiB, 0)]) as mem, conn(b, num=64, mem=mem) as fe:
        _, inflight = writes_in_flight(fe)
        fe.send(V.GET_VRING_BASE, state(0, 0))
    print("  %d writes in flight at the GET_VRING_BASE" % inflight)
    wait_until(lambda: b.proc.poll() is not None, 2)
    alive(b, "front-end gone while GET_VRING_BASE waited for its ring")


# ---- the front-end breaks the conversation ---------------------------------------

def msg_case(send, why, drop=True, ack=False, queues=0, check_fds=False):
    """A case: a connection (REPLY_ACK negotiated if ACK, QUEUES rings up),
    SEND(fe) sends something bad; blockd drops the connection logging WHY, or
    (DROP False) acks it non-zero and goes on. CHECK_FDS: the descriptors blockd
    holds go back to what they were before SEND while the connection is open."""
    def case(b):
        mark = log_mark(b)
        fe = V.Frontend(sock(b))
        try:
            if ack or queues:
                fe.negotiate(protocol=None if ack else ~(1 << V.P_REPLY_ACK))
                fe.set_mem_table(fe.own(V.GuestMemory([(0, MEM, 0)])))
                for q in range(queues):
                    fe.setup_queue(q, NUM)
            n0 = nfds(b.proc.pid)
            out = send(fe)
            if drop:
                dropped(b, fe, mark, why)
            else:
                v = out if out is not None else fe.ack(0)
                check(v not in (0, None), "refusal acked %r" % v)
                check(wait_log(b, mark, why), "no log line %r" % why)
                fe.get_features()
                if check_fds:
                    check(wait_until(lambda: nfds(b.proc.pid) <= n0, 3),
                          "blockd holds %d descriptors, %d before the message"
                          % (nfds(b.proc.pid), n0))
        finally:
            fe.close()
    return case


def mem_table(fe, regions, nregions=None, nfd=None, padding=0):
    """SET_MEM_TABLE of REGIONS ([(gpa, size, uva, off)]) with NREGIONS
    claimed and NFD fds sent (default: one a region), all one 16 MiB memfd."""
    mfd = os.memfd_create("hostile", os.MFD_CLOEXEC)
    os.ftruncate(mfd, 16 * MiB)
    payload = struct.pack("<II", len(regions) if nregions is None else nregions, padding) + \
        b"".join(struct.pack("<QQQQ", *r) for r in regions)
    try:
        fe.send(V.SET_MEM_TABLE, payload, fds=[mfd] * (len(regions) if nfd is None else nfd))
    finally:
        os.close(mfd)


def reg(gpa, size=MiB, uva=None, off=0):
    return (gpa, size, V.UVA_BASE + gpa if uva is None else uva, off)


def send_with_eventfds(fe, request, payload, n, flags=V.VERSION):
    fds = [os.eventfd(0, os.EFD_CLOEXEC) for _ in range(n)]
    try:
        fe.send(request, payload, flags, fds)
    finally:
        for fd in fds:
            os.close(fd)


def acked(request, payload=b"", nfd=0):
    """SEND for msg_case: REQUEST with NEED_REPLY (and NFD eventfds); returns the ack."""
    def send(fe):
        send_with_eventfds(fe, request, payload, nfd, V.VERSION | V.NEED_REPLY)
        return fe.ack(request)
    return send


def addr_acked(desc, used, avail):
    """SEND for msg_case: ring 1 gets a size, then these addresses; returns the ack."""
    def send(fe):
        check(fe.set_vring_num(1, 16, ack=True) == 0, "SET_VRING_NUM refused")
        return fe.set_vring_addr(1, desc, used, avail, ack=True)
    return send


def state(i, n):
    return struct.pack("<II", i, n)


def truncated(header_only):
    def send(fe):
        if header_only:
            fe.sock.sendall(V.HEADER.pack(V.SET_FEATURES, 1, 8)[:6])
        else:
            fe.sock.sendall(V.HEADER.pack(V.SET_VRING_ADDR, 1, 40) + bytes(10))
        fe.sock.shutdown(socket.SHUT_WR)
    return send


HOSTILE = [
    # The guest's rings.
    ("descriptor outside guest memory", ring_case(outside, "a buffer outside guest memory")),
    ("descriptor across the end of memory", ring_case(straddling_end,
                                                       "a buffer outside guest memory")),
    ("descriptor address + length wraps", ring_case(wrapping, "a buffer outside guest memory")),
    ("chain looping on itself", ring_case(self_loop, "a descriptor chain that loops")),
    ("chain longer than the queue", ring_case(long_loop, "a descriptor chain that loops")),
    ("next past the table", ring_case(next_past_table, "a descriptor index past the table")),
    ("head past the table", ring_case(head_past_table, "a descriptor index past the table")),
    ("indirect inside indirect", ring_case(nested_indirect,
                                           "an indirect table inside an indirect table")),
    ("indirect table of 24 bytes", ring_case(indirect_len(24), "an indirect table of a bad size")),
    ("indirect table of 0 bytes", ring_case(indirect_len(0), "an indirect table of a bad size")),
    ("indirect table outside memory", ring_case(indirect_outside,
                                                "an indirect table outside guest memory")),
    ("indirect descriptor with NEXT", ring_case(indirect_with_next,
                                                "an indirect descriptor with a next")),
    ("indirect without INDIRECT_DESC", ring_case(indirect_len(32),
                                                 "an indirect descriptor that was not negotiated",
                                                 negotiate={"indirect": False})),
    ("loop inside an indirect table", ring_case(indirect_loop, "a descriptor chain that loops")),
    ("request without a writable byte", ring_case(no_status, "a request with no status byte")),
    ("header shorter than 16 bytes", ring_case(short_header,
                                               "a request shorter than its header")),
    ("readable after writable", ring_case(readable_after_writable,
                                          "a device-readable buffer after a writable one")),
    ("more buffers than blockd gathers", ring_case(too_many_buffers,
                                                   "a chain of too many buffers")),
    ("avail index jumps past the queue size", case_avail_jump),
    ("IN into a device-readable buffer", case_device_must_not_write_readable),
    # The memory table.
    ("overlapping regions (guest addresses)", msg_case(
        lambda fe: mem_table(fe, [reg(0), reg(MiB // 2, uva=V.UVA_BASE + 64 * MiB)]),
        "memory regions overlap")),
    ("overlapping regions (front-end addresses)", msg_case(
        lambda fe: mem_table(fe, [reg(0), reg(8 * MiB, uva=V.UVA_BASE + MiB // 2)]),
        "memory regions overlap")),
    ("33 regions (33 fds)", msg_case(
        lambda fe: mem_table(fe, [reg(i * MiB) for i in range(33)]), "more than 32 fds")),
    ("33 regions claimed, 32 sent", msg_case(
        lambda fe: mem_table(fe, [reg(i * MiB) for i in range(32)], nregions=33),
        "regions, size and fds disagree")),
    ("nregions 2, one region in the payload", msg_case(
        lambda fe: mem_table(fe, [reg(0)], nregions=2, nfd=2), "regions, size and fds disagree")),
    ("one region, two fds", msg_case(
        lambda fe: mem_table(fe, [reg(0)], nfd=2), "regions, size and fds disagree")),
    ("one region, no fd", msg_case(
        lambda fe: mem_table(fe, [reg(0)], nfd=0), "regions, size and fds disagree")),
    ("no region", msg_case(lambda fe: mem_table(fe, []), "regions, size and fds disagree")),
    ("SET_MEM_TABLE of 4 bytes", msg_case(
        lambda fe: fe.send(V.SET_MEM_TABLE, bytes(4)), "SET_MEM_TABLE too short")),
    ("region of size 0", msg_case(lambda fe: mem_table(fe, [reg(0, size=0)]),
                                  "impossible geometry")),
    ("region whose end wraps", msg_case(lambda fe: mem_table(fe, [reg((1 << 64) - MiB, 2 * MiB, V.UVA_BASE)]),
                                        "impossible geometry")),
    ("region beyond its file", msg_case(lambda fe: mem_table(fe, [reg(0, 32 * MiB)]),
                                        "beyond the end of its file")),
    ("region fd an eventfd", msg_case(
        lambda fe: send_with_eventfds(fe, V.SET_MEM_TABLE,
                                      struct.pack("<II", 1, 0) + struct.pack("<QQQQ", *reg(0)), 1),
        "not a regular file")),
    # Framing.
    ("size field 4097", msg_case(lambda fe: fe.send(V.GET_FEATURES, size=4097),
                                 "a message with flags 0x1 and 4097 bytes")),
    ("size field 0xffffffff", msg_case(lambda fe: fe.send(V.SET_FEATURES, bytes(8),
                                                          size=0xffffffff),
                                       "4294967295 bytes")),
    ("REPLY flag set", msg_case(lambda fe: fe.send(V.GET_FEATURES, flags=V.VERSION | V.REPLY),
                                "a message with flags 0x5")),
    ("version 0", msg_case(lambda fe: fe.send(V.GET_FEATURES, flags=0), "flags 0x0")),
    ("reserved flag bits", msg_case(lambda fe: fe.send(V.GET_FEATURES, flags=0x101),
                                    "flags 0x101")),
    ("truncated payload then EOF", msg_case(truncated(False),
                                            "left in the middle of a message")),
    ("truncated header then EOF", msg_case(truncated(True), "left in the middle of a message")),
    ("33 fds on one message", msg_case(
        lambda fe: send_with_eventfds(fe, V.SET_VRING_CALL, struct.pack("<Q", 0), 33),
        "more than 32 fds")),
    # Fds where none belong.
    ("fd on GET_FEATURES", msg_case(
        lambda fe: send_with_eventfds(fe, V.GET_FEATURES, b"", 1), "GET_FEATURES")),
    ("fd on SET_VRING_NUM", msg_case(
        lambda fe: send_with_eventfds(fe, V.SET_VRING_NUM, state(0, 16), 1), "SET_VRING_NUM")),
    ("3 fds on an unknown message (acked)", msg_case(
        acked(99, b"", 3), "message 99 is not supported", drop=False, ack=True, check_fds=True)),
    ("fd on SET_VRING_KICK with NOFD", msg_case(
        lambda fe: send_with_eventfds(fe, V.SET_VRING_KICK, struct.pack("<Q", V.VRING_NOFD), 1),
        "fd and flag disagree")),
    ("2 fds on SET_VRING_CALL", msg_case(
        lambda fe: send_with_eventfds(fe, V.SET_VRING_CALL, struct.pack("<Q", 0), 2),
        "fd and flag disagree")),
    # Ring set-up.
    ("SET_VRING_NUM 3", msg_case(lambda fe: fe.send(V.SET_VRING_NUM, state(1, 3)),
                                 "not a power of two")),
    ("SET_VRING_NUM 0", msg_case(lambda fe: fe.send(V.SET_VRING_NUM, state(1, 0)),
                                 "not a power of two")),
    ("SET_VRING_NUM 65536", msg_case(lambda fe: fe.send(V.SET_VRING_NUM, state(1, 65536)),
                                     "not a power of two")),
    ("SET_VRING_NUM 3 (acked)", msg_case(acked(V.SET_VRING_NUM, state(1, 3)),
                                         "not a power of two", drop=False, ack=True)),
    ("SET_VRING_NUM 2048 (acked)", msg_case(acked(V.SET_VRING_NUM, state(1, 2048)),
                                            "not a power of two", drop=False, ack=True)),
    ("SET_VRING_ADDR outside memory", msg_case(
        lambda fe: (fe.send(V.SET_VRING_NUM, state(1, 16)),
                    fe.send(V.SET_VRING_ADDR, struct.pack("<IIQQQQ", 1, 0, V.UVA_BASE + MEM,
                                                          V.UVA_BASE, V.UVA_BASE, 0))),
        "ring addresses outside guest memory", queues=1)),
    ("SET_VRING_ADDR at guest addresses (acked)", msg_case(
        addr_acked(0x1000, 0x3000, 0x2000), "ring addresses outside guest memory", drop=False,
        ack=True)),
    ("SET_VRING_ADDR misaligned (acked)", msg_case(
        addr_acked(V.UVA_BASE + 0x1008, V.UVA_BASE + 0x3000, V.UVA_BASE + 0x2000),
        "ring addresses outside guest memory", drop=False, ack=True)),
    ("SET_VRING_NUM of queue 200", msg_case(lambda fe: fe.send(V.SET_VRING_NUM, state(200, 16)),
                                            "bad size or queue")),
    ("SET_VRING_ENABLE of queue 200", msg_case(
        lambda fe: fe.send(V.SET_VRING_ENABLE, state(200, 1)), "bad size or queue")),
    ("GET_VRING_BASE of queue 200", msg_case(
        lambda fe: fe.send(V.GET_VRING_BASE, state(200, 0)), "bad size or queue")),
    ("SET_VRING_KICK of queue 200", msg_case(
        lambda fe: send_with_eventfds(fe, V.SET_VRING_KICK, struct.pack("<Q", 200), 1),
        "bad queue")),
    ("SET_VRING_CALL index bits past 8", msg_case(
        lambda fe: send_with_eventfds(fe, V.SET_VRING_CALL, struct.pack("<Q", 0x1000), 1),
        "fd and flag disagree")),
    ("SET_VRING_ADDR of queue 200", msg_case(
        lambda fe: fe.send(V.SET_VRING_ADDR, struct.pack("<IIQQQQ", 200, 0, 0, 0, 0, 0)),
        "bad queue")),
    # Config and sizes.
    ("GET_CONFIG past the config", msg_case(
        lambda fe: fe.send(V.GET_CONFIG, struct.pack("<III", 56, 8, 0) + bytes(8)),
        "outside the configuration")),
    ("GET_CONFIG offset 4096", msg_case(
        lambda fe: fe.send(V.GET_CONFIG, struct.pack("<III", 4096, 0, 0)),
        "outside the configuration")),
    ("GET_CONFIG whose size disagrees", msg_case(
        lambda fe: fe.send(V.GET_CONFIG, struct.pack("<III", 0, 60, 0) + bytes(8)),
        "outside the configuration")),
    ("GET_FEATURES with a payload", msg_case(lambda fe: fe.send(V.GET_FEATURES, bytes(8)),
                                             "GET_FEATURES with a payload")),
    ("SET_FEATURES of 4 bytes", msg_case(lambda fe: fe.send(V.SET_FEATURES, bytes(4)),
                                         "SET_FEATURES of a bad size")),
    # Unknown messages.
    ("message 0", msg_case(lambda fe: fe.send(0), "message 0 is not supported")),
    ("message 31 (GET_INFLIGHT_FD, not offered)", msg_case(
        lambda fe: fe.send(V.GET_INFLIGHT_FD, bytes(24)), "message 31 is not supported")),
    ("message 99", msg_case(lambda fe: fe.send(99, bytes(100)), "message 99 is not supported")),
    ("message 0xffffffff", msg_case(lambda fe: fe.send(0xffffffff),
                                    "message 4294967295 is not supported")),
    ("message 99 (acked)", msg_case(acked(99), "message 99 is not supported", drop=False,
                                    ack=True)),
    ("err eventfd kept across GET_VRING_BASE (QEMU sends it once)", case_err_fd_kept),
    ("rings misaligned in blockd's mapping (mmap_offset 1)", case_rings_misaligned_in_blockd),
    ("rings' memory removed while they run", case_rings_removed),
    ("memory replaced under writes in flight", case_memory_replaced_in_flight),
    ("guest memory shrunk by the front-end", case_memory_shrunk),
    # Load and abrupt ends.
    ("replies never read", case_replies_unread),
    ("kick storm", case_kick_storm),
    ("front-end gone during a GET_VRING_BASE drain", case_vanish_during_drain),
    ("front-end gone with writes in flight", case_disconnect_in_flight),
    ("more requests in flight than the queue holds", case_inflight_beyond_queue),
]


def run():
    def restart(b):
        b.start()
        ctx["fds"] = idle_fds(b)
        return b

    ctx = {}
    cases = Cases(restart)

    def idle_fds(b):
        check_still_serves(b, "at start")
        time.sleep(0.2)
        return nfds(b.proc.pid)

    def hostile(b, fn):
        fn(b)
        check_no_fd_leak(b, ctx["fds"], "after the case")
        check_still_serves(b, "after the case")
        check_no_fd_leak(b, ctx["fds"], "after a fresh front-end")

    with served(("vda.sock", "disk.img", "queues=%d" % QUEUES),
                files=[("disk.img", SIZE)]) as (b, tmp):
        ctx["fds"] = idle_fds(b)
        only = os.environ.get("VHOST_CASE")
        for name, fn in HOSTILE:
            if only and only not in name:
                continue
            b = cases.run(b, name, hostile, fn)
        alive(b, "at the end")
        b.stop()
    cases.finish()


main(run)

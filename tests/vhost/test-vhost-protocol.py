"""The vhost-user conversation with blockd, message by message.

Exact replies (flags 0x5, the request id, sizes); GET_CONFIG as QEMU (57
bytes, flags 0) and Cloud Hypervisor (60 bytes, flags 1) ask it; SET_CONFIG
of the writeback byte; REPLY_ACK (0 for success, non-zero for a refused
message, and no extra ack after a natural reply); GET_VRING_BASE stops a
ring (after draining it) and SET_VRING_BASE restarts it; SET_VRING_ENABLE;
SET_MEM_TABLE while rings run and requests are in flight;
ADD_MEM_REG/REM_MEM_REG; whole QEMU and Cloud Hypervisor sessions with a
guest reset; one front-end at a time, the next one served after the first
leaves, seeing its data; SIGTERM with requests in flight."""
import os
import signal
import struct
import time

import vuclient as V
from vtest import (served, sock, img, check, main, file_bytes, pattern, wait_until, nfds,
                   writes_in_flight, Cases, MiB)

SIZE = 64 * MiB
QUEUES = 4
NOT_OFFERED = {26: "LOG_ALL", 33: "ACCESS_PLATFORM", 34: "RING_PACKED", 35: "IN_ORDER",
               36: "ORDER_PLATFORM", 38: "NOTIFICATION_DATA", 40: "RING_RESET"}
ALL_PROTOCOL = ((1 << V.P_MQ) | (1 << V.P_REPLY_ACK) | (1 << V.P_CONFIG) |
                (1 << V.P_CONFIGURE_MEM_SLOTS))


def new_fe(b):
    return V.Frontend(sock(b))


def write_through(fe):
    """The guest turns its write cache off: every write is durable when done."""
    fe.set_config(V.WRITEBACK_OFFSET, b"\x00", ack=True)


def case_replies(b):
    """QEMU's opening: every reply exact; NEED_REPLY on a GET gets no extra ack."""
    with new_fe(b) as fe:
        f = fe.get_features()                 # checks flags 0x5, id, 8 bytes
        for bit in (V.F_VERSION_1, V.F_PROTOCOL_FEATURES):
            check(f & (1 << bit), "feature %d not offered: 0x%x" % (bit, f))
        for bit, name in NOT_OFFERED.items():
            check(not f & (1 << bit), "%s offered (0x%x): not implemented" % (name, f))
        pf = fe.get_protocol_features()
        check(pf & (1 << V.P_CONFIG) and pf & (1 << V.P_MQ) and pf & (1 << V.P_REPLY_ACK),
              "protocol features 0x%x lack CONFIG, MQ or REPLY_ACK" % pf)
        check(pf & ~0x1ffff == 0, "protocol features 0x%x beyond QEMU 7.2's" % pf)
        fe.set_protocol_features(pf & 0x1ffff, ack=False)       # as QEMU: no NEED_REPLY
        fe.no_reply()
        check(fe.get_queue_num() == QUEUES, "GET_QUEUE_NUM")
        check(fe.get_max_mem_slots() == 32, "GET_MAX_MEM_SLOTS")
        check(fe.set_owner(ack=True) == 0, "SET_OWNER ack")
        # Messages with replies of their own, sent with NEED_REPLY: only that reply.
        fe.send(V.GET_FEATURES, flags=V.VERSION | V.NEED_REPLY)
        check(struct.unpack("<Q", fe.reply(V.GET_FEATURES, 8))[0] == f, "features changed")
        fe.send(V.GET_CONFIG, struct.pack("<III", 0, 8, 0) + bytes(8),
                flags=V.VERSION | V.NEED_REPLY)
        fe.reply(V.GET_CONFIG, 20)
        fe.no_reply()
        # Without REPLY_ACK, NEED_REPLY on a message that succeeds asks for nothing.
    with new_fe(b) as fe:
        fe.set_protocol_features(1 << V.P_CONFIG, ack=False)
        fe.send(V.SET_OWNER, flags=V.VERSION | V.NEED_REPLY)
        fe.no_reply()
        fe.get_features()


def case_get_config(b):
    """57 bytes with flags 0 (QEMU), 60 with flags 1 (rust-vmm); any part."""
    with new_fe(b) as fe:
        fe.negotiate()
        c60 = fe.get_config(60, flags=1)
        c57 = fe.get_config(57, flags=0)
        check(c57 == c60[:57], "57-byte config differs from the 60-byte one")
        cfg = dict(zip([n for n, _ in V.CONFIG_FIELDS], V.CONFIG.unpack(c60)))
        check(cfg["capacity"] == SIZE // 512, "capacity %d" % cfg["capacity"])
        check(cfg["num_queues"] == QUEUES, "num_queues %d" % cfg["num_queues"])
        check(cfg["writeback"] == 1, "writeback %d at start" % cfg["writeback"])
        check(cfg["unused0"] == 0 and cfg["unused1"] == bytes(3), "unused config bytes set")
        for flags in (0, 1, 2):
            check(fe.get_config(1, V.WRITEBACK_OFFSET, flags) == b"\x01", "writeback byte")
        check(fe.get_config(8, 52) == c60[52:], "the last 8 bytes")
        check(fe.get_config(0, 60) == b"", "an empty read at the end")
        fe.get_features()


def case_set_config(b):
    """SET_CONFIG of the writeback byte (flags 0 and 1) is taken; nothing else is."""
    with new_fe(b) as fe:
        fe.start()
        for flags, value in ((0, 0), (1, 1), (1, 0)):
            check(fe.set_config(V.WRITEBACK_OFFSET, bytes([value]), flags, ack=True) == 0,
                  "SET_CONFIG writeback=%d flags %d refused" % (value, flags))
            check(fe.get_config(1, V.WRITEBACK_OFFSET) == bytes([value]), "writeback not %d" % value)
        # Write-through: writes still work, and they land.
        data = pattern(65536, 1)
        fe.write(0, 2048, data)
        check(file_bytes(img(b), 2048 * 512, len(data)) == data, "write-through write lost")
        for offset, payload, what in ((0, b"\x00" * 8, "capacity"),
                                      (V.WRITEBACK_OFFSET, b"\x02", "writeback=2"),
                                      (V.WRITEBACK_OFFSET, b"\x00\x00", "two bytes at 32"),
                                      (34, b"\x01\x00", "num_queues")):
            check(fe.set_config(offset, payload, ack=True) != 0, "SET_CONFIG of %s accepted" % what)
        check(fe.get_config(1, V.WRITEBACK_OFFSET) == b"\x00", "a refused SET_CONFIG changed it")
    with new_fe(b) as fe:
        fe.negotiate()
        check(fe.cfg["writeback"] == 1, "writeback not reset for a new front-end")


def case_reply_ack(b):
    """With REPLY_ACK every message without a reply of its own is acked: 0
    when done, non-zero when refused (and the connection lives on)."""
    with V.GuestMemory() as mem, new_fe(b) as fe:
        fe.set_protocol_features(ALL_PROTOCOL, ack=False)
        ok = lambda v, what: check(v == 0, "%s: ack %r, expected 0" % (what, v))  # noqa: E731
        ok(fe.set_owner(ack=True), "SET_OWNER")
        ok(fe.set_features(fe.get_features(), ack=True), "SET_FEATURES")
        ok(fe.set_protocol_features(ALL_PROTOCOL, ack=True), "SET_PROTOCOL_FEATURES")
        ok(fe.set_mem_table(mem, ack=True), "SET_MEM_TABLE")
        vq = V.Virtqueue(mem, 0, 64, event_idx=True)
        fe.vqs[0] = vq
        ok(fe.set_vring_num(0, 64, ack=True), "SET_VRING_NUM")
        ok(fe.set_vring_base(0, 0, ack=True), "SET_VRING_BASE")
        ok(fe.set_vring_addr(0, *vq.addrs(), ack=True), "SET_VRING_ADDR")
        for req, fd in ((V.SET_VRING_CALL, vq.call_fd), (V.SET_VRING_ERR, vq.err_fd),
                        (V.SET_VRING_KICK, vq.kick_fd)):
            ok(fe.set_vring_fd(req, 0, fd, ack=True), "SET_VRING_KICK/CALL/ERR %d" % req)
        ok(fe.set_vring_enable(0, True, ack=True), "SET_VRING_ENABLE")
        ok(fe.set_config(V.WRITEBACK_OFFSET, b"\x01", ack=True), "SET_CONFIG")
        ok(fe.set_vring_fd(V.SET_VRING_CALL, 1, None, ack=True), "SET_VRING_CALL NOFD")
        fe.write(0, 0, pattern(4096, 2))
        refused = [
            (lambda: fe.set_vring_num(1, 3, ack=True), "SET_VRING_NUM 3"),
            (lambda: fe.set_vring_num(1, 0, ack=True), "SET_VRING_NUM 0"),
            (lambda: fe.set_vring_num(1, 65536, ack=True), "SET_VRING_NUM 65536"),
            (lambda: fe.set_vring_num(0, 32, ack=True), "SET_VRING_NUM on a running ring"),
            (lambda: fe.set_vring_base(0, 5, ack=True), "SET_VRING_BASE on a running ring"),
            (lambda: fe.set_vring_base(1, 0x10000, ack=True), "SET_VRING_BASE 65536"),
            (lambda: fe.set_vring_addr(1, V.UVA_BASE + 64 * MiB, V.UVA_BASE, V.UVA_BASE,
                                       ack=True), "SET_VRING_ADDR outside memory"),
            (lambda: fe.set_vring_addr(1, *vq.addrs(), flags=1, ack=True),
             "SET_VRING_ADDR with logging"),
            (lambda: fe.vring_state(V.SET_VRING_ENABLE, 1, 2, ack=True), "SET_VRING_ENABLE 2"),
            (lambda: fe.set_vring_fd(V.SET_VRING_KICK, 1, None, ack=True), "SET_VRING_KICK NOFD"),
            (lambda: fe.set_features(1 << V.F_PROTOCOL_FEATURES, ack=True), "legacy SET_FEATURES"),
            (lambda: fe._set(99, ack=True), "message 99"),
            (lambda: fe._set(V.SET_LOG_FD, ack=True), "SET_LOG_FD (not offered)"),
            (lambda: fe.rem_mem_reg(V.Region(64 * MiB, MiB, V.UVA_BASE + 64 * MiB, 0, -1, None),
                                    ack=True), "REM_MEM_REG of a region not there"),
        ]
        for send, what in refused:
            v = send()
            check(v not in (0, None), "%s: ack %r, expected non-zero" % (what, v))
        # Still the same session: the ring works.
        fe.set_features(fe.features, ack=True)
        check(fe.read(0, 0, 4096) == pattern(4096, 2), "ring after refusals")


def case_vring_base(b):
    """GET_VRING_BASE returns the next avail index and stops the ring; a ring
    restarted at that base goes on where it stopped; at base 0 too."""
    with V.GuestMemory() as mem, new_fe(b) as fe:
        fe.negotiate()
        fe.set_mem_table(mem)
        vq = fe.setup_queue(0, 32)
        for i in range(10):
            fe.write(0, i * 8, pattern(4096, 10 + i))
        base = fe.get_vring_base(0)
        check(base == 10, "GET_VRING_BASE %d after 10 requests, expected 10" % base)
        # Stopped: a request kicked now is not taken (the kick fd is not watched;
        # a kick on a fresh fd given without a restart would not count either).
        req = vq.blk_request(V.T_IN, 0, in_len=4096)
        vq.kick()
        time.sleep(0.3)
        check(not vq.reap() and vq.used_idx() == 10, "a stopped ring processed a request")
        check(fe.get_vring_base(0) == 10, "second GET_VRING_BASE moved")
        # Restart where it stopped: the waiting request is taken at once.
        fe.resume_queue(vq, base, kick_fd=os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK))
        vq.wait([req])
        check(req.data() == pattern(4096, 10), "request taken after the restart read other data")
        for i in range(5):
            check(fe.read(0, i * 8, 4096) == pattern(4096, 10 + i), "after restart")
        check(fe.get_vring_base(0) == 16 == vq.avail_idx, "GET_VRING_BASE after restart")
        # A ring set up but never kicked: its base comes back as given.
        vq1 = V.Virtqueue(mem, 1, 16)
        fe.vqs[1] = vq1
        fe.set_vring_num(1, 16)
        fe.set_vring_base(1, 777)
        fe.set_vring_addr(1, *vq1.addrs())
        check(fe.get_vring_base(1) == 777, "GET_VRING_BASE of an idle ring")
        # A queue never touched at all.
        check(fe.get_vring_base(2) == 0, "GET_VRING_BASE of a queue never set up")
        # QEMU's guest reset: the ring restarts from 0 with a fresh ring in memory.
        fe.set_vring_enable(0, False)
        fe.get_vring_base(0)
        mem.write(vq.avail, bytes(6 + 2 * vq.num))
        mem.write(vq.used, bytes(6 + 8 * vq.num))
        vq.avail_idx = vq.last_used = 0
        vq.free = list(range(vq.num))
        vq.pending = {}
        fe.resume_queue(vq, 0)
        check(fe.read(0, 8, 4096) == pattern(4096, 11), "after a guest reset")


def case_vring_base_drains(b):
    """GET_VRING_BASE with requests in flight answers once they are all on the
    used ring (else QEMU would lose them): the reply's index is what was taken,
    and the used index already matches it."""
    with V.GuestMemory([(0, 40 * MiB, 0)]) as mem, new_fe(b) as fe:
        fe.start(mem, num=64)
        vq = fe.vqs[0]
        reqs, pending = writes_in_flight(fe, sector=16384)
        base = fe.get_vring_base(0, timeout=60)
        print("  %d of 32 writes in flight at GET_VRING_BASE" % pending)
        used = vq.used_idx()
        check(used == base, "GET_VRING_BASE answered %d with the used index at %d: requests "
              "still in flight" % (base, used))
        done = vq.reap()
        for r in done:
            fe.expect(r, V.S_OK, "write drained")
        # Whatever was not taken is taken after a restart.
        fe.resume_queue(vq, base, kick_fd=os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK))
        vq.wait(reqs, timeout=60)
        for k, r in enumerate(reqs):
            fe.expect(r, V.S_OK, "write %d" % k)
        check(file_bytes(img(b), 16384 * 512 + 31 * MiB, MiB) == pattern(MiB, 31),
              "last write not in the file")


def case_enable(b):
    """SET_VRING_ENABLE: accepted for queues never set up; a disabled ring is
    left alone (kicks and all) and looked at again when enabled."""
    with V.GuestMemory() as mem, new_fe(b) as fe:
        fe.negotiate()
        for q in range(1, QUEUES):
            check(fe.set_vring_enable(q, True, ack=True) == 0, "enable of unset queue %d" % q)
        fe.set_mem_table(mem)
        vq = fe.setup_queue(0, 16, enable=False)
        req = vq.blk_request(V.T_IN, 0, in_len=512)
        vq.kick()
        time.sleep(0.3)
        check(not vq.reap(), "a ring not yet enabled processed a request")
        fe.set_vring_enable(0, True)
        vq.wait([req])
        fe.set_vring_enable(0, False)
        req = vq.blk_request(V.T_IN, 0, in_len=512)
        vq.kick()
        time.sleep(0.3)
        check(not vq.reap(), "a disabled ring processed a request")
        fe.set_vring_enable(0, True)
        vq.wait([req])
        for q in range(1, QUEUES):
            check(fe.set_vring_enable(q, False, ack=True) == 0, "disable of unset queue %d" % q)


def case_no_protocol_features(b):
    """A front-end that does not take PROTOCOL_FEATURES: rings run once set up."""
    with V.GuestMemory() as mem, new_fe(b) as fe:
        f = fe.get_features() & ~(1 << V.F_PROTOCOL_FEATURES)
        fe.set_owner()
        fe.set_features(f)
        fe.set_mem_table(mem)
        fe.setup_queue(0, 16, enable=False)
        fe.write(0, 64, pattern(4096, 3))
        check(fe.read(0, 64, 4096) == pattern(4096, 3), "without protocol features")


def case_call_replaced(b):
    """SET_VRING_CALL while the ring runs: interrupts go to the new eventfd;
    with NOFD none are sent but requests still complete."""
    with new_fe(b) as fe:
        fe.start()
        vq = fe.vqs[0]
        fe.read(0, 0, 512)
        old = vq.call_fd
        vq.call_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        fe.set_vring_fd(V.SET_VRING_CALL, 0, vq.call_fd)
        for i in range(5):
            fe.read(0, i, 512)                       # waits on the new eventfd
        os.close(old)
        fe.set_vring_fd(V.SET_VRING_CALL, 0, None)
        vq.take_call()
        req = fe.do(0, V.T_IN, 0, in_len=512, interrupt=False)
        fe.expect(req, V.S_OK, "read with no interrupt line")
        check(vq.take_call() == 0, "an interrupt on the eventfd replaced by NOFD")


def case_mem_table_running(b):
    """SET_MEM_TABLE while the ring runs: the same table, a bigger one with a
    second region the rings do not use, and again with requests in flight."""
    layout = [(0, 8 * MiB, 0)]
    with V.GuestMemory(layout) as mem, new_fe(b) as fe:
        fe.start(mem, num=256)
        vq = fe.vqs[0]
        fe.write(0, 0, pattern(4096, 20))
        fe.set_mem_table(mem)                         # identical (QEMU does this at boot)
        check(fe.read(0, 0, 4096) == pattern(4096, 20), "after the same table again")
        r1 = mem.add_region(8 * MiB, 8 * MiB, 0x1000)
        fe.set_mem_table(mem)                         # now two regions
        w = vq.blk_request(V.T_OUT, 8, out=pattern(4096, 21), at=8 * MiB + 4096)
        vq.kick()
        fe.expect(vq.wait([w])[0], V.S_OK, "write from the new region")
        req = vq.blk_request(V.T_IN, 8, in_len=4096, at=8 * MiB + 65536)
        vq.kick()
        vq.wait([req])
        check(req.data() == pattern(4096, 21), "buffers in the new region")
        fe.set_mem_table(mem, regions=[mem.regions[0]])  # back to one
        check(fe.read(0, 8, 4096) == pattern(4096, 21), "after shrinking the table")
        # Requests in flight keep the memory they were taken with.
        write_through(fe)
        reqs = [vq.blk_request(V.T_OUT, 8192 + k * 128, out=pattern(65536, 40 + k),
                               indirect=True) for k in range(64)]
        vq.kick()
        wait_until(lambda: vq.avail_event() == vq.avail_idx, 2, 0.001)    # all taken
        fe.set_mem_table(mem)                         # two regions again, mid-flight
        fe.set_mem_table(mem, regions=[mem.regions[0]])
        vq.wait(reqs, timeout=60)
        for k, r in enumerate(reqs):
            fe.expect(r, V.S_OK, "write %d across memory changes" % k)
        check(file_bytes(img(b), (8192 + 63 * 128) * 512, 65536) == pattern(65536, 103),
              "last write lost across memory changes")
        del r1


def case_mem_slots(b):
    """CONFIGURE_MEM_SLOTS: memory built with ADD_MEM_REG, shrunk with
    REM_MEM_REG; an fd sent with REM_MEM_REG is closed."""
    with V.GuestMemory([(0, 4 * MiB, 0)]) as mem, new_fe(b) as fe:
        fe.negotiate()
        check(fe.protocol_features & (1 << V.P_CONFIGURE_MEM_SLOTS), "no CONFIGURE_MEM_SLOTS")
        check(fe.get_max_mem_slots() == 32, "GET_MAX_MEM_SLOTS")
        fe.mem = mem
        fe.add_mem_reg(mem.regions[0])
        fe.setup_queue(0, 64)
        fe.write(0, 0, pattern(4096, 50))
        r1 = mem.add_region(16 * MiB, 4 * MiB, 0x2000)
        fe.add_mem_reg(r1)
        vq = fe.vqs[0]
        w = vq.blk_request(V.T_OUT, 16, out=pattern(4096, 51), at=16 * MiB + 100)
        vq.kick()
        fe.expect(vq.wait([w])[0], V.S_OK, "write from an added region")
        req = vq.blk_request(V.T_IN, 16, in_len=4096, at=18 * MiB)
        vq.kick()
        vq.wait([req])
        check(req.data() == pattern(4096, 51), "I/O in an added region")
        pid = b.proc.pid
        n0 = nfds(pid)
        # REM_MEM_REG with an fd attached (the spec lets front-ends send one).
        fe.send(V.REM_MEM_REG, struct.pack("<Q", 0) + r1.pack(), V.VERSION | V.NEED_REPLY,
                [r1.fd])
        check(fe.ack(V.REM_MEM_REG) == 0, "REM_MEM_REG refused")
        check(wait_until(lambda: nfds(pid) <= n0, 2), "the fd sent with REM_MEM_REG was kept")
        check(fe.rem_mem_reg(r1, ack=True) != 0, "REM_MEM_REG of a removed region accepted")
        check(fe.read(0, 0, 4096) == pattern(4096, 50), "I/O after REM_MEM_REG")


def case_one_at_a_time(b):
    """A second front-end waits while one is connected, and is served once it
    leaves, seeing what it wrote (persistence across reconnects)."""
    data = pattern(65536, 60)
    fe1 = new_fe(b).start()
    try:
        fe2 = new_fe(b)
        try:
            fe2.send(V.GET_FEATURES)
            fe2.no_reply(0.5)
            fe1.write(0, 4096, data)
            fe1.set_config(V.WRITEBACK_OFFSET, b"\x00")
        finally:
            fe1.close()
        fe2.reply(V.GET_FEATURES, 8)
        fe2.start()
        check(fe2.read(0, 4096, 65536) == data, "the next front-end does not see the data")
        check(fe2.cfg["writeback"] == 1, "the cache mode outlived its front-end")
        fe2.close()
    finally:
        fe1.close()


def case_qemu_session(b):
    """QEMU 7.2's order of messages, with a guest reset in the middle (ENABLE 0,
    GET_VRING_BASE, the start sequence again with the base it got)."""
    with V.GuestMemory([(0, 640 * 1024, 0), (768 * 1024, 7 * MiB, 768 * 1024)],
                       shared=True) as mem, new_fe(b) as fe:
        f = fe.get_features()
        pf = fe.get_protocol_features()
        fe.set_protocol_features(pf & 0x1ffff, ack=False)
        check(fe.get_queue_num() >= 2, "queue num")
        fe.get_max_mem_slots()
        fe.set_owner(ack=False)
        f = fe.get_features()
        masked = [os.eventfd(0, os.EFD_CLOEXEC) for _ in range(2)]
        for q in range(2):
            fe.set_vring_fd(V.SET_VRING_CALL, q, masked[q])
            fe.set_vring_fd(V.SET_VRING_ERR, q, masked[q])
        fe.get_config(57)
        guest = f & ~((1 << V.F_RO) | (1 << V.F_MQ)) | (1 << 27)      # plus ANY_LAYOUT
        vq = None
        base = 0
        for boot in range(2):
            fe.set_features(guest)
            fe.set_features(guest)
            if boot == 0:
                fe.mem = mem
                fe.add_mem_reg(mem.regions[0])
                fe.add_mem_reg(mem.regions[1])
                vq = V.Virtqueue(mem, 0, 128, event_idx=True)
                fe.vqs[0] = vq
            vq.avail_idx = base
            fe.set_vring_num(0, 128)
            fe.set_vring_base(0, base)
            fe.set_vring_addr(0, *vq.addrs())
            fe.set_vring_fd(V.SET_VRING_KICK, 0, vq.kick_fd)
            fe.set_vring_fd(V.SET_VRING_CALL, 0, vq.call_fd)
            for q in range(2):
                fe.set_vring_enable(q, True)            # queue 1 never set up
            for i in range(8):
                fe.write(0, 800 + i * 8, pattern(4096, 70 + i + boot))
                check(fe.read(0, 800 + i * 8, 4096) == pattern(4096, 70 + i + boot), "boot %d" % boot)
            for q in range(2):
                fe.set_vring_enable(q, False)
            base = fe.get_vring_base(0)
            check(base == vq.avail_idx, "GET_VRING_BASE %d, avail %d" % (base, vq.avail_idx))
        for fd in masked:
            os.close(fd)


def case_ch_session(b):
    """Cloud Hypervisor's order: SET_OWNER first, GET_CONFIG 60 with flags 1,
    all rings' NUM first, BASE = the avail index in memory; a reset (ENABLE 0,
    GET_VRING_BASE) and the whole activation again; then a reconnect that
    sends SET_PROTOCOL_FEATURES without asking first."""
    with V.GuestMemory([(0, 4 * MiB, 0), (4 * MiB, 4 * MiB, 0)]) as mem:
        for reconnect in (False, True):
            with new_fe(b) as fe:
                fe.set_owner()
                f = fe.get_features()
                if not reconnect:
                    pf = fe.get_protocol_features()
                else:
                    pf = ALL_PROTOCOL
                fe.set_protocol_features(pf & ((1 << V.P_CONFIG) | (1 << V.P_MQ) |
                                               (1 << V.P_REPLY_ACK) |
                                               (1 << V.P_CONFIGURE_MEM_SLOTS)), ack=False)
                fe.send(V.GET_QUEUE_NUM, flags=V.VERSION | V.NEED_REPLY)
                fe.reply(V.GET_QUEUE_NUM, 8)
                fe.send(V.GET_CONFIG, struct.pack("<III", 0, 60, 1) + bytes(60),
                        flags=V.VERSION | V.NEED_REPLY)
                fe.reply(V.GET_CONFIG, 72)
                for activation in range(2):
                    fe.set_features(f & ((1 << 29) | (1 << 28) | (1 << 32) | (1 << 30) | 0x7e76))
                    fe.set_mem_table(mem)
                    vqs = []
                    for q in range(2):
                        fe.set_vring_num(q, 64)
                    for q in range(2):
                        vq = fe.vqs.get(q) or V.Virtqueue(mem, q, 64, event_idx=True)
                        fe.vqs[q] = vq
                        vqs.append(vq)
                        fe.set_vring_addr(q, *vq.addrs())
                        fe.set_vring_base(q, vq.avail_idx)
                        fe.set_vring_fd(V.SET_VRING_CALL, q, vq.call_fd)
                        fe.set_vring_fd(V.SET_VRING_KICK, q, vq.kick_fd)
                    for q in range(2):
                        fe.set_vring_enable(q, True)
                    for q in range(2):
                        d = pattern(4096, 80 + q + 2 * activation)
                        fe.write(q, 1600 + q * 8, d)
                        check(fe.read(q, 1600 + q * 8, 4096) == d, "CH activation %d" % activation)
                    for q in range(2):
                        fe.set_vring_enable(q, False)
                        fe.get_vring_base(q)


def case_fc_session(b):
    """Firecracker's order and choices (its vhost-user block device): SET_OWNER
    first, only CONFIG asked of the protocol features (so no REPLY_ACK),
    GET_CONFIG 60 with flags 1, one queue of 256 without INDIRECT_DESC,
    BASE = the avail index in memory, ENABLE; no GET_VRING_BASE ever: the VM
    just closes the socket, and the next one sees the data."""
    fc_features = (1 << V.F_VERSION_1) | (1 << V.F_EVENT_IDX) | (1 << V.F_PROTOCOL_FEATURES) | \
        (1 << V.F_RO) | (1 << V.F_FLUSH)
    with V.GuestMemory([(0, 8 * MiB, 0)], shared=True) as mem:
        for vm in range(2):
            with new_fe(b) as fe:
                fe.set_owner(ack=False)
                f = fe.get_features()
                check(f & (1 << V.F_PROTOCOL_FEATURES) and f & (1 << V.F_FLUSH),
                      "features 0x%x lack PROTOCOL_FEATURES or FLUSH" % f)
                check(not f & (1 << V.F_RO), "a writable disk offered RO")
                pf = fe.get_protocol_features()
                check(pf & (1 << V.P_CONFIG), "CONFIG not offered")
                fe.set_protocol_features(pf & (1 << V.P_CONFIG), ack=False)
                fe.send(V.GET_CONFIG, struct.pack("<III", 0, 60, 1) + bytes(60))
                cfg = fe.reply(V.GET_CONFIG, 72)
                check(struct.unpack_from("<III", cfg) == (0, 60, 1), "GET_CONFIG header echoed")
                check(struct.unpack_from("<Q", cfg, 12)[0] == SIZE // 512, "capacity")
                fe.set_features(f & fc_features, ack=False)
                fe.set_mem_table(mem, ack=False)
                vq = V.Virtqueue(mem, 0, 256, event_idx=True)
                fe.vqs[0] = vq
                fe.set_vring_num(0, 256, ack=False)
                fe.set_vring_addr(0, *vq.addrs(), ack=False)
                fe.set_vring_base(0, vq.avail_idx, ack=False)
                fe.set_vring_fd(V.SET_VRING_CALL, 0, vq.call_fd, ack=False)
                fe.set_vring_fd(V.SET_VRING_KICK, 0, vq.kick_fd, ack=False)
                fe.set_vring_enable(0, True, ack=False)
                d = pattern(8192, 90 + vm)
                if vm == 1:
                    check(fe.read(0, 2400, 8192) == pattern(8192, 90),
                          "the second VM does not see the first one's data")
                fe.write(0, 2400, d)
                fe.flush(0)
                check(fe.read(0, 2400, 8192) == d, "FC VM %d" % vm)
            # The socket closed with the ring running, as Firecracker exits.


def case_sigterm(b):
    """SIGTERM with a front-end connected and writes in flight: blockd finishes
    them, exits 0, and the completed writes are in the file."""
    with V.GuestMemory([(0, 40 * MiB, 0)]) as mem, new_fe(b) as fe:
        fe.start(mem, num=64)
        vq = fe.vqs[0]
        reqs, pending = writes_in_flight(fe, sector=32768, seed=90)
        print("  %d of 32 writes in flight at SIGTERM" % pending)
        b.proc.send_signal(signal.SIGTERM)
        try:
            rc = b.proc.wait(timeout=60)
        except Exception:
            rc = None
        check(rc == 0, "blockd exited %r after SIGTERM with requests in flight" % rc)
        vq.reap()
        done = [k for k, r in enumerate(reqs) if r.done]
        for k in done:
            check(reqs[k].status() == V.S_OK, "write %d: %s" % (k, V.status_name(reqs[k].status())))
            check(file_bytes(img(b), 32768 * 512 + k * MiB, MiB) == pattern(MiB, 90 + k),
                  "write %d completed but not in the file" % k)
        print("  %d of 32 writes completed before blockd left" % len(done))


def run():
    def restart(b):
        b.start()
        return b

    cases = Cases(restart)
    with served(("vda.sock", "disk.img", "queues=%d" % QUEUES),
                files=[("disk.img", SIZE)]) as (b, tmp):
        for name, fn in [("exact replies", case_replies),
                         ("GET_CONFIG 57/60 bytes, flags 0/1", case_get_config),
                         ("SET_CONFIG writeback", case_set_config),
                         ("REPLY_ACK", case_reply_ack),
                         ("GET_VRING_BASE stops, SET_VRING_BASE restarts", case_vring_base),
                         ("GET_VRING_BASE waits for requests in flight", case_vring_base_drains),
                         ("SET_VRING_ENABLE", case_enable),
                         ("no protocol features", case_no_protocol_features),
                         ("SET_VRING_CALL replaced while running", case_call_replaced),
                         ("SET_MEM_TABLE while rings run", case_mem_table_running),
                         ("ADD_MEM_REG / REM_MEM_REG", case_mem_slots),
                         ("one front-end at a time", case_one_at_a_time),
                         ("a QEMU 7.2 session with a guest reset", case_qemu_session),
                         ("a Cloud Hypervisor session, reset and reconnect", case_ch_session),
                         ("two Firecracker VMs, one after the other", case_fc_session),
                         ("SIGTERM with writes in flight", case_sigterm)]:
            b = cases.run(b, name, fn, stops=fn is case_sigterm)
        if b.proc.poll() is None:
            b.stop()
    cases.finish()


main(run)

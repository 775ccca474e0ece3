#!/usr/bin/env python3
"""Writes the seed corpus of fuzz-vhost (tests/fuzz/corpus-vhost): small
programs in the operation format fuzz-vhost.c reads (change one, change both).

    tests/fuzz/make-corpus-vhost.py [DIR]

Each seed is a session: a well-formed start (SETUP) or one made of raw
messages, then requests of every type and shape, memory changes, ring stops
and restarts, and some hostile descriptors and messages to start from."""
import hashlib
import os
import struct
import sys

# Operations.
MSG, SETUP, REQ, POKE, KICK, WAIT, DESC, AVAIL = range(8)
# MSG fd kinds.
FD_GUEST, FD_EVENT, FD_SMALL, FD_NULL = range(4)
# SETUP flags.
NO_EVENT_IDX, NO_INDIRECT, REPLY_ACK, NO_PROTOCOL = 0x01, 0x02, 0x04, 0x80
# REQ types (indexes into fuzz-vhost.c's table) and shapes.
T_IN, T_OUT, T_FLUSH, T_GET_ID, T_DISCARD, T_WZ, T_WZ_UNMAP, T_UNKNOWN = range(8)
STANDARD, MERGED, INDIRECT, SPLIT, MERGED_INDIRECT = range(5)
# vhost-user messages.
GET_FEATURES, SET_FEATURES, SET_OWNER = 1, 2, 3
SET_MEM_TABLE, SET_VRING_NUM, SET_VRING_ADDR, SET_VRING_BASE, GET_VRING_BASE = 5, 8, 9, 10, 11
SET_VRING_KICK, SET_VRING_CALL, SET_VRING_ERR = 12, 13, 14
GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES, GET_QUEUE_NUM, SET_VRING_ENABLE = 15, 16, 17, 18
GET_CONFIG, SET_CONFIG, GET_MAX_MEM_SLOTS, ADD_MEM_REG, REM_MEM_REG = 24, 25, 36, 37, 38
FEATURES = (1 << 32) | (1 << 30) | (1 << 29) | (1 << 28) | 0x7e46 | (1 << 13) | (1 << 14)
PROTOCOL = (1 << 0) | (1 << 3) | (1 << 9) | (1 << 15)
GUEST_SIZE = 256 * 1024
GUEST_UVA = 0x7f0000000000
QUEUE_SPAN, OFF_AVAIL, OFF_USED, OFF_TABLE, OFF_DATA = 0x4000, 0x400, 0x800, 0x1000, 0x2100


def msg(request, payload=b"", nfds=0, kind=0, need_reply=False):
    fl = (nfds & 7) | (8 if need_reply else 0) | (kind << 4)
    head = bytes([MSG, request if request < 0xff else 0xff, fl]) + struct.pack("<H", len(payload))
    if request >= 0xff:
        head += struct.pack("<I", request)
    return head + payload


def u64(v):
    return struct.pack("<Q", v)


def state(i, n):
    return struct.pack("<II", i, n)


def region(gpa, size, uva, off):
    return struct.pack("<QQQQ", gpa, size, uva, off)


def setup(flags=0, queues=1, num=16):
    log = {4: 0, 8: 1, 16: 2, 32: 3}[num]
    return bytes([SETUP, flags | ((queues - 1) << 3) | (log << 5)])


def req(q, t, shape=STANDARD, sector=0, count=1):
    return bytes([REQ, q, t, shape, sector, count])


def poke(off, data):
    assert off % 4 == 0
    return bytes([POKE]) + struct.pack("<H", off // 4) + bytes([len(data)]) + data


def desc(q, i, addr, length, flags, nxt):
    return bytes([DESC, q, i]) + struct.pack("<II", addr, length) + bytes([flags, nxt])


def avail(q, head, step=1):
    return bytes([AVAIL, q, head, step ^ 1])


def kick(q, n=1):
    return bytes([KICK, q, n - 1])


def ring_msgs(q, num, base=0, ack=False):
    """A ring's start as raw messages (NUM, BASE, ADDR, CALL, ERR, KICK, ENABLE)."""
    b = q * QUEUE_SPAN
    addr = struct.pack("<IIQQQQ", q, 0, GUEST_UVA + b, GUEST_UVA + b + OFF_USED,
                       GUEST_UVA + b + OFF_AVAIL, 0)
    return (msg(SET_VRING_NUM, state(q, num), need_reply=ack) +
            msg(SET_VRING_BASE, state(q, base), need_reply=ack) +
            msg(SET_VRING_ADDR, addr, need_reply=ack) +
            msg(SET_VRING_CALL, u64(q), 1, FD_EVENT, ack) +
            msg(SET_VRING_ERR, u64(q), 1, FD_EVENT, ack) +
            msg(SET_VRING_KICK, u64(q), 1, FD_EVENT, ack) +
            msg(SET_VRING_ENABLE, state(q, 1), need_reply=ack))


def every_request(q=0):
    out = b""
    for shape in range(5):
        for t in range(8):
            out += req(q, t, shape, sector=(t * 5 + shape) * 3, count=1 + (t + shape) % 15)
        out += bytes([WAIT])
    return out


def seeds():
    s = {}
    s["basic"] = setup() + every_request() + bytes([WAIT])
    s["no-event-idx"] = setup(NO_EVENT_IDX) + every_request() + bytes([WAIT])
    s["no-indirect"] = setup(NO_INDIRECT, num=8) + req(0, T_OUT, count=8) + \
        req(0, T_IN, count=8) + req(0, T_IN, INDIRECT) + bytes([WAIT])
    s["reply-ack"] = setup(REPLY_ACK, queues=2) + req(1, T_OUT, count=4) + \
        msg(SET_VRING_NUM, state(1, 3), need_reply=True) + \
        msg(99, b"", 2, FD_EVENT, need_reply=True) + req(1, T_IN, count=4) + bytes([WAIT])
    s["no-protocol"] = setup(NO_PROTOCOL) + req(0, T_OUT, count=2) + req(0, T_IN) + bytes([WAIT])
    s["four-queues"] = setup(queues=4, num=32) + b"".join(
        req(q, T_OUT, MERGED, sector=q * 16, count=15) + req(q, T_IN, SPLIT, sector=q * 16, count=15)
        for q in range(4)) + bytes([WAIT])
    s["config"] = setup() + msg(GET_CONFIG, struct.pack("<III", 0, 57, 0) + bytes(57)) + \
        msg(GET_CONFIG, struct.pack("<III", 0, 60, 1) + bytes(60)) + \
        msg(SET_CONFIG, struct.pack("<III", 32, 1, 0) + b"\x00") + req(0, T_OUT, count=3) + \
        msg(GET_QUEUE_NUM) + msg(GET_MAX_MEM_SLOTS) + bytes([WAIT])
    s["vring-base"] = setup() + req(0, T_OUT, count=15) + req(0, T_IN, count=15) + \
        msg(GET_VRING_BASE, state(0, 0)) + req(0, T_IN) + ring_msgs(0, 16, base=2) + \
        req(0, T_FLUSH, count=0) + bytes([WAIT]) + msg(SET_VRING_ENABLE, state(0, 0)) + \
        req(0, T_IN) + msg(SET_VRING_ENABLE, state(0, 1)) + bytes([WAIT])
    s["in-flight-at-end"] = setup(queues=2) + b"".join(
        req(i % 2, T_OUT, INDIRECT, sector=i * 4, count=15) for i in range(12))
    s["get-vring-base-in-flight"] = setup() + b"".join(
        req(0, T_OUT, INDIRECT, sector=i * 4, count=15) for i in range(10)) + \
        msg(GET_VRING_BASE, state(0, 0)) + msg(GET_FEATURES) + ring_msgs(0, 16, base=10) + \
        req(0, T_IN) + bytes([WAIT])
    table = struct.pack("<II", 2, 0) + region(0, 0x20000, GUEST_UVA, 0) + \
        region(0x20000, 0x20000, GUEST_UVA + 0x100000, 0x20000)
    s["raw-session"] = msg(SET_OWNER) + msg(GET_FEATURES) + msg(GET_PROTOCOL_FEATURES) + \
        msg(SET_PROTOCOL_FEATURES, u64(PROTOCOL)) + msg(GET_QUEUE_NUM) + \
        msg(SET_FEATURES, u64(FEATURES), need_reply=True) + \
        msg(SET_MEM_TABLE, table, 2, FD_GUEST, True) + ring_msgs(0, 32, ack=True) + \
        ring_msgs(1, 8, ack=True) + req(0, T_OUT, count=4) + req(1, T_GET_ID) + \
        msg(SET_MEM_TABLE, table, 2, FD_GUEST, True) + req(0, T_IN, count=4) + bytes([WAIT])
    reg0 = struct.pack("<Q", 0) + region(0, 0x20000, GUEST_UVA, 0)
    reg1 = struct.pack("<Q", 0) + region(0x20000, 0x20000, GUEST_UVA + 0x20000, 0x20000)
    s["mem-slots"] = msg(SET_OWNER) + msg(SET_PROTOCOL_FEATURES, u64(PROTOCOL)) + \
        msg(SET_FEATURES, u64(FEATURES)) + msg(ADD_MEM_REG, reg0, 1, FD_GUEST, True) + \
        ring_msgs(0, 16) + req(0, T_OUT) + msg(ADD_MEM_REG, reg1, 1, FD_GUEST, True) + \
        desc(0, 10, 0x20000, 512, 2, 0) + req(0, T_IN, count=2) + \
        msg(REM_MEM_REG, reg1, need_reply=True) + req(0, T_IN) + \
        msg(REM_MEM_REG, reg0, need_reply=True) + req(0, T_IN) + bytes([WAIT])
    s["loop"] = setup(queues=2) + desc(0, 0, 0x2000, 16, 1, 1) + \
        desc(0, 1, 0x2100, 512, 3, 1) + avail(0, 0) + bytes([WAIT]) + req(1, T_IN) + bytes([WAIT])
    s["nested-indirect"] = setup(queues=2) + desc(0, 3, 0x1000, 32, 4, 0) + \
        poke(0x1000, struct.pack("<QIHH", 0x1100, 16, 4, 0) * 2) + avail(0, 3) + \
        bytes([WAIT]) + req(1, T_IN, INDIRECT) + bytes([WAIT])
    s["avail-jump"] = setup() + req(0, T_IN) + avail(0, 1, 40) + req(0, T_IN)
    s["outside-memory"] = setup() + desc(0, 0, 0x2000, 16, 1, 1) + \
        desc(0, 1, 0xfffff000, 0x2000, 3, 2) + desc(0, 2, 0x2010, 1, 2, 0) + avail(0, 0)
    s["poke-rings"] = setup(queues=2) + req(0, T_OUT, count=2) + \
        poke(OFF_AVAIL, b"\x00\x00\x05\x00") + kick(0, 3) + poke(OFF_USED, b"\x01\x00\xff\xff") + \
        req(1, T_IN, count=2) + poke(QUEUE_SPAN + OFF_TABLE, bytes(range(64))) + kick(1) + \
        bytes([WAIT])
    s["bad-messages"] = setup(REPLY_ACK) + \
        msg(GET_CONFIG, struct.pack("<III", 56, 8, 0) + bytes(8)) + \
        msg(SET_VRING_ADDR, struct.pack("<IIQQQQ", 1, 0, 1, 2, 3, 0), need_reply=True) + \
        msg(SET_MEM_TABLE, struct.pack("<II", 1, 0) + region(0, 1 << 20, 0, 0), 1, FD_SMALL) + \
        msg(SET_VRING_KICK, u64(0x100), 1, FD_NULL)
    # An odd mmap_offset: rings aligned for the front-end, misaligned in
    # blockd's mapping (UBSan: misaligned struct vring_used / vring_avail).
    s["misaligned-rings"] = msg(SET_OWNER) + msg(SET_PROTOCOL_FEATURES, u64(PROTOCOL)) + \
        msg(SET_FEATURES, u64(FEATURES)) + \
        msg(SET_MEM_TABLE, struct.pack("<II", 1, 0) + region(0, 0x20000, GUEST_UVA, 1), 1,
            FD_GUEST) + ring_msgs(0, 16) + req(0, T_IN) + bytes([WAIT])
    # The rest of the input raw (MSG flag 0x80): framing, then EOF.
    raw = bytes([MSG, 0, 0x80, 0, 0])
    s["raw-oversize"] = setup() + req(0, T_IN) + bytes([WAIT]) + raw + \
        struct.pack("<III", GET_FEATURES, 1, 4097) + bytes(64)
    s["raw-truncated"] = setup() + raw + struct.pack("<III", SET_VRING_ADDR, 1, 40) + bytes(10)
    s["raw-two-messages"] = setup() + raw + struct.pack("<III", GET_QUEUE_NUM, 1, 0) + \
        struct.pack("<III", GET_CONFIG, 9, 20) + struct.pack("<III", 0, 8, 0) + bytes(8) + \
        struct.pack("<III", SET_FEATURES, 5, 8) + bytes(8)
    s["unknown-message"] = setup(REPLY_ACK) + msg(0x12345, b"abc", 3, FD_NULL, True) + \
        req(0, T_IN) + bytes([WAIT])
    return s


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(
        os.path.abspath(__file__)), "corpus-vhost")
    os.makedirs(out, exist_ok=True)
    for name, data in sorted(seeds().items()):
        digest = hashlib.sha1(data).hexdigest()[:12]
        with open(os.path.join(out, "%s-%s" % (name, digest)), "wb") as f:
            f.write(data)
        print("%-28s %5d bytes" % (name, len(data)))


main()

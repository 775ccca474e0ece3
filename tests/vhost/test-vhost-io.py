"""vhost-user-blk I/O: what a guest's requests do to the image file.

Reads and writes land in the file (checked on the host), across several
queues at once and through every descriptor layout a driver may choose
(header split over two descriptors, data and status in one, indirect
tables, odd cuts, buffers across a region boundary, non-zero mmap
offsets); GET_ID returns the serial; DISCARD and WRITE_ZEROES (with and
without UNMAP) punch or zero; FLUSH; a read-only device refuses every write
with IOERR; out-of-range and unknown requests fail; interrupts arrive with
EVENT_IDX on and off; an overlay never changes its base."""
import hashlib
import os
import subprocess

import vtest
import vuclient as V
from vtest import (served, sock, img, check, main, allocated, file_bytes, pattern, img_create,
                   Cases, MiB)

SIZE = 64 * MiB
SECTORS = SIZE // V.SECTOR
DEVICES = [
    ("vda.sock", "disk.img", "queues=4,serial=disk-serial-01"),
    ("a-rather-long-socket-name-for-vhost.sock", "other.img", "queues=1"),
    ("ro.sock", "ro.img", "readonly"),
]
FILES = [("disk.img", SIZE), ("other.img", 8 * MiB), ("ro.img", 8 * MiB)]


def fstype(path):
    r = subprocess.run(["stat", "-f", "-c", "%T", path], capture_output=True, text=True)
    return r.stdout.strip()


def frontend(b, name="vda.sock", queues=1, num=128, mem=None, **kw):
    fe = V.Frontend(sock(b, name))
    fe.start(mem or fe.own(V.GuestMemory([(0, 16 * MiB, 0)])), queues=queues, num=num, **kw)
    return fe


def case_config(b):
    """What the device advertises: capacity, queues, limits, features."""
    with frontend(b) as fe:
        c = fe.cfg
        check(c["capacity"] == SECTORS, "capacity %d, expected %d" % (c["capacity"], SECTORS))
        check(c["num_queues"] == 4, "num_queues %d, expected 4" % c["num_queues"])
        check(fe.queue_num == 4, "GET_QUEUE_NUM %d, expected 4" % fe.queue_num)
        check(c["seg_max"] >= 1 and c["blk_size"] == 512, "seg_max/blk_size %r" % c)
        for bit in (V.F_VERSION_1, V.F_FLUSH, V.F_DISCARD, V.F_WRITE_ZEROES, V.F_MQ,
                    V.F_INDIRECT_DESC, V.F_EVENT_IDX, V.F_CONFIG_WCE):
            check(fe.offered & (1 << bit), "feature bit %d not offered: 0x%x" % (bit, fe.offered))
        check(not fe.offered & (1 << V.F_RO), "a writable device offers RO")


def case_read_write_queues(b):
    """Writes on four queues at once land in the file; reads return it."""
    path = img(b)
    with frontend(b, queues=4) as fe:
        reqs = {}
        for q in range(4):
            vq = fe.vqs[q]
            for k in range(8):
                sector = (q * 8 + k) * 256           # 128 KiB apart
                data = pattern(64 * 1024, q * 8 + k + 1)
                reqs[(q, k)] = (vq.blk_request(V.T_OUT, sector, out=data), sector, data)
        for q in range(4):
            fe.vqs[q].kick()
        for q in range(4):
            fe.vqs[q].wait([r for (qq, _), (r, _, _) in reqs.items() if qq == q])
        for (q, k), (r, sector, data) in reqs.items():
            fe.expect(r, V.S_OK, "write %d on queue %d" % (k, q))
            check(r.used_len == 1, "write: used len %d" % r.used_len)
            check(file_bytes(path, sector * 512, len(data)) == data,
                  "queue %d write %d is not in the file" % (q, k))
        # Read back on another queue than the one that wrote, all at once.
        rreqs = []
        for (q, k), (_, sector, data) in reqs.items():
            vq = fe.vqs[(q + 1) % 4]
            rreqs.append((vq.blk_request(V.T_IN, sector, in_len=len(data)), data))
        for q in range(4):
            fe.vqs[q].kick()
        for q in range(4):
            fe.vqs[q].wait([r for r, _ in rreqs if r.vq is fe.vqs[q]])
        for r, data in rreqs:
            fe.expect(r, V.S_OK, "read")
            check(r.data() == data, "read back other data on queue %d" % r.vq.index)
            check(r.used_len == len(data) + 1, "read: used len %d, expected %d"
                  % (r.used_len, len(data) + 1))
    # What the host writes, the guest reads (same file, no cache of ours).
    host = pattern(8192, 99)
    with open(path, "r+b") as f:
        f.seek(40 * MiB)
        f.write(host)
    with frontend(b) as fe:
        check(fe.read(0, 40 * MiB // 512, 8192) == host, "a read missed what the host wrote")


def case_large_request(b):
    """One 1 MiB write of 16 segments and one 4 MiB read (guest memory is the buffer)."""
    path = img(b)
    with frontend(b) as fe:
        data = pattern(MiB, 5)
        fe.write(0, 30 * MiB // 512, data)
        check(file_bytes(path, 30 * MiB, MiB) == data, "1 MiB write not in the file")
        got = fe.read(0, 29 * MiB // 512, 4 * MiB)
        check(got == file_bytes(path, 29 * MiB, 4 * MiB), "4 MiB read differs from the file")


def case_layouts(b):
    """Every descriptor layout reads and writes the same bytes."""
    path = img(b)
    n = 8192
    # (layout of the write, layout of the read back): a named shape, or
    # explicit (readable cuts, writable cuts).
    layouts = [
        ("standard", "standard"),
        ("split-header", "split-header"),
        ("merged", "merged"),
        ("odd", "odd"),
        (([16, 4096, 4096], [1]), ([16], [4096, 4096, 1])),        # Linux's layout
        (([1] * 16 + [n], [1]), ([1] * 16, [n + 1])),               # header byte by byte
        (([16 + n], [1]), ([16], [n + 1])),                         # header+data, data+status
        (([16, 0, n], [0, 1]), ([16, 0], [0, n, 0, 1])),            # zero-length descriptors
        (([8, 8 + 100, n - 100], [1]), ([16], [100, n - 100 + 1])),  # unaligned cuts
    ]
    sector = 50 * MiB // 512
    for i, (wshape, rshape) in enumerate(layouts):
        for indirect in (False, True):
            what = "layout %r/%r indirect=%s" % (wshape, rshape, indirect)
            data = pattern(n, 30 + 2 * i + indirect)
            with frontend(b) as fe:
                fe.write(0, sector, data, shape=wshape, indirect=indirect)
                check(file_bytes(path, sector * 512, n) == data, what + ": write not in the file")
                check(fe.read(0, sector, n, shape=rshape, indirect=indirect) == data,
                      what + ": read back other data")


def case_memory_layouts(b):
    """Guest memory in two regions (own memfds, non-zero mmap offsets; or one
    shared memfd like QEMU's RAM block), buffers across the boundary."""
    path = img(b)
    layouts = [
        ([(0, 8 * MiB, 0)], False),
        ([(0, 8 * MiB, 0x10000)], False),                       # mmap_offset, one region
        ([(0, 4 * MiB, 0), (4 * MiB, 4 * MiB, 0x3000)], False),  # two memfds
        ([(0, 4 * MiB, 0), (4 * MiB, 4 * MiB, 6 * MiB)], True),  # one memfd, QEMU style
        ([(0, 4 * MiB, 0x200), (4 * MiB, 4 * MiB, 0x1200)], False),  # not page aligned
    ]
    for i, (layout, shared) in enumerate(layouts):
        with V.GuestMemory(layout, shared=shared) as mem, frontend(b, mem=mem) as fe:
            data = pattern(64 * 1024, 60 + i)
            sector = (52 * MiB + i * 64 * 1024) // 512
            fe.write(0, sector, data)
            check(file_bytes(path, sector * 512, len(data)) == data, "layout %d: write lost" % i)
            check(fe.read(0, sector, len(data)) == data, "layout %d: read differs" % i)
            if len(layout) > 1:
                # Every buffer of the request contiguous across the region edge.
                edge = layout[1][0]
                at = edge - 16 - 4096
                fe.write(0, sector, data[::-1], at=at)
                check(file_bytes(path, sector * 512, len(data)) == data[::-1],
                      "layout %d: write across regions lost" % i)
                vq = fe.vqs[0]
                req = vq.blk_request(V.T_IN, sector, in_len=len(data), at=edge - 16 - 100,
                                     shape="merged")
                vq.kick()
                vq.wait([req])
                fe.expect(req, V.S_OK, "read across regions")
                check(req.data() == data[::-1], "layout %d: read across regions differs" % i)


def case_get_id(b):
    """GET_ID: the serial= given; by default the socket's name (20 bytes at most)."""
    with frontend(b) as fe:
        sid = fe.get_id(0)
        check(sid == b"disk-serial-01" + bytes(6), "GET_ID %r" % sid)
        r = fe.do(0, V.T_GET_ID, in_len=8)
        fe.expect(r, V.S_OK, "GET_ID into 8 bytes")
        check(r.data() == b"disk-ser" and r.used_len == 9,
              "GET_ID into 8 bytes: %r, used len %d" % (r.data(), r.used_len))
        r = fe.do(0, V.T_GET_ID, in_len=64, shape="odd")
        check(r.data()[:20] == b"disk-serial-01" + bytes(6), "GET_ID odd layout %r" % r.data())
    with frontend(b, "a-rather-long-socket-name-for-vhost.sock") as fe:
        sid = fe.get_id(0)
        check(sid == b"a-rather-long-socket", "default GET_ID %r" % sid)


def case_flush(b):
    with frontend(b) as fe:
        fe.write(0, 0, pattern(4096, 3))
        r = fe.flush(0)
        check(r.used_len == 1, "flush used len %d" % r.used_len)
        # A flush with a data buffer and a nonsense sector is still a flush.
        fe.expect(fe.do(0, V.T_FLUSH, sector=12345), V.S_OK, "flush with a sector")


def case_discard(b):
    """DISCARD punches a hole: st_blocks falls, the range reads zeroes."""
    path = img(b)
    off = 8 * MiB
    with frontend(b) as fe:
        for k in range(4):
            fe.write(0, (off + k * MiB // 4) // 512, pattern(MiB // 4, 70 + k))
        fe.flush(0)
        before = allocated(path)
        fe.discard(0, off // 512, MiB // 512)
        after = allocated(path)
        check(before - after >= MiB - 64 * 1024,
              "discard of 1 MiB freed %d bytes (%d -> %d)" % (before - after, before, after))
        check(fe.read(0, off // 512, MiB) == bytes(MiB), "discarded range does not read zeroes")
        check(file_bytes(path, off, MiB) == bytes(MiB), "discarded range not zero in the file")
        # UNMAP on a discard and unknown flags are refused.
        r = fe.zeroes_request(0, V.T_DISCARD, off // 512, 8, flags=V.WZ_UNMAP)
        fe.expect(r, V.S_UNSUPP, "discard with the UNMAP flag")
        r = fe.zeroes_request(0, V.T_WRITE_ZEROES, off // 512, 8, flags=2)
        fe.expect(r, V.S_UNSUPP, "write zeroes with an unknown flag")


def case_write_zeroes(b):
    """WRITE_ZEROES with UNMAP punches; without, it writes zeroes (stays allocated)."""
    path = img(b)
    off = 12 * MiB
    with frontend(b) as fe:
        fe.write(0, off // 512, pattern(MiB, 80), indirect=True)
        fe.write(0, (off + MiB) // 512, pattern(MiB, 81), indirect=True)
        fe.flush(0)
        before = allocated(path)
        fe.write_zeroes(0, off // 512, MiB // 512, unmap=True)
        after = allocated(path)
        check(before - after >= MiB - 64 * 1024,
              "write zeroes with UNMAP freed only %d bytes" % (before - after))
        check(fe.read(0, off // 512, MiB) == bytes(MiB), "zeroed (UNMAP) range not zero")
        before = allocated(path)
        fe.write_zeroes(0, (off + MiB) // 512, MiB // 512, unmap=False)
        check(fe.read(0, (off + MiB) // 512, MiB) == bytes(MiB), "zeroed range not zero")
        check(file_bytes(path, off + MiB, MiB) == bytes(MiB), "zeroed range not zero in the file")
        if fstype(path) in ("ext2/ext3", "ext4", "xfs"):
            check(allocated(path) >= before - 64 * 1024,
                  "write zeroes without UNMAP deallocated (%d -> %d)" % (before, allocated(path)))


def case_readonly(b):
    """A read-only device advertises RO and refuses OUT, DISCARD and
    WRITE_ZEROES with IOERR, writing nothing; reads and flushes work."""
    path = img(b, "ro.img")
    host = pattern(MiB, 90)
    with open(path, "r+b") as f:
        f.write(host)
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
    with frontend(b, "ro.sock") as fe:
        check(fe.offered & (1 << V.F_RO), "read-only device does not offer RO")
        check(fe.read(0, 0, 8192) == host[:8192], "read-only device reads other data")
        failures = []
        r = fe.do(0, V.T_OUT, 0, out=pattern(4096, 1))
        if r.status() != V.S_IOERR:
            failures.append("OUT: %s" % V.status_name(r.status()))
        r = fe.zeroes_request(0, V.T_DISCARD, 0, 8)
        if r.status() != V.S_IOERR:
            failures.append("DISCARD: %s" % V.status_name(r.status()))
        r = fe.zeroes_request(0, V.T_WRITE_ZEROES, 0, 8, flags=V.WZ_UNMAP)
        if r.status() != V.S_IOERR:
            failures.append("WRITE_ZEROES: %s" % V.status_name(r.status()))
        fe.flush(0)
        check(hashlib.sha256(open(path, "rb").read()).hexdigest() == digest,
              "a read-only device changed its image")
        check(not failures, "read-only device, expected IOERR: " + ", ".join(failures))


def case_out_of_range(b):
    """Requests past the end get IOERR; the last sector works; odd lengths fail."""
    with frontend(b) as fe:
        last = SECTORS - 1
        fe.write(0, last, pattern(512, 4))
        check(fe.read(0, last, 512) == pattern(512, 4), "last sector")
        bad = [
            (V.T_IN, dict(sector=SECTORS, in_len=512), "read at the end"),
            (V.T_IN, dict(sector=last, in_len=1024), "read across the end"),
            (V.T_IN, dict(sector=1 << 60, in_len=512), "read at sector 2^60"),
            (V.T_IN, dict(sector=(1 << 64) - 1, in_len=512), "read at sector 2^64-1"),
            (V.T_OUT, dict(sector=SECTORS, out=bytes(512)), "write at the end"),
            (V.T_OUT, dict(sector=last, out=bytes(1024)), "write across the end"),
            (V.T_IN, dict(sector=0, in_len=100), "read of 100 bytes"),
            (V.T_OUT, dict(sector=0, out=bytes(513)), "write of 513 bytes"),
        ]
        for t, kw, what in bad:
            fe.expect(fe.do(0, t, **kw), V.S_IOERR, what)
        for t in (V.T_DISCARD, V.T_WRITE_ZEROES):
            fe.expect(fe.zeroes_request(0, t, SECTORS - 4, 8), V.S_IOERR,
                      "discard/zero across the end (type %d)" % t)
            fe.expect(fe.zeroes_request(0, t, (1 << 64) - 8, 8), V.S_IOERR,
                      "discard/zero at sector 2^64-8 (type %d)" % t)
        check(fe.read(0, last, 512) == pattern(512, 4), "last sector changed by failed requests")


def case_unknown_type(b):
    """Unknown request types (and legacy SCSI, GET_LIFETIME) get UNSUPP."""
    with frontend(b) as fe:
        for t in (2, 3, 10, 14, 99, 0x7fffffff):
            r = fe.do(0, t, 0, in_len=512)
            fe.expect(r, V.S_UNSUPP, "request type %d" % t)


def case_interrupts(b):
    """Every completion interrupts, with EVENT_IDX and without (no polling)."""
    for event_idx in (True, False):
        with frontend(b, event_idx=event_idx) as fe:
            check(bool(fe.features & (1 << V.F_EVENT_IDX)) == event_idx, "EVENT_IDX negotiation")
            vq = fe.vqs[0]
            for i in range(40):
                fe.do(0, V.T_IN, i * 8, in_len=4096, interrupt=True, timeout=3)
            # Batches, completed out of one kick.
            for i in range(5):
                reqs = [vq.blk_request(V.T_IN, k * 8, in_len=4096) for k in range(16)]
                vq.kick()
                vq.wait(reqs, timeout=3, interrupt=True)
            # Writes complete one by one (on ext4 through the blocking pool),
            # so interrupts come from several passes: none may be lost.
            for i in range(3):
                reqs = [vq.blk_request(V.T_OUT, 4096 + k * 128, out=pattern(65536, k))
                        for k in range(24)]
                vq.kick()
                vq.wait(reqs, timeout=3, interrupt=True)
                for r in reqs:
                    fe.expect(r, V.S_OK, "write")
            if event_idx:
                # The device tells us where to kick next: after everything it took.
                check(vq.avail_event() == vq.avail_idx,
                      "avail_event %d, avail idx %d" % (vq.avail_event(), vq.avail_idx))


def case_index_wrap(b):
    """A ring started at base 65530 goes past 65535 back to 0."""
    with V.GuestMemory() as mem, V.Frontend(sock(b)) as fe:
        fe.negotiate()
        fe.set_mem_table(mem)
        vq = fe.setup_queue(0, 16, base=65530)
        for i in range(20):
            data = pattern(4096, i)
            fe.write(0, i * 8, data)
            check(fe.read(0, i * 8, 4096) == data, "read after index wrap")
        check(vq.avail_idx == (65530 + 40) & 0xffff, "avail idx %d" % vq.avail_idx)
        check(fe.get_vring_base(0) == vq.avail_idx, "GET_VRING_BASE after wrap")


def case_overlay(b, base):
    """An overlay never changes its base; a discard of base data reads zeroes."""
    digest = hashlib.sha256(open(base, "rb").read()).hexdigest()
    with frontend(b, "ovl.sock") as fe:
        check(fe.read(0, 0, 65536) == pattern(65536, 7), "overlay reads other base data")
        fe.write(0, 8, pattern(4096, 8))
        check(fe.read(0, 0, 8192) == pattern(65536, 7)[:4096] + pattern(4096, 8),
              "overlay read after a write")
        fe.discard(0, 64, 128)              # 64 KiB of base data at 32 KiB
        check(fe.read(0, 64, 128 * 512) == bytes(128 * 512), "discarded base data not zero")
        fe.write_zeroes(0, 256, 16, unmap=True)
        check(fe.read(0, 256, 16 * 512) == bytes(16 * 512), "zeroed base data not zero")
        fe.flush(0)
    with frontend(b, "ovl.sock") as fe:
        check(fe.read(0, 64, 128 * 512) == bytes(128 * 512), "discard undone after reconnect")
    check(hashlib.sha256(open(base, "rb").read()).hexdigest() == digest, "the base changed")


def make_base(path):
    """base.raw: 256 KiB of a pattern, then a hole up to 16 MiB."""
    with open(path, "wb") as f:
        f.write(pattern(65536, 7) * 4)
        f.truncate(16 * MiB)


def make_overlay(path):
    img_create("create", "-b", os.path.join(os.path.dirname(path), "base.raw"), path)


def run():
    cases = Cases(restart=lambda b: b.start() or b)
    with served(*DEVICES, files=FILES) as (b, tmp):
        for name, fn in [("config", case_config),
                         ("read/write on 4 queues at once", case_read_write_queues),
                         ("large request", case_large_request),
                         ("descriptor layouts", case_layouts),
                         ("memory layouts (regions, mmap offsets)", case_memory_layouts),
                         ("GET_ID", case_get_id),
                         ("FLUSH", case_flush),
                         ("DISCARD", case_discard),
                         ("WRITE_ZEROES with and without UNMAP", case_write_zeroes),
                         ("read-only device", case_readonly),
                         ("out of range", case_out_of_range),
                         ("unknown request types", case_unknown_type),
                         ("interrupts with EVENT_IDX on and off", case_interrupts),
                         ("avail/used index wrap", case_index_wrap)]:
            b = cases.run(b, name, fn)
        b.stop()
    # cache=none: guest buffers that are not 4 KiB aligned go through the
    # page cache, aligned ones around it; the guest must not see a difference.
    devices = [(s, i, o + ",cache=none") if s == "vda.sock" else (s, i, o) for s, i, o in DEVICES]
    with served(*devices, files=FILES) as (b, tmp):
        for name, fn in [("cache=none: read/write on 4 queues at once", case_read_write_queues),
                         ("cache=none: large request", case_large_request),
                         ("cache=none: descriptor layouts", case_layouts),
                         ("cache=none: memory layouts", case_memory_layouts),
                         ("cache=none: FLUSH", case_flush),
                         ("cache=none: DISCARD", case_discard),
                         ("cache=none: WRITE_ZEROES", case_write_zeroes)]:
            b = cases.run(b, name, fn)
        b.stop()
    if vtest.BLOCKD_IMG:
        with served(("ovl.sock", "ws.ovl", "format=overlay"),
                    files=[("base.raw", make_base), ("ws.ovl", make_overlay)]) as (b, tmp):
            b = cases.run(b, "overlay over a raw base", case_overlay,
                          os.path.join(tmp, "base.raw"))
            b.stop()
    else:
        print("overlay case skipped: BLOCKD_IMG is not set (blockd-img not built)")
    cases.finish()


main(run)

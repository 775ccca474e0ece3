"""A vhost-user-blk front-end in Python (standard library only): what QEMU,
Cloud Hypervisor or Firecracker do to a back-end, without a VMM or a guest.

Guest memory is one or more memfds the test maps itself and shares with the
back-end in SET_MEM_TABLE (or ADD_MEM_REG); split virtqueues are laid out in
it by hand; kicks, interrupts and ring errors are eventfds. The test plays
the guest driver too: it writes descriptors and the avail ring, kicks, and
reads the used ring.

Every reply is checked: flags exactly VERSION|REPLY (0x5), the request id
echoed, the size exactly what the message type defines. `send()` and
`recv()` are raw, for front-ends that break the rules on purpose.

vhost-user messages are in host byte order (little-endian here); rings and
virtio-blk structures are little-endian by the VIRTIO 1.x spec.
"""
import fcntl
import mmap
import os
import select
import socket
import struct
import time

# ---- vhost-user (QEMU docs/interop/vhost-user.rst) -------------------------

GET_FEATURES = 1
SET_FEATURES = 2
SET_OWNER = 3
RESET_OWNER = 4
SET_MEM_TABLE = 5
SET_LOG_BASE = 6
SET_LOG_FD = 7
SET_VRING_NUM = 8
SET_VRING_ADDR = 9
SET_VRING_BASE = 10
GET_VRING_BASE = 11
SET_VRING_KICK = 12
SET_VRING_CALL = 13
SET_VRING_ERR = 14
GET_PROTOCOL_FEATURES = 15
SET_PROTOCOL_FEATURES = 16
GET_QUEUE_NUM = 17
SET_VRING_ENABLE = 18
GET_CONFIG = 24
SET_CONFIG = 25
GET_INFLIGHT_FD = 31
GET_MAX_MEM_SLOTS = 36
ADD_MEM_REG = 37
REM_MEM_REG = 38

VERSION = 0x1
REPLY = 0x4
NEED_REPLY = 0x8
VRING_NOFD = 1 << 8
HEADER = struct.Struct("<III")        # request, flags, size
MAX_PAYLOAD = 4096

# Protocol features.
P_MQ = 0
P_REPLY_ACK = 3
P_CONFIG = 9
P_CONFIGURE_MEM_SLOTS = 15

# Virtio feature bits.
F_SIZE_MAX = 1
F_SEG_MAX = 2
F_RO = 5
F_BLK_SIZE = 6
F_FLUSH = 9
F_TOPOLOGY = 10
F_CONFIG_WCE = 11
F_MQ = 12
F_DISCARD = 13
F_WRITE_ZEROES = 14
F_INDIRECT_DESC = 28
F_EVENT_IDX = 29
F_PROTOCOL_FEATURES = 30
F_VERSION_1 = 32

# ---- split virtqueue and virtio-blk (VIRTIO 1.x) ----------------------------

DESC_F_NEXT = 1
DESC_F_WRITE = 2
DESC_F_INDIRECT = 4
AVAIL_F_NO_INTERRUPT = 1
DESC = struct.Struct("<QIHH")         # addr, len, flags, next

T_IN = 0
T_OUT = 1
T_FLUSH = 4
T_GET_ID = 8
T_DISCARD = 11
T_WRITE_ZEROES = 13
S_OK = 0
S_IOERR = 1
S_UNSUPP = 2
STATUS_NAMES = {S_OK: "OK", S_IOERR: "IOERR", S_UNSUPP: "UNSUPP", 0xff: "untouched"}
WZ_UNMAP = 1
SECTOR = 512
ID_BYTES = 20

# virtio-blk configuration space (the first 60 bytes) by field.
CONFIG_FIELDS = [
    ("capacity", "Q"), ("size_max", "I"), ("seg_max", "I"), ("cylinders", "H"),
    ("heads", "B"), ("sectors", "B"), ("blk_size", "I"), ("physical_block_exp", "B"),
    ("alignment_offset", "B"), ("min_io_size", "H"), ("opt_io_size", "I"), ("writeback", "B"),
    ("unused0", "B"), ("num_queues", "H"), ("max_discard_sectors", "I"),
    ("max_discard_seg", "I"), ("discard_sector_alignment", "I"),
    ("max_write_zeroes_sectors", "I"), ("max_write_zeroes_seg", "I"),
    ("write_zeroes_may_unmap", "B"), ("unused1", "3s"),
]
CONFIG = struct.Struct("<" + "".join(f for _, f in CONFIG_FIELDS))
WRITEBACK_OFFSET = 32
assert CONFIG.size == 60

# Where the front-end pretends to have mapped guest memory (QEMU's addresses
# look like this): ring addresses are given in this space, not as GPAs.
UVA_BASE = 0x7f0000000000
PAGE = 4096
MiB = 1 << 20


class ProtocolError(AssertionError):
    """The back-end broke the vhost-user protocol (or closed the connection)."""


def status_name(s):
    return STATUS_NAMES.get(s, "0x%02x" % s)


def align(n, a):
    return (n + a - 1) // a * a


# ---- guest memory -----------------------------------------------------------

class Region:
    """A region of guest memory: SIZE bytes at guest-physical GPA, in a memfd
    at MMAP_OFFSET, which the front-end 'maps' at UVA."""

    def __init__(self, gpa, size, uva, mmap_offset, fd, mm):
        self.gpa, self.size, self.uva, self.mmap_offset = gpa, size, uva, mmap_offset
        self.fd = fd     # the memfd (several regions may share one)
        self.mm = mm     # our mapping of the whole memfd

    def pack(self):
        """The 32-byte vhost-user region."""
        return struct.pack("<QQQQ", self.gpa, self.size, self.uva, self.mmap_offset)


class GuestMemory:
    """Guest memory as a list of regions, each in a memfd mapped here.

    LAYOUT is a list of (gpa, size, mmap_offset): each region gets a memfd of
    its own, mmap_offset + size long, unless SHARED: then one memfd holds
    them all at their mmap_offsets (as QEMU shares one RAM block). Region i is
    'mapped' by the front-end at UVA_BASE + gpa + i * UVA_GAP, so a back-end
    that confuses front-end and guest-physical addresses fails.

    SEAL: the memfds are sealed against growing and shrinking, as QEMU's
    memory-backend-memfd does; False leaves them sealable but unsealed."""

    UVA_GAP = 0x10000000

    def __init__(self, layout=((0, 4 * MiB, 0),), shared=False, seal=True):
        self.seal = seal
        self.regions = []
        self._fds = []
        self._maps = []
        if shared:
            end = max(off + size for _, size, off in layout)
            fd, mm = self._memfd(end)
        for i, (gpa, size, off) in enumerate(layout):
            if not shared:
                fd, mm = self._memfd(off + size)
            self.regions.append(Region(gpa, size, UVA_BASE + gpa + i * self.UVA_GAP, off, fd, mm))
        # Rings first, from the start of region 0; buffers from the scratch
        # area after them.
        r0 = self.regions[0]
        self._next = r0.gpa + PAGE
        self._ring_end = r0.gpa + min(r0.size // 4, 1 * MiB)
        self._scratch = Scratch(self._ring_end, r0.gpa + r0.size)

    def _memfd(self, size):
        fd = os.memfd_create("vuclient-guest", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        os.ftruncate(fd, size)
        if self.seal:
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS,
                        fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL)
        mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._fds.append(fd)
        self._maps.append(mm)
        return fd, mm

    def add_region(self, gpa, size, mmap_offset=0):
        """A new region in a memfd of its own (for ADD_MEM_REG); returns it."""
        fd, mm = self._memfd(mmap_offset + size)
        r = Region(gpa, size, UVA_BASE + gpa + len(self.regions) * self.UVA_GAP, mmap_offset,
                   fd, mm)
        self.regions.append(r)
        return r

    def close(self):
        for mm in self._maps:
            try:
                mm.close()
            except BufferError:
                pass
        for fd in self._fds:
            os.close(fd)
        self._maps = self._fds = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- addresses
    def region_of(self, gpa):
        for r in self.regions:
            if r.gpa <= gpa < r.gpa + r.size:
                return r
        raise ValueError("gpa 0x%x outside guest memory" % gpa)

    def uva(self, gpa):
        """The front-end's address of GPA (for ring addresses)."""
        r = self.region_of(gpa)
        return r.uva + (gpa - r.gpa)

    def alloc_ring(self, size, alignment):
        """SIZE bytes for a ring in region 0, aligned."""
        gpa = align(self._next, alignment)
        if gpa + size > self._ring_end:
            raise ValueError("no room for rings")
        self._next = gpa + size
        return gpa

    def alloc(self, size, alignment=16):
        """SIZE bytes of scratch (reused round-robin: for buffers of requests)."""
        return self._scratch.alloc(size, alignment)

    def release(self, gpa):
        """Gives back a scratch buffer."""
        self._scratch.release(gpa)

    # -- access (may cross regions)
    def _pieces(self, gpa, n):
        while n > 0:
            r = self.region_of(gpa)
            off = gpa - r.gpa
            k = min(n, r.size - off)
            yield r, r.mmap_offset + off, k
            gpa += k
            n -= k

    def write(self, gpa, data):
        data = bytes(data)
        done = 0
        for r, off, k in self._pieces(gpa, len(data)):
            r.mm[off:off + k] = data[done:done + k]
            done += k

    def read(self, gpa, n):
        return b"".join(bytes(r.mm[off:off + k]) for r, off, k in self._pieces(gpa, n))

    def u16(self, gpa):
        return struct.unpack("<H", self.read(gpa, 2))[0]

    def set_u16(self, gpa, v):
        self.write(gpa, struct.pack("<H", v & 0xffff))

    def u32(self, gpa):
        return struct.unpack("<I", self.read(gpa, 4))[0]


class Scratch:
    """A round-robin allocator over [START, END) for the buffers of
    requests: a buffer is live until release(); allocation skips live ones."""

    def __init__(self, start, end):
        self.start, self.end, self.next = start, end, start
        self.live = {}              # start -> end

    def alloc(self, size, alignment=16):
        size = max(size, 1)
        gpa = align(self.next, alignment)
        wrapped = False
        while True:
            if gpa + size > self.end:
                if wrapped:
                    raise ValueError("no %d bytes free in the scratch area" % size)
                wrapped = True
                gpa = align(self.start, alignment)
                continue
            clash = [e for s, e in self.live.items() if s < gpa + size and gpa < e]
            if not clash:
                break
            gpa = align(max(clash), alignment)
        self.live[gpa] = gpa + size
        self.next = gpa + size
        return gpa

    def release(self, gpa):
        self.live.pop(gpa, None)


# ---- virtqueue ----------------------------------------------------------------

class Request:
    """A chain made available on a virtqueue, and what came back."""

    def __init__(self, vq, head, descs, readable, writable, status_gpa, allocs=()):
        self.vq = vq
        self.allocs = list(allocs)  # scratch buffers to give back once used
        self.head = head
        self.descs = descs          # descriptor indices of the ring's table it holds
        self.readable = readable    # [(gpa, len)]
        self.writable = writable    # [(gpa, len)]
        self.status_gpa = status_gpa
        self.done = False
        self.used_len = None        # what the device put in the used element

    def writable_bytes(self):
        return b"".join(self.vq.mem.read(g, n) for g, n in self.writable)

    def status(self):
        return self.vq.mem.read(self.status_gpa, 1)[0] if self.status_gpa is not None else None

    def data(self):
        """The device-writable bytes before the status byte."""
        return self.writable_bytes()[:-1]


class Virtqueue:
    """A split virtqueue of NUM entries laid out in guest memory MEM, with
    its kick, call and err eventfds. Plays the guest driver's part."""

    def __init__(self, mem, index, num, event_idx=False):
        self.mem, self.index, self.num, self.event_idx = mem, index, num, event_idx
        self.desc = mem.alloc_ring(16 * num, 16)
        self.avail = mem.alloc_ring(6 + 2 * num, 2)
        self.used = mem.alloc_ring(6 + 8 * num, 4)
        mem.write(self.desc, bytes(16 * num))
        mem.write(self.avail, bytes(6 + 2 * num))
        mem.write(self.used, bytes(6 + 8 * num))
        flags = os.EFD_CLOEXEC | os.EFD_NONBLOCK
        self.kick_fd = os.eventfd(0, flags)
        self.call_fd = os.eventfd(0, flags)
        self.err_fd = os.eventfd(0, flags)
        self.free = list(range(num))
        self.avail_idx = 0          # the next avail slot we fill (free running)
        self.last_used = 0          # the used entries we have seen
        self.pending = {}           # head -> Request
        self.last_table = None      # the indirect table add_chain wrote last

    def close(self):
        for fd in (self.kick_fd, self.call_fd, self.err_fd):
            try:
                os.close(fd)
            except OSError:
                pass

    # -- addresses for SET_VRING_ADDR (front-end addresses)
    def addrs(self):
        return self.mem.uva(self.desc), self.mem.uva(self.used), self.mem.uva(self.avail)

    # -- the ring fields
    def avail_flags(self, flags):
        self.mem.set_u16(self.avail, flags)

    def used_idx(self):
        return self.mem.u16(self.used + 2)

    def avail_event(self):
        return self.mem.u16(self.used + 4 + 8 * self.num)

    def set_used_event(self, v):
        self.mem.set_u16(self.avail + 4 + 2 * self.num, v)

    def write_desc(self, table, i, addr, length, flags, nxt=0):
        self.mem.write(table + 16 * i, DESC.pack(addr, length, flags, nxt))

    def read_used(self, i):
        return struct.unpack("<II", self.mem.read(self.used + 4 + 8 * (i % self.num), 8))

    # -- the driver's side
    def add_chain(self, bufs, indirect=False):
        """Makes a chain of BUFS ([(gpa, len, writable)]) available (not yet
        published). INDIRECT puts it in an indirect table. Returns (head,
        descriptor indices used)."""
        self.last_table = None
        if indirect:
            table = self.last_table = self.mem.alloc(16 * len(bufs), 16)
            for i, (g, n, w) in enumerate(bufs):
                last = i == len(bufs) - 1
                self.write_desc(table, i, g, n, (DESC_F_WRITE if w else 0) |
                                (0 if last else DESC_F_NEXT), 0 if last else i + 1)
            chain = [(table, 16 * len(bufs), DESC_F_INDIRECT)]
        else:
            chain = [(g, n, DESC_F_WRITE if w else 0) for g, n, w in bufs]
        if len(chain) > len(self.free):
            raise ValueError("queue %d full" % self.index)
        descs = [self.free.pop(0) for _ in chain]
        for k, (g, n, fl) in enumerate(chain):
            last = k == len(chain) - 1
            self.write_desc(self.desc, descs[k], g, n, fl | (0 if last else DESC_F_NEXT),
                            0 if last else descs[k + 1])
        self.put_avail(descs[0])
        return descs[0], descs

    def put_avail(self, head):
        """Puts HEAD in the next avail slot (not yet published)."""
        self.mem.set_u16(self.avail + 4 + 2 * (self.avail_idx % self.num), head)
        self.avail_idx = (self.avail_idx + 1) & 0xffff

    def publish(self, idx=None):
        """Publishes the avail index (ours, or IDX for hostile tests)."""
        if self.event_idx:
            # Interrupt on the next used entry.
            self.set_used_event(self.last_used)
        self.mem.set_u16(self.avail + 2, self.avail_idx if idx is None else idx)

    def kick(self, times=1):
        for _ in range(times):
            os.eventfd_write(self.kick_fd, 1)

    def take_call(self):
        """Reads (clears) the call eventfd; returns its count, 0 if none."""
        try:
            return os.eventfd_read(self.call_fd)
        except BlockingIOError:
            return 0

    def err_signalled(self, timeout=2.0):
        """Whether the back-end wrote the err eventfd (waits up to TIMEOUT)."""
        r, _, _ = select.select([self.err_fd], [], [], timeout)
        if not r:
            return False
        os.eventfd_read(self.err_fd)
        return True

    def reap(self):
        """Takes the used entries the device published; returns the requests done."""
        done = []
        idx = self.used_idx()
        while self.last_used != idx:
            head, length = self.read_used(self.last_used)
            self.last_used = (self.last_used + 1) & 0xffff
            req = self.pending.pop(head, None)
            if req is None:
                raise ProtocolError("queue %d: used entry for head %d, which is not pending"
                                    % (self.index, head))
            req.done = True
            req.used_len = length
            self.free.extend(req.descs)
            for g in req.allocs:
                self.mem.release(g)
            done.append(req)
        return done

    def wait(self, reqs, timeout=5.0, interrupt=True):
        """Waits until every request of REQS is used. INTERRUPT: only the call
        eventfd wakes us (checks interrupts are sent); else poll the used ring."""
        deadline = time.monotonic() + timeout
        while True:
            self.reap()
            if all(r.done for r in reqs):
                return reqs
            if self.event_idx:
                # As a driver re-enabling callbacks: interrupt on the next used
                # entry, then look again (it may have come meanwhile).
                self.set_used_event(self.last_used)
                self.reap()
                if all(r.done for r in reqs):
                    return reqs
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProtocolError("queue %d: %d request(s) not completed in %.1f s%s"
                                    % (self.index, sum(not r.done for r in reqs), timeout,
                                       " (no interrupt?)" if interrupt else ""))
            if interrupt:
                r, _, _ = select.select([self.call_fd], [], [], left)
                if r:
                    self.take_call()
            else:
                time.sleep(0.002)

    # -- virtio-blk requests
    def blk_request(self, rtype, sector=0, out=b"", in_len=0, shape="standard",
                    indirect=False, at=None, status_len=1, publish=True, ioprio=0):
        """Makes a virtio-blk request available: a header of RTYPE and SECTOR,
        OUT bytes the device reads, IN_LEN bytes it writes, then the status byte.

        SHAPE says how those bytes fall into descriptors:
          standard      header | data descriptors (64 KiB each) | status
          split-header  the header over two descriptors (5 and 11 bytes)
          merged        everything readable in one, everything writable in one
          odd           cuts at odd places: 3+13 header, data in 1, 511, 7... pieces
          (rcuts, wcuts) explicit lengths of the readable and writable descriptors
        AT places every buffer contiguously from that guest address (say, across
        a region boundary); otherwise each gets its own scratch buffer. The
        status byte is pre-set to 0xff. Returns the Request."""
        readable = struct.pack("<IIQ", rtype, ioprio, sector) + bytes(out)
        wlen = in_len + status_len
        rcuts, wcuts = self._cuts(shape, len(readable), wlen)
        assert sum(rcuts) == len(readable) and sum(wcuts) == wlen, (rcuts, wcuts)
        bufs, rd, wr, allocs = [], [], [], []
        cursor = at
        pos = 0
        for n in rcuts:
            g = self._place(n, cursor, allocs)
            if cursor is not None:
                cursor += n
            self.mem.write(g, readable[pos:pos + n])
            pos += n
            bufs.append((g, n, False))
            rd.append((g, n))
        for n in wcuts:
            g = self._place(n, cursor, allocs)
            if cursor is not None:
                cursor += n
            self.mem.write(g, b"\xee" * n)
            bufs.append((g, n, True))
            wr.append((g, n))
        status_gpa = None
        if wr:
            g, n = wr[-1]
            status_gpa = g + n - 1
            self.mem.write(status_gpa, b"\xff")
        head, descs = self.add_chain(bufs, indirect=indirect)
        if self.last_table is not None:
            allocs.append(self.last_table)
        req = Request(self, head, descs, rd, wr, status_gpa, allocs)
        self.pending[head] = req
        if publish:
            self.publish()
        return req

    def _place(self, n, cursor, allocs):
        if cursor is not None:
            return cursor
        g = self.mem.alloc(max(n, 1), 8)
        allocs.append(g)
        return g

    @staticmethod
    def _cuts(shape, rlen, wlen):
        def pieces(total, sizes):
            out = []
            i = 0
            while total > 0:
                k = min(sizes[i % len(sizes)], total)
                out.append(k)
                total -= k
                i += 1
            return out

        if isinstance(shape, tuple):
            return list(shape[0]), list(shape[1])
        if shape == "standard":
            return [16] + pieces(rlen - 16, [64 * 1024]), pieces(wlen - 1, [64 * 1024]) + [1]
        if shape == "split-header":
            return [5, 11] + pieces(rlen - 16, [64 * 1024]), pieces(wlen - 1, [64 * 1024]) + [1]
        if shape == "merged":
            return [rlen], [wlen]
        if shape == "odd":
            r = [3, 13] + pieces(rlen - 16, [1, 511, 7, 4093])
            w = pieces(wlen, [1, 511, 7, 4093]) if wlen > 1 else [wlen]
            return r, w
        raise ValueError("unknown shape %r" % (shape,))


# ---- the connection -------------------------------------------------------------

class Frontend:
    """A vhost-user front-end connected to the back-end's socket PATH."""

    def __init__(self, path, timeout=5.0, connect_timeout=5.0):
        self.path = path
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        deadline = time.monotonic() + connect_timeout
        while True:
            try:
                self.sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        self.features = 0
        self.protocol_features = 0
        self.mem = None
        self.vqs = {}
        self._owned = []            # guest memory to close with the connection

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        for vq in self.vqs.values():
            vq.close()
        self.vqs = {}
        for mem in self._owned:
            mem.close()
        self._owned = []

    def own(self, mem):
        """MEM is closed with the connection; returns it."""
        self._owned.append(mem)
        return mem

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- raw messages
    def send(self, request, payload=b"", flags=VERSION, fds=(), size=None):
        """Sends one message: the header (SIZE defaults to the payload's
        length), the payload, FDS in the same sendmsg."""
        data = HEADER.pack(request, flags, len(payload) if size is None else size) + bytes(payload)
        if fds:
            socket.send_fds(self.sock, [data], list(fds))
        else:
            self.sock.sendall(data)

    def _recv_exact(self, n, timeout):
        buf = b""
        self.sock.settimeout(timeout)
        try:
            while len(buf) < n:
                chunk = self.sock.recv(n - len(buf))
                if not chunk:
                    raise ProtocolError("the back-end closed the connection%s"
                                        % (" in the middle of a reply" if buf else ""))
                buf += chunk
        except socket.timeout:
            raise ProtocolError("no reply within %.1f s (%d of %d bytes)" % (timeout, len(buf), n))
        except ConnectionResetError:
            raise ProtocolError("the back-end reset the connection")
        finally:
            self.sock.settimeout(None)
        return buf

    def recv(self, timeout=None):
        """Reads one message: (request, flags, payload)."""
        t = self.timeout if timeout is None else timeout
        request, flags, size = HEADER.unpack(self._recv_exact(HEADER.size, t))
        if size > MAX_PAYLOAD:
            raise ProtocolError("reply to %d announces %d bytes" % (request, size))
        return request, flags, self._recv_exact(size, t)

    def reply(self, request, size, timeout=None):
        """Reads the reply to REQUEST, which must have exactly SIZE bytes."""
        req, flags, payload = self.recv(timeout)
        if flags != VERSION | REPLY:
            raise ProtocolError("reply to %d has flags 0x%x, not 0x5" % (request, flags))
        if req != request:
            raise ProtocolError("reply to %d carries request id %d" % (request, req))
        if len(payload) != size:
            raise ProtocolError("reply to %d has %d bytes, not %d" % (request, len(payload), size))
        return payload

    def ack(self, request, timeout=None):
        """Reads a REPLY_ACK answer: the u64 (0 is success)."""
        return struct.unpack("<Q", self.reply(request, 8, timeout))[0]

    def no_reply(self, wait=0.3):
        """Checks nothing arrives within WAIT seconds (and the socket is open)."""
        r, _, _ = select.select([self.sock], [], [], wait)
        if r:
            data = self.sock.recv(4096, socket.MSG_PEEK)
            raise ProtocolError("unexpected %s" % ("EOF" if not data else
                                                   "bytes: %r" % data[:32]))

    def closed(self, timeout=5.0):
        """Whether the back-end closes the connection within TIMEOUT (data
        arriving first counts as open)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(4096)
                if not data:
                    return True
        except socket.timeout:
            return False
        except (ConnectionResetError, BrokenPipeError):
            return True
        finally:
            self.sock.settimeout(None)

    def call(self, request, payload=b"", fds=(), reply_size=None, need_reply=False):
        """Sends a message. REPLY_SIZE: returns its reply (of that size).
        NEED_REPLY (REPLY_ACK): sets the flag and returns the ack value.
        Otherwise returns None without waiting."""
        self.send(request, payload, VERSION | (NEED_REPLY if need_reply else 0), fds)
        if reply_size is not None:
            return self.reply(request, reply_size)
        if need_reply:
            return self.ack(request)
        return None

    def _acked(self):
        return bool(self.protocol_features & (1 << P_REPLY_ACK))

    def _set(self, request, payload=b"", fds=(), ack=None):
        """A message with no reply of its own: with REPLY_ACK negotiated (or
        ACK given), asks for the ack and checks it is 0 (ACK=False: returns it)."""
        want = self._acked() if ack is None else bool(ack)
        if not want:
            self.call(request, payload, fds)
            return None
        v = self.call(request, payload, fds, need_reply=True)
        if ack is None and v != 0:
            raise ProtocolError("message %d refused (ack %d)" % (request, v))
        return v

    # -- messages
    def u64(self, request):
        return struct.unpack("<Q", self.call(request, reply_size=8))[0]

    def get_features(self):
        return self.u64(GET_FEATURES)

    def get_protocol_features(self):
        return self.u64(GET_PROTOCOL_FEATURES)

    def get_queue_num(self):
        return self.u64(GET_QUEUE_NUM)

    def get_max_mem_slots(self):
        return self.u64(GET_MAX_MEM_SLOTS)

    def set_owner(self, ack=None):
        return self._set(SET_OWNER, ack=ack)

    def set_features(self, f, ack=None):
        self.features = f
        return self._set(SET_FEATURES, struct.pack("<Q", f), ack=ack)

    def set_protocol_features(self, f, ack=None):
        self.protocol_features = f
        return self._set(SET_PROTOCOL_FEATURES, struct.pack("<Q", f), ack=ack)

    def get_config(self, size=60, offset=0, flags=0):
        """GET_CONFIG: returns SIZE bytes of the configuration space from OFFSET."""
        p = self.call(GET_CONFIG, struct.pack("<III", offset, size, flags) + bytes(size),
                      reply_size=12 + size)
        o, s, f = struct.unpack_from("<III", p)
        if (o, s, f) != (offset, size, flags):
            raise ProtocolError("GET_CONFIG reply header (%d, %d, %d), asked (%d, %d, %d)"
                                % (o, s, f, offset, size, flags))
        return p[12:]

    def config(self):
        """The 60-byte configuration space as a dict."""
        vals = CONFIG.unpack(self.get_config(60))
        return {name: v for (name, _), v in zip(CONFIG_FIELDS, vals)}

    def set_config(self, offset, data, flags=0, ack=None):
        return self._set(SET_CONFIG, struct.pack("<III", offset, len(data), flags) + bytes(data),
                         ack=ack)

    def set_mem_table(self, mem, regions=None, ack=None):
        """SET_MEM_TABLE with MEM's regions (or REGIONS of it), one fd each."""
        self.mem = mem
        regions = mem.regions if regions is None else regions
        payload = struct.pack("<II", len(regions), 0) + b"".join(r.pack() for r in regions)
        return self._set(SET_MEM_TABLE, payload, [r.fd for r in regions], ack=ack)

    def add_mem_reg(self, region, ack=None):
        return self._set(ADD_MEM_REG, struct.pack("<Q", 0) + region.pack(), [region.fd], ack=ack)

    def rem_mem_reg(self, region, ack=None):
        return self._set(REM_MEM_REG, struct.pack("<Q", 0) + region.pack(), ack=ack)

    def vring_state(self, request, index, num, ack=None):
        return self._set(request, struct.pack("<II", index, num), ack=ack)

    def set_vring_num(self, index, num, ack=None):
        return self.vring_state(SET_VRING_NUM, index, num, ack)

    def set_vring_base(self, index, num, ack=None):
        return self.vring_state(SET_VRING_BASE, index, num, ack)

    def set_vring_enable(self, index, on=True, ack=None):
        return self.vring_state(SET_VRING_ENABLE, index, int(on), ack)

    def set_vring_addr(self, index, desc, used, avail, flags=0, log=0, ack=None):
        return self._set(SET_VRING_ADDR, struct.pack("<IIQQQQ", index, flags, desc, used, avail,
                                                     log), ack=ack)

    def set_vring_fd(self, request, index, fd, ack=None):
        """SET_VRING_KICK/CALL/ERR: FD None sends the NOFD flag."""
        v = index | (VRING_NOFD if fd is None else 0)
        return self._set(request, struct.pack("<Q", v), [] if fd is None else [fd], ack=ack)

    def get_vring_base(self, index, timeout=None):
        """Stops ring INDEX; returns the next avail index the back-end would take."""
        self.send(GET_VRING_BASE, struct.pack("<II", index, 0))
        i, num = struct.unpack("<II", self.reply(GET_VRING_BASE, 8, timeout))
        if i != index:
            raise ProtocolError("GET_VRING_BASE reply for ring %d, asked %d" % (i, index))
        return num

    # -- composites
    def negotiate(self, want=None, protocol=None, event_idx=True, indirect=True):
        """The Cloud Hypervisor order: SET_OWNER, features, protocol features,
        queue count, config, then SET_FEATURES. WANT masks the device's
        features (default: all of them); EVENT_IDX and INDIRECT drop those two
        bits when false. PROTOCOL: the protocol features to ask (default: all
        offered). Returns the features set."""
        self.set_owner(ack=False)
        offered = self.get_features()
        if not offered & (1 << F_PROTOCOL_FEATURES):
            raise ProtocolError("PROTOCOL_FEATURES not offered: 0x%x" % offered)
        self.offered = offered
        poff = self.get_protocol_features()
        self.offered_protocol = poff
        self.set_protocol_features(poff if protocol is None else (poff & protocol), ack=False)
        if self.protocol_features & (1 << P_MQ):
            self.queue_num = self.get_queue_num()
        self.cfg = self.config()
        f = offered if want is None else (offered & want)
        f |= (1 << F_PROTOCOL_FEATURES) | (1 << F_VERSION_1)
        if not event_idx:
            f &= ~(1 << F_EVENT_IDX)
        if not indirect:
            f &= ~(1 << F_INDIRECT_DESC)
        self.set_features(f)
        return f

    def setup_queue(self, index, num=128, mem=None, enable=True, base=0):
        """Lays out ring INDEX of NUM entries in guest memory and hands it over
        (NUM, BASE, ADDR, CALL, ERR, KICK, ENABLE). Returns the Virtqueue."""
        mem = mem or self.mem
        vq = Virtqueue(mem, index, num, event_idx=bool(self.features & (1 << F_EVENT_IDX)))
        vq.avail_idx = vq.last_used = base
        mem.set_u16(vq.avail + 2, base)
        mem.set_u16(vq.used + 2, base)
        self.vqs[index] = vq
        self.set_vring_num(index, num)
        self.set_vring_base(index, base)
        self.set_vring_addr(index, *vq.addrs())
        self.set_vring_fd(SET_VRING_CALL, index, vq.call_fd)
        self.set_vring_fd(SET_VRING_ERR, index, vq.err_fd)
        self.set_vring_fd(SET_VRING_KICK, index, vq.kick_fd)
        if enable:
            self.set_vring_enable(index, True)
        return vq

    def resume_queue(self, vq, base, kick_fd=None):
        """Restarts stopped ring VQ at avail index BASE, as QEMU does after a
        GET_VRING_BASE (NUM, BASE, ADDR, CALL, KICK, ENABLE); KICK_FD: a new
        kick eventfd (the old one is no longer watched)."""
        if kick_fd is not None:
            os.close(vq.kick_fd)
            vq.kick_fd = kick_fd
        self.set_vring_num(vq.index, vq.num)
        self.set_vring_base(vq.index, base)
        self.set_vring_addr(vq.index, *vq.addrs())
        self.set_vring_fd(SET_VRING_CALL, vq.index, vq.call_fd)
        self.set_vring_fd(SET_VRING_KICK, vq.index, vq.kick_fd)
        self.set_vring_enable(vq.index, True)

    def start(self, mem=None, queues=1, num=128, **negotiate):
        """negotiate(), SET_MEM_TABLE (MEM or a fresh 4 MiB of our own), QUEUES rings."""
        self.negotiate(**negotiate)
        self.set_mem_table(mem or self.own(GuestMemory()))
        for q in range(queues):
            self.setup_queue(q, num)
        return self

    # -- virtio-blk, synchronously
    def do(self, q, rtype, sector=0, out=b"", in_len=0, timeout=5.0, interrupt=True, **kw):
        """Submits one request on queue Q, kicks, waits; returns the Request."""
        vq = self.vqs[q]
        req = vq.blk_request(rtype, sector, out, in_len, **kw)
        vq.kick()
        vq.wait([req], timeout, interrupt)
        return req

    def expect(self, req, status, what):
        s = req.status()
        if s != status:
            raise AssertionError("%s: status %s, expected %s"
                                 % (what, status_name(s), status_name(status)))
        return req

    def read(self, q, sector, n, **kw):
        req = self.expect(self.do(q, T_IN, sector, in_len=n, **kw), S_OK,
                          "read of %d bytes at sector %d" % (n, sector))
        if req.used_len != n + 1:
            raise AssertionError("read: used length %d, expected %d" % (req.used_len, n + 1))
        return req.data()

    def write(self, q, sector, data, **kw):
        req = self.expect(self.do(q, T_OUT, sector, out=data, **kw), S_OK,
                          "write of %d bytes at sector %d" % (len(data), sector))
        if req.used_len != 1:
            raise AssertionError("write: used length %d, expected 1" % req.used_len)
        return req

    def flush(self, q, **kw):
        return self.expect(self.do(q, T_FLUSH, **kw), S_OK, "flush")

    def get_id(self, q, in_len=ID_BYTES, **kw):
        req = self.expect(self.do(q, T_GET_ID, in_len=in_len, **kw), S_OK, "GET_ID")
        return req.data()

    def zeroes_request(self, q, rtype, sector, nsectors, flags=0, **kw):
        """DISCARD or WRITE_ZEROES of one segment; returns the Request."""
        seg = struct.pack("<QII", sector, nsectors, flags)
        return self.do(q, rtype, 0, out=seg, **kw)

    def discard(self, q, sector, nsectors, **kw):
        return self.expect(self.zeroes_request(q, T_DISCARD, sector, nsectors, **kw), S_OK,
                           "discard")

    def write_zeroes(self, q, sector, nsectors, unmap=False, **kw):
        return self.expect(self.zeroes_request(q, T_WRITE_ZEROES, sector, nsectors,
                                               WZ_UNMAP if unmap else 0, **kw), S_OK,
                           "write zeroes")

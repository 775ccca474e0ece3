"""Power cuts under a random workload, for blockd's raw and overlay engines.

blockd serves an image on faultfs. A random workload of writes (some FUA),
trims, zeroes (with and without NO_HOLE; some FUA), flushes and reads (checked
at once) runs with 1..4 requests in flight over one or two connections; then
blockd is killed with SIGKILL while requests may still be in flight, faultfs cuts the power (drop, random or torn: see
faultfs.c), blockd restarts on what survived, and the whole disk is read back
and checked against a model, sector by sector:

  - every sector reads as its durable value or as a value written after it;
  - a value is durable once a FLUSH reply arrives for a request whose reply
    arrived before that FLUSH was sent, or at the reply of a FUA request;
  - a trim reads back as zeroes or unchanged;
  - on an overlay, base data is a candidate only until a flushed (or FUA)
    write, trim or zero covers the sector: a flushed trim that lets base data
    resurface fails;
  - the overlay reopens after every cut (blockd starts).

Each sector's payload names the write and the sector (8-byte generation,
8-byte sector number, repeated), so a sector written to the wrong place, a
torn sector or an old generation is recognised. What is read back after a cut
becomes the next cycle's durable baseline.

Before the campaign the checker proves it can fail: a unit check on a
hand-made history, and one cycle run under a deliberately wrong durability
assumption (every acknowledged write durable, no flushes) that must be
caught after a `drop` cut.

Env: BLOCKD_POWERCUT_CUTS (cuts per engine, default 15), BLOCKD_POWERCUT_SEED
(replay: the same workloads, cut modes and cut seeds; which requests are still
in flight at each kill depends on timing), BLOCKD_POWERCUT_ENGINES (default
"raw overlay"), BLOCKD_POWERCUT_CLUSTER (overlay cluster bytes; default 4096
or 65536, chosen by the seed). A long campaign, about 0.3 s per cut:
  BLOCKD_POWERCUT_CUTS=1000 meson test -C build powerfail-powercut -t 20 -v"""
import os
import random
import select
import struct
import sys
import time

import nbd

from pflib import check, fsync_file, img, main, powerfail_rig, require_faultfs

SIZE = 16 << 20
SECTOR = 512
NSECT = SIZE // SECTOR
ZERO = 0                       # value of an all-zero sector
BASE = -1                      # value of a sector holding the overlay's base data
BASE_TAG = 0xBA5EBA5EBA5EBA5E  # generation field of base data
ZERO_SECTOR = bytes(SECTOR)

CUTS = int(os.environ.get("BLOCKD_POWERCUT_CUTS", "15"))
SEED = int(os.environ.get("BLOCKD_POWERCUT_SEED", random.SystemRandom().randrange(1 << 32)))
ENGINES = os.environ.get("BLOCKD_POWERCUT_ENGINES", "raw overlay").split()
CLUSTER = int(os.environ.get("BLOCKD_POWERCUT_CLUSTER", "0"))


def payload(gen, sector):
    """The 512 bytes that write GEN puts in SECTOR."""
    return struct.pack("<QQ", gen, sector) * (SECTOR // 16)


def base_image():
    """The overlay base: every sector recognisable as base data."""
    return b"".join(payload(BASE_TAG, s) for s in range(NSECT))


def classify(b, s):
    """What B, the 512 bytes read at sector S, holds: ZERO, BASE, a write
    generation, or None (garbage: torn inside a sector, misplaced, unknown)."""
    if b == ZERO_SECTOR:
        return ZERO
    gen, sec = struct.unpack_from("<QQ", b)
    if sec != s or b != payload(gen, s):
        return None
    return BASE if gen == BASE_TAG else gen


def describe(v):
    return {ZERO: "zeroes", BASE: "base data", None: "garbage"}.get(v, "write #%s" % v)


class Model:
    """What each sector may hold after a power cut.

    Per sector: DUR, the set of values known durable (one value, or zeroes
    and the previous value for a trim), and LATER, the (op id, value set) of
    every request sent since, acknowledged or not. LOGICAL is the value set a
    read returns now (before any cut). Requests on one sector never overlap
    in time, so per sector they are totally ordered.

    IMAGE is the disk as read back at the last rebase. A sector no request
    touched since must read exactly as then; comparing 4 KiB at a time finds
    the few that do not, so only touched or changed sectors are decoded."""

    CHUNK = 4096

    def __init__(self, initial, overlay):
        self.overlay = overlay
        self.nsect = len(initial)
        self.dur = [frozenset((v,)) for v in initial]
        self.image = None
        self.later = {}
        self.logical = {}
        self.seen = {}

    def cur(self, s):
        return self.logical.get(s, self.dur[s])

    def issue(self, op):
        """OP is being sent: its value becomes a candidate for its sectors."""
        for s in op.sectors():
            if op.kind == "write":
                v = frozenset((op.gen,))
            elif op.kind == "zero":
                v = frozenset((ZERO,))
            else:
                # Trim: zeroes or unchanged; an overlay never shows its base
                # again once trimmed (docs/overlay-format.md).
                prev = self.cur(s) - {BASE} if self.overlay else self.cur(s)
                v = frozenset((ZERO,)) | prev
            self.later.setdefault(s, []).append((op.id, v))
            self.logical[s] = v

    def durable(self, op):
        """OP's effect is durable: it and everything before it on its sectors."""
        for s in op.sectors():
            lst = self.later.get(s)
            if not lst:
                continue
            for j, (oid, v) in enumerate(lst):
                if oid == op.id:
                    self.dur[s] = v - {BASE} if self.overlay else v
                    del lst[:j + 1]
                    break

    def allowed(self, s):
        a = set(self.dur[s])
        for _, v in self.later.get(s, ()):
            a |= v
        return a

    def check(self, data):
        """Checks DATA, the whole disk read back after a cut; returns the
        violations [(sector, value read)]. Call rebase(DATA) next."""
        if self.image is None:
            suspects = range(self.nsect)
        else:
            suspects = set(self.later)
            new, old = memoryview(data), memoryview(self.image)
            per = self.CHUNK // SECTOR
            for off in range(0, len(data), self.CHUNK):
                if new[off:off + self.CHUNK] != old[off:off + self.CHUNK]:
                    suspects.update(range(off // SECTOR, off // SECTOR + per))
            suspects = sorted(suspects)
        bad = []
        self.seen = {}
        for s in suspects:
            v = classify(data[s * SECTOR:(s + 1) * SECTOR], s)
            self.seen[s] = v
            if v is None or v not in self.allowed(s):
                bad.append((s, v))
        return bad

    def rebase(self, data):
        """After a check: what was read back is the new durable state."""
        for s, v in self.seen.items():
            self.dur[s] = frozenset((v,))
        self.image = data
        self.later = {}
        self.logical = {}
        self.seen = {}


class Op:
    """One NBD request of the workload."""
    __slots__ = ("id", "kind", "first", "count", "flags", "gen", "h", "cookie", "buf",
                 "acked", "covers")

    def __init__(self, oid, kind, first=0, count=0, flags=0, gen=0):
        self.id = oid
        self.kind = kind          # write, trim, zero, flush, read
        self.first = first        # first sector
        self.count = count        # sectors
        self.flags = flags        # NBD command flags
        self.gen = gen            # write generation
        self.h = None             # the connection it goes on
        self.cookie = None        # libnbd's
        self.buf = None           # its nbd.Buffer, alive until the reply
        self.acked = False        # its reply arrived, without error
        self.covers = ()          # flush: ops acknowledged before it was sent

    def sectors(self):
        return range(self.first, self.first + self.count)

    def __repr__(self):
        f = []
        if self.flags & nbd.CMD_FLAG_FUA:
            f.append("FUA")
        if self.flags & nbd.CMD_FLAG_NO_HOLE:
            f.append("NO_HOLE")
        what = "%s sectors %d..%d (offset %d, %d bytes)" % (
            self.kind, self.first, self.first + self.count - 1, self.first * SECTOR,
            self.count * SECTOR) if self.count else self.kind
        return "op %d: %s%s%s%s" % (self.id, what, " gen %d" % self.gen if self.gen else "",
                                    " [%s]" % ",".join(f) if f else "",
                                    " acked" if self.acked else " not acked")


class Campaign:
    """Cycles of workload, SIGKILL, power cut, restart and check on one engine."""

    def __init__(self, rig, engine, rng, cluster=None):
        self.rig = rig
        self.engine = engine
        self.rng = rng
        self.fs = rig.fs
        self.next_id = 1
        self.next_gen = 1
        self.history = {}      # op id -> Op, for failure reports
        self.stats = dict(cuts=0, ops=0, acked=0, flushes=0, fua=0, bytes=0, inflight_at_kill=0)
        self.cluster = cluster
        if engine == "raw":
            self.image = self.fs.path("disk.img")
            img("create", "-s", str(SIZE), self.image)
            initial = [ZERO] * NSECT
        else:
            base = self.fs.path("base.img")
            with open(base, "wb") as f:
                f.write(base_image())
            fsync_file(base)
            self.image = self.fs.path("ws.ovl")
            img("create", "-c", str(cluster), "-b", base, self.image)
            initial = [BASE] * NSECT
        fsync_file(self.image)
        self.model = Model(initial, engine == "overlay")
        self.server = rig.server("--export", "d=%s,format=%s" % (self.image, engine))

    def fail(self, msg):
        print("---- blockd log (tail) ----\n" + self.server.logtext()[-4000:], file=sys.stderr)
        print("---- faultfs log (tail) ----\n" + self.fs.logtext()[-2000:], file=sys.stderr)
        raise AssertionError("%s (engine %s, SEED=%d)" % (msg, self.engine, SEED))

    def new_op(self, kind, **kw):
        op = Op(self.next_id, kind, **kw)
        self.next_id += 1
        self.history[op.id] = op
        return op

    def pick_range(self, maxcount):
        """A random run of sectors: (first, count)."""
        rng = self.rng
        if rng.random() < 0.7:
            # Mostly in a hot window, so requests rewrite, trim and zero
            # each other's sectors and share overlay clusters.
            first = self.hot + rng.randrange(self.hot_len)
        else:
            first = rng.randrange(NSECT)
        if rng.random() < 0.2:
            first -= first % 128      # 64 KiB aligned: whole overlay clusters
        return first, min(rng.randint(1, maxcount), NSECT - first)

    def make_op(self, broken):
        """The next request, drawn from the seed alone (not from timing), so a
        seed replays the same requests."""
        rng = self.rng
        r = rng.random()
        if broken:
            kind = "write"
        elif r < 0.50:
            kind = "write"
        elif r < 0.62:
            kind = "trim"
        elif r < 0.74:
            kind = "zero"
        elif r < 0.90:
            kind = "flush"
        else:
            kind = "read"
        if kind == "flush":
            return self.new_op("flush")
        maxcount = 32 if kind in ("write", "read") else rng.choice((8, 64, 256))
        first, count = self.pick_range(maxcount)
        flags = 0
        if kind != "read" and not broken and rng.random() < 0.2:
            flags |= nbd.CMD_FLAG_FUA
        if kind == "zero" and rng.random() < 0.5:
            flags |= nbd.CMD_FLAG_NO_HOLE
        op = self.new_op(kind, first=first, count=count, flags=flags)
        if kind == "write":
            op.gen = self.next_gen
            self.next_gen += 1
        return op

    def issue(self, op, acked_not_durable):
        h = op.h
        off, length = op.first * SECTOR, op.count * SECTOR
        if op.kind == "write":
            data = b"".join(payload(op.gen, s) for s in op.sectors())
            op.buf = nbd.Buffer.from_bytearray(bytearray(data))
            op.cookie = h.aio_pwrite(op.buf, off, flags=op.flags)
        elif op.kind == "trim":
            op.cookie = h.aio_trim(length, off, flags=op.flags)
        elif op.kind == "zero":
            op.cookie = h.aio_zero(length, off, flags=op.flags)
        elif op.kind == "read":
            op.buf = nbd.Buffer(length)
            op.cookie = h.aio_pread(op.buf, off)
        else:
            # Covers exactly the requests whose replies we have seen.
            op.covers = list(acked_not_durable)
            op.cookie = h.aio_flush()
        if op.kind in ("write", "trim", "zero"):
            self.model.issue(op)

    def completed(self, op, acked_not_durable, broken):
        """OP's reply arrived without error."""
        op.acked = True
        self.stats["acked"] += 1
        if op.kind == "flush":
            self.stats["flushes"] += 1
            for o in op.covers:
                self.model.durable(o)
            covered = set(id(o) for o in op.covers)
            acked_not_durable[:] = [o for o in acked_not_durable if id(o) not in covered]
        elif op.kind == "read":
            data = bytes(op.buf.to_bytearray())
            for i, s in enumerate(op.sectors()):
                v = classify(data[i * SECTOR:(i + 1) * SECTOR], s)
                if v not in self.model.cur(s):
                    self.fail("live read (no cut) of sector %d returned %s, expected %s"
                              % (s, describe(v), "/".join(describe(x) for x in self.model.cur(s))))
        else:
            if op.flags & nbd.CMD_FLAG_FUA or broken:
                self.stats["fua"] += 1 if op.flags & nbd.CMD_FLAG_FUA else 0
                self.model.durable(op)
            else:
                acked_not_durable.append(op)

    def reap(self, inflight, busy, acked_not_durable, broken):
        """Takes the replies that arrived; returns the ops still in flight."""
        still = []
        for op in inflight:
            try:
                done = op.h.aio_command_completed(op.cookie)
            except nbd.Error as e:
                self.fail("%r failed before any cut: %s" % (op, e))
            if done:
                busy.difference_update(op.sectors())
                self.completed(op, acked_not_durable, broken)
            else:
                still.append(op)
        return still

    def workload(self, hs, nops, depth, broken=False):
        """Runs NOPS requests with up to DEPTH in flight, spread over the
        connections HS (blockd advertises CAN_MULTI_CONN: a flush on one
        covers writes acknowledged on any); returns the ops still in flight
        when the last was sent (the kill comes next)."""
        rng = self.rng
        self.hot_len = rng.choice((256, 2048, 8192))
        self.hot = rng.randrange(NSECT - self.hot_len)
        inflight = []
        busy = set()
        acked_not_durable = []
        for _ in range(nops):
            op = self.make_op(broken)
            op.h = rng.choice(hs)
            # Room for it, and nothing else in flight on its sectors.
            while len(inflight) >= depth or not busy.isdisjoint(op.sectors()):
                wait(hs, None)
                inflight = self.reap(inflight, busy, acked_not_durable, broken)
            self.issue(op, acked_not_durable)
            self.stats["ops"] += 1
            inflight.append(op)
            busy.update(op.sectors())
        # Let a random part of the tail complete, then the kill comes.
        deadline = time.monotonic() + rng.choice((0, 0, 0.0005, 0.002))
        while inflight and time.monotonic() < deadline:
            wait(hs, max(0, deadline - time.monotonic()))
            inflight = self.reap(inflight, busy, acked_not_durable, broken)
        return inflight

    def read_all(self, h):
        return h.pread(SIZE, 0)

    def cycle(self, k, broken=False, mode=None, nops=None):
        """One cycle: workload, kill, cut, restart, check. Returns (disk, violations)."""
        rng = self.rng
        nops = nops or rng.randint(10, 200)
        depth = rng.randint(1, 4)
        nconn = rng.choice((1, 1, 2))
        hs = [self.server.connect("d") for _ in range(nconn)]
        inflight = self.workload(hs, nops, depth, broken)
        self.stats["inflight_at_kill"] += len(inflight)
        self.server.kill()
        del hs, inflight
        mode = mode or rng.choice(("drop", "random", "torn"))
        cut_seed = rng.getrandbits(63)
        self.fs.cut(cut_seed, mode)
        self.last = (mode, cut_seed, nops, depth, nconn)
        try:
            self.server.start()
        except AssertionError as e:
            self.fail("cut %d (%s, seed %d): blockd does not restart on what survived: %s"
                      % (k, mode, cut_seed, e))
        data = self.read_all(self.server.connect("d"))
        bad = self.model.check(data)
        if not broken:
            self.stats["bytes"] += SIZE
            self.stats["cuts"] += 1
        return data, bad

    def report(self, k, bad):
        """Describes violations BAD found after cut K, with the history of the
        first few sectors involved."""
        mode, cut_seed, nops, depth, nconn = self.last
        lines = ["cut %d (mode %s, faultfs seed %d, %d ops, depth %d, %d connections): "
                 "%d sectors hold what no durable or later request wrote"
                 % (k, mode, cut_seed, nops, depth, nconn, len(bad))]
        for s, v in bad[:5]:
            lines.append("  sector %d (offset %d): read %s; durable %s; later %s"
                         % (s, s * SECTOR, describe(v),
                            "/".join(describe(x) for x in sorted(self.model.dur[s], key=str)),
                            ", ".join("op %d" % oid for oid, _ in self.model.later.get(s, ()))
                            or "none"))
            for op in self.history.values():
                if op.count and op.first <= s < op.first + op.count:
                    lines.append("    %r" % op)
        return "\n".join(lines)

    def run(self, cuts):
        self.server.start()
        data = self.read_all(self.server.connect("d"))
        bad = self.model.check(data)
        if bad:
            self.last = ("none", 0, 0, 0, 0)
            self.fail("fresh image does not read as expected: " + self.report(0, bad))
        self.model.rebase(data)
        for k in range(1, cuts + 1):
            data, bad = self.cycle(k)
            if bad:
                self.fail(self.report(k, bad))
            self.model.rebase(data)
            self.history.clear()
            if k % 100 == 0:
                print("%s: %d cuts survived" % (self.engine, k))
                sys.stdout.flush()
        self.server.kill()

    def selftest_broken(self):
        """One cycle assuming every acknowledged write is durable, without
        flushes, and a drop cut: the checker must catch it."""
        self.server.start()
        data = self.read_all(self.server.connect("d"))
        self.model.check(data)
        self.model.rebase(data)
        data, bad = self.cycle(0, broken=True, mode="drop", nops=20)
        self.server.kill()
        self.model.rebase(data)
        self.history.clear()
        return bad


def wait(hs, timeout):
    """Waits until one of the libnbd handles HS can make progress (or
    TIMEOUT seconds, None: forever) and lets it."""
    rd, wr = {}, {}
    for h in hs:
        d = h.aio_get_direction()
        if d & nbd.AIO_DIRECTION_READ:
            rd[h.aio_get_fd()] = h
        if d & nbd.AIO_DIRECTION_WRITE:
            wr[h.aio_get_fd()] = h
    r, w, _ = select.select(list(rd), list(wr), [], timeout)
    for fd in r:
        rd[fd].aio_notify_read()
    for fd in w:
        wr[fd].aio_notify_write()


def unit_check():
    """The checker flags what it must on hand-made histories (16 sectors)."""
    n = 16

    def disk(vals, fill=ZERO):
        out = bytearray()
        for s in range(n):
            v = vals.get(s, fill)
            out += ZERO_SECTOR if v == ZERO else payload(BASE_TAG if v == BASE else v, s)
        return bytes(out)

    def fresh(initial, overlay):
        m = Model([initial] * n, overlay)
        d = disk({}, initial)
        check(m.check(d) == [], "checker: a fresh disk is refused")
        m.rebase(d)
        return m

    m = fresh(ZERO, False)
    w1 = Op(1, "write", first=5, count=1, gen=1)
    w2 = Op(2, "write", first=5, count=1, gen=2)
    m.issue(w1)
    m.durable(w1)             # flushed
    m.issue(w2)               # acknowledged or in flight, not flushed
    check(m.check(disk({5: 1})) == [], "checker: durable value refused")
    check(m.check(disk({5: 2})) == [], "checker: later value refused")
    check(m.check(disk({})) == [(5, ZERO)], "checker: a flushed write lost is not flagged")
    garbled = bytearray(disk({5: 1}))
    garbled[5 * SECTOR + 100] ^= 1
    check(m.check(bytes(garbled)) == [(5, None)], "checker: garbage not flagged")
    misplaced = bytearray(disk({5: 1}))
    misplaced[6 * SECTOR:7 * SECTOR] = payload(1, 5)
    check(m.check(bytes(misplaced)) == [(6, None)], "checker: misplaced sector not flagged")
    check(m.check(disk({5: 1, 9: 1})) == [(9, 1)],
          "checker: an untouched sector that changed not flagged")
    t = Op(3, "trim", first=5, count=1)
    m.issue(t)
    m.durable(t)
    check(m.check(disk({})) == [] and m.check(disk({5: 2})) == [],
          "checker: a flushed trim reads zeroes or unchanged")
    check(m.check(disk({5: 1})) == [(5, 1)],
          "checker: a value older than the one the flushed trim left accepted")
    m.rebase(disk({5: 2}))
    check(m.check(disk({})) == [(5, ZERO)], "checker: the read-back baseline not kept")

    o = fresh(BASE, True)
    t = Op(1, "trim", first=7, count=2)
    o.issue(t)
    check(o.check(disk({}, BASE)) == [], "checker: unflushed overlay trim may show the base")
    o.durable(t)
    bad = o.check(disk({}, BASE))
    check(bad == [(7, BASE), (8, BASE)], "checker: base data after a flushed trim: %r" % bad)
    check(o.check(disk({7: ZERO, 8: ZERO}, BASE)) == [], "checker: flushed overlay trim "
          "reads zeroes")


def run():
    require_faultfs()
    print("SEED=%d (replay: BLOCKD_POWERCUT_SEED=%d), %d cuts per engine, engines %s"
          % (SEED, SEED, CUTS, " ".join(ENGINES)))
    unit_check()
    t0 = time.monotonic()
    rng = random.Random(SEED)
    results = []
    with powerfail_rig() as rig:
        # The test can fail: a wrong durability assumption is caught.
        c = Campaign(rig, "raw", random.Random(SEED ^ 0x5e1f))
        bad = c.selftest_broken()
        check(bad, "self-test: assuming unflushed writes durable went unnoticed after a "
              "drop cut (faultfs keeps unsynced data, or the checker is vacuous)")
        print("self-test: the wrong assumption 'acknowledged = durable' is caught "
              "(%d sectors)" % len(bad))
        os.unlink(c.image)
        for engine in ENGINES:
            t = time.monotonic()
            cluster = rng.choice((4096, 65536)) if engine == "overlay" else None
            if cluster and CLUSTER:
                cluster = CLUSTER
            c = Campaign(rig, engine, random.Random(rng.getrandbits(64)), cluster)
            c.run(CUTS)
            st = c.stats
            results.append("%s%s: %d cuts survived, %d operations (%d acknowledged, %d flushes, "
                           "%d FUA, %d in flight at the kills), %d bytes verified, %.1f s"
                           % (engine, " (%d KiB clusters)" % (cluster // 1024) if cluster else "",
                              st["cuts"], st["ops"], st["acked"], st["flushes"], st["fua"],
                              st["inflight_at_kill"], st["bytes"], time.monotonic() - t)
                           + ("; %d restarts waited for the killed blockd's lock"
                              % c.server.lock_retries if c.server.lock_retries else ""))
            for f in os.listdir(rig.fs.mnt):
                os.unlink(rig.fs.path(f))
        print("faultfs counters:", rig.fs.counters())
    for line in results:
        print(line)
    print("total %.1f s" % (time.monotonic() - t0))


main(run)

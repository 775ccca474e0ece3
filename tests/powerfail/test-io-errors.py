"""I/O errors injected under blockd, for the raw and overlay engines.

One blockd serves two exports: `a` on faultfs (the engine under test) and
`b`, a raw image on the ordinary file system next to it. With libnbd:

  - an injected write EIO reaches the client as EIO, `b` keeps serving, and
    a later write to `a` works; a write ENOSPC arrives as ENOSPC; read and
    trim (fallocate) errors too, through blockd's io_uring paths;
  - fsync failure, as Linux reports it: the unsynced data is gone and the
    error is reported once. The request that meets it (a FLUSH, with EIO; in
    a second round a FUA write, with ENOSPC) must fail with that error, and
    every later flush MUST ALSO FAIL: acknowledging one would claim durable the writes the failed fsync
    lost ("sticky" flush error). Meanwhile no read may silently return data
    nobody wrote (EIO is fine), and `b` keeps serving;
  - after each round, a SIGKILL and a power cut: everything flushed before
    the fsync failure is intact, no byte reads as something never written (on
    an overlay, a bitmap bit must not vouch for data the failed fsync lost),
    and whatever blockd acknowledged as durable after the failure survived.

Every check runs; the failures are listed together at the end."""
import errno
import os
import struct

import nbd

from pflib import check, fsync_file, img, main, nbd_errno, powerfail_rig, require_faultfs

SIZE = 16 << 20
SECTOR = 512
CLUSTER = 64 * 1024
CSECT = CLUSTER // SECTOR
BASE_TAG = 0xBA5EBA5EBA5EBA5E

failures = []


def expect(cond, msg):
    """A check that does not stop the test: failures are reported at the end."""
    if not cond:
        print("FAILED CHECK: " + msg)
        failures.append(msg)
    return cond


def errname(e):
    return "no error" if e == 0 else errno.errorcode.get(e, str(e))


def payload(gen, first, count):
    """COUNT sectors from FIRST, each naming GEN and its sector."""
    return b"".join(struct.pack("<QQ", gen, s) * (SECTOR // 16)
                    for s in range(first, first + count))


class Case:
    """One engine: export `a` on faultfs, `b` beside it, both in one blockd."""

    def __init__(self, rig, engine):
        self.rig = rig
        self.fs = fs = rig.fs
        self.engine = engine
        self.tag = "[%s] " % engine
        if engine == "raw":
            self.path = fs.path("a.img")
            img("create", "-s", str(SIZE), self.path)
        else:
            base = fs.path("base.img")
            with open(base, "wb") as f:
                f.write(payload(BASE_TAG, 0, SIZE // SECTOR))
            fsync_file(base)
            self.path = fs.path("ws.ovl")
            img("create", "-c", str(CLUSTER), "-b", base, self.path)
        fsync_file(self.path)
        self.name = os.path.basename(self.path)
        self.bpath = os.path.join(rig.tmp, "b.img")
        img("create", "-s", str(SIZE), self.bpath)
        self.srv = rig.server("--export", "a=%s,format=%s" % (self.path, engine),
                              "--export", "b=%s,format=raw" % self.bpath)
        self.gen = 1
        self.durable = {}   # first sector -> bytes that must survive anything from now on

    def initial(self, first, count):
        """What sectors read before anything is written to them."""
        if self.engine == "raw":
            return bytes(count * SECTOR)
        return payload(BASE_TAG, first, count)

    def start(self):
        self.srv.start()
        self.ha = self.srv.connect("a")
        self.hb = self.srv.connect("b")

    def write(self, first, count, flags=0):
        """Writes fresh data to `a`; returns (data, errno)."""
        self.gen += 1
        data = payload(self.gen, first, count)
        return data, nbd_errno(self.ha.pwrite, data, first * SECTOR, flags)

    def serves(self, what):
        """Export b (ordinary file system) writes, flushes and reads back."""
        self.gen += 1
        data = payload(self.gen, 64, 8)
        hb = self.hb
        e = nbd_errno(hb.pwrite, data, 64 * SECTOR) or nbd_errno(hb.flush)
        ok = e == 0 and hb.pread(len(data), 64 * SECTOR) == data
        expect(ok, self.tag + "%s: export b stopped serving normally (%s)" % (what, errname(e)))

    def durable_intact(self, what):
        for first, want in self.durable.items():
            expect(self.ha.pread(len(want), first * SECTOR) == want,
                   self.tag + "%s: data flushed before any fault (sector %d) lost" % (what, first))

    def simple_errors(self):
        """Write EIO and ENOSPC, read and fallocate EIO: reported, harmless."""
        tag, fs = self.tag, self.fs
        p0, e = self.write(0, 512)
        check(e == 0 and nbd_errno(self.ha.flush) == 0, tag + "baseline write and flush failed")
        self.durable[0] = p0
        self.serves("before any fault")

        fs.ctl("fail write EIO 1 %s" % self.name)
        _, e = self.write(1024, 8)
        expect(e == errno.EIO, tag + "write with an injected EIO: got %s, expected EIO"
               % errname(e))
        self.serves("after a write EIO on a")
        data, e = self.write(1024, 8)
        expect(e == 0 and self.ha.pread(len(data), 1024 * SECTOR) == data,
               tag + "a write after the EIO does not work (%s)" % errname(e))
        self.durable[1024] = data

        fs.ctl("fail write ENOSPC 1")
        _, e = self.write(1100, 8)
        expect(e == errno.ENOSPC, tag + "write with an injected ENOSPC: got %s, expected ENOSPC"
               % errname(e))
        data, e = self.write(1100, 8)
        expect(e == 0, tag + "a write after the ENOSPC failed: %s" % errname(e))
        self.durable[1100] = data

        # Reads of owned/raw data are io_uring READs; a trim without FUA is
        # an io_uring fallocate on raw, a punch on the pool for an overlay.
        fs.ctl("fail read EIO 1 %s" % self.name)
        e = nbd_errno(self.ha.pread, 4096, 0)
        expect(e == errno.EIO, tag + "read with an injected EIO: got %s" % errname(e))
        fs.ctl("fail fallocate EIO 1 %s" % self.name)
        e = nbd_errno(self.ha.trim, 4096, 1024 * SECTOR)
        expect(e == errno.EIO, tag + "trim with an injected fallocate EIO: got %s" % errname(e))
        fs.ctl("clear")
        e = nbd_errno(self.ha.flush)
        expect(e == 0, tag + "flush after write/read/trim errors failed: %s" % errname(e))
        self.durable_intact("after write/read/trim errors")
        self.serves("after read/trim errors")

    def fsync_failure(self, how, err, first):
        """Round HOW ("flush" or "fua"): a write D half-fills the 64 KiB region
        at sector FIRST (on an overlay, a copy-up from the base); then an fsync
        fails with ERR under a FLUSH, or under a FUA write elsewhere."""
        tag = self.tag + "[fsync %s under %s] " % (errno.errorcode[err], how.upper())
        fs = self.fs
        d_first, d_count = first + 8, 16
        d, e = self.write(d_first, d_count)
        check(e == 0, tag + "write before the fsync failure failed: %s" % errname(e))
        before = self.initial(first, CSECT)
        lo, hi = (d_first - first) * SECTOR, (d_first - first + d_count) * SECTOR
        after = before[:lo] + d + before[hi:]

        def sane(got, what):
            """Each sector of the region reads as before D or as D."""
            for i in range(CSECT):
                s = got[i * SECTOR:(i + 1) * SECTOR]
                if s not in (before[i * SECTOR:(i + 1) * SECTOR],
                             after[i * SECTOR:(i + 1) * SECTOR]):
                    expect(False, tag + "%s: sector %d reads %s, neither what it held before "
                           "the write nor the write" % (
                               what, first + i, "zeroes" if s == bytes(SECTOR) else "garbage"))
                    return False
            return True

        fs.ctl("fail fsync %s 1 %s" % (errno.errorcode[err], self.name))
        fua = None
        if how == "flush":
            e1 = nbd_errno(self.ha.flush)
            what = "flush"
        else:
            fua, e1 = self.write(first + 4 * CSECT, 8, nbd.CMD_FLAG_FUA)
            what = "FUA write"
        expect(e1 == err, tag + "the %s meeting it: got %s, expected %s"
               % (what, errname(e1), errname(err)))
        self.serves(tag + "after the failure on a")
        try:
            sane(self.ha.pread(CLUSTER, first * SECTOR),
                 "read after the failure (silent corruption; EIO would be fine)")
        except nbd.Error:
            pass    # an error instead of wrong data is fine
        e2 = nbd_errno(self.ha.flush)
        sticky = expect(e2 != 0, tag + "[sticky flush] a later flush was acknowledged: it claims "
                        "durable the write the failed fsync lost")
        w, e3 = self.write(first + 8 * CSECT, 8, nbd.CMD_FLAG_FUA)
        self.serves("after the later flush")
        print("%sfirst: %s; later flush: %s; later FUA write: %s"
              % (tag, errname(e1), errname(e2), errname(e3)))

        # Power cut: what blockd acknowledged as durable must be there.
        self.srv.kill()
        fs.cut(1, "drop")
        self.start()
        self.durable_intact(tag + "after a power cut")
        got = self.ha.pread(CLUSTER, first * SECTOR)
        if sane(got, "after a power cut") and not sticky:
            expect(got == after, tag + "[sticky flush] after a power cut: the write covered by "
                   "the acknowledged later flush is lost")
        if e3 == 0:
            expect(self.ha.pread(len(w), (first + 8 * CSECT) * SECTOR) == w,
                   tag + "after a power cut: the later FUA write, acknowledged, is lost")
        if fua is not None:
            got = self.ha.pread(len(fua), (first + 4 * CSECT) * SECTOR)
            expect(got in (fua, self.initial(first + 4 * CSECT, 8)),
                   tag + "after a power cut: the failed FUA write's sectors read neither the "
                   "write nor what they held before")

    def run(self):
        self.start()
        self.simple_errors()
        self.fsync_failure("flush", errno.EIO, (8 << 20) // SECTOR)
        self.fsync_failure("fua", errno.ENOSPC, (10 << 20) // SECTOR)
        self.srv.kill()
        for f in os.listdir(self.fs.mnt):
            os.unlink(self.fs.path(f))
        os.unlink(self.bpath)


def run():
    require_faultfs()
    with powerfail_rig() as rig:
        for engine in ("raw", "overlay"):
            Case(rig, engine).run()
        print("faultfs counters:", rig.fs.counters())
    if failures:
        raise AssertionError("%d checks failed:\n  " % len(failures) + "\n  ".join(failures))


main(run)

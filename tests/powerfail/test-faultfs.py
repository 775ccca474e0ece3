"""faultfs itself: the power-cut and fault semantics the other powerfail tests
rely on. If faultfs kept unsynced data across a cut, or lost synced data, the
blockd tests would prove nothing.

Checks: data and sizes survive a cut only once fsynced; drop/random/torn keep
what they promise (whole operations, pages, sectors, in order); handles opened
before a cut fail with EIO; injected write/read/fallocate/fsync errors, and an
fsync error loses the unsynced data like Linux writeback; holes (st_blocks,
SEEK_DATA/SEEK_HOLE, punch, zero range, allocate, truncate); OFD locks; the
flat namespace; io_uring reads and writes (with fio, if installed)."""
import ctypes
import errno
import fcntl
import os
import shutil
import struct
import subprocess

from pflib import check, main, powerfail_rig, require_faultfs

PAGE = 4096
libc = ctypes.CDLL(None, use_errno=True)


def fallocate_fd(fd, mode, off, length):
    """fallocate(2) on FD."""
    if libc.fallocate(fd, mode, ctypes.c_int64(off), ctypes.c_int64(length)) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def expect_errno(what, e, fn, *args):
    """FN(*ARGS) must fail with errno E."""
    try:
        fn(*args)
    except OSError as err:
        check(err.errno == e, "%s: errno %s, expected %s"
              % (what, errno.errorcode.get(err.errno), errno.errorcode[e]))
        return
    raise AssertionError("%s: succeeded, expected %s" % (what, errno.errorcode[e]))


def pattern(tag, n):
    """N bytes, recognisably TAG."""
    return (tag * (n // len(tag) + 1))[:n]


def ofd_lock(fd, kind):
    """F_OFD_SETLK on the whole file; kind is fcntl.F_WRLCK/F_RDLCK/F_UNLCK."""
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhxxxxqqixxxx", kind, os.SEEK_SET, 0, 0, 0))


def run():
    require_faultfs()
    with powerfail_rig() as rig:
        fs = rig.fs
        p = fs.path

        # ---- namespace ----
        with open(p("a"), "wb") as f:
            f.write(b"hello")
        check(sorted(os.listdir(fs.mnt)) == ["a"], "readdir lists %r" % os.listdir(fs.mnt))
        expect_errno("mkdir", errno.EPERM, os.mkdir, p("d"))
        os.rename(p("a"), p("b"))
        check(open(p("b"), "rb").read() == b"hello", "rename keeps the data")
        expect_errno("control command", errno.EINVAL, fs.ctl, "bogus")
        expect_errno("cut without mode", errno.EINVAL, fs.ctl, "cut 1")

        # ---- unsynced data is lost by a cut, synced data is not ----
        fd = os.open(p("f"), os.O_RDWR | os.O_CREAT, 0o644)
        os.pwrite(fd, pattern(b"A", 3 * PAGE), 0)
        os.fsync(fd)
        os.pwrite(fd, pattern(b"B", PAGE), PAGE)
        os.pwrite(fd, pattern(b"C", PAGE), 5 * PAGE)      # grows the file
        check(os.fstat(fd).st_size == 6 * PAGE, "size before the cut")
        check(os.pread(fd, PAGE, PAGE) == pattern(b"B", PAGE), "unsynced write reads back")
        fs.cut(1, "drop")
        expect_errno("write on a handle from before the cut", errno.EIO,
                     os.pwrite, fd, b"x", 0)
        expect_errno("read on a handle from before the cut", errno.EIO, os.pread, fd, 1, 0)
        expect_errno("fsync on a handle from before the cut", errno.EIO, os.fsync, fd)
        try:
            os.close(fd)
        except OSError:
            pass
        st = os.stat(p("f"))
        check(st.st_size == 3 * PAGE, "cut drop: size %d, expected the synced %d"
              % (st.st_size, 3 * PAGE))
        check(open(p("f"), "rb").read() == pattern(b"A", 3 * PAGE), "cut drop: synced data")
        check(st.st_blocks == 3 * PAGE // 512, "st_blocks %d after the cut" % st.st_blocks)

        # A RWF_DSYNC write is durable when it returns (the kernel passes the
        # flag to FUSE with the write), a plain one is not.
        fd = os.open(p("f"), os.O_RDWR)
        os.pwritev(fd, [pattern(b"D", PAGE)], 0, os.RWF_DSYNC)
        os.pwrite(fd, pattern(b"E", PAGE), PAGE)
        os.close(fd)
        fs.cut(2, "drop")
        check(open(p("f"), "rb").read() == pattern(b"D", PAGE) + pattern(b"A", 2 * PAGE),
              "RWF_DSYNC write lost, or a plain write kept, by a cut")

        # ---- random: page by page; torn: sector by sector; order kept ----
        n = 64
        old, new = pattern(b"o", n * PAGE), pattern(b"n", n * PAGE)
        for mode, unit in (("random", PAGE), ("torn", 512)):
            fd = os.open(p("r"), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            os.pwrite(fd, old, 0)
            os.fsync(fd)
            os.pwrite(fd, new, 0)
            os.close(fd)
            fs.cut(7, mode)
            got = open(p("r"), "rb").read()
            check(len(got) == n * PAGE, "%s: size %d" % (mode, len(got)))
            kinds = set()
            for i in range(0, n * PAGE, unit):
                u = got[i:i + unit]
                check(u in (old[i:i + unit], new[i:i + unit]),
                      "%s: unit at %d is neither old nor new" % (mode, i))
                kinds.add(u == new[i:i + unit])
            check(kinds == {True, False}, "%s: kept all or nothing of 64 pages" % mode)
            if mode == "random":
                for i in range(0, n * PAGE, PAGE):
                    check(got[i:i + PAGE] in (old[i:i + PAGE], new[i:i + PAGE]),
                          "random tore a page at %d" % i)
        # Same seed, same log: the same outcome.
        outcomes = []
        for _ in range(2):
            fd = os.open(p("r"), os.O_RDWR | os.O_TRUNC)
            os.pwrite(fd, old, 0)
            os.fsync(fd)
            os.pwrite(fd, new, 0)
            os.close(fd)
            fs.cut(12345, "torn")
            outcomes.append(open(p("r"), "rb").read())
        check(outcomes[0] == outcomes[1], "a cut with the same seed and log differs")
        # Order: of two writes to one page, the second can only survive on
        # top of the first or alone, never be overwritten by the first.
        for seed in range(20):
            fd = os.open(p("o"), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            os.pwrite(fd, b"0" * PAGE, 0)
            os.fsync(fd)
            os.pwrite(fd, b"1" * PAGE, 0)
            os.pwrite(fd, b"2" * PAGE, 0)
            os.close(fd)
            fs.cut(seed, "random")
            got = open(p("o"), "rb").read()
            check(got in (b"0" * PAGE, b"1" * PAGE, b"2" * PAGE), "seed %d: mixed page" % seed)

        # ---- holes ----
        fd = os.open(p("h"), os.O_RDWR | os.O_CREAT, 0o644)
        os.ftruncate(fd, 16 * PAGE)
        check(os.fstat(fd).st_blocks == 0, "a truncated file has no blocks")
        os.pwrite(fd, b"x" * PAGE, 4 * PAGE)
        os.pwrite(fd, b"y", 9 * PAGE + 100)
        check(os.fstat(fd).st_blocks == 16, "two pages allocated: st_blocks %d"
              % os.fstat(fd).st_blocks)
        check(os.lseek(fd, 0, os.SEEK_DATA) == 4 * PAGE, "SEEK_DATA from 0")
        check(os.lseek(fd, 4 * PAGE + 10, os.SEEK_DATA) == 4 * PAGE + 10, "SEEK_DATA inside data")
        check(os.lseek(fd, 4 * PAGE, os.SEEK_HOLE) == 5 * PAGE, "SEEK_HOLE after data")
        check(os.lseek(fd, 0, os.SEEK_HOLE) == 0, "SEEK_HOLE in a hole")
        check(os.lseek(fd, 5 * PAGE, os.SEEK_DATA) == 9 * PAGE, "SEEK_DATA to the 2nd page")
        expect_errno("SEEK_DATA past the data", errno.ENXIO, os.lseek, fd, 10 * PAGE, os.SEEK_DATA)
        expect_errno("SEEK_HOLE at EOF", errno.ENXIO, os.lseek, fd, 16 * PAGE, os.SEEK_HOLE)
        check(os.lseek(fd, 15 * PAGE, os.SEEK_HOLE) == 15 * PAGE, "SEEK_HOLE before EOF")
        fl = 0x01 | 0x02   # FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE

        def fallocate(mode, off, length):
            fallocate_fd(fd, mode, off, length)
        fallocate(fl, 4 * PAGE + 512, 512)
        check(os.pread(fd, 1024, 4 * PAGE + 512) == b"\0" * 512 + b"x" * 512, "partial punch")
        check(os.fstat(fd).st_blocks == 16, "a partial punch keeps the page")
        fallocate(fl, 4 * PAGE, PAGE)
        check(os.fstat(fd).st_blocks == 8, "a whole-page punch frees it")
        check(os.fstat(fd).st_size == 16 * PAGE, "punch keeps the size")
        fallocate(0x10, 0, 2 * PAGE)              # ZERO_RANGE
        check(os.fstat(fd).st_blocks == 24, "zero range allocates")
        fallocate(0x10 | 0x01, 15 * PAGE, 4 * PAGE)  # ZERO_RANGE|KEEP_SIZE
        check(os.fstat(fd).st_size == 16 * PAGE, "zero range with KEEP_SIZE")
        fallocate(0x10, 15 * PAGE, 4 * PAGE)      # ZERO_RANGE grows
        check(os.fstat(fd).st_size == 19 * PAGE, "zero range without KEEP_SIZE grows")
        fallocate(0, 19 * PAGE, PAGE)            # allocate, grows
        check(os.fstat(fd).st_size == 20 * PAGE, "fallocate mode 0 grows")
        expect_errno("COLLAPSE_RANGE", errno.EOPNOTSUPP, fallocate, 0x08, 0, PAGE)
        os.pwrite(fd, b"t" * 100, 9 * PAGE + 150)
        os.ftruncate(fd, 9 * PAGE + 150)
        check(os.pread(fd, 200, 9 * PAGE) == b"\0" * 100 + b"y" + b"\0" * 49,
              "truncate keeps the head of the last page")
        os.ftruncate(fd, 10 * PAGE)
        check(os.pread(fd, 200, 9 * PAGE + 150) == b"\0" * 200,
              "the tail cut by a truncate reads zeroes when the file grows again")
        os.close(fd)

        # ---- OFD locks are handled by the kernel ----
        fd1 = os.open(p("h"), os.O_RDWR)
        fd2 = os.open(p("h"), os.O_RDWR)
        ofd_lock(fd1, fcntl.F_WRLCK)
        expect_errno("second OFD write lock", errno.EAGAIN, ofd_lock, fd2, fcntl.F_WRLCK)
        os.close(fd1)
        ofd_lock(fd2, fcntl.F_WRLCK)
        os.close(fd2)

        # ---- injected faults ----
        before = fs.counters()
        fd = os.open(p("e"), os.O_RDWR | os.O_CREAT, 0o644)
        os.pwrite(fd, b"s" * PAGE, 0)
        os.fsync(fd)
        fs.ctl("fail write EIO 1 e")
        expect_errno("injected write EIO", errno.EIO, os.pwrite, fd, b"w", 0)
        os.pwrite(fd, b"w", 0)                      # count 1: the next one works
        fs.ctl("fail write ENOSPC 1 other")
        os.pwrite(fd, b"w", 1)                      # another file's rule
        fs.ctl("clear")
        fs.ctl("fail write ENOSPC -1")
        expect_errno("injected write ENOSPC", errno.ENOSPC, os.pwrite, fd, b"w", 0)
        expect_errno("until cleared", errno.ENOSPC, os.pwrite, fd, b"w", 0)
        fs.ctl("clear")
        fs.ctl("fail read 5 1 e")
        expect_errno("injected read EIO (errno by number)", errno.EIO, os.pread, fd, 1, 0)
        fs.ctl("fail fallocate EIO 1")
        expect_errno("injected fallocate", errno.EIO, fallocate_fd, fd, 0x03, 0, PAGE)
        fs.ctl("fail any ENOSPC 1 e")
        expect_errno("injected 'any' on ftruncate", errno.ENOSPC, os.ftruncate, fd, 0)
        # fsync failure: the unsynced data is gone, the error is reported
        # once, the next fsync succeeds and the data stays gone.
        os.pwrite(fd, b"u" * PAGE, 0)
        os.pwrite(fd, b"g" * PAGE, PAGE)
        fs.ctl("fail fsync EIO 1 e")
        expect_errno("injected fsync EIO", errno.EIO, os.fsync, fd)
        check(os.pread(fd, 2 * PAGE, 0) == b"s" * PAGE,
              "after a failed fsync the file reads its last synced state")
        os.fsync(fd)
        fs.cut(3, "drop")
        check(open(p("e"), "rb").read() == b"s" * PAGE, "failed fsync: synced data after a cut")
        after = fs.counters()
        check(after["faults"] - before["faults"] == 7, "fault counter: %r -> %r" % (before, after))
        check(after["cuts"] > before["cuts"], "cut counter")

        # ---- unlink while open ----
        fd = os.open(p("u"), os.O_RDWR | os.O_CREAT, 0o644)
        os.pwrite(fd, b"z", 0)
        os.unlink(p("u"))
        check(os.pread(fd, 1, 0) == b"z", "an unlinked open file still reads")
        os.close(fd)
        check("u" not in os.listdir(fs.mnt), "unlinked file listed")

        # ---- io_uring (what blockd uses for reads, fsync and fallocate) ----
        if shutil.which("fio"):
            r = subprocess.run(["fio", "--name=uring", "--filename=" + p("fio.img"), "--size=2M",
                                "--bs=4k", "--rw=randwrite", "--ioengine=io_uring", "--iodepth=8",
                                "--fsync=8", "--verify=crc32c", "--do_verify=1",
                                "--verify_state_save=0"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=rig.tmp)
            check(r.returncode == 0, "fio io_uring write+verify on faultfs: %s"
                  % r.stdout.decode(errors="replace")[-2000:])
            print("io_uring reads, writes and fsyncs: fio write+verify passed")
        else:
            print("fio not installed: io_uring not exercised here")
        print("counters:", fs.counters())


main(run)

"""Crafted images (the header fields an attacker controls) are refused with a
clear error or read safely, never a crash, a write outside the data area or
a huge allocation:
- an overlay larger than its base (an overlay over an overlay), served by
  blockd: reads past the base read zeroes, writes and copy-ups there work (the
  base's bitmap was indexed past its end before);
- data_offset far beyond the bitmap, or so large that data_offset + X wraps;
- a 4 KiB overlay declaring a huge disk (the bitmap would be terabytes);
- bitmap_offset + bitmap_size wrapping;
- base names with control bytes (terminal escapes), in a header or given to
  create;
- a 24 KiB qcow2 whose header declares a 512 MiB L1 table;
- qcow2 images libqcow mishandled: one larger than its backing file (reads
  past the backing file are zeroes, as qemu reads them, where libqcow hung),
  and a compressed cluster that inflates short (an I/O error, where libqcow
  returned uninitialised heap).
Memory is checked with each refusal's peak RSS."""
import os
import struct
import subprocess

from fmtlib import BLOCKD_IMG, TempDir, check, img, require, run, patch_overlay
from testlib import Blockd

MiB = 1 << 20


# What blockd-img info needs for a sound image (its libraries: more under
# sanitizers, or with librbd linked in), measured first; a refusal may take
# at most MARGIN more.
baseline = None
MARGIN = 16


def info_rss(path, *opts):
    """Runs blockd-img info PATH: (exit code, stderr, peak RSS in MiB). Run
    before this script holds big buffers: a child's peak RSS counts what it
    shared with us at fork."""
    p = subprocess.Popen([BLOCKD_IMG, "info", *opts, path], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    return os.waitstatus_to_exitcode(status), err, usage.ru_maxrss // 1024


def refused(path, want, *opts):
    """blockd-img info PATH fails (exit 1) with WANT in its one-line message,
    its peak RSS within MARGIN MiB of a sound image's."""
    code, err, rss = info_rss(path, *opts)
    check(code == 1 and want in err,
          "%s: exit %d, %r (wanted %r)" % (os.path.basename(path), code, err, want))
    check(rss < baseline + MARGIN, "%s: blockd-img used %d MiB to refuse it (a sound image: %d)"
          % (os.path.basename(path), rss, baseline))
    print("%s: refused (peak RSS %d MiB): %s" % (os.path.basename(path), rss, err.strip()))


def main():
    require("qemu-img")
    with TempDir() as d:
        j = lambda n: os.path.join(d, n)  # noqa: E731
        with open(j("base.raw"), "wb") as f:
            f.write(b"\xab" * MiB)
        img("create", "-b", j("base.raw"), j("mid.ovl"))
        img("create", "-b", j("mid.ovl"), j("top.ovl"))
        global baseline
        code, err, baseline = info_rss(j("top.ovl"))
        check(code == 0, "info on a sound overlay: exit %d, %r" % (code, err))
        print("blockd-img info on a sound overlay: peak RSS %d MiB" % baseline)

        def fresh(name, size=MiB, cb=None):
            p = j(name)
            img("create", "--force", "-b", j("base.raw"), *(["-c", cb] if cb else []), p)
            return p

        refused(patch_overlay_ret(fresh("far.ovl"), data_offset=1 << 40),
                "corrupt overlay header: data_offset 1099511627776 is not the first cluster")
        refused(patch_overlay_ret(fresh("wrap.ovl"), data_offset=(1 << 64) - 65536),
                "corrupt overlay header: data_offset")
        refused(patch_overlay_ret(fresh("big.ovl", cb="4K"), virtual_size=1 << 56),
                "clusters, more than")
        refused(patch_overlay_ret(fresh("bmwrap.ovl"), bitmap_offset=(1 << 64) - 4096),
                "corrupt overlay header: bitmap_offset + bitmap_size overflows")
        refused(patch_overlay_ret(fresh("len.ovl"), base_path_len=4000),
                "corrupt overlay header: base_path_len 4000 is not the length of base_path")
        # Names that would carry a terminal escape into messages and logs.
        refused(patch_overlay_ret(fresh("esc.ovl"), base_path="base\x1b]0;owned\x07.raw"),
                "corrupt overlay header: base_path has a control byte (0x1b)")
        refused(patch_overlay_ret(fresh("escfmt.ovl"), base_format=b"raw\x1b[2J"),
                "corrupt overlay header: base_format has a control byte (0x1b)")
        code, err, _ = info_rss(j("esc.ovl"))
        check("\x1b" not in err and "\x07" not in err, "a control byte reached the message")
        esc = j("b\x1b[31m.raw")
        with open(esc, "wb") as f:
            f.truncate(MiB)
        p = subprocess.run([BLOCKD_IMG, "create", "-b", esc, j("escbase.ovl")],
                           capture_output=True, text=True)
        check(p.returncode == 1 and "has a control character (0x1b)" in p.stderr
              and "\x1b" not in p.stderr and not os.path.exists(j("escbase.ovl")),
              "create over a base named with an escape: exit %d, %r" % (p.returncode, p.stderr))
        # The user's own arguments, quoted back: control bytes as \xHH.
        for arg, shown in ((j("no\x1b]0;x\x07such.raw"), "no\\x1b]0;x\\x07such.raw"),
                           ("rbd:pool/im\x1b[2Jg", "rbd:pool/im\\x1b[2Jg")):
            p = subprocess.run([BLOCKD_IMG, "info", arg], capture_output=True, text=True)
            check(p.returncode != 0 and shown in p.stderr and "\x1b" not in p.stderr
                  and "\x07" not in p.stderr,
                  "info %r: exit %d, %r" % (arg, p.returncode, p.stderr))

        # A 24 KiB qcow2 declaring 2^26 L1 entries (512 MiB).
        run("qemu-img", "create", "-q", "-f", "qcow2", j("l1.qcow2"), "1M")
        with open(j("l1.qcow2"), "r+b") as f:
            f.seek(36)
            f.write(struct.pack(">I", 1 << 26))
        refused(j("l1.qcow2"), "corrupt qcow2 header", "-f", "qcow2")

        # A qcow2 larger than its backing file, 512-byte clusters.
        run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", j("back.qcow2"),
            "64K")
        run("qemu-io", "-c", "write -P 0x61 0 64K", j("back.qcow2"))
        run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", "-b",
            j("back.qcow2"), "-F", "qcow2", j("grown.qcow2"), "200K")
        run("qemu-io", "-c", "write -P 0x62 100K 1K", j("grown.qcow2"))
        p = subprocess.run([BLOCKD_IMG, "convert", "-f", "qcow2", j("grown.qcow2"),
                            j("grown.raw")], capture_output=True, text=True, timeout=30)
        check(p.returncode == 0, "grown qcow2: %s" % p.stderr)
        run("qemu-img", "convert", "-f", "qcow2", "-O", "raw", j("grown.qcow2"), j("grown.ref"))
        check(open(j("grown.raw"), "rb").read() == open(j("grown.ref"), "rb").read(),
              "a qcow2 larger than its backing file reads differently from qemu-img")
        print("qcow2 of 200K over a 64K backing file: reads as qemu-img does")
        # A qcow2 whose backing name holds an escape: info shows it as \xHH.
        os.link(j("back.qcow2"), j("b\x1b]0;x\x07.qcow2"))
        run("qemu-img", "create", "-q", "-f", "qcow2", "-b", j("b\x1b]0;x\x07.qcow2"), "-F",
            "qcow2", j("escback.qcow2"))
        p = subprocess.run([BLOCKD_IMG, "info", "-f", "qcow2", j("escback.qcow2")],
                           capture_output=True, text=True, timeout=30)
        check(p.returncode == 0 and "backing file: %s" % j("b\\x1b]0;x\\x07.qcow2") in p.stdout
              and "\x1b" not in p.stdout + p.stderr,
              "info of a qcow2 backed by a name with an escape: exit %d, %r %r"
              % (p.returncode, p.stdout, p.stderr))
        short = os.path.join(os.environ.get("SRCDIR", "."),
                             "tests/fuzz/corpus-qcow2/qcow2-short-compressed-cluster")
        p = subprocess.run([BLOCKD_IMG, "convert", "-f", "qcow2", short, j("short.raw")],
                           capture_output=True, text=True, timeout=30)
        check(p.returncode == 1 and "Input/output error" in p.stderr and
              not os.path.exists(j("short.raw")),
              "a short compressed cluster: exit %d, %r" % (p.returncode, p.stderr))
        print("a compressed cluster that inflates short: " + p.stderr.strip())

        # An overlay that claims 1 TiB over a 1 MiB overlay base: reads and
        # copy-ups far past the base indexed megabytes past its bitmap (a
        # segfault before). 2^24 clusters of 64 KiB: a 2 MiB bitmap.
        GiB, TiB = 1 << 30, 1 << 40
        data_offset = 4096 + 2 * MiB + 61440
        patch_overlay(j("top.ovl"), virtual_size=TiB, bitmap_size=2 * MiB, data_offset=data_offset)
        with open(j("top.ovl"), "r+b") as f:
            f.truncate(data_offset + TiB)
        with Blockd("--export", "top=%s" % j("top.ovl"), tmp=d) as b:
            h = b.connect("top")
            check(h.get_size() == TiB, "size %d" % h.get_size())
            check(h.pread(100, MiB - 50) == b"\xab" * 50 + bytes(50), "read across the base's end")
            for off in (2 * GiB, 4 * GiB + 12345, TiB - 4096):
                check(h.pread(4096, off) == bytes(4096), "read at %d past the base" % off)
            h.pwrite(b"\x11" * 100, 6 * GiB + 100)      # a copy-up past the base
            h.pwrite(b"\x22" * 100, MiB - 50)          # one across the base's end
            h.flush()
            check(h.pread(4096, 6 * GiB) == bytes(100) + b"\x11" * 100 + bytes(3896),
                  "copy-up past the base")
            check(h.pread(200, MiB - 100) == b"\xab" * 50 + b"\x22" * 100 + bytes(50),
                  "copy-up across the base's end")
            h.shutdown()
            b.stop()
        print("overlay of 1 TiB over a 1 MiB overlay: reads past the base are zeroes, writes work")

def patch_overlay_ret(path, **fields):
    patch_overlay(path, **fields)
    return path


main()
print("PASS")

"""blockd-img map against qemu-img map --output=json, and on overlays.

- raw (SEEK_DATA/SEEK_HOLE) and qcow2 images built here with data, holes,
  zero clusters, a compressed cluster, a backing chain and a top larger than
  its backing file: blockd-img map --json prints the same extents as qemu-img
  map --output=json, field for field (ours adds "filename" beside "offset");
- overlays, which qemu cannot read: owned data, owned clusters trimmed to
  holes, clusters read from a raw base (depth 1), an overlay over an overlay
  (depth 2) and over a qcow2 chain, checked against extents worked out here;
- the human table names owned, base and none; errors are one line.
"""
import json
import os

from fmtlib import BLOCKD_IMG, TempDir, check, fmt_io, img, require, run

KiB = 1024
MiB = 1 << 20
QEMU_KEYS = ("start", "length", "depth", "present", "zero", "data", "offset")


def ours(path, *opts):
    """blockd-img map --json PATH, parsed."""
    return json.loads(img("map", "--json", *opts, path).stdout)


def qemu(path, fmt):
    return json.loads(run("qemu-img", "map", "--output=json", "-f", fmt, path).stdout)


def same_as_qemu(path, fmt):
    """Our extents are qemu-img's, on every field qemu prints."""
    a = ours(path, "-f", fmt)
    b = qemu(path, fmt)
    for e in a:
        check(("offset" in e) == ("filename" in e), "%s: offset without filename: %s" % (path, e))
    stripped = [{k: v for k, v in e.items() if k in QEMU_KEYS} for e in a]
    check(stripped == b, "%s (%s): blockd-img map differs from qemu-img map:\n ours %s\n qemu %s"
          % (os.path.basename(path), fmt, json.dumps(stripped), json.dumps(b)))
    print("%s (%s): %d extents, as qemu-img map" % (os.path.basename(path), fmt, len(b)))
    return a


def extent(start, length, depth, present, zero, offset=None, filename=None):
    e = {"start": start, "length": length, "depth": depth, "present": present, "zero": zero,
         "data": not zero}
    if offset is not None:
        e["offset"] = offset
        e["filename"] = filename
    return e


def expect(path, want, *opts):
    got = ours(path, *opts)
    check(got == want, "%s: map\n got  %s\n want %s" % (os.path.basename(path), json.dumps(got),
                                                        json.dumps(want)))
    print("%s: %d extents as expected" % (os.path.basename(path), len(want)))


def main():
    require("qemu-img", "qemu-io")
    with TempDir() as d:
        os.chdir(d)
        # Raw: data at the start, in the middle (4 KiB and 1 MiB), at the
        # very end, and holes between.
        with open("raw.img", "wb") as f:
            f.truncate(8 * MiB)
            for off, n in ((0, 8 * KiB), (1 * MiB, 4 * KiB), (3 * MiB, 1 * MiB),
                           (8 * MiB - 4 * KiB, 4 * KiB)):
                f.seek(off)
                f.write(b"\x5a" * n)
        raw = same_as_qemu("raw.img", "raw")
        check(len(raw) == 7, "raw.img: expected 7 extents, got %d" % len(raw))
        all_holes = os.path.join(d, "holes.img")
        img("create", "-s", "3M", all_holes)
        same_as_qemu(all_holes, "raw")
        img("create", "-s", "0", "empty.img")
        check(ours("empty.img") == [], "empty image: map is not []")

        # qcow2: data, zero clusters, a compressed cluster, a discard,
        # unallocated clusters, then a chain whose top is larger than its
        # backing file.
        run("qemu-img", "create", "-q", "-f", "qcow2", "back.qcow2", "4M")
        run("qemu-io", "-f", "qcow2", "-c", "write -P 1 0 192k", "-c", "write -z 1M 64k",
            "-c", "write -c -P 2 2M 64k", "-c", "write -P 3 3M 4k", "-c", "discard 64k 64k",
            "back.qcow2")
        same_as_qemu("back.qcow2", "qcow2")
        run("qemu-img", "create", "-q", "-f", "qcow2", "-b", "back.qcow2", "-F", "qcow2",
            "top.qcow2", "6M")
        run("qemu-io", "-f", "qcow2", "-c", "write -P 4 64k 64k", "-c", "write -P 5 5M 128k",
            "-c", "write -z 3M 64k", "top.qcow2")
        chain = same_as_qemu("top.qcow2", "qcow2")
        check({e["depth"] for e in chain} == {0, 1}, "top.qcow2: depths %s" % chain)
        run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=0.10", "v2.qcow2", "2M")
        run("qemu-io", "-f", "qcow2", "-c", "write -P 6 512k 64k", "v2.qcow2")
        same_as_qemu("v2.qcow2", "qcow2")

        # An overlay (64 KiB clusters) over raw.img: owned data at cluster 0
        # (a 4 KiB write copies the whole cluster up), cluster 16 trimmed
        # (owned, a hole), clusters 32-33 written whole; the rest from the base.
        img("create", "-b", "raw.img", "ws.ovl")
        fmt_io("ws.ovl", b"write 4096 4096\n" + b"\x11" * 4096 +
               b"trim 1048576 65536\n" + b"write 2097152 131072\n" + b"\x22" * 131072)
        info = json.loads(img("info", "--json", "ws.ovl").stdout)
        check(info["owned-clusters"] == 4, "ws.ovl owns %s clusters" % info["owned-clusters"])
        do = 65536  # data_offset: header and one bitmap page, rounded up to a cluster
        want = [
            extent(0, 64 * KiB, 0, True, False, do, "ws.ovl"),
            extent(64 * KiB, 1 * MiB - 64 * KiB, 1, True, True, 64 * KiB, "raw.img"),
            extent(1 * MiB, 64 * KiB, 0, True, True, do + 1 * MiB, "ws.ovl"),
            extent(1 * MiB + 64 * KiB, 1 * MiB - 64 * KiB, 1, True, True, 1 * MiB + 64 * KiB,
                   "raw.img"),
            extent(2 * MiB, 128 * KiB, 0, True, False, do + 2 * MiB, "ws.ovl"),
            extent(2 * MiB + 128 * KiB, 1 * MiB - 128 * KiB, 1, True, True, 2 * MiB + 128 * KiB,
                   "raw.img"),
            extent(3 * MiB, 1 * MiB, 1, True, False, 3 * MiB, "raw.img"),
            extent(4 * MiB, 4 * MiB - 4 * KiB, 1, True, True, 4 * MiB, "raw.img"),
            extent(8 * MiB - 4 * KiB, 4 * KiB, 1, True, False, 8 * MiB - 4 * KiB, "raw.img"),
        ]
        expect("ws.ovl", want)

        # An overlay over that overlay: its clusters come from depth 1 (ws.ovl's
        # own) and depth 2 (raw.img), with the base's file offsets.
        img("create", "-b", "ws.ovl", "-c", "4K", "top.ovl")
        fmt_io("top.ovl", b"zero 3145728 4096\n")
        top = ours("top.ovl")
        check(top[0] == extent(0, 64 * KiB, 1, True, False, do, "ws.ovl"), "top.ovl: %s" % top[0])
        check(extent(3 * MiB, 4 * KiB, 0, True, True, 8192 + 3 * MiB, "top.ovl") in top,
              "top.ovl: the zeroed 4 KiB is not owned: %s" % top)
        check(extent(3 * MiB + 4 * KiB, 1 * MiB - 4 * KiB, 2, True, False, 3 * MiB + 4 * KiB,
                     "raw.img") in top, "top.ovl: raw.img's data at depth 2 missing: %s" % top)
        check(sum(e["length"] for e in top) == 8 * MiB, "top.ovl: extents do not cover the disk")

        # An overlay over the qcow2 chain: depths 0 (owned), 1 (top.qcow2),
        # 2 (back.qcow2), and what no image holds.
        img("create", "-b", "top.qcow2", "-F", "qcow2", "q.ovl")
        fmt_io("q.ovl", b"write 0 65536\n" + b"\x33" * 65536)
        qm = ours("q.ovl")
        check(qm[0]["depth"] == 0 and qm[0]["present"] and qm[0]["length"] == 64 * KiB,
              "q.ovl: %s" % qm[0])
        below = [dict(e, depth=e["depth"] - 1) for e in qm[1:]]
        want_below = [e for e in ours("top.qcow2", "-f", "qcow2") if e["start"] >= 64 * KiB]
        check(below == want_below, "q.ovl: below the owned cluster\n got  %s\n want %s"
              % (below, want_below))
        check(any(e["depth"] == 2 for e in qm), "q.ovl: nothing at depth 2: %s" % qm)

        # The human table.
        table = img("map", "ws.ovl").stdout.splitlines()
        check(table[0].split() == ["Start", "Length", "Depth", "Where", "Reads", "Offset", "File"],
              "table header: %r" % table[0])
        rows = [r.split() for r in table[1:]]
        check(len(rows) == len(want), "table has %d rows, json %d" % (len(rows), len(want)))
        check(rows[0] == ["0", "65536", "0", "owned", "data", str(do), "ws.ovl"], "row %s" % rows[0])
        check(rows[1][3:5] == ["base", "zero"] and rows[2][3:5] == ["owned", "zero"],
              "rows %s" % rows[1:3])
        none = img("map", "-f", "qcow2", "back.qcow2").stdout.splitlines()
        check(any(r.split()[3:] == ["none", "zero", "-", "-"] for r in none[1:]),
              "back.qcow2: no 'none' row: %s" % none)

        # Errors: one line, exit 1 for the image, 2 for the command line.
        p = img("map", "nothere.img", check=False)
        check(p.returncode == 1 and p.stderr == "blockd-img: nothere.img: No such file or directory\n",
              "map of a missing file: %d %r" % (p.returncode, p.stderr))
        p = img("map", "-f", "vmdk", "raw.img", check=False)
        check(p.returncode == 2 and "unknown format 'vmdk'" in p.stderr, "map -f vmdk: %r" % p.stderr)
        p = img("map", "back.qcow2", check=False)
        check(p.returncode == 1 and "name the format" in p.stderr, "qcow2 guessed: %r" % p.stderr)
    print("ok")


if __name__ == "__main__":
    if not BLOCKD_IMG:
        raise SystemExit(77)
    main()

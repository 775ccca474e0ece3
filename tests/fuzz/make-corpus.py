#!/usr/bin/python3
"""Writes the seed corpora of the fuzz targets: small inputs, good and bad.

Run from this folder:
  ./make-corpus.py                   every corpus, into its folder here
  ./make-corpus.py TARGET [DIR]      one: server (corpus/), handshake
                                     (corpus-handshake/), overlay
                                     (corpus-overlay/), qcow2 (corpus-qcow2/)
  ./make-corpus.py DIR               the server corpus into DIR (as before)

The overlay corpus needs blockd-img ($BLOCKD_IMG, else ../../build/formats/
blockd-img), the qcow2 corpus qemu-img and qemu-io ($QEMU_IMG, $QEMU_IO).
Bases are rebuilt here byte for byte as fuzz-util.c builds them, with the
same mtime, so the identity each overlay header records matches the files
the fuzzer places beside it. Every file stays under 64 KiB.

The files named by a SHA-1 in the corpus folders are not written here: they
are inputs libFuzzer found, minimised with -merge=1 (see run-campaign.sh).
Running this again rewrites the seeds and leaves those alone.
"""
import os
import shutil
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
MAX_FILE = 64 * 1024

# --- NBD client sessions (fuzz-server, fuzz-handshake) ---

IHAVEOPT = 0x49484156454F5054
REQ = 0x25609513


def opt(option, data=b""):
    return struct.pack(">QII", IHAVEOPT, option, len(data)) + data


def meta(option, name=b"", queries=(b"base:allocation",)):
    data = struct.pack(">I", len(name)) + name + struct.pack(">I", len(queries))
    for q in queries:
        data += struct.pack(">I", len(q)) + q
    return opt(option, data)


def go(name=b"", infos=(1, 2, 3), option=7):
    return opt(option, struct.pack(">I", len(name)) + name +
               struct.pack(">H", len(infos)) + b"".join(struct.pack(">H", i) for i in infos))


def req(cmd, offset=0, count=0, flags=0, cookie=1, payload=b""):
    return struct.pack(">IHHQQI", REQ, flags, cmd, cookie, offset, count) + payload


FLAGS = struct.pack(">I", 3)  # fixed newstyle, no zeroes
WORK = (req(1, 0, 512, 0, 1, b"\xab" * 512) + req(0, 0, 512, cookie=2) +
        req(1, 4096, 100, 1, 3, b"\x01" * 100) + req(3, cookie=4) +
        req(4, 0, 4096, cookie=5) + req(6, 8192, 4096, 2, 6) + req(6, 0, 65536, 16, 7) +
        req(7, 0, 1 << 20, 0, 8) + req(7, 0, 1 << 20, 8, 9) + req(5, 0, 65536, cookie=10) +
        req(0, 0, 70000, 4, 11) + req(0, 1 << 20, 1, cookie=12) + req(9, cookie=13) +
        req(2, cookie=14))


def server_seeds():
    return {
        "structured-session": FLAGS + opt(8) + meta(10) + go() + WORK,
        "simple-session": FLAGS + go() + WORK,
        "export-name-session": struct.pack(">I", 1) + opt(1, b"") + WORK,
        "list-info-abort": FLAGS + opt(3) + go(option=6) + meta(9, queries=()) + opt(2),
        "unknown-export": FLAGS + go(b"nope") + opt(1, b"nope"),
        "unknown-option": FLAGS + opt(99, b"xyz") + opt(5) + go(),
        "bad-option-magic": FLAGS + struct.pack(">QII", 1, 7, 0),
        "bad-request-magic": FLAGS + go() + struct.pack(">IHHQQI", 0xdeadbeef, 0, 0, 1, 0, 512),
        "oversize-write": FLAGS + go() + req(1, 0, 64 << 20),
        "truncated-write": FLAGS + go() + req(1, 0, 4096, payload=b"x" * 100),
        "truncated-header": FLAGS + go() + req(0, 0, 512)[:10],
        "meta-without-structured": FLAGS + meta(10) + go() + req(7, 0, 4096),
        "malformed-go": FLAGS + opt(7, b"\x00\x00\x10\x00abc"),
    }


def handshake_seeds():
    """Negotiations only; fuzz-handshake has exports "" and "second"."""
    second = b"second"
    return {
        "go-structured-meta": FLAGS + opt(8) + meta(10) + go(),
        "go-second-meta-other-export": FLAGS + opt(8) + meta(10) + go(second),
        "info-then-go": FLAGS + go(second, (0, 1, 2, 3, 9), option=6) + go(second, ()),
        "list-and-list-meta": (FLAGS + opt(3) + meta(9, second, ()) +
                               meta(9, b"", (b"base:", b"base:allocation", b"qemu:x")) + opt(2)),
        "export-name-zeroes": struct.pack(">I", 1) + opt(1, second),
        "export-name-unknown": FLAGS + opt(1, b"nope"),
        "set-meta-unstructured": FLAGS + meta(10) + opt(2),
        "set-meta-unknown-export": FLAGS + opt(8) + meta(10, b"nope") + opt(2),
        "set-meta-no-match": FLAGS + opt(8) + meta(10, queries=(b"base:",)) + go(),
        "meta-trailing": FLAGS + opt(8) + opt(10, meta(10)[16:] + b"junk") + opt(2),
        "meta-long-query": FLAGS + opt(8) + opt(10, struct.pack(">II", 0, 1) +
                                               struct.pack(">I", 4097) + b"q" * 64) + opt(2),
        "meta-long-name": FLAGS + opt(8) + opt(10, struct.pack(">I", 5000) + b"n" * 16) + opt(2),
        "meta-max-name": FLAGS + opt(8) + meta(10, b"m" * 4096) + opt(2),
        "structured-with-data": FLAGS + opt(8, b"x") + opt(2),
        "list-with-data": FLAGS + opt(3, b"x") + opt(2),
        "info-count-mismatch": FLAGS + opt(6, struct.pack(">IH", 0, 3) + b"\x00\x01") + opt(2),
        "info-name-overrun": FLAGS + opt(6, struct.pack(">I", 100) + b"ab") + opt(2),
        "unknown-flags": struct.pack(">I", 0x80000003) + go(),
        "option-too-large": FLAGS + struct.pack(">QII", IHAVEOPT, 7, 64 * 1024 + 1),
        "option-truncated": FLAGS + opt(7, b"\x00" * 20)[:30],
        "bad-magic": FLAGS + struct.pack(">QII", IHAVEOPT ^ 1, 3, 0),
        "starttls-unknown": FLAGS + opt(5) + opt(0x7fffffff, b"zz") + opt(2),
        "too-many-options": FLAGS + opt(99) * 257,
        "flags-only": FLAGS,
        "empty": b"",
    }

# --- Base files, as fuzz-util.c makes them ---

MTIME_NS = 1234567890 * 10**9 + 123456789
RAW_SIZE, RAW_DATA, SMALL_SIZE = 1024 * 1024, 256 * 1024, 5000


def pattern(n):
    return bytes((((i ^ (i >> 8) ^ (i >> 16)) * 0x9d) + 1) & 0xff for i in range(n))


def qcow2_image():
    """fuzz_qcow2_image: v3, 512-byte clusters, 64 KiB disk, 7 clusters."""
    cs, copied = 512, 1 << 63
    b = bytearray(7 * cs)
    struct.pack_into(">4sIQIIQIIQQIIQ", b, 0, b"QFI\xfb", 3, 0, 0, 9, 65536, 0, 2, 3 * cs,
                     1 * cs, 1, 0, 0)
    struct.pack_into(">QQQII", b, 72, 0, 0, 0, 4, 104)
    struct.pack_into(">Q", b, cs, 2 * cs)
    for i in range(7):
        struct.pack_into(">H", b, 2 * cs + 2 * i, 1)
    struct.pack_into(">Q", b, 3 * cs, (4 * cs) | copied)
    struct.pack_into(">QQQQ", b, 4 * cs, (5 * cs) | copied, 1, 0, (6 * cs) | copied)
    b[5 * cs:7 * cs] = pattern(2 * cs)
    return bytes(b)


def write_base(d, name, data, size=0):
    path = os.path.join(d, name)
    with open(path, "wb") as f:
        f.write(data)
        if size > len(data):
            f.truncate(size)
    os.utime(path, ns=(MTIME_NS, MTIME_NS))

# --- Overlay headers (fuzz-overlay-header) ---

HDR = struct.Struct("<8sIIQIIQQQQQqIIQQ16sII")  # the 128 bytes before base_path


def trailer(size, flags=0, ops=(0, 0, 0)):
    return struct.pack("<IB3B", size, flags, *ops)


def op(kind, where, much):
    """kind: 0 read, 1 write, 2 trim, 3 zero; where, much: 0..7 (see the target)."""
    return kind | where << 2 | much << 5


def edit(header, **fields):
    """HEADER (4096 bytes) with FIELDS of struct overlay_header replaced."""
    names = ("magic version header_size incompat cluster_bits reserved0 virtual_size "
             "bitmap_offset bitmap_size data_offset base_file_size base_mtime_sec "
             "base_mtime_nsec reserved1 base_virtual_size base_hash base_format "
             "base_path_len reserved2").split()
    values = dict(zip(names, HDR.unpack_from(header)))
    path = header[HDR.size:]
    if "base_path" in fields:
        p = fields.pop("base_path")
        path = p + bytes(len(path) - len(p))
        values["base_path_len"] = len(p.rstrip(b"\0"))
    values.update(fields)
    return HDR.pack(*(values[n] for n in names)) + path


def bitmap_bytes(clusters):
    return ((clusters + 7) // 8 + 4095) // 4096 * 4096


def overlay_seeds():
    img = os.environ.get("BLOCKD_IMG", os.path.join(HERE, "..", "..", "build", "formats",
                                                     "blockd-img"))
    d = tempfile.mkdtemp(prefix="blockd-corpus.")
    try:
        write_base(d, "base.raw", pattern(RAW_DATA), RAW_SIZE)
        write_base(d, "small.raw", pattern(SMALL_SIZE))
        write_base(d, "base.qcow2", qcow2_image())

        def create(name, base, fmt, cluster="64K"):
            subprocess.run([img, "create", "-b", base, "-F", fmt, "-c", cluster, name],
                           cwd=d, check=True, stdout=subprocess.DEVNULL)
            path = os.path.join(d, name)
            with open(path, "rb") as f:
                return f.read(4096), os.stat(path).st_size

        create("base.ovl", "base.raw", "raw", "4K")
        os.utime(os.path.join(d, "base.ovl"), ns=(MTIME_NS, MTIME_NS))
        raw64, raw64_size = create("raw64.ovl", "base.raw", "raw")
        raw4, raw4_size = create("raw4.ovl", "base.raw", "raw", "4K")
        small, small_size = create("small.ovl", "small.raw", "raw", "4K")
        qcow, qcow_size = create("qcow.ovl", "base.qcow2", "qcow2", "4K")
        chain, chain_size = create("chain.ovl", "base.ovl", "overlay", "4K")
        big, big_size = create("big.ovl", "base.raw", "raw", "16M")
    finally:
        shutil.rmtree(d)

    rw = (op(1, 1, 5), op(0, 0, 7), op(2, 3, 3))      # unaligned write, read all, trim
    zero = (op(3, 2, 4), op(1, 6, 2), op(0, 4, 6))    # zero over an edge, write at the end
    past = (op(0, 7, 1), op(1, 6, 5), op(3, 5, 7))    # read past the end, long writes
    owned = bytes([0b10110101, 0xff, 0x01]) + bytes(4093)  # a bitmap page
    tb = 40 << 20  # 2^28 clusters of 4 KiB: a 32 MiB bitmap ends below 40 MiB
    seeds = {
        "raw64-rw": raw64 + trailer(raw64_size, 2, rw),
        "raw64-readonly": raw64 + trailer(raw64_size, 1, rw),
        "raw4-owned": raw4 + owned + trailer(raw4_size, 0, zero),
        "raw4-owned-fastzero": raw4 + owned + trailer(raw4_size, 12, zero),
        "raw4-past-end": raw4 + trailer(raw4_size, 4, past),
        "small-base": small + trailer(small_size, 0, rw),
        "small-base-zero": small + owned + trailer(small_size, 8, zero),
        "qcow2-base": qcow + trailer(qcow_size, 0, rw),
        "qcow2-base-readonly": qcow + trailer(qcow_size, 1, past),
        "overlay-base": chain + trailer(chain_size, 0, rw),
        "cluster-16m": big + trailer(big_size, 2, zero),
        "larger-than-base": edit(raw4, virtual_size=3 << 20, bitmap_size=4096,
                                 data_offset=8192) + trailer(8192, 0, past),
        # The largest bitmap (32 MiB, three copies): slow, so read-only and only once.
        "max-clusters": edit(raw4, virtual_size=1 << 40, bitmap_size=1 << 25,
                             data_offset=4096 + (1 << 25)) + trailer(tb, 1, past),
        "too-many-clusters": edit(raw4, virtual_size=(1 << 40) + 1, bitmap_size=(1 << 25) + 4096,
                                  data_offset=8192 + (1 << 25)) + trailer(tb),
        "huge-disk": edit(big, virtual_size=1 << 50, bitmap_size=1 << 23,
                          data_offset=1 << 24) + trailer(tb, 0, past),
        "over-max-size": edit(big, virtual_size=(1 << 56) + 1) + trailer(tb),
        "bitmap-beyond-file": raw4 + trailer(4096),
        "no-trailer-size": raw64 + trailer(0),
        "header-only": raw64[:4096],
        "truncated-header": raw64[:200],
        "empty": b"",
        "bitmap-offset-unaligned": edit(raw4, bitmap_offset=4097) + trailer(raw4_size),
        "bitmap-far": edit(raw4, bitmap_offset=1 << 20, data_offset=(1 << 20) + 4096) +
        trailer((1 << 20) + 4096, 0, rw),
        "data-offset-gap": edit(raw64, data_offset=128 << 10) + trailer(raw64_size),
        "version-2": edit(raw4, version=2) + trailer(raw4_size),
        "incompat": edit(raw4, incompat=1) + trailer(raw4_size),
        "cluster-bits-11": edit(raw4, cluster_bits=11) + trailer(raw4_size),
        "cluster-bits-25": edit(big, cluster_bits=25) + trailer(big_size),
        "header-size": edit(raw4, header_size=512) + trailer(raw4_size),
        "identity-mtime": edit(raw4, base_mtime_nsec=123456790) + trailer(raw4_size),
        "identity-hash": edit(raw4, base_hash=1) + trailer(raw4_size),
        "identity-file-size": edit(raw4, base_file_size=RAW_SIZE + 1) + trailer(raw4_size),
        "identity-virtual-size": edit(raw4, base_virtual_size=1) + trailer(raw4_size),
        "base-format-unknown": edit(raw4, base_format=b"nope") + trailer(raw4_size),
        "base-format-qcow2-on-raw": edit(raw4, base_format=b"qcow2") + trailer(raw4_size),
        "base-format-unterminated": edit(raw4, base_format=b"r" * 16) + trailer(raw4_size),
        "base-dotdot": edit(raw4, base_path=b"../base.raw") + trailer(raw4_size),
        "base-absolute": edit(raw4, base_path=b"/etc/passwd") + trailer(raw4_size),
        "base-dir": edit(raw4, base_path=b".") + trailer(raw4_size),
        "base-missing": edit(raw4, base_path=b"missing.raw") + trailer(raw4_size),
        "base-inner-dotdot": edit(raw4, base_path=b"x/../base.raw") + trailer(raw4_size, 0, rw),
        "base-self": edit(chain, base_path=b"top.ovl") + trailer(chain_size, 1),
        "base-path-len": edit(raw4, base_path_len=3) + trailer(raw4_size),
        "base-path-empty": edit(raw4, base_path=b"") + trailer(raw4_size),
        # A terminal escape in either name: the header is corrupt.
        "base-path-escape": edit(raw4, base_path=b"base\x1b]0;x\x07.raw") + trailer(raw4_size),
        "base-format-escape": edit(raw4, base_format=b"raw\x1b[2J") + trailer(raw4_size),
        # RBD bases: no pool is allowed here, so each stops before any cluster.
        "base-rbd-snapshot": edit(raw4, base_format=b"rbd", base_path=b"rbd:rbd/img@snap")
        + trailer(raw4_size),
        "base-rbd-image": edit(raw4, base_format=b"rbd", base_path=b"rbd:rbd/img")
        + trailer(raw4_size),
        "base-rbd-options": edit(raw4, base_format=b"rbd",
                                 base_path=b"rbd:rbd/img@s,conf=ceph.conf") + trailer(raw4_size),
    }
    return seeds

# --- qcow2 images (fuzz-qcow2-open) ---


def qcow2_seeds():
    qimg = os.environ.get("QEMU_IMG", "qemu-img")
    qio = os.environ.get("QEMU_IO", "qemu-io")
    d = tempfile.mkdtemp(prefix="blockd-corpus.")
    seeds = {}
    try:
        write_base(d, "backing.qcow2", qcow2_image())
        with open(os.path.join(d, "data.raw"), "wb") as f:
            f.write(pattern(8 * 1024) + bytes(8 * 1024) + pattern(8 * 1024)[::-1])

        def run(*args):
            subprocess.run(args, cwd=d, check=True, stdout=subprocess.DEVNULL)

        def take(name):
            with open(os.path.join(d, name), "rb") as f:
                return f.read()

        def io(name, *cmds, fmt="qcow2"):
            args = [qio, "-f", fmt]
            for c in cmds:
                args += ["-c", c]
            run(*args, name)

        run(qimg, "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", "v3.qcow2", "64K")
        run(qimg, "create", "-q", "-f", "qcow2", "-o", "cluster_size=512,compat=0.10",
            "v2.qcow2", "64K")
        run(qimg, "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", "c4k.qcow2", "1M")
        io("c4k.qcow2", "write -P 0x11 0 6k", "write -z 8k 4k", "write -P 0x22 1020k 4k")
        run(qimg, "convert", "-q", "-O", "qcow2", "-o", "cluster_size=512", "-f", "raw",
            "data.raw", "data.qcow2")
        run(qimg, "convert", "-q", "-c", "-O", "qcow2", "-o", "cluster_size=4096", "-f", "raw",
            "data.raw", "compressed.qcow2")
        run(qimg, "convert", "-q", "-c", "-O", "qcow2", "-o", "cluster_size=4096,compat=0.10",
            "-f", "raw", "data.raw", "compressed-v2.qcow2")
        run(qimg, "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", "-b", "backing.qcow2",
            "-F", "qcow2", "backed.qcow2")
        io("backed.qcow2", "write -P 0x33 512 512", "write -z 1024 1024", "write -P 0x44 30k 3k")
        run(qimg, "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", "-b", "backing.qcow2",
            "-F", "qcow2", "backed-bigger.qcow2", "200K")
        run(qimg, "create", "-q", "-f", "qcow2", "-o", "cluster_size=512,compat=0.10", "-b",
            "backing.qcow2", "-F", "qcow2", "backed-v2.qcow2")
        write_base(d, "backing.raw", pattern(4096))
        run(qimg, "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", "-b", "backing.raw",
            "-F", "raw", "backed-raw.qcow2")
        for name in ("v3", "v2", "c4k", "data", "compressed", "compressed-v2", "backed",
                     "backed-bigger", "backed-v2", "backed-raw"):
            seeds[name] = take(name + ".qcow2")
        seeds["backing"] = take("backing.qcow2")
    finally:
        shutil.rmtree(d)

    def patch(image, offset, fmt, *values):
        b = bytearray(image)
        struct.pack_into(fmt, b, offset, *values)
        return bytes(b)

    def rename_backing(image, name):
        """IMAGE with its backing file name replaced by NAME, at the same offset."""
        off, size = struct.unpack_from(">QI", image, 8)
        b = bytearray(image)
        b[off:off + max(size, len(name))] = name + bytes(max(0, size - len(name)))
        struct.pack_into(">I", b, 16, len(name))
        return bytes(b)

    def l2_patch(image, value):
        """IMAGE with the first entry of its first L2 table set to VALUE."""
        l1 = struct.unpack_from(">Q", image, 40)[0]
        l2 = struct.unpack_from(">Q", image, l1)[0] & 0x00fffffffffffe00
        return patch(image, l2, ">Q", value)

    v3, backed = seeds["v3"], seeds["backed"]
    seeds.update({
        "backing-self": rename_backing(backed, b"img.qcow2"),
        "backing-dotdot": rename_backing(backed, b"../backing.qcow2"),
        "backing-absolute": rename_backing(backed, b"/etc/passwd"),
        "backing-missing": rename_backing(backed, b"nope.qcow2"),
        "backing-name-long": patch(backed, 16, ">I", 1023),
        "backing-name-overrun": patch(backed, 16, ">I", 0x7fffffff),
        "backing-offset-past-end": patch(backed, 8, ">Q", 1 << 40),
        "version-4": patch(v3, 4, ">I", 4),
        "cluster-bits-8": patch(v3, 20, ">I", 8),
        "cluster-bits-22": patch(v3, 20, ">I", 22),
        "size-max": patch(v3, 24, ">Q", 1 << 56),
        "size-over-max": patch(v3, 24, ">Q", (1 << 56) + 1),
        "encrypted": patch(v3, 32, ">I", 1),
        "l1-size-huge": patch(v3, 36, ">I", 0x7fffffff),
        "l1-past-end": patch(v3, 40, ">Q", 1 << 30),
        "l1-unaligned": patch(v3, 40, ">Q", 3 * 512 + 8),
        "refcount-table-past-end": patch(v3, 48, ">Q", 1 << 40),
        "snapshots": patch(v3, 60, ">IQ", 1000, 1536),
        "incompat-external-data": patch(v3, 72, ">Q", 4),
        "incompat-dirty-corrupt": patch(v3, 72, ">Q", 3),
        "refcount-order-7": patch(v3, 96, ">I", 7),
        "header-length-huge": patch(v3, 100, ">I", 0xfffffff0),
        "l2-entry-past-end": l2_patch(seeds["data"], (1 << 63) | (1 << 40)),
        "l2-entry-compressed-bad": l2_patch(seeds["compressed"], (1 << 62) | 0x3fffffffffffff),
        "l2-table-past-end": patch(seeds["data"], struct.unpack_from(">Q", seeds["data"], 40)[0],
                                   ">Q", (1 << 63) | (1 << 40)),
        "truncated": seeds["data"][:700],
        "magic-only": b"QFI\xfb",
    })
    return seeds


TARGETS = {
    "server": ("corpus", server_seeds),
    "handshake": ("corpus-handshake", handshake_seeds),
    "overlay": ("corpus-overlay", overlay_seeds),
    "qcow2": ("corpus-qcow2", qcow2_seeds),
}


def write(out, seeds):
    os.makedirs(out, exist_ok=True)
    for name, data in seeds.items():
        if len(data) > MAX_FILE:
            sys.exit("make-corpus: seed %s is %d bytes, over %d" % (name, len(data), MAX_FILE))
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


def main(argv):
    if len(argv) == 1 and argv[0] not in TARGETS and argv[0] != "all":
        write(argv[0], server_seeds())  # the old usage: make-corpus.py DIR
        return
    names = list(TARGETS) if not argv or argv[0] == "all" else [argv[0]]
    for name in names:
        folder, seeds = TARGETS[name]
        write(argv[1] if len(argv) > 1 else os.path.join(HERE, folder), seeds())


if __name__ == "__main__":
    main(sys.argv[1:])

"""Helpers for the formats tests: a temporary directory, blockd-img, qemu-img,
fmt-io and a byte model of what an image should read."""
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile

SKIP = 77

# meson's timeout sends SIGTERM: unwind so that finally clauses clean up.
signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
BLOCKD_IMG = os.environ.get("BLOCKD_IMG", "")
FMT_IO = os.environ.get("FMT_IO", "")


def skip(msg):
    print("SKIP:", msg, file=sys.stderr)
    sys.exit(SKIP)


def require(*progs):
    for p in progs:
        if shutil.which(p) is None:
            skip(p + " is not installed")
    if not BLOCKD_IMG or not os.access(BLOCKD_IMG, os.X_OK):
        skip("BLOCKD_IMG not built")


class TempDir:
    """A directory removed when the with-block ends, pass or fail."""

    def __enter__(self):
        self.path = tempfile.mkdtemp(prefix="blockd-formats.")
        return self.path

    def __exit__(self, *exc):
        shutil.rmtree(self.path, ignore_errors=True)


def run(*args, check=True):
    """Runs a command; returns its CompletedProcess (text)."""
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    if check and p.returncode != 0:
        raise AssertionError("%s exited %d: %s" % (" ".join(map(str, args)), p.returncode,
                                                   p.stderr.strip()))
    return p


def img(*args, check=True):
    return run(BLOCKD_IMG, *args, check=check)


def allocated(path):
    return os.stat(path).st_blocks * 512


def sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                return h.hexdigest()
            h.update(b)


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def write_sparse(path, data, grain=65536):
    """Writes DATA to PATH leaving all-zero GRAIN blocks as holes."""
    with open(path, "wb") as f:
        f.truncate(len(data))
        zero = bytes(grain)
        for off in range(0, len(data), grain):
            chunk = data[off:off + grain]
            if chunk != zero[:len(chunk)]:
                f.seek(off)
                f.write(chunk)


def random_disk(rng, size, data_fraction=0.25, grain=1 << 20):
    """A bytearray of SIZE: random data in about DATA_FRACTION of the GRAIN blocks."""
    data = bytearray(size)
    for off in range(0, size, grain):
        if rng.random() < data_fraction:
            data[off:off + grain] = rng.randbytes(min(grain, size - off))
    return data


def random_ops(rng, model, n, cluster=65536):
    """N random writes (aligned, unaligned, straddling clusters), trims and
    zeroes applied to MODEL; returns the fmt-io command stream."""
    out = bytearray()
    size = len(model)
    for _ in range(n):
        if rng.random() < 0.5:
            off = rng.randrange(size // cluster) * cluster
            length = cluster * rng.randint(1, 3)
        else:
            off = rng.randrange(size)
            length = rng.randint(1, 2 * cluster + 513)
        length = min(length, size - off)
        k = rng.random()
        if k < 0.6:
            buf = rng.randbytes(length)
            out += b"write %d %d\n" % (off, length) + buf
            model[off:off + length] = buf
        elif k < 0.8:
            out += b"trim %d %d\n" % (off, length)
            model[off:off + length] = bytes(length)
        else:
            out += b"zero %d %d\n" % (off, length)
            model[off:off + length] = bytes(length)
    return bytes(out)


def fmt_io(path, commands):
    """Applies fmt-io COMMANDS to the image at PATH."""
    if not FMT_IO:
        skip("FMT_IO not set")
    p = subprocess.run([FMT_IO, path], input=commands, capture_output=True)
    if p.returncode != 0:
        raise AssertionError("fmt-io %s: %s" % (path, p.stderr.decode().strip()))


# The overlay header's fields: name -> (offset, struct format), little-endian
# (docs/overlay-format.md).
OVERLAY_FIELDS = {
    "magic": (0, "8s"), "version": (8, "<I"), "header_size": (12, "<I"),
    "incompat": (16, "<Q"), "cluster_bits": (24, "<I"), "virtual_size": (32, "<Q"),
    "bitmap_offset": (40, "<Q"), "bitmap_size": (48, "<Q"), "data_offset": (56, "<Q"),
    "base_file_size": (64, "<Q"), "base_virtual_size": (88, "<Q"), "base_format": (104, "16s"),
    "base_path_len": (120, "<I"), "base_path": (128, "3968s"),
}


def patch_overlay(path, **fields):
    """Overwrites header fields of the overlay at PATH, as a crafted image
    would have them. base_path=STR also sets base_path_len."""
    import struct
    if "base_path" in fields:
        p = fields["base_path"].encode()
        fields["base_path"] = p
        fields.setdefault("base_path_len", len(p))
    with open(path, "r+b") as f:
        for name, value in fields.items():
            off, fmt = OVERLAY_FIELDS[name]
            f.seek(off)
            f.write(struct.pack(fmt, value))

#!/usr/bin/env bash
# blockd on a file system that refuses fallocate (ramfs: no punch hole, no
# zero range): TRIM still succeeds, WRITE_ZEROES (plain, NO_HOLE, unaligned)
# falls back to writing zeroes and reads back as zeroes without touching the
# bytes around, FAST_ZERO either succeeds or says ENOTSUP, never anything else.
. "$SRCDIR/tests/lib.sh"
require_py_nbd
[ "$(id -u)" -eq 0 ] || skip "mounting a ramfs needs root"
mkdir "$TMP/mnt"
mount -t ramfs ramfs "$TMP/mnt" 2>/dev/null || skip "cannot mount a ramfs here"
# Lazy: detaches at once even while blockd still holds the file; lib.sh's
# cleanup then stops blockd and removes $TMP.
trap 'rc=$?; umount -l "$TMP/mnt" 2>/dev/null; (exit $rc); _cleanup' EXIT

head -c 8M /dev/urandom > "$TMP/mnt/disk.img"
if fallocate -p -o 0 -l 4096 "$TMP/mnt/disk.img" 2>/dev/null; then
  skip "this ramfs punches holes: nothing to fall back from"
fi
cp "$TMP/mnt/disk.img" "$TMP/orig.img"
start_blockd "$TMP/mnt/disk.img"

"$PY" - "$NBD_SOCK" "$TMP/orig.img" <<'PYEOF' || fail "write zeroes fallback"
import errno, sys
import nbd
M = 1 << 20
orig = bytearray(open(sys.argv[2], "rb").read())
h = nbd.NBD()
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.connect_unix(sys.argv[1])
assert h.can_zero() and h.can_trim(), "zero/trim not advertised"

def zero(n, off, flags=0):
    h.zero(n, off, flags)
    orig[off:off + n] = bytes(n)

zero(M, 0)
zero(M, M, nbd.CMD_FLAG_NO_HOLE)
zero(1000, 2 * M + 100)
zero(5000, 2 * M + 70000, nbd.CMD_FLAG_NO_HOLE | nbd.CMD_FLAG_FUA)
try:
    h.zero(M, 4 * M, nbd.CMD_FLAG_FAST_ZERO)
    orig[4 * M:5 * M] = bytes(M)
    print("FAST_ZERO succeeded")
except nbd.Error as e:
    assert e.errnum == errno.ENOTSUP, "FAST_ZERO: %s, expected success or ENOTSUP" % e
    print("FAST_ZERO: ENOTSUP")
h.trim(M, 6 * M)            # must not fail; the contents are then unspecified
h.flush()
got = h.pread(6 * M, 0)
if got != bytes(orig[:6 * M]):
    bad = next(i for i in range(6 * M) if got[i] != orig[i])
    raise AssertionError("wrong data at %d after zeroes on ramfs" % bad)
assert h.pread(M, 7 * M) == bytes(orig[7 * M:]), "data after the trimmed MiB changed"
ext = []
h.block_status(8 * M, 0, lambda ctx, off, e, err: ext.append(e) or 0)
assert ext, "no block status on ramfs"
h.shutdown()
PYEOF
stop_blockd
echo PASS

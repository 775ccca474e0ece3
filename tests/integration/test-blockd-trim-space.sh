#!/usr/bin/env bash
# blockd gives space back: write 64 MiB through NBD, TRIM it, and the file's
# allocated size (st_blocks) drops by at least 63 MiB while nbdinfo --map
# reports the range as a hole (flags 3, hole,zero).
. "$SRCDIR/tests/lib.sh"
require nbdinfo nbdsh
require_py_nbd
nbdsh() { PATH=/usr/bin:$PATH command nbdsh "$@"; }

M=1048576
truncate -s 96M "$TMP/disk.img"
start_blockd "$TMP/disk.img"

# 64 MiB of data at [16 MiB, 80 MiB), flushed.
nbdsh -u "$NBD_URI" -c '
import os
buf = os.urandom(1 << 20)
for i in range(64):
    h.pwrite(buf, (16 + i) << 20)
h.flush()
' || fail "writing 64 MiB through NBD failed"
before=$(allocated "$TMP/disk.img")
[ "$before" -ge $((64 * M)) ] || fail "only $before bytes allocated after writing 64 MiB"

nbdinfo --map "$NBD_URI" > "$TMP/map1" || fail "nbdinfo --map failed"
grep -qE "^ *16777216 +67108864 +0( |$)" "$TMP/map1" \
  || { cat "$TMP/map1" >&2; fail "map after the writes does not show 64 MiB of data at 16 MiB"; }

# One 64 MiB TRIM: bigger than the maximum payload, which proto.md allows
# for commands without payload (the server may refuse with EOVERFLOW/EINVAL).
nbdsh -u "$NBD_URI" -c '
import errno, sys
try:
    h.trim(64 << 20, 16 << 20)
except nbd.Error as e:
    if e.errnum not in (errno.EOVERFLOW, errno.EINVAL):
        raise
    print("NOTE: a 64 MiB trim was refused (%s); trimming 2 x 32 MiB" % e, file=sys.stderr)
    h.trim(32 << 20, 16 << 20)
    h.trim(32 << 20, 48 << 20)
h.flush()
' || fail "TRIM through NBD failed"
after=$(allocated "$TMP/disk.img")
[ "$(stat -c %s "$TMP/disk.img")" -eq $((96 * M)) ] || fail "TRIM changed the file size"
echo "allocated: before trim $before, after $after bytes"
[ $((before - after)) -ge $((63 * M)) ] \
  || fail "TRIM freed only $(( (before - after) / 1024 )) KiB of 64 MiB"

nbdinfo --map "$NBD_URI" > "$TMP/map2" || fail "nbdinfo --map failed"
cat "$TMP/map2"
"$PY" - "$TMP/map2" <<'PYEOF' || fail "nbdinfo --map does not report [16 MiB, 80 MiB) as a hole"
import sys
M = 1 << 20
ok = False
for line in open(sys.argv[1]):
    off, length, typ = (int(x) for x in line.split()[:3])
    if off <= 16 * M and off + length >= 80 * M and typ == 3:
        ok = True
sys.exit(0 if ok else 1)
PYEOF
nbdsh -u "$NBD_URI" -c '
assert h.pread(1 << 20, 40 << 20) == bytes(1 << 20), "trimmed range does not read as zeroes"
' || fail "trimmed range does not read as zeroes"
stop_blockd
echo PASS

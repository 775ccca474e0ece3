#!/usr/bin/env bash
# blockd with qemu-io: writes and reads with patterns, FUA, write -z (with
# and without unmap), discard, aio, and every readback checked by qemu-io
# and in the file itself.
. "$SRCDIR/tests/lib.sh"
require qemu-io

truncate -s 16M "$TMP/disk.img"
start_blockd "$TMP/disk.img"

# qio COMMAND...: run qemu-io commands on blockd; fail on any error.
qio() {
  local args=()
  for c in "$@"; do args+=(-c "$c"); done
  local rc=0
  qemu-io -f raw "${args[@]}" "$NBD_URI" > "$TMP/qio.out" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ] || grep -qiE "fail|error|mismatch|[^a-z]not " "$TMP/qio.out"; then
    cat "$TMP/qio.out" >&2
    fail "qemu-io $* (exit $rc)"
  fi
}

# byte_at FILE OFFSET: the byte at OFFSET of FILE, as two hex digits.
byte_at() { od -An -tx1 -j "$2" -N1 "$1" | tr -d ' \n'; }

qio "write -P 0xab 0 1M" "read -P 0xab 0 1M" \
    "write -f -P 0xcd 1M 1M" "read -P 0xcd 1M 1M" \
    "write -P 0x11 100 1000" "read -P 0xab 0 100" "read -P 0x11 100 1000" "read -P 0xab 1100 1000"
[ "$(byte_at "$TMP/disk.img" $((1048576 + 7)))" = cd ] || fail "FUA write not in the file"

# write -z without and with unmap, in a new qemu-io session each time.
qio "write -z 0 512k" "read -P 0 0 512k" "read -P 0xab 512k 512k"
qio "write -z -u 1M 512k" "read -P 0 1M 512k" "read -P 0xcd 1536k 512k"
[ "$(byte_at "$TMP/disk.img" 1048576)" = 00 ] || fail "write -z -u not in the file"

# discard then readback: zeroes (a sparse raw file reads a hole as zeroes).
qio "write -P 0x22 4M 2M" "discard 4M 1M" "read -P 0 4M 1M" "read -P 0x22 5M 1M"
[ "$(byte_at "$TMP/disk.img" $((4 * 1048576 + 12345)))" = 00 ] || fail "discard: file not zeroed"

# Unaligned discards and zeroes must not touch the bytes around them.
qio "write -P 0x33 8M 64k" "write -z 8392704 100" "read -P 0x33 8M 4096" \
    "read -P 0 8392704 100" "read -P 0x33 8392804 4000"

# aio: many writes in flight, then flush, then check.
cmds=()
for i in $(seq 0 15); do cmds+=("aio_write -P $((i + 1)) $((10 * 1048576 + i * 65536)) 64k"); done
cmds+=("aio_flush")
for i in $(seq 0 15); do cmds+=("read -P $((i + 1)) $((10 * 1048576 + i * 65536)) 64k"); done
qio "${cmds[@]}"

# Reads across the end fail cleanly and the connection carries on.
rc=0; qemu-io -f raw -c "read 16380k 8k" "$NBD_URI" > "$TMP/qio.out" 2>&1 || rc=$?
grep -qiE "error|invalid|out of|fail" "$TMP/qio.out" || { cat "$TMP/qio.out" >&2; fail "read past the end did not fail"; }

stop_blockd
# The whole file, as qemu-io left it.
"$PY" - "$TMP/disk.img" <<'PYEOF' || fail "file contents wrong after qemu-io"
import sys
d = open(sys.argv[1], "rb").read()
M = 1 << 20
want = bytearray(16 * M)
want[0:M] = b"\xab" * M
want[100:1100] = b"\x11" * 1000
want[0:512 * 1024] = bytes(512 * 1024)
want[M:2 * M] = b"\xcd" * M
want[M:M + 512 * 1024] = bytes(512 * 1024)
want[4 * M:6 * M] = b"\x22" * (2 * M)
want[4 * M:5 * M] = bytes(M)
want[8 * M:8 * M + 65536] = b"\x33" * 65536
want[8392704:8392804] = bytes(100)
for i in range(16):
    o = 10 * M + i * 65536
    want[o:o + 65536] = bytes([i + 1]) * 65536
if d != bytes(want):
    bad = next(i for i in range(len(d)) if d[i] != want[i])
    print("first difference at %d: %02x, expected %02x" % (bad, d[bad], want[bad]), file=sys.stderr)
    sys.exit(1)
PYEOF
echo PASS

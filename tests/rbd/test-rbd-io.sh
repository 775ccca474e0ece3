#!/usr/bin/env bash
# blockd serving a Ceph RBD image: qemu-io writes, zeroes and discards,
# nbdinfo's view and block status, nbdcopy's copy compared with `rbd export`
# of the image, discards of whole objects lowering `rbd du`, a restarted
# blockd serving the same data, and the image as a vhost-user-blk device.
. "$SRCDIR/tests/lib.sh"
. "$SRCDIR/tests/rbd/cephlib.sh"
require_ceph
require qemu-io qemu-img nbdinfo nbdcopy
[ "${BLOCKD_RBD:-}" = yes ] || skip "blockd built without librbd (librbd-dev)"

start_ceph
timeout 20 rbd create --size 64M rbd/ws
start_blockd --export "ws=rbd:rbd/ws,conf=$CEPH_CONF"
URI="nbd+unix:///ws?socket=$NBD_SOCK"

# qio COMMAND...: run qemu-io commands on the export; fail on any error.
qio() {
  local args=()
  for c in "$@"; do args+=(-c "$c"); done
  local rc=0
  qemu-io -f raw "${args[@]}" "$URI" > "$TMP/qio.out" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ] || grep -qiE "fail|error|mismatch|[^a-z]not " "$TMP/qio.out"; then
    cat "$TMP/qio.out" >&2
    fail "qemu-io $* (exit $rc)"
  fi
}

nbdinfo --json "$URI" > "$TMP/info.json"
"$PY" - "$TMP/info.json" <<'PYEOF' || { cat "$TMP/info.json" >&2; fail "nbdinfo: wrong export"; }
import json, sys
e = json.load(open(sys.argv[1]))["exports"][0]
assert e["export-size"] == 64 << 20, e["export-size"]
for k in ("can_flush", "can_fua", "can_trim", "can_zero", "can_fast_zero", "can_multi_conn"):
    assert e[k], k
assert not e["is_read_only"]
PYEOF

# Writes (one with FUA), unaligned writes, zeroes with and without unmap,
# a discard, many writes in flight: every readback checked.
qio "write -P 0xab 0 1M" "read -P 0xab 0 1M" \
    "write -f -P 0xcd 1M 1M" "read -P 0xcd 1M 1M" \
    "write -P 0x11 100 1000" "read -P 0xab 0 100" "read -P 0x11 100 1000" "read -P 0xab 1100 1000"
qio "write -z 0 512k" "read -P 0 0 512k" "read -P 0xab 512k 512k"
qio "write -z -u 1M 512k" "read -P 0 1M 512k" "read -P 0xcd 1536k 512k"
qio "write -P 0x33 8M 64k" "write -z 8392704 100" "read -P 0x33 8M 4096" \
    "read -P 0 8392704 100" "read -P 0x33 8392804 4000"
cmds=()
for i in $(seq 0 15); do cmds+=("aio_write -P $((i + 1)) $((10 * 1048576 + i * 65536)) 64k"); done
cmds+=("aio_flush")
for i in $(seq 0 15); do cmds+=("read -P $((i + 1)) $((10 * 1048576 + i * 65536)) 64k"); done
qio "${cmds[@]}"
# The last bytes of the image, and a read past its end refused.
qio "write -P 0x44 $((64 * 1048576 - 4096)) 4096" "read -P 0x44 $((64 * 1048576 - 4096)) 4096"
rc=0; qemu-io -f raw -c "read 65532k 8k" "$URI" > "$TMP/qio.out" 2>&1 || rc=$?
grep -qiE "error|invalid|out of|fail" "$TMP/qio.out" || { cat "$TMP/qio.out" >&2; fail "read past the end did not fail"; }

# What the guest sees over NBD is what the cluster holds.
nbdcopy "$URI" "$TMP/copy.raw"
timeout 30 rbd export rbd/ws "$TMP/export.raw" 2>/dev/null
cmp "$TMP/copy.raw" "$TMP/export.raw" || fail "nbdcopy of the export differs from rbd export"
"$PY" - "$TMP/export.raw" <<'PYEOF' || fail "image contents wrong after qemu-io"
import sys
d = open(sys.argv[1], "rb").read()
M = 1 << 20
want = bytearray(64 * M)
want[0:M] = b"\xab" * M
want[100:1100] = b"\x11" * 1000
want[0:512 * 1024] = bytes(512 * 1024)
want[M:2 * M] = b"\xcd" * M
want[M:M + 512 * 1024] = bytes(512 * 1024)
want[8 * M:8 * M + 65536] = b"\x33" * 65536
want[8392704:8392804] = bytes(100)
for i in range(16):
    o = 10 * M + i * 65536
    want[o:o + 65536] = bytes([i + 1]) * 65536
want[64 * M - 4096:] = b"\x44" * 4096
if d != bytes(want):
    bad = next(i for i in range(len(d)) if d[i] != want[i])
    print("first difference at %d: %02x, expected %02x" % (bad, d[bad], want[bad]), file=sys.stderr)
    sys.exit(1)
PYEOF

# qemu-img compares through its own NBD client too.
qemu-img compare -f raw -F raw "$URI" "$TMP/export.raw" >/dev/null || fail "qemu-img compare differs"

# map_covers START LENGTH TYPE: whether nbdinfo --map shows [START, START+LENGTH)
# inside one extent of TYPE (nbdinfo merges neighbours of one type).
map_covers() {
  nbdinfo --map "$URI" > "$TMP/map.txt"
  awk -v s="$1" -v e=$(($1 + $2)) -v t="$3" \
    '$1 <= s && $1 + $2 >= e && $3 == t { found = 1 } END { exit !found }' "$TMP/map.txt" ||
    { cat "$TMP/map.txt" >&2; return 1; }
}

# Discard frees objects: 16 MiB written at 32 MiB (four whole 4 MiB
# objects), then discarded; block status reports the hole.
before=$(rbd_du ws)
qio "write -P 0x55 32M 16M"
written=$(rbd_du ws)
[ "$written" -ge $((before + (16 << 20))) ] || fail "rbd du: $before -> $written after writing 16 MiB"
map_covers $((32 << 20)) $((16 << 20)) 0 || fail "block status: no data at 32M"
qio "discard 32M 16M" "read -P 0 32M 16M"
trimmed=$(rbd_du ws)
[ "$trimmed" -le $((written - (16 << 20))) ] || fail "rbd du: $written -> $trimmed after discarding 16 MiB"
map_covers $((32 << 20)) $((16 << 20)) 3 || fail "block status: no hole at 32M"
echo "rbd du: $before -> $written (16 MiB written) -> $trimmed (discarded)" >&2

# A restarted blockd serves the same data (nbdcopy and qemu-img compare with
# the image as rbd export wrote it before the discard of 32M..48M, which
# held no data then).
stop_blockd
start_blockd --export "ws=rbd:rbd/ws,conf=$CEPH_CONF"
qemu-img compare -f raw -F raw "$URI" "$TMP/export.raw" >/dev/null || fail "after restart: data differs"
stop_blockd

# The same image as a vhost-user-blk device, driven by our own front-end
# (tests/vhost/vuclient.py): a write, a flush, a discard of a whole object,
# and the cluster holds what the device said.
if "$PY" -c 'import os; os.memfd_create' 2>/dev/null; then
  start_blockd --vhost-user-blk "$TMP/vu.sock=rbd:rbd/ws,conf=$CEPH_CONF"
  PYTHONPATH=$SRCDIR/tests/vhost:$SRCDIR/tests "$PY" - "$TMP/vu.sock" <<'PYEOF' ||
import sys
import vuclient as V
M = 1 << 20
with V.GuestMemory() as mem, V.Frontend(sys.argv[1]) as fe:
    fe.start(mem)
    data = bytes(range(256)) * 256  # 64 KiB
    fe.write(0, (40 * M) // 512, data)
    fe.flush(0)
    assert fe.read(0, (40 * M) // 512, len(data)) == data, "read back other data"
    fe.discard(0, (8 * M) // 512, (4 * M) // 512)  # held data: 0x33 and the aio writes
    assert fe.read(0, (8 * M) // 512, 4096) == bytes(4096), "discarded range not zero"
PYEOF
    fail "vhost-user-blk on rbd"
  stop_blockd
  timeout 30 rbd export rbd/ws "$TMP/export2.raw" 2>/dev/null
  "$PY" - "$TMP/export2.raw" <<'PYEOF' || fail "vhost-user writes not in the image"
import sys
d = open(sys.argv[1], "rb").read()
M = 1 << 20
assert d[40 * M:40 * M + 65536] == bytes(range(256)) * 256
assert d[8 * M:12 * M] == bytes(4 * M)
PYEOF
fi
echo PASS

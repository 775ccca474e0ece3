#!/usr/bin/env bash
# blockd-img on RBD images: create (a blank image; an O(1) clone of a
# snapshot), convert (a sparse file imported into the cluster with its
# zeroes left out, and exported back), info (format, size, space in the
# cluster, a clone's parent, in use), and the names and options refused.
. "$SRCDIR/tests/lib.sh"
. "$SRCDIR/tests/rbd/cephlib.sh"
require_ceph
require qemu-io qemu-img
[ "${BLOCKD_RBD:-}" = yes ] || skip "blockd built without librbd (librbd-dev)"
IMG=$BUILDDIR/formats/blockd-img

# refused STATUS EXPECTED ARGS...: blockd-img ARGS exits STATUS with one line
# matching EXPECTED (and, for usage errors, the pointer to --help).
refused() {
  local status=$1 want=$2 rc=0
  shift 2
  timeout 60 "$IMG" "$@" > "$TMP/out" 2>&1 || rc=$?
  [ "$rc" -eq "$status" ] || { cat "$TMP/out" >&2; fail "blockd-img $*: exit $rc, expected $status"; }
  [ "$(grep -vc "^Try 'blockd-img --help'" "$TMP/out")" -eq 1 ] || { cat "$TMP/out" >&2; fail "blockd-img $*: not one line"; }
  grep -qE -- "$want" "$TMP/out" || { cat "$TMP/out" >&2; fail "blockd-img $*: expected '$want'"; }
}

# Refused before any cluster is asked.
refused 2 "never replaces an RBD image" create --force -s 1M rbd:rbd/x
refused 2 "-c are for overlays" create -c 4K -b rbd:rbd/a@s rbd:rbd/x
refused 2 "base is an RBD snapshot" create -b "$TMP/none.raw" rbd:rbd/x
refused 2 "no image name" create -s 1M rbd:rbd/
refused 2 "-f does not apply" info -f raw rbd:rbd/x
refused 2 "never replaces an RBD image" convert --force "$TMP/none.raw" rbd:rbd/x

start_ceph
# A 32 MiB base: 8 MiB of data, 16 MiB of zeroes (a hole), 8 MiB of data.
head -c $((8 << 20)) /dev/urandom > "$TMP/base.raw"
truncate -s 24M "$TMP/base.raw"
head -c $((8 << 20)) /dev/urandom >> "$TMP/base.raw"

"$IMG" create -s 64M rbd:rbd/blank || fail "create -s"
"$IMG" info rbd:rbd/blank > "$TMP/info" || fail "info rbd:rbd/blank"
grep -qx "format: rbd" "$TMP/info" && grep -q "(67108864 bytes)" "$TMP/info" &&
  grep -q "^allocated: .*(0 bytes)" "$TMP/info" || { cat "$TMP/info" >&2; fail "info of a blank image"; }
refused 1 "already exists in pool 'rbd'" create -s 1M rbd:rbd/blank
refused 1 "pool 'nopool': no such pool" create -s 1M rbd:nopool/x

"$IMG" convert "$TMP/base.raw" rbd:rbd/base || fail "convert into the cluster"
timeout 60 rbd export rbd/base "$TMP/exported.raw" 2>/dev/null || fail "rbd export"
cmp "$TMP/base.raw" "$TMP/exported.raw" || fail "imported image differs from its source"
du=$(rbd_du base)
echo "rbd du after importing 16 MiB of data in a 32 MiB file: $du bytes"
[ "$du" -le $((16 << 20)) ] || fail "the import wrote zeroes: $du bytes used"
refused 1 "already exists" convert "$TMP/base.raw" rbd:rbd/base

# A clone needs a snapshot; the snapshot is protected if the cluster's
# clone format needs it.
refused 1 "base is a snapshot: rbd:rbd/base@SNAP" create -b rbd:rbd/base rbd:rbd/ws
timeout 20 rbd snap create rbd/base@v1 || fail "rbd snap create"
refused 1 "no such image or snapshot" create -b rbd:rbd/base@v2 rbd:rbd/ws
"$IMG" create -b rbd:rbd/base@v1 rbd:rbd/ws || fail "create a clone"
[ "$(rbd_du ws)" -eq 0 ] || fail "a fresh clone holds $(rbd_du ws) bytes"
"$IMG" info rbd:rbd/ws > "$TMP/info" || fail "info of the clone"
grep -qx "clone of: rbd:rbd/base@v1" "$TMP/info" || { cat "$TMP/info" >&2; fail "info: no parent"; }
"$IMG" info --json rbd:rbd/ws > "$TMP/info.json" || fail "info --json"
"$PY" - "$TMP/info.json" <<'PY' || fail "info --json of the clone"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["format"] == "rbd" and j["virtual-size"] == 32 << 20, j
assert j["backing-filename"] == "rbd:rbd/base@v1" and j["in-use"] == "no", j
PY

# The clone is served, written, and read back; the base never changes.
start_blockd --export "ws=rbd:rbd/ws"
"$IMG" info rbd:rbd/ws | grep -q "^in use: open for writing" || fail "info: a served clone not in use"
u="nbd+unix:///ws?socket=$NBD_SOCK"
qemu-img compare -f raw -F raw "$u" "$TMP/base.raw" >/dev/null || fail "the clone does not read as its base"
qemu-io -f raw -c "write -P 0x5a 1M 1M" "$u" >/dev/null || fail "write to the clone"
stop_blockd
"$IMG" convert rbd:rbd/ws "$TMP/ws.raw" || fail "convert out of the cluster"
cmp -n $((1 << 20)) "$TMP/base.raw" "$TMP/ws.raw" || fail "the clone's first MiB"
[ "$(od -An -tx1 -j $((1 << 20)) -N 1 "$TMP/ws.raw" | tr -d ' ')" = 5a ] || fail "the clone's write"
"$IMG" convert rbd:rbd/base@v1 "$TMP/snap.raw" || fail "convert a snapshot"
cmp "$TMP/base.raw" "$TMP/snap.raw" || fail "the base snapshot changed"
[ "$(stat -c %b "$TMP/snap.raw")" -lt $((32 << 11)) ] || fail "the export filled the hole"
echo "PASS"

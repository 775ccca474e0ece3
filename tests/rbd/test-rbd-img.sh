#!/usr/bin/env bash
# blockd-img on RBD images: create (a blank image; an O(1) clone of a
# snapshot; a local overlay over a snapshot), convert (a sparse file
# imported into the cluster with its zeroes left out, and exported back),
# info (format, size, space in the cluster, a clone's parent, in use), and
# the names and options refused. A local overlay over an RBD snapshot is
# served only from allowed pools, reads the snapshot, keeps its writes on
# the host, and refuses a snapshot re-created under the same name.
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
# A lock once taken stays listed, with its tag and no holder: not in use.
"$IMG" info rbd:rbd/ws > "$TMP/info" || fail "info of the clone after serving"
! grep -q "^in use" "$TMP/info" || { cat "$TMP/info" >&2; fail "info: a clone no one serves in use"; }
"$IMG" convert rbd:rbd/ws "$TMP/ws.raw" || fail "convert out of the cluster"
cmp -n $((1 << 20)) "$TMP/base.raw" "$TMP/ws.raw" || fail "the clone's first MiB"
[ "$(od -An -tx1 -j $((1 << 20)) -N 1 "$TMP/ws.raw" | tr -d ' ')" = 5a ] || fail "the clone's write"
"$IMG" convert rbd:rbd/base@v1 "$TMP/snap.raw" || fail "convert a snapshot"
cmp "$TMP/base.raw" "$TMP/snap.raw" || fail "the base snapshot changed"
[ "$(stat -c %b "$TMP/snap.raw")" -lt $((32 << 11)) ] || fail "the export filled the hole"

# A local overlay over the snapshot: base data from the cluster, writes on
# the host's disk.
refused 1 "RBD base is a snapshot" create -b rbd:rbd/base "$TMP/bad.ovl"
refused 2 "an rbd: base has no format to name" create -F raw -b rbd:rbd/base@v1 "$TMP/bad.ovl"
"$IMG" create -b rbd:rbd/base@v1 "$TMP/ws.ovl" 2> "$TMP/err" || { cat "$TMP/err" >&2; fail "create an overlay over rbd"; }
grep -q -- "--allow-base-dir rbd:rbd" "$TMP/err" || { cat "$TMP/err" >&2; fail "create: no note on the pool"; }
refused 1 "where bases may be only with --allow-base-dir rbd:rbd" info "$TMP/ws.ovl"
"$IMG" info --allow-base-dir rbd:rbd "$TMP/ws.ovl" > "$TMP/info" || fail "info of the overlay"
grep -qx "base: rbd:rbd/base@v1 (rbd)" "$TMP/info" || { cat "$TMP/info" >&2; fail "info: the rbd base"; }
# Without any Ceph configuration, an rbd: name is told to take conf=FILE;
# an overlay's base, whose name comes from its header and takes no
# options, is told where the default one is looked for instead.
if [ ! -e /etc/ceph/ceph.conf ]; then
  mkdir "$TMP/noconf"
  noconf() { (cd "$TMP/noconf" && env -u CEPH_CONF HOME="$TMP/noconf" "$@"); }
  rc=0; noconf "$IMG" info rbd:rbd/base@v1 > "$TMP/out" 2>&1 || rc=$?
  [ "$rc" -eq 1 ] && grep -q "no Ceph configuration.*give conf=FILE" "$TMP/out" ||
    { cat "$TMP/out" >&2; fail "info of an rbd: name with no Ceph configuration: exit $rc"; }
  rc=0; noconf "$IMG" info --allow-base-dir rbd:rbd "$TMP/ws.ovl" > "$TMP/out" 2>&1 || rc=$?
  [ "$rc" -eq 1 ] && grep -q "no Ceph configuration.*overlay's RBD base.*set CEPH_CONF" "$TMP/out" &&
    ! grep -q "conf=" "$TMP/out" ||
    { cat "$TMP/out" >&2; fail "info of an overlay over rbd with no Ceph configuration: exit $rc"; }
else
  echo "note: /etc/ceph/ceph.conf exists: messages without a Ceph configuration not checked"
fi
rc=0; timeout 30 "$BLOCKD" --unix "$TMP/no.sock" "$TMP/ws.ovl" 2> "$TMP/err" || rc=$?
[ "$rc" -eq 2 ] && grep -q "allow-base-dir rbd:rbd" "$TMP/err" || { cat "$TMP/err" >&2; fail "served from a pool not allowed: exit $rc"; }
du_base=$(rbd_du base)
start_blockd --allow-base-dir rbd:rbd --export "ws=$TMP/ws.ovl"
qemu-img compare -f raw -F raw "$u" "$TMP/base.raw" >/dev/null || fail "the overlay does not read as its base"
qemu-io -f raw -c "write -P 0x6b 2M 1M" -c "write -z 20M 64k" "$u" >/dev/null || fail "write to the overlay"
qemu-io -f raw -c "read -P 0x6b 2M 1M" -c "read -P 0 20M 64k" "$u" | grep -c "^read" | grep -qx 2 || fail "read back from the overlay"
stop_blockd
[ "$(rbd_du base)" -eq "$du_base" ] || fail "the overlay's writes reached the cluster"
a=$(allocated "$TMP/ws.ovl")
echo "overlay over rbd: $a bytes on the host after 1 MiB written and 64 KiB zeroed"
[ "$a" -ge $((1 << 20)) ] && [ "$a" -le $((2 << 20)) ] || fail "the overlay holds $a bytes"
"$IMG" convert --allow-base-dir rbd:rbd "$TMP/ws.ovl" "$TMP/flat.raw" || fail "convert the overlay"
cmp -n $((2 << 20)) "$TMP/base.raw" "$TMP/flat.raw" || fail "flattened overlay: its first 2 MiB"
cmp -i $((3 << 20)) -n $((17 << 20)) "$TMP/base.raw" "$TMP/flat.raw" || fail "flattened overlay: 3-20 MiB"
"$IMG" check --allow-base-dir rbd:rbd "$TMP/ws.ovl" > "$TMP/out" || { cat "$TMP/out" >&2; fail "check the overlay"; }
grep -q "base rbd:rbd/base@v1 (rbd): identity as recorded" "$TMP/out" || { cat "$TMP/out" >&2; fail "check: base identity"; }
refused 1 "RBD snapshot, which cannot change" commit --allow-base-dir rbd:rbd "$TMP/ws.ovl"
refused 1 "RBD snapshot, which rebase does not move" rebase --allow-base-dir rbd:rbd "$TMP/ws.ovl"

# A snapshot re-created under the same name is another base.
"$IMG" create -s 1M rbd:rbd/b2 && timeout 20 rbd snap create rbd/b2@s 2>/dev/null || fail "b2@s"
"$IMG" create -b rbd:rbd/b2@s "$TMP/b2.ovl" 2>/dev/null || fail "overlay over b2@s"
# The overlay's snapshot is protected: it cannot be removed under it.
! timeout 20 rbd snap rm rbd/b2@s 2>/dev/null || fail "the base snapshot of an overlay could be removed"
timeout 20 rbd snap unprotect rbd/b2@s && timeout 20 rbd snap rm rbd/b2@s 2>/dev/null &&
  timeout 20 rbd snap create rbd/b2@s 2>/dev/null || fail "re-create b2@s"
refused 1 "another snapshot of that name" info --allow-base-dir rbd:rbd "$TMP/b2.ovl"
rc=0; "$IMG" check --allow-base-dir rbd:rbd "$TMP/b2.ovl" > "$TMP/out" 2>&1 || rc=$?
[ "$rc" -eq 2 ] && grep -q "another snapshot of that name" "$TMP/out" || { cat "$TMP/out" >&2; fail "check: re-created snapshot, exit $rc"; }
# A header edited to name the image itself, which changes: refused.
"$PY" - "$TMP/b2.ovl" <<'PY'
import struct, sys
with open(sys.argv[1], "r+b") as f:
    name = b"rbd:rbd/b2"
    f.seek(120); f.write(struct.pack("<I", len(name)))
    f.seek(128); f.write(name + b"\0" * 16)
PY
refused 1 "an RBD base must be a snapshot" info --allow-base-dir rbd:rbd "$TMP/b2.ovl"
echo "PASS"

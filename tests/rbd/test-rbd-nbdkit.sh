#!/usr/bin/env bash
# nbdkit-blockd-plugin on Ceph: file=rbd:POOL/IMAGE serves an RBD image, and
# an overlay over an RBD snapshot reads its base from the cluster, both with
# nbdkit forking into the background (librados' threads must be started in
# the process that serves, not lost in the fork). conf= and id= on a file,
# and format= on an rbd: name, are refused.
. "$SRCDIR/tests/lib.sh"
. "$SRCDIR/tests/nbdkit/plugin.sh"
. "$SRCDIR/tests/rbd/cephlib.sh"
require_ceph
require qemu-io qemu-img
plugin_require
[ "${BLOCKD_RBD:-}" = yes ] || skip "blockd built without librbd (librbd-dev)"
IMG=$BUILDDIR/formats/blockd-img

# bg NAME PARAMS...: nbdkit in the background (it forks) serving the plugin on
# $TMP/NAME.sock; sets URI.
bg() {
  local name=$1 pid
  shift
  "$NBDKIT" -U "$TMP/$name.sock" -P "$TMP/$name.pid" "$NBDKIT_PLUGIN" "$@" 2> "$TMP/$name.log" ||
    { cat "$TMP/$name.log" >&2; fail "nbdkit $name did not start"; }
  pid=$(cat "$TMP/$name.pid")
  track "$pid"
  URI="nbd+unix:///?socket=$TMP/$name.sock"
}

# Refused at start, before any cluster is asked.
truncate -s 1M "$TMP/f.raw"
for bad in "file=$TMP/f.raw conf=/etc/hostname" "file=$TMP/f.raw id=admin" "file=rbd:rbd/x format=raw"; do
  rc=0
  # shellcheck disable=SC2086
  "$NBDKIT" -f -U "$TMP/bad.sock" "$NBDKIT_PLUGIN" $bad 2> "$TMP/bad.log" || rc=$?
  [ "$rc" -eq 1 ] && grep -qE "are for rbd: images|takes no format=" "$TMP/bad.log" ||
    { cat "$TMP/bad.log" >&2; fail "nbdkit $bad: exit $rc"; }
done

start_ceph
head -c $((4 << 20)) /dev/urandom > "$TMP/base.raw"
truncate -s 16M "$TMP/base.raw"
"$IMG" convert "$TMP/base.raw" rbd:rbd/base || fail "import"
timeout 20 rbd snap create rbd/base@v1 2>/dev/null || fail "rbd snap create"
"$IMG" create -s 16M rbd:rbd/ws || fail "create rbd:rbd/ws"

bg img "file=rbd:rbd/ws" "conf=$CEPH_CONF"
qemu-io -f raw -c "write -P 0x3c 1M 2M" "$URI" >/dev/null || fail "write to the RBD image"
qemu-io -f raw -c "read -P 0x3c 1M 2M" "$URI" | grep -q "^read 2097152" || fail "read back"
kill -TERM "$(cat "$TMP/img.pid")"
for _ in $(seq 100); do [ -e "$TMP/img.sock" ] || break; sleep 0.1; done
timeout 30 rbd export rbd/ws "$TMP/ws.raw" 2>/dev/null || fail "rbd export"
[ "$(od -An -tx1 -j $((2 << 20)) -N 1 "$TMP/ws.raw" | tr -d ' ')" = 3c ] || fail "the write is not in the cluster"

"$IMG" create -b rbd:rbd/base@v1 "$TMP/ws.ovl" 2>/dev/null || fail "overlay over rbd"
bg ovl "file=$TMP/ws.ovl" "allow-base-dir=rbd:rbd"
qemu-img compare -f raw -F raw "$URI" "$TMP/base.raw" >/dev/null || fail "the overlay does not read as its base"
qemu-io -f raw -c "write -P 0x4d 0 64k" "$URI" >/dev/null || fail "write to the overlay"
echo "PASS"

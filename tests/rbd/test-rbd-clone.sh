#!/usr/bin/env bash
# Workspaces as RBD clones, made with Ceph's own tools today: a base image
# imported into the cluster, a protected snapshot, one O(1) clone per
# workspace; blockd serves each clone writable, the clones read the base's
# data until they write, and neither the base nor the other clone changes.
# The same clone is then served by a second blockd after the first stops (a
# workspace moving to another host releases librbd's lock on SIGTERM).
. "$SRCDIR/tests/lib.sh"
. "$SRCDIR/tests/rbd/cephlib.sh"
require_ceph
require qemu-io qemu-img
[ "${BLOCKD_RBD:-}" = yes ] || skip "blockd built without librbd (librbd-dev)"

start_ceph
head -c $((16 << 20)) /dev/urandom > "$TMP/base.raw"
timeout 60 rbd import "$TMP/base.raw" rbd/base >/dev/null 2>&1 || fail "rbd import"
timeout 20 rbd snap create rbd/base@v1 || fail "rbd snap create"
timeout 20 rbd snap protect rbd/base@v1 || fail "rbd snap protect"
for ws in ws1 ws2; do
  timeout 20 rbd clone rbd/base@v1 "rbd/$ws" || fail "rbd clone $ws"
done
used() { rbd_du "$1"; }
echo "rbd du of a fresh clone: $(used ws1) bytes"
[ "$(used ws1)" -eq 0 ] || fail "a fresh clone already holds $(used ws1) bytes"

start_blockd --export "ws1=rbd:rbd/ws1,conf=$CEPH_CONF" --export "ws2=rbd:rbd/ws2,conf=$CEPH_CONF" \
  --export "base=rbd:rbd/base@v1,readonly,conf=$CEPH_CONF"
u() { echo "nbd+unix:///$1?socket=$NBD_SOCK"; }
qemu-img compare -f raw -F raw "$(u ws1)" "$TMP/base.raw" >/dev/null || fail "clone ws1 does not read as the base"
qemu-io -f raw -c "write -P 0x5a 4M 1M" "$(u ws1)" >/dev/null || fail "write to ws1"
qemu-io -f raw -c "read -P 0x5a 4M 1M" "$(u ws1)" | grep -q "read 1048576" || fail "read back from ws1"
qemu-img compare -f raw -F raw "$(u ws2)" "$TMP/base.raw" >/dev/null || fail "ws2 changed with ws1"
qemu-img compare -f raw -F raw "$(u base)" "$TMP/base.raw" >/dev/null || fail "the base snapshot changed"
echo "rbd du after 1 MiB written to ws1: ws1 $(used ws1), ws2 $(used ws2)"
[ "$(used ws1)" -gt 0 ] && [ "$(used ws2)" -eq 0 ] || fail "copy-on-write: ws1 $(used ws1), ws2 $(used ws2)"
stop_blockd

# The workspace moves: another blockd (another host) serves the same clone.
start_blockd --export "ws1=rbd:rbd/ws1,conf=$CEPH_CONF"
qemu-io -f raw -c "read -P 0x5a 4M 1M" "$(u ws1)" | grep -q "read 1048576" || fail "ws1 after the move"
stop_blockd
timeout 30 rbd export rbd/base@v1 "$TMP/base-after.raw" 2>/dev/null
cmp "$TMP/base.raw" "$TMP/base-after.raw" || fail "the base changed"
echo "PASS"

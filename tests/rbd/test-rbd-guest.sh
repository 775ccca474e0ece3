#!/usr/bin/env bash
# A workspace disk in Ceph: blockd-launch --disk rbd:POOL/IMAGE boots the tiny
# guest on an RBD image (QEMU's NBD client -> blockd -> librbd); 64 MiB the
# guest writes land as objects in the cluster, and a guest discard of them
# frees those objects again (`rbd du` falls back), the whole path end to end.
# Then a local overlay over an RBD snapshot as the guest's disk: the guest
# reads the snapshot's data through it, its writes and discards change the
# overlay file on the host and nothing in the cluster.
. "$SRCDIR/tests/lib.sh"
. "$SRCDIR/tests/guest/guestlib.sh"
. "$SRCDIR/tests/rbd/cephlib.sh"
require_ceph
[ "${BLOCKD_RBD:-}" = yes ] || skip "blockd built without librbd (librbd-dev)"

MiB=$((1 << 20))
start_ceph
timeout 20 rbd create --size 256M rbd/ws
start=$(rbd_du ws)

launch "
dd if=/dev/urandom of=/tmp/r bs=1M count=1 2>/dev/null
for i in \$(seq 64); do cat /tmp/r; done | dd of=/dev/vda bs=1M seek=64 oflag=direct 2>/dev/null
sync
echo WRITTEN; read go
blkdiscard -o $((64 * MiB)) -l $((64 * MiB)) /dev/vda && echo DISCARDED; read go
" --disk "rbd:rbd/ws,conf=$CEPH_CONF" --memory 512M --cpus 1

wait_console '^WRITTEN'
written=$(rbd_du ws)
guest_send go
wait_console '^DISCARDED'
sleep 0.5
trimmed=$(rbd_du ws)
guest_send go
launch_wait
after=$(rbd_du ws)
echo "rbd du: start $((start / 1024)) KiB, written $((written / 1024)) KiB," \
     "discarded $((trimmed / 1024)) KiB, after shutdown $((after / 1024)) KiB"

[ "$LAUNCH_RC" -eq 0 ] || { show_logs; fail "blockd-launch exited $LAUNCH_RC"; }
grep -q "script exited with status 0" "$CONSOLE" || { show_logs; fail "guest script failed"; }
[ $((written - start)) -ge $((60 * MiB)) ] || fail "the image grew by only $(((written - start) / 1024)) KiB"
[ $((trimmed - start)) -le $((4 * MiB)) ] || fail "the discard left $(((trimmed - start) / 1024)) KiB of objects"
[ $((after - start)) -le $((4 * MiB)) ] || fail "$(((after - start) / 1024)) KiB of objects after shutdown"
assert_nothing_left

# A missing image: blockd refuses it at start, and the launcher passes its
# one line on with exit status 2, having started no QEMU.
rc=0
"$BLOCKD_LAUNCH" --accel tcg --kernel "$GUEST/vmlinuz" --disk "rbd:rbd/nosuch,conf=$CEPH_CONF" \
  < /dev/null > "$TMP/missing.out" 2> "$TMP/missing.err" || rc=$?
[ "$rc" -eq 2 ] || { cat "$TMP/missing.err" >&2; fail "missing image: exit $rc, wanted 2"; }
grep -q "nosuch" "$TMP/missing.err" || { cat "$TMP/missing.err" >&2; fail "missing image: no message naming it"; }
echo "missing image: $(head -1 "$TMP/missing.err")"
assert_nothing_left

# A local overlay over a snapshot: 16 MiB of base data in a 128 MiB disk.
head -c $((16 * MiB)) /dev/urandom > "$TMP/base.raw"
truncate -s 128M "$TMP/base.raw"
sum=$(head -c $((16 * MiB)) "$TMP/base.raw" | md5sum | cut -d' ' -f1)
"$BLOCKD_IMG" convert "$TMP/base.raw" rbd:rbd/base || fail "import the base"
timeout 20 rbd snap create rbd/base@v1 2>/dev/null || fail "rbd snap create"
"$BLOCKD_IMG" create -b rbd:rbd/base@v1 "$TMP/ws.ovl" 2>/dev/null || fail "overlay over rbd"
base_du=$(rbd_du base)
launch "
echo BASE \$(dd if=/dev/vda bs=1M count=16 2>/dev/null | md5sum)
dd if=/dev/urandom of=/tmp/r bs=1M count=1 2>/dev/null
for i in \$(seq 32); do cat /tmp/r; done | dd of=/dev/vda bs=1M seek=64 oflag=direct 2>/dev/null
sync
echo WRITTEN; read go
blkdiscard -o $((64 * MiB)) -l $((32 * MiB)) /dev/vda && echo DISCARDED; read go
" --disk "$TMP/ws.ovl" --allow-base-dir rbd:rbd --memory 512M --cpus 1
wait_console '^WRITTEN'
grep -q "^BASE $sum" "$CONSOLE" || { show_logs; fail "the guest did not read the snapshot's data"; }
written=$(allocated "$TMP/ws.ovl")
guest_send go
wait_console '^DISCARDED'
trimmed=$(allocated "$TMP/ws.ovl")
guest_send go
launch_wait
echo "overlay over rbd:rbd/base@v1: $((written / 1024)) KiB on the host after 32 MiB written,"      "$((trimmed / 1024)) KiB after the discard; base in the cluster $((base_du / 1024)) KiB,"      "$(($(rbd_du base) / 1024)) KiB after"
[ "$LAUNCH_RC" -eq 0 ] || { show_logs; fail "blockd-launch exited $LAUNCH_RC"; }
[ "$written" -ge $((32 * MiB)) ] || fail "the overlay holds only $((written / 1024)) KiB"
[ "$trimmed" -le $((2 * MiB)) ] || fail "the discard left $((trimmed / 1024)) KiB in the overlay"
[ "$(rbd_du base)" -eq "$base_du" ] || fail "the guest changed the base in the cluster"
assert_nothing_left
echo "PASS"

#!/usr/bin/env bash
# A workspace disk in Ceph: blockd-launch --disk rbd:POOL/IMAGE boots the tiny
# guest on an RBD image (QEMU's NBD client -> blockd -> librbd); 64 MiB the
# guest writes land as objects in the cluster, and a guest discard of them
# frees those objects again (`rbd du` falls back), the whole path end to end.
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
echo "PASS"

#!/bin/bash
# blockd-launch end to end: 64 MiB the guest writes to its overlay disk land
# in the host file, and a guest discard punches them out again, through
# virtio-blk, QEMU's NBD client and blockd. The base image never changes.
. "$SRCDIR/tests/lib.sh"
. "$SRCDIR/tests/guest/guestlib.sh"

MiB=$((1 << 20))
# The base: 256 MiB with data in every 4 MiB, so the overlay sits over a
# base that is not all zeroes.
truncate -s 256M "$TMP/base.raw"
for i in $(seq 0 63); do
  dd if=/dev/urandom of="$TMP/base.raw" bs=64K count=1 seek=$((i * 64)) conv=notrunc status=none
done
base_sum=$(sha256sum < "$TMP/base.raw")
if [ -x "${BLOCKD_IMG:-}" ] && "$BLOCKD_IMG" create -b "$TMP/base.raw" "$TMP/ws.ovl" >/dev/null 2>&1; then
  disk=$TMP/ws.ovl
else
  echo "NOTE: no overlay format in this build; testing a sparse raw disk instead"
  cp --sparse=always "$TMP/base.raw" "$TMP/ws.raw"
  disk=$TMP/ws.raw
fi

launch "
# Random 1 MiB repeated: /dev/urandom is slow under TCG; zeroes would be
# trimmed on the way (detect-zeroes=unmap) and never allocate.
dd if=/dev/urandom of=/tmp/r bs=1M count=1 2>/dev/null
for i in \$(seq 64); do cat /tmp/r; done | dd of=/dev/vda bs=1M seek=64 2>/dev/null
sync
echo WRITTEN; read go
blkdiscard -o $((64 * MiB)) -l $((64 * MiB)) /dev/vda && echo DISCARDED; read go
" --disk "$disk" --memory 512M --cpus 1

start=$(allocated "$disk")
wait_console '^WRITTEN'
written=$(allocated "$disk")
guest_send go
wait_console '^DISCARDED'
sleep 0.5
trimmed=$(allocated "$disk")
guest_send go
launch_wait
after=$(allocated "$disk")
echo "allocated: start $((start / 1024)) KiB, written $((written / 1024)) KiB," \
     "discarded $((trimmed / 1024)) KiB, after shutdown $((after / 1024)) KiB"

[ "$LAUNCH_RC" -eq 0 ] || { show_logs; fail "blockd-launch exited $LAUNCH_RC"; }
grep -q "script exited with status 0" "$CONSOLE" || { show_logs; fail "guest script failed"; }
[ $((written - start)) -ge $((60 * MiB)) ] || fail "the disk grew by only $(((written - start) / 1024)) KiB"
[ $((trimmed - start)) -le $((4 * MiB)) ] || fail "discard left $(((trimmed - start) / 1024)) KiB allocated"
[ $((after - start)) -le $((4 * MiB)) ] || fail "$(((after - start) / 1024)) KiB allocated after shutdown"
[ "$(sha256sum < "$TMP/base.raw")" = "$base_sum" ] || fail "the base image changed"
assert_nothing_left
echo "PASS"

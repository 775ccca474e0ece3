#!/bin/bash
# blockd-launch: memory the guest frees goes back to the host. The guest fills
# 400 MiB of tmpfs and frees it; virtio-balloon free page reporting must bring
# QEMU's RSS down by at least 250 MiB within 20 s.
. "$SRCDIR/tests/lib.sh"
. "$SRCDIR/tests/guest/guestlib.sh"

truncate -s 64M "$TMP/disk.raw"
launch '
mkdir /fill && mount -t tmpfs -o size=600M tmpfs /fill
dd if=/dev/zero of=/fill/big bs=1M count=400 2>/dev/null
echo FILLED; read go
rm /fill/big
echo FREED; read go
' --disk "$TMP/disk.raw" --memory 1G --cpus 1

wait_console '^FILLED'
qemu=$(child_pid qemu-system-x86) || fail "no QEMU process"
sleep 1
peak=$(rss_kib "$qemu")
guest_send go
wait_console '^FREED'
t0=$(date +%s%N)
low=$peak
while :; do
  rss=$(rss_kib "$qemu")
  [ "$rss" -lt "$low" ] && low=$rss
  elapsed=$((($(date +%s%N) - t0) / 1000000))
  [ $((peak - low)) -ge $((250 * 1024)) ] && break
  [ "$elapsed" -ge 20000 ] && break
  sleep 0.25
done
echo "QEMU RSS: $((peak / 1024)) MiB filled, $((low / 1024)) MiB after the free" \
     "($(((peak - low) / 1024)) MiB returned in $((elapsed / 1000)).$((elapsed % 1000 / 100)) s)"
guest_send go
launch_wait
[ "$LAUNCH_RC" -eq 0 ] || { show_logs; fail "blockd-launch exited $LAUNCH_RC"; }
[ $((peak - low)) -ge $((250 * 1024)) ] || fail "RSS fell by only $(((peak - low) / 1024)) MiB in 20 s"
assert_nothing_left "$qemu"
echo "PASS"

#!/bin/bash
# blockd-launch: SIGTERM presses the guest's power button; the guest powers
# off cleanly, blockd is drained, and no process, socket or runtime
# directory is left behind.
. "$SRCDIR/tests/lib.sh"
. "$SRCDIR/tests/guest/guestlib.sh"

truncate -s 64M "$TMP/disk.raw"
launch 'echo READY; sleep 600' --disk "$TMP/disk.raw" --memory 512M --cpus 1 \
  --qmp "$TMP/user-qmp.sock" --grace 60
wait_console '^READY'
qemu=$(child_pid qemu-system-x86) || fail "no QEMU process"
blockd=$(child_pid blockd) || fail "no blockd process"
[ -S "$TMP/user-qmp.sock" ] || fail "--qmp socket missing"
if [ "$TRANSPORT" = vhost-user ]; then sock=vhost0.sock; else sock=nbd.sock; fi
ls "$XDG_RUNTIME_DIR"/blockd-launch.*/$sock > /dev/null || fail "no $sock in the runtime directory"

kill -TERM "$LAUNCH_PID"
launch_wait 90
cat "$LAUNCH_ERR"
[ "$LAUNCH_RC" -eq 0 ] || { show_logs; fail "blockd-launch exited $LAUNCH_RC after SIGTERM"; }
grep -q "power button pressed" "$CONSOLE" || { show_logs; fail "the guest did not see the power button"; }
assert_nothing_left "$qemu" "$blockd"
[ -e "$TMP/user-qmp.sock" ] && fail "--qmp socket left behind"
echo "PASS"

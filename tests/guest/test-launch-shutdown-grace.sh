#!/bin/bash
# blockd-launch: a guest that ignores the power button is stopped once the
# grace period is over (QMP quit), and the exit status (3) says so.
. "$SRCDIR/tests/lib.sh"
. "$SRCDIR/tests/guest/guestlib.sh"

truncate -s 64M "$TMP/disk.raw"
# Killing the init's power-button reader makes the guest deaf to the button.
launch 'killall dd; echo READY; sleep 600' --disk "$TMP/disk.raw" --memory 512M --cpus 1 --grace 3
wait_console '^READY'
qemu=$(child_pid qemu-system-x86) || fail "no QEMU process"
blockd=$(child_pid blockd) || fail "no blockd process"

t0=$(date +%s)
kill -TERM "$LAUNCH_PID"
launch_wait 60
t=$(($(date +%s) - t0))
cat "$LAUNCH_ERR"
echo "stopped $t s after SIGTERM"
[ "$LAUNCH_RC" -eq 3 ] || { show_logs; fail "blockd-launch exited $LAUNCH_RC, not 3"; }
grep -q "did not power off within 3 s" "$LAUNCH_ERR" || fail "no message about the grace period"
[ "$t" -ge 3 ] || fail "stopped after $t s, before the grace period was over"
grep -q "power button pressed" "$CONSOLE" && fail "the guest saw the button after all"
assert_nothing_left "$qemu" "$blockd"
echo "PASS"

#!/bin/bash
# blockd-launch: when blockd dies under a running guest, the launcher stops
# QEMU, cleans up and exits 5 saying blockd died.
. "$SRCDIR/tests/lib.sh"
. "$SRCDIR/tests/guest/guestlib.sh"

launch_idle
qemu=$QEMU_PID blockd=$BLOCKD_CHILD_PID

kill -KILL "$blockd"
launch_wait 60
cat "$LAUNCH_ERR"
[ "$LAUNCH_RC" -eq 5 ] || { show_logs; fail "blockd-launch exited $LAUNCH_RC, not 5 (blockd died)"; }
grep -q "blockd killed by signal KILL" "$LAUNCH_ERR" || fail "the message does not say blockd was killed"
assert_nothing_left "$qemu" "$blockd"
echo "PASS"

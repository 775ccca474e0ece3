#!/bin/bash
# blockd-launch: when QEMU is killed (SIGKILL) under it, the launcher stops
# blockd, cleans up and exits non-zero saying QEMU died.
. "$SRCDIR/tests/lib.sh"
. "$SRCDIR/tests/guest/guestlib.sh"

launch_idle
qemu=$QEMU_PID blockd=$BLOCKD_CHILD_PID

kill -KILL "$qemu"
launch_wait 60
cat "$LAUNCH_ERR"
[ "$LAUNCH_RC" -eq 4 ] || { show_logs; fail "blockd-launch exited $LAUNCH_RC, not 4 (QEMU died)"; }
grep -q "QEMU killed by signal KILL" "$LAUNCH_ERR" || fail "the message does not say QEMU was killed"
assert_nothing_left "$qemu" "$blockd"
echo "PASS"

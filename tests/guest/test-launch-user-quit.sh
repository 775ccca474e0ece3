#!/bin/bash
# blockd-launch: Ctrl-A x at the console is the user quitting QEMU, told apart
# from QEMU dying (4) and from the launcher's own quit after the grace period
# (3): exit status 7, one line saying so, blockd drained, nothing left behind.
. "$SRCDIR/tests/lib.sh"
. "$SRCDIR/tests/guest/guestlib.sh"

launch_idle
printf '\001x' >&9    # Ctrl-A x: QEMU's console mux quits
launch_wait 60
cat "$LAUNCH_ERR"
[ "$LAUNCH_RC" -eq 7 ] || { show_logs; fail "blockd-launch exited $LAUNCH_RC after Ctrl-A x, not 7"; }
[ "$(wc -l < "$LAUNCH_ERR")" -eq 1 ] || fail "not one line on stderr"
grep -q "QEMU quit at the user's request (Ctrl-A x" "$LAUNCH_ERR" || fail "no message about the user's quit"
grep -q "power button pressed" "$CONSOLE" && fail "the guest saw a power button"
assert_nothing_left "$QEMU_PID" "$BLOCKD_CHILD_PID"
echo "PASS"

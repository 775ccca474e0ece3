#!/bin/bash
# blockd-launch SIGKILLed: QEMU and blockd go with it (parent-death signal),
# and the next launch removes the runtime directory it could not.
. "$SRCDIR/tests/lib.sh"
. "$SRCDIR/tests/guest/guestlib.sh"

launch_idle
qemu=$QEMU_PID blockd=$BLOCKD_CHILD_PID

kill -KILL "$LAUNCH_PID"
launch_wait 10
for _ in $(seq 100); do
  kill -0 "$qemu" 2>/dev/null || kill -0 "$blockd" 2>/dev/null || break
  sleep 0.1
done
kill -0 "$qemu" 2>/dev/null && fail "QEMU outlived the launcher"
kill -0 "$blockd" 2>/dev/null && fail "blockd outlived the launcher"
left=$(ls -A "$XDG_RUNTIME_DIR")
echo "left by the killed launcher: $left"
[ -n "$left" ] || fail "expected the killed launcher's runtime directory"

# A launch that gets as far as creating its own runtime directory sweeps the
# stale one (blockd then refuses the disk, so no guest boots).
rc=0
"$BLOCKD_LAUNCH" --accel tcg --kernel "$GUEST/vmlinuz" --disk "$TMP/disk.raw,format=qcow2" \
  2> "$TMP/err" < /dev/null || rc=$?
[ "$rc" -eq 2 ] || fail "exit status $rc, not 2: $(cat "$TMP/err")"
assert_nothing_left "$qemu" "$blockd"
echo "PASS"

#!/bin/bash
# blockd-launch + the tiny guest: the guest runs a script found on a disk
# with serial "script" (no kernel command line), and a readonly disk is
# read-only all the way: the guest reads it but cannot write it.
. "$SRCDIR/tests/lib.sh"
. "$SRCDIR/tests/guest/guestlib.sh"

cat > "$TMP/script.img" <<'SCRIPT'
ro=$(cat /sys/block/vdb/ro)
echo "RO $ro"
if dd if=/dev/zero of=/dev/vdb bs=4096 count=1 conv=fsync 2>/dev/null; then echo "WRITE OK"; else echo "WRITE REFUSED"; fi
echo "DATA $(dd if=/dev/vda bs=1 count=13 skip=4096 2>/dev/null)"
SCRIPT
truncate -s 64K "$TMP/script.img"   # NUL padding, dropped by the guest
truncate -s 64M "$TMP/data.raw"
printf 'hello, guest!' | dd of="$TMP/data.raw" bs=1 seek=4096 conv=notrunc status=none
sum=$(sha256sum < "$TMP/script.img")

rm -f "$TMP/console.in"; mkfifo "$TMP/console.in"
"$BLOCKD_LAUNCH" --accel tcg --kernel "$GUEST/vmlinuz" --initrd "$GUEST/initrd.img" \
  --append "console=ttyS0 quiet panic=-1" --memory 512M --cpus 1 \
  --disk "$TMP/data.raw,readonly" --disk "$TMP/script.img,readonly,serial=script" \
  < "$TMP/console.in" > "$CONSOLE" 2> "$LAUNCH_ERR" &
LAUNCH_PID=$!
track "$LAUNCH_PID"
exec 9> "$TMP/console.in"
launch_wait
cat "$CONSOLE"
[ "$LAUNCH_RC" -eq 0 ] || { show_logs; fail "blockd-launch exited $LAUNCH_RC"; }
grep -q "^RO 1" "$CONSOLE" || fail "the readonly disk is writable in the guest"
grep -q "^WRITE REFUSED" "$CONSOLE" || fail "the guest wrote to a readonly disk"
grep -q "^DATA hello, guest!" "$CONSOLE" || fail "the guest did not read the readonly disk"
[ "$(sha256sum < "$TMP/script.img")" = "$sum" ] || fail "the readonly disk changed"
assert_nothing_left
echo "PASS"

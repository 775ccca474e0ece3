#!/bin/bash
# blockd-launch: what a guest writes in one launch reads back intact in the
# next launch of the same disk (and on the host, once flattened).
. "$SRCDIR/tests/lib.sh"
. "$SRCDIR/tests/guest/guestlib.sh"

truncate -s 128M "$TMP/base.raw"
if [ -x "${BLOCKD_IMG:-}" ] && "$BLOCKD_IMG" create -b "$TMP/base.raw" "$TMP/ws.ovl" >/dev/null 2>&1; then
  disk=$TMP/ws.ovl
else
  echo "NOTE: no overlay format in this build; testing a sparse raw disk instead"
  disk=$TMP/base.raw
fi

# 8 MiB of random data at 16 MiB, plus a partial cluster at 40 MiB + 1000
# bytes (a copy-up on an overlay).
launch '
dd if=/dev/urandom of=/tmp/data bs=1M count=8 2>/dev/null
dd if=/tmp/data of=/dev/vda bs=1M seek=16 2>/dev/null
printf "persisted across launches" | dd of=/dev/vda bs=1 seek=$((40 * 1048576 + 1000)) 2>/dev/null
sync
echo "WROTE $(sha256sum < /tmp/data | cut -c1-64)"
' --disk "$disk" --memory 512M --cpus 1
launch_wait
[ "$LAUNCH_RC" -eq 0 ] || { show_logs; fail "first launch exited $LAUNCH_RC"; }
wrote=$(sed -n 's/^WROTE \([0-9a-f]\{64\}\).*/\1/p' "$CONSOLE")
[ -n "$wrote" ] || { show_logs; fail "first launch did not write"; }
assert_nothing_left

launch '
echo "READ $(dd if=/dev/vda bs=1M skip=16 count=8 2>/dev/null | sha256sum | cut -c1-64)"
echo "TEXT $(dd if=/dev/vda bs=1 skip=$((40 * 1048576 + 1000)) count=25 2>/dev/null)"
' --disk "$disk" --memory 512M --cpus 1
launch_wait
[ "$LAUNCH_RC" -eq 0 ] || { show_logs; fail "second launch exited $LAUNCH_RC"; }
read=$(sed -n 's/^READ \([0-9a-f]\{64\}\).*/\1/p' "$CONSOLE")
echo "written $wrote, read back $read"
[ "$read" = "$wrote" ] || { show_logs; fail "data read back differs from data written"; }
grep -q "^TEXT persisted across launches" "$CONSOLE" || { show_logs; fail "partial-cluster write lost"; }

# The host sees the same bytes.
if [ "$disk" = "$TMP/ws.ovl" ]; then
  "$BLOCKD_IMG" convert "$disk" "$TMP/flat.raw" 2>/dev/null
  host=$(dd if="$TMP/flat.raw" bs=1M skip=16 count=8 status=none | sha256sum | cut -c1-64)
else
  host=$(dd if="$disk" bs=1M skip=16 count=8 status=none | sha256sum | cut -c1-64)
fi
[ "$host" = "$wrote" ] || fail "the host file does not hold what the guest wrote"
assert_nothing_left
echo "PASS"

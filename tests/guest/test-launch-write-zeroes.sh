#!/bin/bash
# blockd-launch: write-zeroes from the guest (the kernel's fallocate on the
# disk: ZERO_RANGE must not deallocate, PUNCH_HOLE may) reach blockd as NBD
# WRITE_ZEROES or virtio-blk WRITE_ZEROES and read back as zeroes on an
# overlay over a base that is not zero: base data never resurfaces, the
# unmapped range leaves no data allocated, the base never changes.
. "$SRCDIR/tests/lib.sh"
. "$SRCDIR/tests/guest/guestlib.sh"

[ -x "$BUILDDIR/launcher/zeroout" ] || skip "zeroout (the guest's write-zeroes tool) not built"
[ -x "${BLOCKD_IMG:-}" ] || skip "blockd-img not built"
MiB=$((1 << 20))
truncate -s 128M "$TMP/base.raw"
dd if=/dev/urandom of="$TMP/base.raw" bs=1M count=64 conv=notrunc status=none
base_sum=$(sha256sum < "$TMP/base.raw")
"$BLOCKD_IMG" create -b "$TMP/base.raw" "$TMP/ws.ovl"

launch "
# 16 MiB the guest writes at 64 MiB, then zeroes 8 MiB of it without unmap.
dd if=/dev/urandom of=/tmp/r bs=1M count=1 2>/dev/null
for i in \$(seq 16); do cat /tmp/r; done | dd of=/dev/vda bs=1M seek=64 2>/dev/null
sync
zeroout /dev/vda $((64 * MiB)) $((8 * MiB)) && echo ZEROED
# Base data: zeroed with unmap, then read.
zeroout -u /dev/vda $((16 * MiB)) $((16 * MiB)) && echo UNMAPPED
sync
echo 3 > /proc/sys/vm/drop_caches
echo \"SUM1 \$(dd if=/dev/vda bs=1M skip=64 count=8 2>/dev/null | md5sum | cut -c1-32)\"
echo \"SUM2 \$(dd if=/dev/vda bs=1M skip=16 count=16 2>/dev/null | md5sum | cut -c1-32)\"
echo \"SUM3 \$(dd if=/dev/vda bs=1M skip=72 count=8 2>/dev/null | md5sum | cut -c1-32)\"
echo \"R \$(for i in 1 2 3 4 5 6 7 8; do cat /tmp/r; done | md5sum | cut -c1-32)\"
" --disk "$TMP/ws.ovl" --memory 512M --cpus 1
launch_wait
[ "$LAUNCH_RC" -eq 0 ] || { show_logs; fail "blockd-launch exited $LAUNCH_RC"; }
grep -q '^ZEROED' "$CONSOLE" && grep -q '^UNMAPPED' "$CONSOLE" ||
  { show_logs; fail "the guest could not send write-zeroes"; }
zero8=$(head -c $((8 * MiB)) /dev/zero | md5sum | cut -c1-32)
zero16=$(head -c $((16 * MiB)) /dev/zero | md5sum | cut -c1-32)
grep -q "^SUM1 $zero8" "$CONSOLE" || { show_logs; fail "zeroed guest data does not read as zeroes"; }
grep -q "^SUM2 $zero16" "$CONSOLE" || { show_logs; fail "base data resurfaced after write-zeroes"; }
r=$(sed -n 's/^R //p' "$CONSOLE")
grep -q "^SUM3 $r" "$CONSOLE" || { show_logs; fail "data next to the zeroed range changed"; }
# On the host: the flattened overlay agrees, and the unmapped range holds
# no data in the overlay file (holes, or at most partial clusters).
"$BLOCKD_IMG" convert "$TMP/ws.ovl" "$TMP/flat.raw" 2>/dev/null
[ "$(dd if="$TMP/flat.raw" bs=1M skip=16 count=16 status=none | md5sum | cut -c1-32)" = "$zero16" ] ||
  fail "the host reads base data in the unmapped range"
[ "$(sha256sum < "$TMP/base.raw")" = "$base_sum" ] || fail "the base image changed"
# 16 MiB written (8 of it zeroed in place, which may stay allocated); the
# unmapped 16 MiB of base must add nothing.
alloc=$(allocated "$TMP/ws.ovl")
[ "$alloc" -le $((17 * MiB)) ] || fail "the overlay holds $((alloc / MiB)) MiB: the unmapped range was written"
echo "write-zeroes over $TRANSPORT: zeroed, unmapped, base intact, overlay $((alloc / 1024)) KiB"
assert_nothing_left
echo PASS

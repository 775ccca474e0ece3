#!/usr/bin/env bash
# The examples of docs/nbdkit-blockd-plugin.md work: nbdkit's filters stack
# on the plugin (--filter=cow keeps the image untouched, --filter=blocksize
# turns unaligned requests into aligned ones).
. "${SRCDIR:?run through meson test}/tests/lib.sh"
require nbdkit qemu-io qemu-img
[ -f "${NBDKIT_PLUGIN:-}" ] || skip "nbdkit-blockd-plugin.so not built"
for f in cow blocksize; do
  nbdkit --dump-plugin --filter="$f" null >/dev/null 2>&1 || skip "nbdkit-$f-filter not installed"
done

img=$TMP/disk.img
head -c $((8 << 20)) /dev/zero | tr '\0' 'Z' >"$img"
sum=$(md5sum <"$img")

# --filter=cow: the client writes, discards and zeroes into a throwaway
# overlay in memory; the image, served read-only, stays as it was.
nbdkit -U - --filter=cow "$NBDKIT_PLUGIN" file="$img" readonly=true --run '
  qemu-io -f raw -c "write -P 0x11 1M 64k" -c "read -P 0x11 1M 64k" \
    -c "write -z 2M 64k" -c "read -P 0 2M 64k" -c "read -P 0x5a 0 1M" "$uri"
' >"$TMP/cow.out" 2>&1 || { cat "$TMP/cow.out" >&2; fail "--filter=cow"; }
! grep -qi fail "$TMP/cow.out" || { cat "$TMP/cow.out" >&2; fail "--filter=cow: pattern"; }
[ "$(md5sum <"$img")" = "$sum" ] || fail "--filter=cow wrote to the image"
echo "ok: --filter=cow"

# --filter=blocksize: the plugin sees only 4k-aligned requests whatever the
# client sends (the filter reads, modifies and writes the edges).
cp "$img" "$TMP/expected.img"
qemu-io -f raw -c "write -P 0x22 4097 3000" "$TMP/expected.img" >/dev/null
nbdkit -U - --filter=blocksize "$NBDKIT_PLUGIN" file="$img" minblock=4096 maxdata=64k --run '
  qemu-io -f raw -c "write -P 0x22 4097 3000" -c "read -P 0x22 4097 3000" \
    -c "read -P 0x5a 0 4097" -c "read -P 0x5a 7097 1M" "$uri"
' >"$TMP/bs.out" 2>&1 || { cat "$TMP/bs.out" >&2; fail "--filter=blocksize"; }
! grep -qi fail "$TMP/bs.out" || { cat "$TMP/bs.out" >&2; fail "--filter=blocksize: pattern"; }
cmp "$TMP/expected.img" "$img" || fail "--filter=blocksize: the image differs from the expected one"
echo "PASS"

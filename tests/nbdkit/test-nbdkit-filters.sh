#!/usr/bin/env bash
# The examples of docs/nbdkit-blockd-plugin.md work: nbdkit's filters stack
# on the plugin (--filter=cow keeps the image untouched, --filter=blocksize
# turns unaligned requests into aligned ones).
. "${SRCDIR:?run through meson test}/tests/lib.sh"
. "$SRCDIR/tests/nbdkit/plugin.sh"
plugin_require
require qemu-io
for f in cow blocksize; do
  nbdkit --dump-plugin --filter="$f" null >/dev/null 2>&1 || skip "nbdkit-$f-filter not installed"
done

img=$TMP/disk.img
head -c $((8 << 20)) /dev/zero | tr '\0' 'Z' >"$img"
sum=$(md5sum <"$img")

# qio NAME QEMU-IO-ARGS...: qemu-io on the plugin; any failure fails the test.
qio() {
  local name=$1 out rc=0
  shift
  out=$(qemu-io -f raw "$@" "$PLUGIN_URI" 2>&1) || rc=$?
  if [ "$rc" -ne 0 ] || grep -qi fail <<<"$out"; then
    echo "$out" >&2
    fail "$name: qemu-io $*"
  fi
}

# --filter=cow: the client writes, discards and zeroes into a throwaway
# overlay in memory; the image, served read-only, stays as it was.
plugin_start cow --filter=cow file="$img" readonly=true
qio cow -c "write -P 0x11 1M 64k" -c "read -P 0x11 1M 64k" -c "write -z 2M 64k" \
  -c "read -P 0 2M 64k" -c "discard 3M 1M" -c "read -P 0x5a 0 1M"
plugin_stop
[ "$(md5sum <"$img")" = "$sum" ] || fail "--filter=cow wrote to the image"
echo "ok: --filter=cow"

# --filter=blocksize: the plugin sees only 4k-aligned requests whatever the
# client sends (the filter reads, modifies and writes the edges).
cp "$img" "$TMP/expected.img"
qemu-io -f raw -c "write -P 0x22 4097 3000" "$TMP/expected.img" >/dev/null
plugin_start bs --filter=blocksize file="$img" minblock=4096 maxdata=64k
qio blocksize -c "write -P 0x22 4097 3000" -c "read -P 0x22 4097 3000" \
  -c "read -P 0x5a 0 4097" -c "read -P 0x5a 7097 1M"
plugin_stop
cmp "$TMP/expected.img" "$img" || fail "--filter=blocksize: the image differs from the expected one"
echo "PASS"

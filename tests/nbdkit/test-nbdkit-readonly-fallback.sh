#!/usr/bin/env bash
# An image the server may not write is served read-only rather than refused
# (like nbdkit's file plugin), so `nbdkit -r` and --filter=cow work on it
# without readonly=true; readonly=true never opens for writing at all.
. "${SRCDIR:?run through meson test}/tests/lib.sh"
. "$SRCDIR/tests/nbdkit/plugin.sh"
plugin_require
require nbdinfo setpriv qemu-io
[ "$(id -u)" -eq 0 ] || skip "needs root to run nbdkit as another user"
id nobody >/dev/null 2>&1 || skip "no user nobody"

# The image is readable by everyone and writable by root only; the server
# runs as nobody, from copies it can read, with its socket in $TMP.
chmod 1777 "$TMP"
img=$TMP/disk.img
head -c $((1 << 20)) /dev/zero | tr '\0' 'Z' >"$img"
chmod 644 "$img"
cp "$NBDKIT_PLUGIN" "$TMP/plugin.so"
cp "$NBDKIT" "$TMP/run-nbdkit.sh"
chmod 755 "$TMP/plugin.so" "$TMP/run-nbdkit.sh"
NBDKIT_PLUGIN=$TMP/plugin.so
NBDKIT=(setpriv --reuid=nobody --regid="$(id -g nobody)" --clear-groups "$TMP/run-nbdkit.sh")

# start [--filter=F] PARAMS...: like plugin_start, as nobody.
start() {
  local filters=()
  while [[ $1 == --filter=* ]]; do filters+=("$1"); shift; done
  rm -f "$TMP/nobody.pid" "$TMP/nobody.sock"
  "${NBDKIT[@]}" -f -U "$TMP/nobody.sock" -P "$TMP/nobody.pid" "${filters[@]}" \
    "$NBDKIT_PLUGIN" "$@" 2>>"$TMP/nobody.log" &
  PLUGIN_PID=$!
  track "$PLUGIN_PID"
  wait_for_file "$TMP/nobody.pid" 10
  for _ in $(seq 50); do [ -s "$TMP/nobody.pid" ] && break; sleep 0.05; done
  PLUGIN_URI="nbd+unix:///?socket=$TMP/nobody.sock"
}

start file="$img"
out=$(nbdinfo "$PLUGIN_URI" 2>&1) || { cat "$TMP/nobody.log" >&2; fail "not served: $out"; }
grep -q 'is_read_only: true' <<<"$out" || { echo "$out" >&2; fail "not read-only"; }
plugin_stop
echo "ok: unwritable image served read-only"

start --filter=cow file="$img"
out=$(qemu-io -f raw -c "write -P 0x11 0 4k" -c "read -P 0x11 0 4k" -c "read -P 0x5a 4k 4k" \
        "$PLUGIN_URI" 2>&1) || fail "--filter=cow on an unwritable image: $out"
! grep -qi fail <<<"$out" || { echo "$out" >&2; fail "--filter=cow patterns"; }
plugin_stop
echo "ok: --filter=cow over an unwritable image"

# readonly=true on a writable image: read-only export, file untouched.
sum=$(md5sum <"$img")
NBDKIT_PLUGIN=$TMP/plugin.so NBDKIT=$TMP/run-nbdkit.sh
plugin_start root file="$img" readonly=true
out=$(nbdinfo "$PLUGIN_URI")
grep -q 'is_read_only: true' <<<"$out" || { echo "$out" >&2; fail "readonly=true not read-only"; }
qemu-io -f raw -c "write 0 4k" "$PLUGIN_URI" >/dev/null 2>&1 || true
plugin_stop
[ "$(md5sum <"$img")" = "$sum" ] || fail "readonly=true let a write through"
echo "PASS"

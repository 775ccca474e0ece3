#!/usr/bin/env bash
# An image the server may not write is served read-only rather than refused
# (like nbdkit's file plugin), so `nbdkit -r` and --filter=cow work on it
# without readonly=true; readonly=true never opens for writing at all.
. "${SRCDIR:?run through meson test}/tests/lib.sh"
require nbdkit nbdinfo setpriv qemu-io
[ -f "${NBDKIT_PLUGIN:-}" ] || skip "nbdkit-blockd-plugin.so not built"
[ "$(id -u)" -eq 0 ] || skip "needs root to run nbdkit as another user"
id nobody >/dev/null 2>&1 || skip "no user nobody"

# Readable by everyone, writable by root only; nobody runs the server.
chmod 755 "$TMP"
img=$TMP/disk.img
head -c $((1 << 20)) /dev/zero | tr '\0' 'Z' >"$img"
chmod 644 "$img"
cp "$NBDKIT_PLUGIN" "$TMP/plugin.so" # the build tree may not be readable by nobody
chmod 755 "$TMP/plugin.so"
as_nobody() { setpriv --reuid=nobody --regid="$(id -g nobody)" --clear-groups "$@"; }

out=$(as_nobody nbdkit -U - "$TMP/plugin.so" file="$img" --run 'nbdinfo "$uri"' 2>&1) ||
  fail "not served: $out"
grep -q 'is_read_only: true' <<<"$out" || { echo "$out" >&2; fail "not read-only"; }
echo "ok: unwritable image served read-only"

out=$(as_nobody nbdkit -U - --filter=cow "$TMP/plugin.so" file="$img" --run '
  qemu-io -f raw -c "write -P 0x11 0 4k" -c "read -P 0x11 0 4k" -c "read -P 0x5a 4k 4k" "$uri"' 2>&1) ||
  fail "--filter=cow on an unwritable image: $out"
! grep -qi fail <<<"$out" || { echo "$out" >&2; fail "--filter=cow patterns"; }
echo "ok: --filter=cow over an unwritable image"

# readonly=true on a writable image: read-only export, file untouched.
sum=$(md5sum <"$img")
out=$(nbdkit -U - "$NBDKIT_PLUGIN" file="$img" readonly=true --run '
  nbdinfo "$uri"; qemu-io -f raw -c "write 0 4k" "$uri"' 2>&1) || true
grep -q 'is_read_only: true' <<<"$out" || { echo "$out" >&2; fail "readonly=true not read-only"; }
[ "$(md5sum <"$img")" = "$sum" ] || fail "readonly=true let a write through"
echo "PASS"

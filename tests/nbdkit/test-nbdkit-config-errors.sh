#!/usr/bin/env bash
# A bad parameter gives nbdkit's usual one-line error naming the problem and
# a non-zero exit, before any client could connect.
. "${SRCDIR:?run through meson test}/tests/lib.sh"
require nbdkit
[ -f "${NBDKIT_PLUGIN:-}" ] || skip "nbdkit-blockd-plugin.so not built"

img=$TMP/disk.img
truncate -s 1M "$img"
mkdir "$TMP/dir"

# bad_config WANT ARGS...: nbdkit with ARGS fails with one line containing WANT.
bad_config() {
  local want=$1 rc=0 err
  shift
  # --run only runs if the server started; it must not.
  nbdkit -U - "$NBDKIT_PLUGIN" "$@" --run 'echo STARTED' >"$TMP/out" 2>"$TMP/err" || rc=$?
  err=$(cat "$TMP/err")
  [ "$rc" -ne 0 ] || fail "nbdkit $* exited 0"
  ! grep -q STARTED "$TMP/out" || fail "nbdkit $* served anyway"
  [ "$(wc -l <"$TMP/err")" -eq 1 ] || fail "nbdkit $*: not one line: $err"
  grep -q '^nbdkit: .*error: ' "$TMP/err" || fail "nbdkit $*: not an nbdkit error: $err"
  grep -qF -- "$want" "$TMP/err" || fail "nbdkit $*: '$err' does not name '$want'"
  echo "ok: $* -> $err"
}

bad_config "bogus" file="$img" bogus=1
bad_config "nope" file="$img" format=nope
bad_config "maybe" file="$img" readonly=maybe
bad_config "file=" readonly=true
bad_config "$TMP/missing" file="$TMP/missing"
bad_config "$TMP/dir" file="$TMP/dir"
formats=$(nbdkit --dump-plugin "$NBDKIT_PLUGIN" | sed -n 's/^blockd_formats=//p')
# A format override that does not fit the file is refused when opening.
if [[ ",$formats," == *,overlay,* ]]; then
  bad_config "$img" file="$img" format=overlay
fi
# The magic key: a bare FILE is file=FILE.
bad_config "$TMP/missing" "$TMP/missing"

# And the same plugin with good parameters does serve.
out=$(nbdkit -U - "$NBDKIT_PLUGIN" "$img" readonly=1 format=raw --run 'nbdinfo --size "$uri"') ||
  fail "good parameters did not serve"
[ "$out" = 1048576 ] || fail "served size $out"
echo "PASS"

#!/usr/bin/env bash
# A bad parameter gives nbdkit's usual one-line error naming the problem and
# a non-zero exit, before any client could connect.
. "${SRCDIR:?run through meson test}/tests/lib.sh"
. "$SRCDIR/tests/nbdkit/plugin.sh"
plugin_require
require nbdinfo

img=$TMP/disk.img
truncate -s 1M "$img"
mkdir "$TMP/dir"

# bad_config WANT ARGS...: nbdkit with ARGS fails with one line containing WANT.
bad_config() {
  local want=$1 rc=0 err
  shift
  # --run only runs if the server started; it must not. (An explicit socket:
  # nbdkit -U - leaves its /tmp/nbdkitXXXXXX directory behind when it fails.)
  "$NBDKIT" -U "$TMP/bad.sock" "$NBDKIT_PLUGIN" "$@" --run 'echo STARTED' >"$TMP/out" 2>"$TMP/err" || rc=$?
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
# A format override that does not fit the file is refused when opening.
if plugin_has_format overlay; then
  bad_config "$img" file="$img" format=overlay
fi
# The magic key: a bare FILE is file=FILE.
bad_config "$TMP/missing" "$TMP/missing"

# And the same plugin with good parameters does serve.
plugin_start good "$img" readonly=1 format=raw
out=$(nbdinfo --size "$PLUGIN_URI") || fail "good parameters did not serve"
[ "$out" = 1048576 ] || fail "served size $out"
plugin_stop
echo "PASS"

#!/usr/bin/env bash
# blockd's command line (DESIGN.md CONTRACT): usage errors exit 2 with one
# line on stderr naming the problem, --help and --version exit 0, and a
# good command line still starts.
. "$SRCDIR/tests/lib.sh"

truncate -s 1M "$TMP/disk.img"

# usage_error WHAT ARGS...: blockd ARGS must exit 2 with exactly one line
# on stderr, and must not start serving.
usage_error() {
  local what=$1; shift
  local rc=0
  timeout 10 "$BLOCKD" --unix "$TMP/bad.sock" "$@" > "$TMP/out" 2> "$TMP/err" || rc=$?
  [ "$rc" -eq 2 ] || { cat "$TMP/err" >&2; fail "$what: exit status $rc, expected 2"; }
  local lines
  lines=$(wc -l < "$TMP/err")
  [ "$lines" -eq 1 ] || { cat "$TMP/err" >&2; fail "$what: $lines lines on stderr, expected 1"; }
  [ -s "$TMP/err" ] && ! grep -q '^[[:space:]]*$' "$TMP/err" || fail "$what: empty message"
  [ ! -s "$TMP/out" ] || { cat "$TMP/out" >&2; fail "$what: printed on stdout"; }
  echo "$what: $(cat "$TMP/err")"
}

usage_error "unknown option" --no-such-option "$TMP/disk.img"
grep -q -- "--no-such-option" "$TMP/err" || fail "unknown option: message does not name it"
usage_error "bad --threads" --threads abc "$TMP/disk.img"
usage_error "zero --threads" --threads 0 "$TMP/disk.img"
usage_error "negative --threads" --threads -3 "$TMP/disk.img"
usage_error "--threads without a value" "$TMP/disk.img" --threads
usage_error "missing file" "$TMP/nosuch.img"
grep -q "nosuch.img" "$TMP/err" || fail "missing file: message does not name the file"
usage_error "--export without '='" --export "$TMP/disk.img"
usage_error "--unix and --listen together" --listen 127.0.0.1:0 "$TMP/disk.img"
usage_error "unknown format" --export "a=$TMP/disk.img,format=bogus"
usage_error "unknown --export suboption" --export "a=$TMP/disk.img,bogus"
usage_error "the same export name twice" --export "a=$TMP/disk.img" --export "a=$TMP/disk.img"
usage_error "an --export that is missing its file" --export "a=$TMP/nosuch.img"
[ ! -e "$TMP/bad.sock" ] || fail "a usage error left a socket behind"

rc=0; "$BLOCKD" --help > "$TMP/out" 2> "$TMP/err" || rc=$?
[ "$rc" -eq 0 ] || fail "--help exited $rc"
grep -q -- "--unix" "$TMP/out" && grep -q -- "--export" "$TMP/out" \
  || { cat "$TMP/out" >&2; fail "--help does not describe --unix and --export on stdout"; }
rc=0; "$BLOCKD" --version > "$TMP/out" 2> "$TMP/err" || rc=$?
[ "$rc" -eq 0 ] || fail "--version exited $rc"
grep -qE "[0-9]+\.[0-9]+" "$TMP/out" || { cat "$TMP/out" >&2; fail "--version prints no version"; }

# --listen syntax errors (no --unix here).
for bad in nonsense 127.0.0.1:99999 127.0.0.1:port; do
  rc=0; timeout 10 "$BLOCKD" --listen "$bad" "$TMP/disk.img" > /dev/null 2> "$TMP/err" || rc=$?
  [ "$rc" -eq 2 ] && [ "$(wc -l < "$TMP/err")" -eq 1 ] \
    || { cat "$TMP/err" >&2; fail "--listen $bad: exit $rc, expected 2 with one line"; }
done

# A pidfile that cannot be written is a runtime error (1), named, and
# leaves no socket behind.
rc=0; timeout 10 "$BLOCKD" --unix "$TMP/bad.sock" --pidfile "$TMP/no/such/dir/pid" "$TMP/disk.img" \
  > /dev/null 2> "$TMP/err" || rc=$?
[ "$rc" -eq 1 ] || { cat "$TMP/err" >&2; fail "unwritable pidfile: exit $rc, expected 1"; }
grep -q "no/such/dir" "$TMP/err" || { cat "$TMP/err" >&2; fail "unwritable pidfile: message does not name it"; }
[ ! -e "$TMP/bad.sock" ] || fail "unwritable pidfile: the socket was left behind"

# A good command line with every option still starts and serves.
start_blockd --threads 2 -v --export "x=$TMP/disk.img,readonly"
[ "$(cat "$TMP/blockd.pid")" = "$BLOCKD_PID" ] || fail "pidfile holds $(cat "$TMP/blockd.pid"), not $BLOCKD_PID"
mode=$(stat -c %a "$NBD_SOCK")
[ "$mode" = 600 ] || fail "unix socket mode $mode, expected 600"
stop_blockd
echo PASS

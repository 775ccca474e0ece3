#!/usr/bin/env bash
# blockd's command line: usage errors exit 2 with one
# line on stderr naming the problem, --help and --version exit 0, and a
# good command line still starts; stale and live sockets.
. "$SRCDIR/tests/lib.sh"
require nbdinfo

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
# A name with terminal escapes is quoted with its control bytes as \xHH.
usage_error "a missing file named with escapes" "$TMP/no$(printf '\033]0;x\007')such.img"
grep -qF 'no\x1b]0;x\x07such.img' "$TMP/err" || fail "escapes: message does not show them as \\xHH"
! grep -q "$(printf '[\033\007]')" "$TMP/err" || fail "escapes: a control byte reached the message"
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

# A stale socket left by a killed server is replaced; a live one is refused
# (runtime error, exit 1, naming it) and keeps serving; the socket goes away
# when blockd exits.
"$PY" -c 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$TMP/nbd.sock"
[ -S "$TMP/nbd.sock" ] || fail "could not make a stale socket"
start_blockd "$TMP/disk.img"
nbdinfo "$NBD_URI" > /dev/null || fail "blockd over a stale socket does not serve"
truncate -s 1M "$TMP/other.img"    # another image: the first one is locked
rc=0; timeout 10 "$BLOCKD" --unix "$NBD_SOCK" "$TMP/other.img" > /dev/null 2> "$TMP/err" || rc=$?
[ "$rc" -eq 1 ] || { cat "$TMP/err" >&2; fail "second blockd on a live socket: exit $rc, expected 1"; }
grep -q "nbd.sock" "$TMP/err" || { cat "$TMP/err" >&2; fail "second blockd: message does not name the socket"; }
nbdinfo "$NBD_URI" > /dev/null || fail "the first blockd stopped serving after a second one was refused"
stop_blockd
[ ! -e "$NBD_SOCK" ] || fail "blockd left its socket behind on exit"
echo PASS

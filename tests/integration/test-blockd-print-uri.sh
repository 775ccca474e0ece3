#!/usr/bin/env bash
# --print-uri prints the NBD URI of the default (else the first) export on
# stdout, percent-encoded, with the port the kernel chose for --listen :0,
# and nbdinfo reaches the export through it. blockd says in one line on
# stderr what it serves and where (none with -q); with -v it logs NBD
# options by name.
. "$SRCDIR/tests/lib.sh"
require nbdinfo

truncate -s 1M "$TMP/disk.img"
truncate -s 2M "$TMP/b.img"
truncate -s 3M "$TMP/c.img"

# run_blockd ARGS...: blockd ARGS in the background, stdout in $TMP/out
# and stderr in $TMP/err; waits for the pidfile and sets BLOCKD_PID.
run_blockd() {
  rm -f "$TMP/blockd.pid"
  "$BLOCKD" --pidfile "$TMP/blockd.pid" "$@" > "$TMP/out" 2> "$TMP/err" &
  BLOCKD_PID=$!
  track "$BLOCKD_PID"
  wait_started blockd "$BLOCKD_PID" "$TMP/blockd.pid" "$TMP/err"
}
stop() {
  local rc=0
  kill -TERM "$BLOCKD_PID"
  wait "$BLOCKD_PID" || rc=$?
  [ "$rc" -eq 0 ] || { cat "$TMP/err" >&2; fail "blockd exited $rc on SIGTERM"; }
}
# expect_line FILE LINE: FILE holds exactly LINE.
expect_line() {
  [ "$(wc -l < "$1")" -eq 1 ] && [ "$(cat "$1")" = "$2" ] \
    || { printf 'got:      %s\nexpected: %s\n' "$(cat "$1")" "$2" >&2; fail "$(basename "$1") is not the one line expected"; }
}

# Characters that mean something in a URI, in the socket path and in the
# export name; the first export is the one printed when there is no
# default one.
mkdir "$TMP/a b&%?#"
sock="$TMP/a b&%?#/nbd.sock"
esc_sock="$TMP/a%20b%26%25%3F%23/nbd.sock"
run_blockd --print-uri --unix "$sock" --export "x y/z?#%=$TMP/b.img" --export "c=$TMP/c.img,readonly"
expect_line "$TMP/out" "nbd+unix:///x%20y/z%3F%23%25?socket=$esc_sock"
expect_line "$TMP/err" "blockd: serving exports 'x y/z?#%' (raw, read-write), 'c' (raw, read-only) on unix socket $sock"
[ "$(nbdinfo --size "$(cat "$TMP/out")")" = $((2 << 20)) ] || fail "nbdinfo through the printed URI: wrong export"
stop
echo "unix: $(cat "$TMP/out")"

# The default export wins over named ones, wherever it is on the line.
run_blockd --print-uri --unix "$TMP/nbd.sock" --export "b=$TMP/b.img" "$TMP/disk.img"
expect_line "$TMP/out" "nbd+unix:///?socket=$TMP/nbd.sock"
[ "$(nbdinfo --size "$(cat "$TMP/out")")" = $((1 << 20)) ] || fail "the printed URI is not the default export's"
stop

# TCP: the port the kernel chose, on the address bound.
run_blockd --print-uri --listen 127.0.0.1:0 --export "b=$TMP/b.img"
uri=$(cat "$TMP/out")
[[ $uri =~ ^nbd://127\.0\.0\.1:([0-9]+)/b$ ]] && [ "${BASH_REMATCH[1]}" -ne 0 ] \
  || fail "TCP: printed '$uri'"
port=${BASH_REMATCH[1]}
expect_line "$TMP/err" "blockd: serving export 'b' (raw, read-write) on 127.0.0.1:$port"
[ "$(nbdinfo --size "$uri")" = $((2 << 20)) ] || fail "nbdinfo through $uri failed"
stop
echo "tcp: $uri"
if "$PY" -c 'import socket; socket.socket(socket.AF_INET6).bind(("::1", 0))' 2>/dev/null; then
  run_blockd --print-uri --listen '[::1]:0' "$TMP/disk.img"
  uri=$(cat "$TMP/out")
  [[ $uri =~ ^nbd://\[::1\]:[1-9][0-9]*/$ ]] || fail "IPv6: printed '$uri'"
  nbdinfo --size "$uri" > /dev/null || fail "nbdinfo through $uri failed"
  stop
  echo "ipv6: $uri"
else
  echo "ipv6: no ::1 here, not tried"
fi

# Without --print-uri nothing goes to stdout; NBD exports and vhost-user
# devices share the one line.
run_blockd --unix "$TMP/nbd.sock" --export "b=$TMP/b.img" --vhost-user-blk "$TMP/vu.sock=$TMP/c.img,readonly"
[ ! -s "$TMP/out" ] || fail "blockd printed on stdout without --print-uri: $(cat "$TMP/out")"
expect_line "$TMP/err" "blockd: serving export 'b' (raw, read-write) on unix socket $TMP/nbd.sock; vhost-user-blk $TMP/vu.sock (raw, read-only)"
stop
run_blockd --vhost-user-blk "$TMP/vu.sock=$TMP/c.img"
expect_line "$TMP/err" "blockd: serving vhost-user-blk $TMP/vu.sock (raw, read-write)"
stop

# -q: not a word, but errors.
run_blockd -q --unix "$TMP/nbd.sock" "$TMP/disk.img"
stop
[ ! -s "$TMP/err" ] || fail "blockd -q printed: $(cat "$TMP/err")"
rc=0; "$BLOCKD" -q --unix "$TMP/nbd.sock" "$TMP/nosuch.img" 2> "$TMP/err" || rc=$?
[ "$rc" -eq 2 ] && grep -q "nosuch.img" "$TMP/err" || fail "blockd -q hid an error (exit $rc)"

# Options are logged by name with -v.
run_blockd -v --unix "$TMP/nbd.sock" "$TMP/disk.img"
nbdinfo "nbd+unix:///?socket=$TMP/nbd.sock" > /dev/null || fail "nbdinfo failed"
stop
grep -q "debug: NBD_OPT_GO, " "$TMP/err" || { cat "$TMP/err" >&2; fail "-v does not name NBD_OPT_GO"; }
if grep -q "option [0-9]" "$TMP/err"; then cat "$TMP/err" >&2; fail "-v logs an option by number"; fi

# --print-uri with nothing served over NBD is a usage error.
rc=0; "$BLOCKD" --print-uri --vhost-user-blk "$TMP/vu.sock=$TMP/c.img" > "$TMP/out" 2> "$TMP/err" || rc=$?
[ "$rc" -eq 2 ] && [ "$(wc -l < "$TMP/err")" -eq 1 ] && grep -q -- "--print-uri" "$TMP/err" \
  || { cat "$TMP/err" >&2; fail "--print-uri without an export: exit $rc"; }
[ ! -s "$TMP/out" ] && [ ! -e "$TMP/vu.sock" ] || fail "--print-uri without an export left output or a socket"
echo PASS

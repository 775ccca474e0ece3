#!/usr/bin/env bash
# blockd over TCP (--listen HOST:PORT and ':PORT', which binds 127.0.0.1
# only): nbdinfo and qemu-img work, the pidfile comes once it accepts, and
# SIGTERM exits 0; a port already in use is a runtime error (exit 1).
. "$SRCDIR/tests/lib.sh"
require nbdinfo qemu-img ss

truncate -s 8M "$TMP/disk.img"
head -c 8M /dev/urandom > "$TMP/src.img"

# free_port: a TCP port on 127.0.0.1 nobody listens on right now.
free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_tcp LISTEN: blockd --listen LISTEN, waits for the pidfile.
start_tcp() {
  rm -f "$TMP/tcp.pid"
  "$BLOCKD" --listen "$1" --pidfile "$TMP/tcp.pid" "$TMP/disk.img" 2>>"$TMP/blockd.log" &
  TCP_PID=$!
  track "$TCP_PID"
  wait_started "blockd --listen $1" "$TCP_PID" "$TMP/tcp.pid" "$TMP/blockd.log"
}

stop_tcp() {
  kill -TERM "$TCP_PID"
  local rc=0
  wait "$TCP_PID" || rc=$?
  [ "$rc" -eq 0 ] || { cat "$TMP/blockd.log" >&2; fail "blockd --listen exited $rc on SIGTERM"; }
}

port=$(free_port)
start_tcp "127.0.0.1:$port"
uri="nbd://127.0.0.1:$port"
nbdinfo --json "$uri" > "$TMP/info.json" || fail "nbdinfo over TCP failed"
"$PY" -c 'import json,sys; e=json.load(open(sys.argv[1]))["exports"][0]; sys.exit(not (e["export-size"] == 8 << 20 and e["can_multi_conn"]))' \
  "$TMP/info.json" || { cat "$TMP/info.json" >&2; fail "nbdinfo over TCP: wrong size or flags"; }
qemu-img convert -n -f raw -O raw "$TMP/src.img" "$uri" || fail "qemu-img convert over TCP failed"
qemu-img compare -f raw -F raw "$TMP/src.img" "$uri" >/dev/null || fail "qemu-img compare over TCP failed"

# The same port again: in use, a runtime error.
# (Another image: the first blockd holds disk.img's write lock.)
truncate -s 1M "$TMP/other.img"
rc=0; timeout 10 "$BLOCKD" --listen "127.0.0.1:$port" "$TMP/other.img" 2>"$TMP/err" || rc=$?
[ "$rc" -eq 1 ] || { cat "$TMP/err" >&2; fail "second blockd on a busy port exited $rc, expected 1"; }
[ -s "$TMP/err" ] || fail "second blockd on a busy port said nothing"
stop_tcp
cmp "$TMP/src.img" "$TMP/disk.img" || fail "file differs after qemu-img convert over TCP"

# ':PORT' binds the loopback address only.
port=$(free_port)
start_tcp ":$port"
ss -ltnH "sport = :$port" > "$TMP/ss" || fail "ss failed"
grep -q "127.0.0.1:$port" "$TMP/ss" || { cat "$TMP/ss" >&2; fail "':$port' is not bound to 127.0.0.1 only"; }
nbdinfo "nbd://127.0.0.1:$port" > /dev/null || fail "nbdinfo over ':PORT' failed"
stop_tcp
echo PASS

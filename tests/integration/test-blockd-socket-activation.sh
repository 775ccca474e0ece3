#!/usr/bin/env bash
# Socket activation: blockd serves NBD on the sockets a service manager
# passes (LISTEN_FDS, LISTEN_PID): systemd-socket-activate with a unix and
# a TCP socket, libnbd's own activation (nbdinfo, nbdcopy, nbdsh with
# [ blockd ... ]). It never unlinks a socket it did not create, makes no
# socket of its own, and refuses anything but listening stream sockets in
# one line with exit status 2.
. "$SRCDIR/tests/lib.sh"
require systemd-socket-activate nbdinfo nbdcopy nbdsh
require_py_nbd
nbdsh() { PATH=/usr/bin:$PATH command nbdsh "$@"; }   # Debian's python, with nbd

truncate -s 8M "$TMP/disk.img"
head -c 4M /dev/urandom > "$TMP/src.img"
truncate -s 8M "$TMP/src.img"
# An empty runtime directory: blockd's default socket would go there.
mkdir -m 0700 "$TMP/rt"
export XDG_RUNTIME_DIR=$TMP/rt

# activated_stop PID: SIGTERM the activated blockd (systemd-socket-activate
# execs it in place) and check it exits 0.
activated_stop() {
  local pid=$1 rc=0
  kill -TERM "$pid"
  wait "$pid" || rc=$?
  [ "$rc" -eq 0 ] || { cat "$TMP/act.err" >&2; fail "activated blockd exited $rc on SIGTERM"; }
}

# A unix socket: systemd-socket-activate waits for the first client, then
# execs blockd with the socket as descriptor 3.
sock=$TMP/act.sock
systemd-socket-activate -l "$sock" "$BLOCKD" --print-uri "$TMP/disk.img" \
  > "$TMP/uri" 2> "$TMP/act.err" &
pid=$!
track "$pid"
wait_for_file "$sock"
size=$(nbdinfo --size "nbd+unix:///?socket=$sock") || { cat "$TMP/act.err" >&2; fail "nbdinfo through the activated unix socket failed"; }
[ "$size" = 8388608 ] || fail "activated unix socket: size $size"
[ "$(cat "$TMP/uri")" = "nbd+unix:///?socket=$sock" ] || fail "--print-uri printed '$(cat "$TMP/uri")'"
grep -qxF "blockd: serving export '' (raw, read-write) on unix socket $sock (socket activation)" \
  "$TMP/act.err" || { cat "$TMP/act.err" >&2; fail "no start line naming the passed socket"; }
nbdinfo --size "nbd+unix:///?socket=$sock" > /dev/null || fail "a second client was not served"
activated_stop "$pid"
[ -S "$sock" ] || fail "blockd removed the socket systemd-socket-activate made"
[ -z "$(ls -A "$TMP/rt")" ] || fail "blockd made a socket of its own: $(ls "$TMP/rt")"
echo "unix: ok"

# A TCP socket, written through with nbdcopy.
port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
systemd-socket-activate -l "127.0.0.1:$port" "$BLOCKD" "$TMP/disk.img" 2> "$TMP/act.err" &
pid=$!
track "$pid"
for _ in $(seq 100); do nbdinfo --can connect "nbd://127.0.0.1:$port/" 2>/dev/null && break; sleep 0.1; done
nbdcopy "$TMP/src.img" "nbd://127.0.0.1:$port/" || { cat "$TMP/act.err" >&2; fail "nbdcopy to the activated TCP socket failed"; }
grep -qxF "blockd: serving export '' (raw, read-write) on 127.0.0.1:$port (socket activation)" \
  "$TMP/act.err" || { cat "$TMP/act.err" >&2; fail "no start line naming the passed TCP socket"; }
activated_stop "$pid"
cmp "$TMP/src.img" "$TMP/disk.img" || fail "data written over the activated TCP socket differs"
echo "tcp: ok"

# libnbd's socket activation: blockd given no socket at all.
truncate -s 0 "$TMP/disk.img"
truncate -s 8M "$TMP/disk.img"
nbdcopy -- "$TMP/src.img" [ "$BLOCKD" "$TMP/disk.img" ] 2> "$TMP/lib.err" \
  || { cat "$TMP/lib.err" >&2; fail "nbdcopy [ blockd ] failed"; }
cmp "$TMP/src.img" "$TMP/disk.img" || fail "data written by nbdcopy [ blockd ] differs"
grep -q "^blockd: serving export '' (raw, read-write) on unix socket .* (socket activation)$" \
  "$TMP/lib.err" || { cat "$TMP/lib.err" >&2; fail "nbdcopy [ blockd ]: no start line"; }
nbdinfo --json -- [ "$BLOCKD" --readonly "$TMP/disk.img" ] > "$TMP/info.json" 2> "$TMP/lib.err" \
  || { cat "$TMP/lib.err" >&2; fail "nbdinfo [ blockd ] failed"; }
"$PY" -c 'import json, sys; e = json.load(open(sys.argv[1]))["exports"][0]; sys.exit(not (e["export-size"] == 8 << 20 and e["is_read_only"]))' \
  "$TMP/info.json" || { cat "$TMP/info.json" >&2; fail "nbdinfo [ blockd ]: wrong size or mode"; }
B=$BLOCKD D=$TMP/disk.img S=$TMP/src.img nbdsh -c '
import os
h.set_export_name("a")
h.connect_systemd_socket_activation([os.environ["B"], "--export", "a=" + os.environ["D"]])
assert h.get_size() == 8 << 20
assert h.pread(4096, 0) == open(os.environ["S"], "rb").read(4096)
h.shutdown()
' 2> "$TMP/lib.err" || { cat "$TMP/lib.err" >&2; fail "nbdsh connect_systemd_socket_activation failed"; }
[ -z "$(ls -A "$TMP/rt")" ] || fail "blockd under libnbd made a socket of its own: $(ls "$TMP/rt")"
echo "libnbd: ok"

# check_refused WHAT WANT RC: blockd's exit status RC must be 2, with one
# line of its own on stderr ($TMP/err) containing WANT.
check_refused() {
  local what=$1 want=$2 rc=$3
  [ "$rc" -eq 2 ] || { cat "$TMP/err" >&2; fail "$what: exit $rc, expected 2"; }
  [ "$(grep -c '^blockd:' "$TMP/err")" -eq 1 ] || { cat "$TMP/err" >&2; fail "$what: not one line"; }
  grep -q "^blockd: .*$want" "$TMP/err" || { cat "$TMP/err" >&2; fail "$what: message lacks '$want'"; }
  echo "$what: $(grep '^blockd:' "$TMP/err")"
}

# refused_activated WHAT WANT TYPE BLOCKD-ARGS...: blockd started by
# systemd-socket-activate on a unix socket of TYPE (stream, seqpacket or
# dgram), once a client of that type comes, must refuse it.
refused_activated() {
  local what=$1 want=$2 type=$3 rc=0 pid
  local sock=$TMP/refused-$type.sock opt=()
  shift 3
  case $type in seqpacket) opt=(--seqpacket) ;; dgram) opt=(--datagram) ;; esac
  rm -f "$sock"
  systemd-socket-activate "${opt[@]}" -l "$sock" "$BLOCKD" "$@" > /dev/null 2> "$TMP/err" &
  pid=$!
  track "$pid"
  wait_for_file "$sock"
  "$PY" - "$sock" "$type" <<'PYEOF'
import socket, sys
types = {"stream": socket.SOCK_STREAM, "seqpacket": socket.SOCK_SEQPACKET, "dgram": socket.SOCK_DGRAM}
s = socket.socket(socket.AF_UNIX, types[sys.argv[2]])
if sys.argv[2] == "dgram":
    s.sendto(b"x", sys.argv[1])
else:
    s.connect(sys.argv[1])
PYEOF
  wait "$pid" || rc=$?
  check_refused "$what" "$want" "$rc"
}

refused_activated "a datagram socket" "descriptor 3 is not a stream socket" dgram "$TMP/disk.img"
refused_activated "a seqpacket socket" "descriptor 3 is not a stream socket" seqpacket "$TMP/disk.img"
refused_activated "--unix beside a passed socket" "--unix and --listen cannot be used" stream \
  --unix "$TMP/own.sock" "$TMP/disk.img"
[ ! -e "$TMP/own.sock" ] || fail "a refused blockd made its --unix socket"
refused_activated "only vhost-user-blk devices" "no NBD export" stream \
  --vhost-user-blk "$TMP/vu.sock=$TMP/disk.img"
[ ! -e "$TMP/vu.sock" ] || fail "a refused blockd made its vhost-user socket"

# Descriptors handed over by hand: LISTEN_PID is the pid blockd runs as.
rc=0; bash -c 'export LISTEN_PID=$$ LISTEN_FDS=1; exec "$0" "$1" 3<"$1"' "$BLOCKD" "$TMP/disk.img" \
  > /dev/null 2> "$TMP/err" || rc=$?
check_refused "a regular file" "descriptor 3 is not a socket" "$rc"
rc=0; bash -c 'export LISTEN_PID=$$ LISTEN_FDS=1; exec "$0" "$1" 3<&-' "$BLOCKD" "$TMP/disk.img" \
  > /dev/null 2> "$TMP/err" || rc=$?
check_refused "a descriptor not open" "descriptor 3 is not open" "$rc"
rc=0; bash -c 'export LISTEN_PID=$$ LISTEN_FDS=one; exec "$0" "$1"' "$BLOCKD" "$TMP/disk.img" \
  > /dev/null 2> "$TMP/err" || rc=$?
check_refused "a bad LISTEN_FDS" "LISTEN_FDS='one'" "$rc"

# Variables meant for another process are not ours: blockd serves on its
# own socket (and a descriptor 3 it was not given stays unused).
rc=0
LISTEN_PID=1 LISTEN_FDS=1 "$BLOCKD" --unix "$TMP/own.sock" --pidfile "$TMP/own.pid" "$TMP/disk.img" \
  3<"$TMP/disk.img" 2> "$TMP/own.err" &
pid=$!
track "$pid"
wait_started blockd "$pid" "$TMP/own.pid" "$TMP/own.err"
nbdinfo --size "nbd+unix:///?socket=$TMP/own.sock" > /dev/null || fail "LISTEN_PID of another process: blockd does not serve on --unix"
kill -TERM "$pid"
wait "$pid" || rc=$?
[ "$rc" -eq 0 ] || fail "blockd exited $rc"
echo PASS

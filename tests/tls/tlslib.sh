# Helpers for the TLS shell tests, on top of tests/lib.sh. Source it:
# . "$SRCDIR/tests/tls/tlslib.sh"
. "$SRCDIR/tests/lib.sh"
require certtool
CERTS=$TMP/certs
"$SRCDIR/tests/tls/mkcerts.sh" "$CERTS" || fail "mkcerts.sh failed"

# free_port: a TCP port on 127.0.0.1 nobody listens on right now.
free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_tls ARGS...: blockd -v --listen 127.0.0.1:PORT with ARGS, on a
# fresh port; waits for the pidfile; sets BLOCKD_PID, PORT and HOSTPORT.
start_tls() {
  local pidfile=$TMP/blockd.pid
  rm -f "$pidfile"
  PORT=$(free_port)
  HOSTPORT=127.0.0.1:$PORT
  "$BLOCKD" -v --listen "$HOSTPORT" --pidfile "$pidfile" "$@" 2>>"$TMP/blockd.log" &
  BLOCKD_PID=$!
  track "$BLOCKD_PID"
  wait_started blockd "$BLOCKD_PID" "$pidfile" "$TMP/blockd.log"
}

# served: how many clients blockd (run with -v) let into transmission.
served() { grep -c 'entered transmission' "$TMP/blockd.log" || true; }

# refused WHAT CMD...: CMD must fail (a client blockd must turn away), and
# blockd must not have let it into transmission.
refused() {
  local what=$1 before; shift
  before=$(served)
  if "$@" >"$TMP/refused.out" 2>&1; then
    cat "$TMP/refused.out" >&2
    fail "$what: succeeded, expected a refusal"
  fi
  [ "$(served)" = "$before" ] || { cat "$TMP/blockd.log" >&2; fail "$what: refused, yet served an export"; }
}

# logged TEXT: blockd's log must contain TEXT (a fixed string).
logged() {
  grep -qF -- "$1" "$TMP/blockd.log" || { cat "$TMP/blockd.log" >&2; fail "blockd did not log '$1'"; }
}

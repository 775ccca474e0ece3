# Shared helpers for the shell tests. Source it: . "$SRCDIR/tests/lib.sh"
# Every test runs in its own temporary directory, removed with every process
# the test started, whether the test passes, fails or is interrupted.
set -euo pipefail

: "${BUILDDIR:?run through meson test}"
: "${SRCDIR:?run through meson test}"
BLOCKD=${BLOCKD:-$BUILDDIR/blockd/blockd}
PY=/usr/bin/python3     # Debian's python, the one with the nbd module

TMP=$(mktemp -d "${TMPDIR:-/tmp}/blockd-test.XXXXXX")
_pids=()
_hooks=()

_cleanup() {
  local rc=$?
  for pid in "${_pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${_pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  for hook in "${_hooks[@]}"; do
    "$hook" || true
  done
  rm -rf "$TMP"
  exit $rc
}
trap _cleanup EXIT
trap 'exit 130' INT TERM

# skip MESSAGE: the test cannot run here; exit 77 so meson reports SKIP.
skip() { echo "SKIP: $*" >&2; exit 77; }
# fail MESSAGE: the test failed.
fail() { echo "FAIL: $*" >&2; exit 1; }
# require CMD...: skip unless every command exists.
require() { for c in "$@"; do command -v "$c" >/dev/null 2>&1 || skip "$c not installed"; done; }
# require_py_nbd: skip unless Debian's python has the libnbd bindings.
require_py_nbd() { "$PY" -c 'import nbd' 2>/dev/null || skip "python3-libnbd not installed"; }

# track PID: stop PID when the test ends.
track() { _pids+=("$1"); }
# at_cleanup FUNCTION: run FUNCTION when the test ends, after the tracked
# processes have stopped (a cluster those processes were writing to).
at_cleanup() { _hooks+=("$1"); }

# wait_for_file FILE [SECONDS]: wait until FILE exists.
wait_for_file() {
  local f=$1 t=${2:-20}
  for _ in $(seq $((t * 10))); do [ -e "$f" ] && return 0; sleep 0.1; done
  fail "timed out waiting for $f"
}

# wait_started NAME PID PIDFILE LOG: waits until PID (a server just started
# in the background) writes PIDFILE; fails, showing LOG, if it exits first.
wait_started() {
  local name=$1 pid=$2 pidfile=$3 log=$4
  for _ in $(seq 200); do
    [ -s "$pidfile" ] && return 0
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; fail "$name exited at start"; }
    sleep 0.05
  done
  fail "$name did not write its pidfile"
}

# start_blockd ARGS...: runs blockd on $TMP/nbd.sock in the background with
# ARGS, waits for its pidfile, sets BLOCKD_PID and NBD_URI.
start_blockd() {
  local sock=$TMP/nbd.sock pidfile=$TMP/blockd.pid
  rm -f "$pidfile"
  "$BLOCKD" --unix "$sock" --pidfile "$pidfile" "$@" 2>>"$TMP/blockd.log" &
  BLOCKD_PID=$!
  track "$BLOCKD_PID"
  wait_started blockd "$BLOCKD_PID" "$pidfile" "$TMP/blockd.log"
  NBD_SOCK=$sock
  NBD_URI="nbd+unix:///?socket=$sock"
}

# stop_blockd: SIGTERM blockd and check it exits 0.
stop_blockd() {
  kill -TERM "$BLOCKD_PID"
  local rc=0
  wait "$BLOCKD_PID" || rc=$?
  [ "$rc" -eq 0 ] || { cat "$TMP/blockd.log" >&2; fail "blockd exited $rc on SIGTERM"; }
}

# allocated FILE: bytes allocated on disk.
allocated() { echo $(( $(stat -c %b "$1") * $(stat -c %B "$1") )); }

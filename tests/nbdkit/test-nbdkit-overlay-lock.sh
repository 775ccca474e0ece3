#!/usr/bin/env bash
# The plugin opens an overlay once per nbdkit instance, in .get_ready, so the
# overlay's write lock is held from start-up, survives nbdkit's fork into the
# background, and refuses a second writer with a one-line error at start-up;
# read-only instances share the image with each other but not with a writer.
. "${SRCDIR:?run through meson test}/tests/lib.sh"
. "$SRCDIR/tests/nbdkit/plugin.sh"
plugin_require
require qemu-io
[ -x "${BLOCKD_IMG:-}" ] || skip "blockd-img not built"
plugin_has_format overlay || skip "overlay format not built into the plugin"

base=$TMP/base.img ovl=$TMP/disk.ovl
head -c $((4 << 20)) /dev/zero | tr '\0' 'Z' >"$base"
"$BLOCKD_IMG" create -b "$base" "$ovl" || fail "blockd-img create -b"

# serve NAME ARGS...: nbdkit in the background (it forks, no -f) on $TMP/NAME.sock.
serve() {
  local name=$1
  shift
  rm -f "$TMP/$name.pid"
  "$NBDKIT" -U "$TMP/$name.sock" -P "$TMP/$name.pid" "$NBDKIT_PLUGIN" "$@" 2>"$TMP/$name.err" ||
    return 1
  wait_for_file "$TMP/$name.pid" 10
  for _ in $(seq 50); do [ -s "$TMP/$name.pid" ] && break; sleep 0.1; done
  track "$(cat "$TMP/$name.pid")"
}

# refused NAME WANT ARGS...: a second nbdkit must fail at start-up, one line naming WANT.
refused() {
  local name=$1 want=$2
  shift 2
  ! serve "$name" "$@" || fail "a second instance started: $*"
  [ "$(wc -l <"$TMP/$name.err")" -eq 1 ] || fail "not one line: $(cat "$TMP/$name.err")"
  grep -qF "$want" "$TMP/$name.err" || fail "'$(cat "$TMP/$name.err")' does not say $want"
  echo "ok: refused: $(cat "$TMP/$name.err")"
}

# stop NAME: SIGTERM the instance and wait for it to go.
stop() {
  local pid
  pid=$(cat "$TMP/$1.pid")
  kill -TERM "$pid"
  # A daemon is not our child: once it exits it may stay a zombie until
  # whoever adopted it reaps it, so a zombie counts as gone.
  for _ in $(seq 100); do
    case $(ps -o stat= -p "$pid" 2>/dev/null) in ''|Z*) return 0 ;; esac
    sleep 0.1
  done
  fail "nbdkit $1 did not exit on SIGTERM"
}

serve writer file="$ovl" || fail "nbdkit on the overlay: $(cat "$TMP/writer.err")"
uri="nbd+unix:///?socket=$TMP/writer.sock"
# The forked server holds the lock: a second writer and a reader are refused.
refused second "locked" file="$ovl"
refused reader "locked" file="$ovl" readonly=true
# And it serves, to several clients at once.
qemu-io -f raw -c 'write -P 0x42 0 64k' -c 'read -P 0x42 0 64k' "$uri" >/dev/null ||
  fail "writes through the locked instance"
qemu-io -f raw -c 'read -P 0x42 0 64k' -c 'read -P 0x5a 64k 64k' "$uri" >/dev/null ||
  fail "second client reads"
stop writer

# Without the writer, read-only instances share the overlay.
serve ro1 file="$ovl" readonly=true || fail "read-only instance: $(cat "$TMP/ro1.err")"
serve ro2 file="$ovl" readonly=true || fail "second read-only instance: $(cat "$TMP/ro2.err")"
refused writer2 "locked" file="$ovl"
qemu-io -r -f raw -c 'read -P 0x42 0 64k' "nbd+unix:///?socket=$TMP/ro2.sock" >/dev/null ||
  fail "read through a read-only instance"
stop ro1
stop ro2
echo "PASS"

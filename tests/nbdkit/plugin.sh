# Helpers for the shell tests that load nbdkit-blockd-plugin.so; source it
# after lib.sh.  nbdkit always runs through run-nbdkit.sh (sanitizer builds),
# and servers run in the background, never under --run, so that clients do
# not inherit what run-nbdkit.sh preloads into nbdkit.
NBDKIT=$SRCDIR/tests/nbdkit/run-nbdkit.sh

# plugin_require: skips unless nbdkit and the plugin are there.
plugin_require() {
  require nbdkit
  [ -n "${NBDKIT_PLUGIN:-}" ] && [ -f "$NBDKIT_PLUGIN" ] || skip "nbdkit-blockd-plugin.so not built"
}

# plugin_has_format NAME: true if the plugin was built with format NAME.
plugin_has_format() {
  local out
  out=$("$NBDKIT" --dump-plugin "$NBDKIT_PLUGIN") || fail "nbdkit --dump-plugin failed"
  [[ ",$(sed -n 's/^blockd_formats=//p' <<<"$out")," == *",$1,"* ]]
}

# plugin_start NAME [--filter=F]... PARAMS...: nbdkit -f serving the plugin
# with PARAMS on $TMP/NAME.sock; sets PLUGIN_URI and PLUGIN_PID.  Filters
# come first, then the plugin, then PARAMS (plugin and filter parameters).
plugin_start() {
  local name=$1 filters=() sock pidfile
  shift
  while [ $# -gt 0 ] && [[ $1 == --filter=* ]]; do filters+=("$1"); shift; done
  sock=$TMP/$name.sock pidfile=$TMP/$name.pid
  rm -f "$sock" "$pidfile"
  "$NBDKIT" -f -U "$sock" -P "$pidfile" "${filters[@]}" "$NBDKIT_PLUGIN" "$@" \
    2>>"$TMP/$name.log" &
  PLUGIN_PID=$!
  track "$PLUGIN_PID"
  wait_started "nbdkit $name" "$PLUGIN_PID" "$pidfile" "$TMP/$name.log"
  PLUGIN_URI="nbd+unix:///?socket=$sock"
}

# plugin_stop: SIGTERM the last plugin_start's nbdkit and check it exits 0.
plugin_stop() {
  local rc=0
  kill -TERM "$PLUGIN_PID"
  wait "$PLUGIN_PID" || rc=$?
  [ "$rc" -eq 0 ] || fail "nbdkit exited $rc on SIGTERM"
}

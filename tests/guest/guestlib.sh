# Helpers for the guest tests: boot the tiny guest (launcher/guest/) under
# blockd-launch and talk to it through its serial console.
# Source after tests/lib.sh:  . "$SRCDIR/tests/lib.sh"; . "$SRCDIR/tests/guest/guestlib.sh"

: "${BLOCKD_LAUNCH:?blockd-launch not built}"
require qemu-system-x86_64 base64
[ -x "$BLOCKD_LAUNCH" ] || skip "$BLOCKD_LAUNCH not built"
[ -x "$BLOCKD" ] || skip "$BLOCKD not built"

# The guest (kernel + initramfs) lives in the build tree; mkguest.sh rebuilds
# it only when an input changed.
GUEST=$("$SRCDIR/launcher/guest/mkguest.sh" "$BUILDDIR/launcher/guest" 2>"$TMP/mkguest.log") ||
  skip "cannot build the test guest: $(tail -1 "$TMP/mkguest.log")"

# Everything a launch creates goes here, so a test can check it is all gone.
export XDG_RUNTIME_DIR=$TMP/run
mkdir -m 0700 "$XDG_RUNTIME_DIR"
export BLOCKD

CONSOLE=$TMP/console   # the guest's serial output (blockd-launch's stdout)
# How the disks reach QEMU: meson runs several guest tests once per transport.
TRANSPORT=${BLOCKD_TRANSPORT:-nbd}
echo "transport: $TRANSPORT"
LAUNCH_ERR=$TMP/launch.err

# launch SCRIPT ARGS...: boots the guest running SCRIPT (shell text) with
# blockd-launch ARGS in the background; its stdin is a fifo that guest_send
# writes to. Sets LAUNCH_PID.
launch() {
  local script=$1; shift
  local b64
  b64=$(printf '%s\n' "$script" | base64 -w0)
  rm -f "$TMP/console.in"
  mkfifo "$TMP/console.in"
  : > "$CONSOLE"
  "$BLOCKD_LAUNCH" --accel tcg --kernel "$GUEST/vmlinuz" --initrd "$GUEST/initrd.img" \
    --transport "$TRANSPORT" --append "console=ttyS0 quiet panic=-1 blockd.run=$b64" "$@" \
    < "$TMP/console.in" > "$CONSOLE" 2> "$LAUNCH_ERR" &
  LAUNCH_PID=$!
  track "$LAUNCH_PID"
  # Hold the fifo open for writing so the console never sees EOF.
  exec 9> "$TMP/console.in"
}

# free_port: a TCP port on 127.0.0.1 that nothing listens on just now.
free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_console PATTERN [SECONDS]: waits for an extended regex on the console.
wait_console() {
  local pat=$1 t=${2:-120}
  for _ in $(seq $((t * 5))); do
    grep -Eq "$pat" "$CONSOLE" && return 0
    kill -0 "$LAUNCH_PID" 2>/dev/null || break
    sleep 0.2
  done
  grep -Eq "$pat" "$CONSOLE" && return 0
  show_logs
  fail "timed out waiting for '$pat' on the guest console"
}

# guest_send LINE: types LINE on the guest console.
guest_send() { printf '%s\n' "$1" >&9; }

# launch_wait [SECONDS]: waits for blockd-launch to exit; sets LAUNCH_RC.
launch_wait() {
  local t=${1:-120}
  for _ in $(seq $((t * 5))); do
    kill -0 "$LAUNCH_PID" 2>/dev/null || break
    sleep 0.2
  done
  kill -0 "$LAUNCH_PID" 2>/dev/null && { show_logs; fail "blockd-launch still running after $t s"; }
  LAUNCH_RC=0
  wait "$LAUNCH_PID" || LAUNCH_RC=$?
  exec 9>&-
}

# child_pid NAME: the pid of blockd-launch's child whose command is NAME.
child_pid() {
  local p
  for p in $(cat /proc/"$LAUNCH_PID"/task/*/children 2>/dev/null); do
    [ "$(cat /proc/"$p"/comm 2>/dev/null)" = "$1" ] && { echo "$p"; return 0; }
  done
  return 1
}

# launch_idle: boots a guest on a 64 MiB raw disk that just waits, and sets
# QEMU_PID and BLOCKD_CHILD_PID to blockd-launch's two children.
launch_idle() {
  truncate -s 64M "$TMP/disk.raw"
  launch 'echo READY; sleep 600' --disk "$TMP/disk.raw" --memory 512M --cpus 1
  wait_console '^READY'
  QEMU_PID=$(child_pid qemu-system-x86) || fail "no QEMU process"
  BLOCKD_CHILD_PID=$(child_pid blockd) || fail "no blockd process"
}

# rss_kib PID: resident set size in KiB.
rss_kib() { awk '/^VmRSS:/ { print $2 }' /proc/"$1"/status; }

# assert_nothing_left PIDS...: the processes are gone and the runtime
# directory is empty.
assert_nothing_left() {
  local p
  for p in "$@"; do
    if kill -0 "$p" 2>/dev/null; then
      fail "process $p ($(cat /proc/"$p"/comm 2>/dev/null)) still running"
    fi
  done
  if [ -n "$(ls -A "$XDG_RUNTIME_DIR")" ]; then
    fail "left behind in the runtime directory: $(ls -A "$XDG_RUNTIME_DIR")"
  fi
}

# show_logs: prints the console and the launcher's messages (on failure).
show_logs() {
  echo "--- guest console:" >&2; tail -30 "$CONSOLE" >&2 || true
  echo "--- blockd-launch stderr:" >&2; cat "$LAUNCH_ERR" >&2 || true
}

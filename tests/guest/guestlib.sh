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

# guest_cmdline SCRIPT: the tiny guest's kernel command line that runs SCRIPT.
guest_cmdline() {
  echo "console=ttyS0 quiet panic=-1 blockd.run=$(printf '%s\n' "$1" | base64 -w0)"
}

# launch_bare ARGS...: runs blockd-launch ARGS (under TCG, on $TRANSPORT) in
# the background; its stdin is a fifo that guest_send writes to. Sets
# LAUNCH_PID.
launch_bare() {
  rm -f "$TMP/console.in"
  mkfifo "$TMP/console.in"
  : > "$CONSOLE"
  "$BLOCKD_LAUNCH" --accel tcg --transport "$TRANSPORT" "$@" \
    < "$TMP/console.in" > "$CONSOLE" 2> "$LAUNCH_ERR" &
  LAUNCH_PID=$!
  track "$LAUNCH_PID"
  # Hold the fifo open for writing so the console never sees EOF.
  exec 9> "$TMP/console.in"
}

# launch SCRIPT ARGS...: boots the guest running SCRIPT (shell text) with
# blockd-launch ARGS in the background (see launch_bare).
launch() {
  local script=$1; shift
  launch_bare --kernel "$GUEST/vmlinuz" --initrd "$GUEST/initrd.img" \
    --append "$(guest_cmdline "$script")" "$@"
}

# make_boot_disk FILE LAYOUT CMDLINE: writes a 32 MiB disk image that SeaBIOS
# boots into the tiny guest with kernel command line CMDLINE, through
# syslinux on FAT: LAYOUT mbr is an MBR partition table (syslinux's MBR code)
# with one FAT partition from 1 MiB, as disk images usually are; fat is a FAT
# file system on the whole disk, whose first sector is syslinux's own boot
# sector. No loop devices, no root: sfdisk and mtools work on the file.
make_boot_disk() {
  local img=$1 layout=$2 cmdline=$3 at=$1
  require sfdisk mformat mcopy syslinux
  [ -r /usr/lib/syslinux/mbr/mbr.bin ] || skip "syslinux-common not installed"
  rm -f "$img"
  truncate -s 32M "$img"
  case $layout in
    mbr)
      echo 'start=2048, type=e, bootable' | sfdisk -q "$img"
      dd if=/usr/lib/syslinux/mbr/mbr.bin of="$img" bs=440 count=1 conv=notrunc status=none
      at="$img@@1M"
      mformat -i "$at" -T $((31 * 2048)) -h 64 -s 32 -H 2048 ::
      syslinux --offset $((1 << 20)) --install "$img" ;;
    fat)
      mformat -i "$at" -T $((32 * 2048)) -h 64 -s 32 ::
      syslinux --install "$img" ;;
    *) fail "make_boot_disk: no layout $layout" ;;
  esac
  printf 'DEFAULT guest\nPROMPT 0\nTIMEOUT 0\nLABEL guest\n  KERNEL vmlinuz\n  INITRD initrd.img\n  APPEND %s\n' \
    "$cmdline" > "$TMP/syslinux.cfg"
  mcopy -i "$at" "$GUEST/vmlinuz" "$GUEST/initrd.img" ::
  mcopy -i "$at" "$TMP/syslinux.cfg" ::syslinux.cfg
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

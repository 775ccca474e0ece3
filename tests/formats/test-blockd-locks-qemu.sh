#!/usr/bin/env bash
# blockd's image locks against real QEMU peers, both ways: readers (qemu-img
# info, compare, convert, a QEMU backing file, qemu-storage-daemon) share a
# base blockd serves; QEMU writers of a base or of a served image are
# refused; blockd refuses an image QEMU or qemu-storage-daemon holds for
# writing, and two blockds still refuse each other. blockd-img looks at
# images in use and overwrites none. The nbdkit plugin, on the same engines,
# behaves the same.
. "$SRCDIR/tests/lib.sh"
IMG=${BLOCKD_IMG:?BLOCKD_IMG not set}
[ -x "$BLOCKD" ] || skip "blockd not built"
require qemu-img qemu-io qemu-storage-daemon qemu-system-x86_64 nbdinfo nbdcopy timeout
cd "$TMP"

# refused WANT CMD...: CMD fails and its stderr contains WANT.
refused() {
  local want=$1 rc=0
  shift
  timeout 20 "$@" >out 2>err || rc=$?
  [ "$rc" -ne 0 ] || fail "not refused: $*"
  [ "$rc" -ne 124 ] || fail "hung: $*"
  grep -qF -- "$want" err || fail "$*: '$(cat err)' does not say $want"
  echo "ok: refused: $*: $(head -1 err)"
}

# blockd_refused WANT ARGS...: a blockd with ARGS exits 2 at start, one line containing WANT.
blockd_refused() {
  local want=$1 rc=0
  shift
  timeout 10 "$BLOCKD" --unix "$TMP/refused.sock" "$@" >out 2>err || rc=$?
  [ "$rc" -eq 2 ] || fail "blockd $*: exit $rc, not 2: $(cat err)"
  [ "$(wc -l <err)" -eq 1 ] || fail "blockd $*: not one line: $(cat err)"
  grep -qF -- "$want" err || fail "blockd $*: '$(cat err)' does not say $want"
  [ ! -e "$TMP/refused.sock" ] || fail "blockd $*: left its socket behind"
  echo "ok: blockd refused: $(cat err)"
}

# daemon NAME CMD...: runs CMD, a QEMU program, with --daemonize and
# --pidfile $TMP/NAME.pid: it returns once its images are open.
daemon() {
  local name=$1
  shift
  timeout 20 "$@" --daemonize --pidfile "$TMP/$name.pid" 2>"$name.err" ||
    fail "$name: $(cat "$name.err")"
  track "$(cat "$TMP/$name.pid")"
}

# undaemon NAME: SIGTERM what daemon NAME started and wait until it has gone
# (it is not our child: whoever adopted it reaps it).
undaemon() {
  local pid
  pid=$(cat "$TMP/$1.pid")
  kill -TERM "$pid"
  for _ in $(seq 100); do
    case $(ps -o stat= -p "$pid" 2>/dev/null) in ''|Z*) return 0 ;; esac
    sleep 0.1
  done
  fail "$1 did not exit on SIGTERM"
}

QSD=(qemu-storage-daemon --nbd-server "addr.type=unix,addr.path=$TMP/qsd.sock")
# A paused machine: its disks are open, nothing runs.
VM=(qemu-system-x86_64 -machine q35,accel=tcg -S -nodefaults -display none)

head -c $((4 << 20)) /dev/zero | tr '\0' 'Z' >base.raw
cp base.raw copy.raw
"$IMG" create -b base.raw ws.ovl
"$IMG" create -b base.raw ws2.ovl
truncate -s 8M disk.img
start_blockd --export ws=ws.ovl --export disk=disk.img

# --- blockd-img info reads what blockd serves, and says it is in use.
"$IMG" info base.raw >out 2>err || fail "blockd-img info on a served base: $(cat err)"
grep -qx "in use: open read-only by another process" out || fail "blockd-img info base.raw: $(cat out)"

# --- Readers share the base of a served overlay (each failed with 'Failed
# to get "consistent read" lock' while blockd locked whole files).
qemu-img info base.raw >out 2>err || fail "qemu-img info: $(cat err)"
grep -q '^file format: raw' out || fail "qemu-img info: $(cat out)"
qemu-img compare base.raw copy.raw >out 2>err || fail "qemu-img compare: $(cat err)"
qemu-img convert -O raw base.raw out.raw 2>err || fail "qemu-img convert: $(cat err)"
cmp -s out.raw base.raw || fail "qemu-img convert copied something else"
# A QEMU backing file: qemu-io reads the base through a qcow2 over it.
qemu-img create -q -f qcow2 -b base.raw -F raw top.qcow2 2>err || fail "qemu-img create -b: $(cat err)"
qemu-io -c 'write -P 0x66 0 64k' -c 'read -P 0x66 0 64k' -c 'read -P 0x5a 64k 64k' top.qcow2 \
  >out 2>err || fail "qemu-io through a backing file: $(cat err)"
# And a QEMU whose disk has the base as its backing file.
daemon vm "${VM[@]}" -blockdev driver=file,filename=top.qcow2,node-name=f0 \
  -blockdev driver=qcow2,file=f0,node-name=d0 -device virtio-blk-pci,drive=d0
undaemon vm
echo "ok: qemu-img info, compare, convert, a backing file and a QEMU share the base"

# --- qemu-storage-daemon serves the base read-only beside blockd's overlay,
# and blockd opens another overlay over it while qemu-storage-daemon holds it.
daemon qsd "${QSD[@]}" --blockdev "driver=file,filename=base.raw,node-name=b,read-only=on" \
  --export type=nbd,id=e,node-name=b,name=base,writable=off
nbdcopy "nbd+unix:///base?socket=$TMP/qsd.sock" - | cmp -s - base.raw ||
  fail "qemu-storage-daemon serves something else"
"$BLOCKD" --unix "$TMP/ws2.sock" --pidfile "$TMP/ws2.pid" ws2.ovl 2>ws2.err &
ws2=$!
track $ws2
wait_started blockd $ws2 "$TMP/ws2.pid" ws2.err
[ "$(nbdinfo --size "nbd+unix:///?socket=$TMP/ws2.sock")" = $((4 << 20)) ] || fail "second overlay"
kill -TERM $ws2
wait $ws2 || fail "second blockd: exit $? on SIGTERM"
undaemon qsd
echo "ok: qemu-storage-daemon serves the base beside blockd, in both orders"

# --- Writers of the base, or of a served image, are refused.
refused 'Failed to get "write" lock' qemu-io -f raw -c 'write -P 0x55 0 4k' base.raw
refused 'Failed to get "write" lock' qemu-io -f raw -c 'write -P 0x55 0 4k' disk.img
refused 'Failed to get "write" lock' "${VM[@]}" -blockdev driver=file,filename=base.raw,node-name=f1 \
  -blockdev driver=raw,file=f1,node-name=d1 -device virtio-blk-pci,drive=d1
# qemu-img that would rewrite, resize or commit into the base.
refused 'Failed to get "write" lock' qemu-img create -f raw base.raw 4M
refused 'Failed to get "write" lock' qemu-img resize -f raw base.raw 8M
refused 'Failed to get "write" lock' qemu-img commit top.qcow2
refused 'Failed to get "write" lock' qemu-img resize -f raw disk.img 16M
# qemu-storage-daemon opening the base, or a served image, for writing.
refused 'Failed to get "write" lock' "${QSD[@]}" --blockdev "driver=file,filename=base.raw,node-name=b" \
  --export type=nbd,id=e,node-name=b,writable=on
refused 'Failed to get "write" lock' "${QSD[@]}" --blockdev "driver=file,filename=disk.img,node-name=b" \
  --export type=nbd,id=e,node-name=b,writable=on
cmp -s base.raw copy.raw || fail "the base changed"
# A served writable image: readers that refuse writers are refused, those
# that tolerate them (-U, qemu-io -r) read, as beside a QEMU writer.
refused 'Failed to get shared "write" lock' qemu-img convert -O raw disk.img out2.raw
qemu-img convert -U -O raw disk.img out2.raw 2>err || fail "qemu-img convert -U: $(cat err)"

# --- blockd against blockd: one writer; a reader and a writer exclude each other.
blockd_refused "disk.img: locked by another process that writes it" disk.img
blockd_refused "disk.img: locked by another process that writes it" --export "d=disk.img,readonly"
blockd_refused "base.raw: locked by another process that refuses writers" base.raw
stop_blockd

# --- blockd refuses an image QEMU or qemu-storage-daemon holds for writing.
truncate -s 8M held.img
daemon qsd "${QSD[@]}" --blockdev "driver=file,filename=held.img,node-name=h" \
  --export type=nbd,id=e,node-name=h,name=held,writable=on
blockd_refused "held.img: locked by another process that writes it" held.img
blockd_refused "held.img: locked by another process that writes it" --export "h=held.img,readonly"
# blockd-img: info looks (and says so); create and convert do not overwrite
# or read what a writer holds.
"$IMG" info held.img >out 2>err || fail "blockd-img info on an image QEMU writes: $(cat err)"
grep -qx "in use: open for writing by another process (these figures may be changing)" out ||
  fail "blockd-img info does not say QEMU writes it: $(cat out)"
refused "held.img: locked by another process that writes it: not overwritten" \
  "$IMG" create --force -s 1M held.img
refused "held.img: locked by another process that writes it" "$IMG" convert held.img conv.raw
[ "$(stat -c %s held.img)" = $((8 << 20)) ] || fail "held.img was truncated"
undaemon qsd
daemon vm "${VM[@]}" -blockdev driver=file,filename=held.img,node-name=f0 \
  -blockdev driver=raw,file=f0,node-name=d0 -device virtio-blk-pci,drive=d0
blockd_refused "held.img: locked by another process that writes it" held.img
# A QEMU that reads a backing file: blockd may read the base, not write it.
undaemon vm
daemon vm "${VM[@]}" -blockdev driver=file,filename=top.qcow2,node-name=f0 \
  -blockdev driver=qcow2,file=f0,node-name=d0 -device virtio-blk-pci,drive=d0
blockd_refused "base.raw: locked by another process that refuses writers" base.raw
start_blockd ws.ovl
stop_blockd
undaemon vm

# --- The nbdkit plugin uses the same engines.
if [ -f "${NBDKIT_PLUGIN:-}" ] && command -v nbdkit >/dev/null; then
  # While it serves an overlay, QEMU reads the base and may not write it.
  nbdkit -U - "$NBDKIT_PLUGIN" file=ws.ovl --run '
    qemu-img compare base.raw copy.raw >/dev/null &&
    ! qemu-io -f raw -c "write 0 4k" base.raw 2>/dev/null' 2>err ||
    fail "nbdkit plugin: QEMU does not share the base as blockd does: $(cat err)"
  daemon qsd "${QSD[@]}" --blockdev "driver=file,filename=held.img,node-name=h" \
    --export type=nbd,id=e,node-name=h,name=held,writable=on
  refused "held.img: locked by another process that writes it" \
    nbdkit -U - "$NBDKIT_PLUGIN" file=held.img --run true
  undaemon qsd
  echo "ok: the nbdkit plugin locks as blockd does"
else
  echo "NOTE: nbdkit plugin not built here: its checks are not run"
fi
echo PASS

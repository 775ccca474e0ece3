#!/bin/bash
# The same guest against two vhost-user-blk back-ends, side by side: blockd
# and qemu-storage-daemon's vhost-user-blk export (the reference). QEMU
# (vhost-user-blk-pci, guest RAM a shared memfd) boots the tiny guest, which
# writes, reads, discards and zeroes its disk; both back-ends must give the
# guest the same answers, and leave the same bytes in the file, and blockd's
# discard must give space back (the reference is told discard=unmap too).
. "$SRCDIR/tests/lib.sh"
. "$SRCDIR/tests/guest/guestlib.sh"
require qemu-storage-daemon

[ -x "$BUILDDIR/launcher/zeroout" ] || skip "zeroout (the guest's write-zeroes tool) not built"
MiB=$((1 << 20))
dd if=/dev/urandom of="$TMP/pattern" bs=1M count=4 status=none

# run_guest SERVER SOCKET DISK: boots the guest on vhost-user SOCKET.
run_guest() {
  local script
  script=$(printf '%s\n' "
cat /sys/block/vda/serial; echo
dd if=/dev/zero bs=1 count=1 2>/dev/null | dd of=/dev/null 2>/dev/null
for i in 1 2 3 4; do dd if=/dev/vda bs=1M skip=0 count=1 2>/dev/null; done > /dev/null
dd if=/dev/vda bs=1M count=4 2>/dev/null > /tmp/p
for i in \$(seq 8); do cat /tmp/p; done | dd of=/dev/vda bs=1M seek=16 2>/dev/null
sync
echo \"W \$(dd if=/dev/vda bs=1M skip=16 count=32 2>/dev/null | md5sum | cut -c1-32)\"
blkdiscard -o $((16 * MiB)) -l $((8 * MiB)) /dev/vda && echo DISCARDED
zeroout -u /dev/vda $((24 * MiB)) $((4 * MiB)) && echo UNMAPPED
zeroout /dev/vda $((28 * MiB)) $((4 * MiB)) && echo ZEROED
sync
echo \"D \$(dd if=/dev/vda bs=1M skip=16 count=32 2>/dev/null | md5sum | cut -c1-32)\"
echo \"B \$(dd if=/dev/vda bs=512 skip=1 count=1 2>/dev/null | md5sum | cut -c1-32)\"
" | base64 -w0)
  timeout 120 qemu-system-x86_64 -nodefaults -no-user-config -machine q35 -accel tcg -m 512M \
    -smp 1 -no-reboot -display none \
    -object memory-backend-memfd,id=ram,size=512M,share=on -numa node,memdev=ram \
    -chardev stdio,id=console -serial chardev:console \
    -kernel "$GUEST/vmlinuz" -initrd "$GUEST/initrd.img" \
    -append "console=ttyS0 quiet panic=-1 blockd.run=$script" \
    -chardev socket,id=vu0,path="$2" -device vhost-user-blk-pci,chardev=vu0,num-queues=1 \
    < /dev/null > "$TMP/$1.console" 2>&1 || { cat "$TMP/$1.console" >&2; fail "$1: QEMU failed"; }
  grep -q "script exited with status 0" "$TMP/$1.console" ||
    { cat "$TMP/$1.console" >&2; fail "$1: the guest script failed"; }
}

declare -A result alloc_written alloc_after
for server in blockd qsd; do
  disk=$TMP/$server.raw
  cp "$TMP/pattern" "$disk"
  truncate -s 64M "$disk"
  sock=$TMP/$server.sock
  rm -f "$TMP/$server.pid"
  if [ "$server" = blockd ]; then
    "$BLOCKD" --vhost-user-blk "$sock=$disk,format=raw,serial=refdisk" --pidfile "$TMP/$server.pid" \
      2>>"$TMP/$server.log" &
  else
    qemu-storage-daemon \
      --blockdev driver=file,node-name=file0,filename="$disk",discard=unmap \
      --export type=vhost-user-blk,id=exp0,node-name=file0,addr.type=unix,addr.path="$sock",writable=on \
      --pidfile "$TMP/$server.pid" 2>>"$TMP/$server.log" &
  fi
  pid=$!
  track "$pid"
  wait_for_file "$TMP/$server.pid"
  run_guest "$server" "$sock"
  kill -TERM "$pid"
  wait "$pid" || fail "$server exited $? on SIGTERM: $(cat "$TMP/$server.log")"
  result[$server]=$(grep -E '^(W|D|B|DISCARDED|UNMAPPED|ZEROED)' "$TMP/$server.console" | tr '\n' ' ')
  alloc_after[$server]=$(allocated "$disk")
  echo "$server: ${result[$server]}allocated $((alloc_after[$server] / 1024)) KiB"
done

[ "${result[blockd]}" = "${result[qsd]}" ] ||
  fail "the guest saw different things: blockd '${result[blockd]}', qsd '${result[qsd]}'"
cmp "$TMP/blockd.raw" "$TMP/qsd.raw" || fail "the two back-ends left different bytes in the file"
grep -q "^refdisk" "$TMP/blockd.console" || fail "blockd's GET_ID did not give the serial"
# 4 MiB of pattern at 0 + 32 MiB written - 12 MiB discarded or unmapped (the
# last 4 MiB zeroed in place may stay allocated).
[ "${alloc_after[blockd]}" -le $((28 * MiB)) ] ||
  fail "blockd left $((alloc_after[blockd] / MiB)) MiB allocated: discard gave nothing back"
[ -e "$TMP/blockd.sock" ] && fail "blockd left its socket behind"
echo PASS

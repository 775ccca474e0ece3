#!/bin/bash
# blockd-launch --dry-run: prints the exact blockd and QEMU command lines
# (discard end to end, free page reporting, no hugepages) and starts nothing.
. "$SRCDIR/tests/lib.sh"
. "$SRCDIR/tests/guest/guestlib.sh"

truncate -s 64M "$TMP/a.raw" "$TMP/b.raw"
"$BLOCKD_LAUNCH" --dry-run --accel tcg --kernel "$GUEST/vmlinuz" --initrd "$GUEST/initrd.img" \
  --append "console=ttyS0 two words" --memory 768M --cpus 3 --qmp "$TMP/user-qmp.sock" \
  --disk "$TMP/a.raw,serial=work" --disk "$TMP/b.raw,readonly" > "$TMP/out" 2> "$TMP/err" ||
  { cat "$TMP/err" >&2; fail "--dry-run exited $?"; }
cat "$TMP/out"
[ "$(wc -l < "$TMP/out")" -eq 2 ] || fail "expected two command lines"
server=$(sed -n 1p "$TMP/out")
qemu=$(sed -n 2p "$TMP/out")

has() { grep -qF -- "$2" <<<"$1" || fail "missing '$2' in: $1"; }
for s in "--unix $XDG_RUNTIME_DIR/blockd-launch.XXXXXX/nbd.sock" "--pidfile " \
         "--export disk0=$TMP/a.raw " "--export disk1=$TMP/b.raw,readonly"; do
  has "$server" "$s"
done
for s in qemu-system-x86_64 "-accel tcg" "-m 768M" "-smp 3" "-nodefaults" \
         "-kernel $GUEST/vmlinuz" "-initrd $GUEST/initrd.img" "-append 'console=ttyS0 two words'" \
         "driver=nbd,node-name=disk0,server.type=unix" "export=disk0,discard=unmap,detect-zeroes=unmap" \
         "virtio-blk-pci,drive=disk0,serial=work,discard=on" "export=disk1,read-only=on" \
         "virtio-blk-pci,drive=disk1,serial=disk1" "virtio-balloon-pci,free-page-reporting=on" \
         "socket,id=userqmp,path=$TMP/user-qmp.sock,server=on,wait=off" "/qmp.sock,server=on,wait=off"; do
  has "$qemu" "$s"
done
if grep -Eiq 'huge|mem-path|memory-backend|mem-prealloc' "$TMP/out"; then
  fail "hugepage or file-backed memory option in: $qemu"
fi
[ -s "$TMP/err" ] && fail "unexpected messages: $(cat "$TMP/err")"
for s in -netdev bootindex "-boot "; do
  grep -qF -- "$s" <<<"$qemu" && fail "'$s' without --net or with --kernel in: $qemu"
done
assert_nothing_left
[ -e "$TMP/user-qmp.sock" ] && fail "--dry-run created the QMP socket"

# Without --kernel: the firmware boots disk0 and nothing else, and --net
# gives a virtio-net NIC on the user network, forwards on 127.0.0.1 unless
# an address is given.
printf '\x55\xaa' | dd of="$TMP/a.raw" bs=1 seek=510 conv=notrunc status=none
p1=$(free_port) p2=$(free_port)
"$BLOCKD_LAUNCH" --dry-run --accel tcg --disk "$TMP/a.raw" --disk "$TMP/b.raw" \
  --net "user,hostfwd=tcp::$p1-:22,hostfwd=udp:0.0.0.0:$p2-10.0.2.15:53,restrict=on" \
  > "$TMP/out" 2> "$TMP/err" || { cat "$TMP/err" >&2; fail "--dry-run without --kernel exited $?"; }
cat "$TMP/out"
qemu=$(sed -n 2p "$TMP/out")
for s in "-boot strict=on,reboot-timeout=0" \
         "virtio-blk-pci,drive=disk0,serial=disk0,discard=on,write-zeroes=on,bootindex=0 " \
         "-netdev user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:$p1-:22,hostfwd=udp:0.0.0.0:$p2-10.0.2.15:53 " \
         "-device virtio-net-pci,netdev=net0,romfile="; do
  has "$qemu" "$s"
done
for s in -kernel -initrd -append "drive=disk1,serial=disk1,discard=on,write-zeroes=on,bootindex"; do
  grep -qF -- "$s" <<<"$qemu" && fail "'$s' in: $qemu"
done
[ -s "$TMP/err" ] && fail "unexpected messages: $(cat "$TMP/err")"
assert_nothing_left
echo "PASS"

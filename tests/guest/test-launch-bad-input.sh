#!/bin/bash
# blockd-launch refuses bad input with one line naming the problem and exit
# status 2, before starting anything.
. "$SRCDIR/tests/lib.sh"
. "$SRCDIR/tests/guest/guestlib.sh"

truncate -s 64M "$TMP/disk.raw"
K=(--accel tcg --kernel "$GUEST/vmlinuz")

# refuse WANT ARGS...: blockd-launch ARGS exits 2 with one line matching WANT.
refuse() {
  local want=$1 rc=0; shift
  "$BLOCKD_LAUNCH" "$@" > "$TMP/out" 2> "$TMP/err" < /dev/null || rc=$?
  echo "$* -> $rc: $(cat "$TMP/err")"
  [ "$rc" -eq 2 ] || fail "exit status $rc, not 2, for: $*"
  [ "$(wc -l < "$TMP/err")" -eq 1 ] || fail "not one line for: $*: $(cat "$TMP/err")"
  grep -Eq -- "$want" "$TMP/err" || fail "message does not match '$want' for: $*"
  [ -s "$TMP/out" ] && fail "output on stdout for: $*"
  assert_nothing_left
}

refuse "--kernel $TMP/no-kernel: No such file" --kernel "$TMP/no-kernel" --disk "$TMP/disk.raw"
refuse "--kernel $TMP/disk.raw: not a Linux kernel" --kernel "$TMP/disk.raw" --disk "$TMP/disk.raw"
refuse "--initrd $TMP/no-initrd: No such file" "${K[@]}" --initrd "$TMP/no-initrd" --disk "$TMP/disk.raw"
refuse "$TMP/no-disk: No such file" "${K[@]}" --disk "$TMP/no-disk"
refuse "no --disk" "${K[@]}"
# A name with terminal escapes is quoted with its control bytes as \xHH.
refuse 'no\\x1b\[0mdisk: No such file' "${K[@]}" --disk "$TMP/no$(printf '\033[0m')disk"
! grep -q "$(printf '\033')" "$TMP/err" || fail "a control byte reached the message"
# Without --kernel the firmware boots the first disk: it must have a boot sector.
refuse "$TMP/disk.raw: no boot sector" --accel tcg --disk "$TMP/disk.raw"
refuse "--initrd needs --kernel" --accel tcg --initrd "$GUEST/initrd.img" --disk "$TMP/disk.raw"
refuse "--append needs --kernel" --accel tcg --append quiet --disk "$TMP/disk.raw"
refuse "--memory 12Q" "${K[@]}" --disk "$TMP/disk.raw" --memory 12Q
refuse "--memory 1k" "${K[@]}" --disk "$TMP/disk.raw" --memory 1k
refuse "--cpus 0" "${K[@]}" --disk "$TMP/disk.raw" --cpus 0
refuse "--accel xen" "${K[@]}" --disk "$TMP/disk.raw" --accel xen
# --accel kvm is refused up front where KVM cannot run a VM.
if [ ! -e /dev/kvm ]; then
  refuse "--accel kvm: /dev/kvm: No such file" "${K[@]}" --disk "$TMP/disk.raw" --accel kvm
else
  echo "NOTE: /dev/kvm exists here; the '--accel kvm without /dev/kvm' case is not run"
fi
# --net: only user-mode networking, with well-formed forwards.
N=("${K[@]}" --disk "$TMP/disk.raw" --net)
refuse "--net tap: only user-mode networking" "${N[@]}" tap
refuse "--net : only user-mode networking" "${N[@]}" ""
refuse "--net: 'guestfwd=tcp:10.0.2.100:80-cmd:sh' is not supported" "${N[@]}" \
  "user,guestfwd=tcp:10.0.2.100:80-cmd:sh"
refuse "--net hostfwd=tcp:2222:22: not .tcp.udp.:.HOSTADDR.:HOSTPORT-" "${N[@]}" "user,hostfwd=tcp:2222:22"
refuse "hostfwd=: not " "${N[@]}" "user,hostfwd="
refuse "protocol 'sctp' is not tcp or udp" "${N[@]}" "user,hostfwd=sctp::2222-:22"
refuse "host port '0' is not a number from 1 to 65535" "${N[@]}" "user,hostfwd=tcp::0-:22"
refuse "host port '65536' is not" "${N[@]}" "user,hostfwd=tcp::65536-:22"
refuse "guest port '22x' is not" "${N[@]}" "user,hostfwd=tcp::2222-:22x"
refuse "guest port '' is not" "${N[@]}" "user,hostfwd=tcp::2222-:"
refuse "host address 'localhost' is not an IPv4 address" "${N[@]}" "user,hostfwd=tcp:localhost:2222-:22"
refuse "guest address must be a guest's in 10.0.2.0/24" "${N[@]}" "user,hostfwd=tcp::2222-10.0.2.2:22"
refuse "guest address must be a guest's in 10.0.2.0/24" "${N[@]}" "user,hostfwd=tcp::2222-192.168.1.5:22"
refuse "that host port is forwarded twice" "${N[@]}" "user,hostfwd=tcp::2222-:22,hostfwd=tcp::2222-:80"
refuse "--net: 'restrict=yes' is not supported" "${N[@]}" "user,restrict=yes"
refuse "--net given twice" "${N[@]}" user --net user
# A host port something already listens on is refused before QEMU would be.
"$PY" -c 'import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
print(s.getsockname()[1], flush=True); sys.stdout.close(); time.sleep(60)' > "$TMP/port" &
busy=$!
track "$busy"
for _ in $(seq 50); do [ -s "$TMP/port" ] && break; sleep 0.1; done
port=$(cat "$TMP/port")
refuse "cannot forward tcp 127.0.0.1:$port: Address already in use" "${N[@]}" "user,hostfwd=tcp::$port-:22"
kill "$busy"
refuse "unknown option '--frobnicate'" "${K[@]}" --disk "$TMP/disk.raw" --frobnicate
refuse "needs an argument" "${K[@]}" --disk
refuse "unexpected argument 'extra'" "${K[@]}" --disk "$TMP/disk.raw" extra
refuse "serial must be" "${K[@]}" --disk "$TMP/disk.raw,serial=this-serial-is-far-too-long"
refuse "unknown option 'bogus'" "${K[@]}" --disk "$TMP/disk.raw,bogus"
refuse "given twice" "${K[@]}" --disk "$TMP/disk.raw" --disk "$TMP/disk.raw"
refuse "$TMP/./disk.raw: given twice \(same file as $TMP/disk.raw\)" "${K[@]}" \
  --disk "$TMP/disk.raw" --disk "$TMP/./disk.raw,ro"
refuse "unknown option 'rw' \(valid: readonly \(or ro\), format=raw\|qcow2\|overlay, cache=default\|none, serial=ID; for rbd: conf=FILE, id=USER\)" "${K[@]}" \
  --disk "$TMP/disk.raw,rw"
# ro and readonly are one option, as for blockd --export.
for ro in ro readonly; do
  "$BLOCKD_LAUNCH" --dry-run "${K[@]}" --disk "$TMP/disk.raw,$ro" >"$TMP/out" 2>"$TMP/err" ||
    fail "--disk ...,$ro: $(cat "$TMP/err")"
  grep -q -- "--export disk0=$TMP/disk.raw,readonly" "$TMP/out" || fail "--disk ...,$ro: $(cat "$TMP/out")"
done
refuse "--qmp $TMP/disk.raw: exists and is not a socket" "${K[@]}" --disk "$TMP/disk.raw" \
  --qmp "$TMP/disk.raw"
# blockd itself refuses the disk (exit 2): its one line is the message.
refuse "blockd: $TMP/disk.raw: not a qcow2 image" "${K[@]}" --disk "$TMP/disk.raw,format=qcow2"

# A disk another blockd holds for writing, or QEMU: blockd-launch says so
# before starting anything (blockd would refuse it too).
start_blockd "$TMP/disk.raw"
refuse "$TMP/disk.raw: locked by another process that writes it" "${K[@]}" --disk "$TMP/disk.raw"
refuse "$TMP/disk.raw: locked by another process that writes it" "${K[@]}" --disk "$TMP/disk.raw,ro"
stop_blockd
if command -v qemu-storage-daemon >/dev/null; then
  qemu-storage-daemon --blockdev "driver=file,filename=$TMP/disk.raw,node-name=d" \
    --nbd-server "addr.type=unix,addr.path=$TMP/qsd.sock" \
    --export type=nbd,id=e,node-name=d,writable=on --daemonize --pidfile "$TMP/qsd.pid" ||
    fail "qemu-storage-daemon did not start"
  track "$(cat "$TMP/qsd.pid")"
  refuse "$TMP/disk.raw: locked by another process that writes it" "${K[@]}" --disk "$TMP/disk.raw"
  kill -TERM "$(cat "$TMP/qsd.pid")"
  for _ in $(seq 50); do kill -0 "$(cat "$TMP/qsd.pid")" 2>/dev/null || break; sleep 0.1; done
else
  echo "NOTE: no qemu-storage-daemon: the 'held by QEMU' case is not run"
fi
# Runtime errors: exit 1, one line, nothing left behind.
fails_to_start() {
  local want=$1 rc=0; shift
  env "$@" "$BLOCKD_LAUNCH" "${K[@]}" --disk "$TMP/disk.raw" > "$TMP/out" 2> "$TMP/err" < /dev/null || rc=$?
  echo "$* -> $rc: $(cat "$TMP/err")"
  [ "$rc" -eq 1 ] || fail "exit status $rc, not 1, with $*"
  [ "$(wc -l < "$TMP/err")" -eq 1 ] || fail "not one line with $*: $(cat "$TMP/err")"
  grep -Eq -- "$want" "$TMP/err" || fail "message does not match '$want' with $*"
  assert_nothing_left
}
fails_to_start "$TMP/no-qemu: No such file" QEMU="$TMP/no-qemu"
fails_to_start "$TMP/no-blockd: No such file" BLOCKD="$TMP/no-blockd"
echo "PASS"

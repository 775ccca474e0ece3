#!/bin/bash
# blockd-launch without --kernel: SeaBIOS boots the first disk through its
# own boot loader (syslinux on FAT, built here from Debian packages), a disk
# with nothing bootable ends the launch (exit status 6), and
# --net user,hostfwd= reaches a server in the guest from the host: the guest
# listens with busybox nc, the host connects to the forwarded 127.0.0.1 port,
# and each side must get the other's random token.
. "$SRCDIR/tests/lib.sh"
. "$SRCDIR/tests/guest/guestlib.sh"
require ss

# A boot sector whose code gives up at once (int 18h: "boot failed") leaves
# SeaBIOS nothing else to boot: the launch must end with exit status 6, not
# wait for ever.
truncate -s 1M "$TMP/noboot.img"
printf '\xcd\x18\xeb\xfe' | dd of="$TMP/noboot.img" conv=notrunc status=none
printf '\x55\xaa' | dd of="$TMP/noboot.img" bs=1 seek=510 conv=notrunc status=none
launch_bare --disk "$TMP/noboot.img" --memory 128M --cpus 1
launch_wait 30
cat "$LAUNCH_ERR"
[ "$LAUNCH_RC" -eq 6 ] || { show_logs; fail "nothing to boot: exit status $LAUNCH_RC, not 6"; }
grep -q "the firmware found nothing it could boot" "$LAUNCH_ERR" || fail "no message about the firmware"
assert_nothing_left

# A service on the host's loopback: slirp maps 10.0.2.2 to 127.0.0.1, so the
# guest reaches it unless restrict=on. NBD runs unrestricted, vhost-user
# with restrict=on: each checks what the README promises.
"$PY" -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
print(s.getsockname()[1], flush=True)
c, _ = s.accept(); c.sendall(b"host-loopback\n"); c.close()' > "$TMP/lo-port" &
track $!
for _ in $(seq 50); do [ -s "$TMP/lo-port" ] && break; sleep 0.1; done
lo_port=$(cat "$TMP/lo-port")
[ -n "$lo_port" ] || fail "no host loopback listener"
if [ "$TRANSPORT" = vhost-user ]; then restrict=on; else restrict=off; fi

host_token=host-$RANDOM$RANDOM
script='ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
echo "HOSTLO $(nc -w 3 10.0.2.2 '"$lo_port"' </dev/null)"
token=guest-$(cat /proc/sys/kernel/random/uuid)
echo "TOKEN $token"
echo LISTENING
echo "$token" | nc -l -p 22 > /tmp/got
echo "GOT $(cat /tmp/got)"'
# Over NBD the disk has an MBR partition table, as images usually do. Over
# vhost-user under TCG an MBR cannot boot: its code runs at 0x7c00 and then
# reads the partition's boot sector over it, and TCG keeps running the code
# it translated before, because it never sees blockd write guest memory (with
# the in-QEMU NBD client it does). A boot sector that is the FAT file
# system's own needs no second load there.
if [ "$TRANSPORT" = vhost-user ]; then layout=fat; else layout=mbr; fi
make_boot_disk "$TMP/boot.img" "$layout" "$(guest_cmdline "$script")"
echo "boot disk: $layout layout, $(du -k "$TMP/boot.img" | cut -f1) KiB allocated"

port=$(free_port)
launch_bare --disk "$TMP/boot.img" --net "user,hostfwd=tcp::$port-:22,restrict=$restrict" \
  --memory 512M --cpus 1
wait_console '^LISTENING' 90
guest_token=$(sed -n 's/^TOKEN \(guest-[0-9a-f-]*\).*/\1/p' "$CONSOLE")
[ -n "$guest_token" ] || { show_logs; fail "no token on the console"; }

# The forward listens on 127.0.0.1 only (QEMU alone would listen on every address).
listen=$(ss -Hltn "sport = :$port" | awk '{ print $4 }')
echo "forward listens on: $listen"
[ "$listen" = "127.0.0.1:$port" ] || { show_logs; fail "hostfwd listens on '$listen', not 127.0.0.1:$port"; }

# Slirp accepts on the host side before it reaches the guest and closes the
# connection if the guest refuses, so retry until the guest's answer comes.
got=$("$PY" - "$port" "$host_token" <<'EOF'
import socket, sys, time
port, token = int(sys.argv[1]), sys.argv[2].encode() + b"\n"
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(token)
            s.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := s.recv(4096):
                data += chunk
            if data:
                print(data.decode().strip())
                break
    except OSError:
        pass
    time.sleep(0.5)
EOF
)
echo "host received: '$got'"
launch_wait 60
cat "$CONSOLE"
[ "$LAUNCH_RC" -eq 0 ] || { show_logs; fail "blockd-launch exited $LAUNCH_RC"; }
[ "$got" = "$guest_token" ] || fail "the host got '$got' through the forward, not the guest's '$guest_token'"
grep -q "^GOT $host_token" "$CONSOLE" || fail "the guest did not get the host's token"
if [ "$restrict" = on ]; then
  grep -q "^HOSTLO" "$CONSOLE" || fail "the guest did not try the host's loopback"
  grep -q "^HOSTLO host-loopback" "$CONSOLE" && fail "restrict=on, yet the guest reached the host's loopback"
else
  grep -q "^HOSTLO host-loopback" "$CONSOLE" || fail "the guest did not reach the host's loopback as 10.0.2.2"
fi
# Over vhost-user under TCG the launcher says why an MBR would hang; nothing else.
if grep -v '^blockd-launch: notice: under TCG, QEMU does not see blockd write guest memory' \
     "$LAUNCH_ERR" | grep -q .; then
  cat "$LAUNCH_ERR"; fail "unexpected messages from blockd-launch"
fi
if [ "$TRANSPORT" = vhost-user ] && ! grep -q 'notice: under TCG' "$LAUNCH_ERR"; then
  fail "no notice about MBRs over vhost-user under TCG"
fi
assert_nothing_left
echo "PASS"

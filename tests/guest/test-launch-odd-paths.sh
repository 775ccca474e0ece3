#!/bin/bash
# Paths with ',' and '=' (the disk, written with ',,' in --disk as in QEMU
# options; the runtime directory; --qmp) reach blockd and QEMU whole: the guest boots, writes its disk, QMP answers. And
# the stale-directory sweep judges a launcher alive by the lock it holds, not
# by its process name: a running launcher under another name (a copy called
# wslaunch) keeps its directory while a second launch sweeps a dead one's.
. "$SRCDIR/tests/lib.sh"
. "$SRCDIR/tests/guest/guestlib.sh"

export XDG_RUNTIME_DIR="$TMP/r=u,n"
mkdir -m 0700 "$XDG_RUNTIME_DIR"
mkdir "$TMP/d=1,2"
disk="$TMP/d=1,2/disk.raw"
truncate -s 64M "$disk"
cp "$BLOCKD_LAUNCH" "$TMP/wslaunch"
qmp="$TMP/q=m,p.sock"

BLOCKD_LAUNCH=$TMP/wslaunch launch 'echo hello-odd-paths | dd of=/dev/vda bs=512 conv=sync 2>/dev/null; sync; echo READY; read l; echo "ECHO-$l"; sleep 600' \
  --disk "${disk//,/,,}" --qmp "$qmp" --memory 512M --cpus 1
wait_console '^READY'
head -c 15 "$disk" | grep -q hello-odd-paths || fail "the guest's write did not reach $disk"
"$PY" - "$qmp" <<'PY' || fail "QMP on '$qmp' does not answer"
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
f = s.makefile("rw")
assert "QMP" in json.loads(f.readline())
f.write('{"execute": "qmp_capabilities"}\n'); f.flush()
assert "return" in json.loads(f.readline())
PY
echo "disk, runtime directory and QMP paths with ',' and '=' work"

mine=$(ls -A "$XDG_RUNTIME_DIR")
mkdir -m 0700 "$XDG_RUNTIME_DIR/blockd-launch.deadxx"
echo 999999 > "$XDG_RUNTIME_DIR/blockd-launch.deadxx/launcher.pid"
touch "$XDG_RUNTIME_DIR/blockd-launch.deadxx/nbd.sock"
truncate -s 1M "$TMP/d=1,2/other.raw"
rc=0
"$BLOCKD_LAUNCH" --accel tcg --kernel "$GUEST/vmlinuz" --disk "$TMP/d=1,,2/other.raw,format=qcow2" \
  2> "$TMP/err" < /dev/null || rc=$?
[ "$rc" -eq 2 ] || fail "second launch: exit $rc: $(cat "$TMP/err")"
[ ! -e "$XDG_RUNTIME_DIR/blockd-launch.deadxx" ] || fail "the dead launcher's directory was not swept"
[ -d "$XDG_RUNTIME_DIR/$mine" ] || fail "a running launcher's directory was swept ($mine)"
echo "the sweep kept $mine (running as wslaunch) and removed a dead launcher's directory"

guest_send STILL-HERE
wait_console '^ECHO-STILL-HERE' 30
kill -TERM "$LAUNCH_PID"
launch_wait 60
[ "$LAUNCH_RC" -eq 0 ] || [ "$LAUNCH_RC" -eq 3 ] || { show_logs; fail "exit $LAUNCH_RC"; }
assert_nothing_left
echo PASS

#!/bin/bash
# demo.sh [BUILDDIR]: a workspace VM that gives back what it frees.
#
# Builds the tiny guest from this host's Debian packages, makes a 1 GiB ext4
# base image and a copy-on-write overlay over it (a sparse raw copy if the
# overlay format is not built), and launches a workspace on the overlay with
# blockd-launch. The guest writes files, deletes them, trims, fills and frees
# memory; at each step the host measures the overlay's allocated bytes and
# QEMU's RSS, and the demo prints what the host got back.
set -euo pipefail

build=$(cd "${1:-build}" && pwd)
src=$(cd "$(dirname "$0")/.." && pwd)
launch=$build/launcher/blockd-launch
img=$build/formats/blockd-img
work=$build/demo
MiB=$((1 << 20))

die() { echo "demo: $*" >&2; exit 1; }
[ -x "$launch" ] || die "$launch not built: run ninja -C $build"
[ -x "$build/blockd/blockd" ] || die "$build/blockd/blockd not built: run ninja -C $build"
command -v mkfs.ext4 >/dev/null || die "mkfs.ext4 missing: apt-get install e2fsprogs"

guest=$("$src/launcher/guest/mkguest.sh" "$build/launcher/guest")
rm -rf "$work"
mkdir -p "$work/files"

# The base image: ext4 with one file, made on the host, fully initialised so
# the guest does not write inode tables behind our back.
echo "This file lives in the read-only base image." > "$work/files/README"
truncate -s 1G "$work/base.raw"
mkfs.ext4 -q -F -d "$work/files" -E nodiscard,lazy_itable_init=0,lazy_journal_init=0 \
  -L workspace "$work/base.raw"
base_sum=$(sha256sum < "$work/base.raw")
if [ -x "$img" ] && "$img" create -b "$work/base.raw" "$work/ws.ovl" >/dev/null 2>&1; then
  disk=$work/ws.ovl
  what="overlay ws.ovl over base.raw"
else
  cp --sparse=always "$work/base.raw" "$work/ws.raw"
  disk=$work/ws.raw
  what="sparse raw ws.raw (no overlay format in this build)"
fi

# The guest's side. Each "@@ STEP" line waits for the host to measure.
script='
step() { echo "@@ $*"; read -r _; }
stty -echo
mount /dev/vda /mnt
cat /mnt/README
step booted
mkdir /mnt/work
dd if=/dev/urandom of=/tmp/r bs=1M count=1 2>/dev/null  # urandom is slow under TCG
for i in 1 2 3 4 5 6 7 8; do for j in $(seq 32); do cat /tmp/r; done > /mnt/work/file$i; done
sync
step wrote 256 MiB of files
rm -r /mnt/work
sync
step deleted them
fstrim -v /mnt
step fstrim
mkdir /fill && mount -t tmpfs -o size=600M tmpfs /fill
dd if=/dev/zero of=/fill/big bs=1M count=400 2>/dev/null
step filled 400 MiB of tmpfs
rm /fill/big
step freed it
umount /mnt
'
b64=$(printf '%s\n' "$script" | base64 -w0)

coproc GUEST { exec "$launch" --kernel "$guest/vmlinuz" --initrd "$guest/initrd.img" \
                 --append "console=ttyS0 quiet blockd.run=$b64" \
                 --disk "$disk" --memory 1G --cpus 2; }
pid=$GUEST_PID
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT

alloc() { echo $(( $(stat -c %b "$disk") * 512 )); }
qemu_pid() {
  local p
  for p in $(cat /proc/$pid/task/*/children 2>/dev/null); do
    [ "$(cat /proc/$p/comm)" = qemu-system-x86 ] && { echo "$p"; return; }
  done
}
rss() { awk '/^VmRSS:/ { print $2 * 1024 }' /proc/"$1"/status 2>/dev/null || echo 0; }
mib() { awk -v b="$1" 'BEGIN { printf "%8.1f MiB", b / 1048576 }'; }

echo "demo: workspace disk: $what"
declare -a steps disks rsss
while IFS= read -r -u "${GUEST[0]}" line; do
  line=${line%$'\r'}
  case $line in
    "@@ "*)
      step=${line#@@ }
      q=$(qemu_pid)
      r=$(rss "$q")
      if [ "$step" = "freed it" ]; then
        # Free page reporting hands pages back in 2 MiB+ chunks after ~2 s:
        # watch RSS until it has dropped and then held for 2 s (up to 20 s).
        low=$r still=0
        for _ in $(seq 40); do
          sleep 0.5
          r=$(rss "$q")
          if [ "$r" -lt "$low" ]; then low=$r still=0; else still=$((still + 1)); fi
          [ $((rsss[4] - low)) -ge $((100 * MiB)) ] && [ "$still" -ge 4 ] && break
        done
        r=$low
      fi
      steps+=("$step"); disks+=("$(alloc)"); rsss+=("$r")
      printf 'host| %-24s disk %s   QEMU RSS %s\n' "$step" "$(mib "${disks[-1]}")" "$(mib "$r")"
      echo go >&"${GUEST[1]}"
      ;;
    *) echo "guest| $line" ;;
  esac
done
rc=0
wait "$pid" || rc=$?
trap - EXIT
[ "$rc" -eq 0 ] || die "blockd-launch exited $rc"
[ "${#steps[@]}" -eq 6 ] || die "the guest did not get through its steps"

echo
echo "What the host got back ($what):"
printf '  disk: %s allocated after writing, %s after delete, %s after fstrim:\n' \
  "$(mib "${disks[1]}")" "$(mib "${disks[2]}")" "$(mib "${disks[3]}")"
printf '        %s returned to the host file system\n' "$(mib $((disks[2] - disks[3])))"
printf '  RAM:  QEMU RSS %s with 400 MiB of tmpfs, %s after freeing it:\n' \
  "$(mib "${rsss[4]}")" "$(mib "${rsss[5]}")"
printf '        %s returned to the host (free page reporting)\n' "$(mib $((rsss[4] - rsss[5])))"
if [ "$disk" = "$work/ws.ovl" ]; then
  [ "$(sha256sum < "$work/base.raw")" = "$base_sum" ] || die "base.raw changed"
  echo "  after shutdown: $(mib "$(alloc)") allocated in ws.ovl; base.raw unchanged (sha256)"
else
  echo "  after shutdown: $(mib "$(alloc)") allocated in ws.raw"
fi

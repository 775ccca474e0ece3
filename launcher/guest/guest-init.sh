#!/bin/busybox sh
# /init of the tiny blockd guest (built by mkguest.sh).
# Loads the virtio modules, then runs the first script it finds:
#   - blockd.run=BASE64 on the kernel command line (the script, base64-encoded);
#   - the contents of a disk whose virtio serial is "script" (NUL padding dropped);
# otherwise a shell on the console. Then it syncs, unmounts and powers off.
# The ACPI power button (QMP system_powerdown) powers the guest off cleanly.
/bin/busybox --install -s /bin
export PATH=/bin HOME=/ TERM=linux

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
dmesg -n 1

while read -r m; do
  insmod "/lib/modules/$m" || echo "blockd-guest: insmod $m failed"
done < /lib/modules/order

# Stops everything and powers off: the end of every path through this file.
shutdown_guest() {
  sync
  # Unmount in reverse order so nested mounts go first; the file systems on
  # the virtio disks are clean when QEMU exits.
  for mnt in $(awk '$1 ~ "^/dev/vd" { print $2 }' /proc/mounts | sort -r); do
    umount "$mnt" 2>/dev/null || umount -r "$mnt" 2>/dev/null
  done
  sync
  poweroff -f
}

# The power button, seen through evdev: any event means "power down".
for ev in /sys/class/input/event*; do
  [ -e "$ev/device/name" ] || continue
  if [ "$(cat "$ev/device/name")" = "Power Button" ]; then
    (
      # One struct input_event is 24 bytes on x86-64; a smaller read fails.
      dd if="/dev/input/${ev##*/}" bs=24 count=1 of=/dev/null 2>/dev/null || exit 0
      echo "blockd-guest: power button pressed, powering off"
      kill -TERM -1 2>/dev/null
      shutdown_guest
    ) &
  fi
done

script=
for arg in $(cat /proc/cmdline); do
  case $arg in
    blockd.run=*) echo "${arg#blockd.run=}" | base64 -d > /run.sh && script=/run.sh ;;
  esac
done
if [ -z "$script" ]; then
  for d in /sys/block/vd*; do
    [ -e "$d/serial" ] || continue
    if [ "$(cat "$d/serial")" = script ]; then
      tr -d '\000' < "/dev/${d##*/}" > /run.sh && script=/run.sh
      break
    fi
  done
fi

if [ -n "$script" ]; then
  echo "blockd-guest: running script"
  sh "$script"
  echo "blockd-guest: script exited with status $?"
else
  echo "blockd-guest: no script given; shell on the console, exit to power off"
  setsid cttyhack sh
fi
shutdown_guest

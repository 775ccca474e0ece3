#!/bin/bash
# mkguest.sh OUTDIR: builds the tiny test/demo guest from Debian packages
# already on this host (never downloads anything):
#   OUTDIR/vmlinuz     the kernel of linux-image-cloud-amd64
#   OUTDIR/initrd.img  busybox-static + the virtio modules + init (guest-init.sh)
# Rebuilds only when an input is newer than the output. Prints OUTDIR.
# KVER=... picks a kernel version (default: the newest *-cloud-amd64 in /boot
# that has its modules installed). OUTDIR/../zeroout, the static helper the
# build makes, goes in as /bin/zeroout when it exists.
set -euo pipefail

out=${1:?usage: mkguest.sh OUTDIR}
here=$(cd "$(dirname "$0")" && pwd)
busybox=/bin/busybox

die() { echo "mkguest: $*" >&2; exit 1; }

# The newest cloud kernel whose modules are installed.
if [ -z "${KVER:-}" ]; then
  for k in $(ls -1 /boot/vmlinuz-*-cloud-amd64 2>/dev/null | sort -V); do
    v=${k#/boot/vmlinuz-}
    [ -d "/lib/modules/$v" ] && KVER=$v
  done
fi
[ -n "${KVER:-}" ] || die "no /boot/vmlinuz-*-cloud-amd64 with modules: apt-get install linux-image-cloud-amd64"
kernel=/boot/vmlinuz-$KVER
[ -r "$kernel" ] || die "$kernel: not readable"
[ -x "$busybox" ] || die "$busybox: missing: apt-get install busybox-static"
command -v cpio >/dev/null || die "cpio: missing: apt-get install cpio"

mkdir -p "$out"
stamp=$out/initrd.img
if [ -s "$stamp" ] && [ -s "$out/vmlinuz" ] && [ "$(cat "$out/kver" 2>/dev/null)" = "$KVER" ] &&
   [ "$stamp" -nt "$kernel" ] && [ "$stamp" -nt "$busybox" ] &&
   [ "$stamp" -nt "$here/guest-init.sh" ] && [ "$stamp" -nt "$0" ] &&
   { [ ! -e "$out/../zeroout" ] || [ "$stamp" -nt "$out/../zeroout" ]; }; then
  echo "$out"
  exit 0
fi

root=$(mktemp -d "$out/root.XXXXXX")
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,dev,proc,sys,tmp,mnt,run,lib/modules}
cp "$busybox" "$root/bin/busybox"
cp "$here/guest-init.sh" "$root/init"
chmod 0755 "$root/init" "$root/bin/busybox"
if [ -x "$out/../zeroout" ]; then
  cp "$out/../zeroout" "$root/bin/zeroout"
fi

# Modules in dependency order, each once; built-in ones need nothing.
# acpi button + evdev let the guest see QMP system_powerdown; virtio_net is
# the NIC of blockd-launch --net.
: > "$root/lib/modules/order"
for m in virtio_pci virtio_blk virtio_balloon virtio_net ext4 button evdev; do
  modprobe --show-depends -S "$KVER" "$m" 2>/dev/null | while read -r kind path _; do
    [ "$kind" = insmod ] || continue
    name=$(basename "$path")
    name=${name%.xz}; name=${name%.zst}; name=${name%.gz}
    grep -qx "$name" "$root/lib/modules/order" && continue
    case $path in
      *.xz) xz -dc "$path" ;;
      *.zst) zstd -qdc "$path" ;;
      *.gz) gzip -dc "$path" ;;
      *) cat "$path" ;;
    esac > "$root/lib/modules/$name"
    echo "$name" >> "$root/lib/modules/order"
  done
  modprobe --show-depends -S "$KVER" "$m" >/dev/null 2>&1 || die "module $m not found for $KVER"
done

(cd "$root" && find . -print0 | sort -z | cpio --null -o -H newc --owner 0:0 --quiet) \
  | gzip -1 > "$out/initrd.img.$$"
cp "$kernel" "$out/vmlinuz.$$"
mv "$out/vmlinuz.$$" "$out/vmlinuz"
echo "$KVER" > "$out/kver"
mv "$out/initrd.img.$$" "$out/initrd.img"
echo "$out"

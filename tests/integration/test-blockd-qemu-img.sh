#!/usr/bin/env bash
# blockd with qemu-img: convert 32 MiB of random data in over nbd+unix,
# compare it (qemu-img compare must also see a one-byte difference), convert
# it back out, and convert a sparse image in without filling the holes.
. "$SRCDIR/tests/lib.sh"
require qemu-img

head -c 32M /dev/urandom > "$TMP/src.img"
truncate -s 32M "$TMP/disk.img"
start_blockd "$TMP/disk.img"

qemu-img convert -n -f raw -O raw "$TMP/src.img" "$NBD_URI" \
  || fail "qemu-img convert into blockd failed"
qemu-img compare -f raw -F raw "$TMP/src.img" "$NBD_URI" > "$TMP/out" 2>&1 \
  || { cat "$TMP/out" >&2; fail "qemu-img compare: images differ"; }
grep -q "Images are identical" "$TMP/out" || { cat "$TMP/out" >&2; fail "qemu-img compare said no 'identical'"; }
cmp "$TMP/src.img" "$TMP/disk.img" || fail "the served file differs from the source"

# The comparison can fail: flip one byte at 20 MiB + 5.
cp "$TMP/src.img" "$TMP/diff.img"
printf '\xff' | dd of="$TMP/diff.img" bs=1 seek=$((20 * 1048576 + 5)) conv=notrunc status=none
if cmp -s "$TMP/src.img" "$TMP/diff.img"; then printf '\x00' | dd of="$TMP/diff.img" bs=1 seek=$((20 * 1048576 + 5)) conv=notrunc status=none; fi
rc=0; qemu-img compare -f raw -F raw "$TMP/diff.img" "$NBD_URI" > "$TMP/out" 2>&1 || rc=$?
[ "$rc" -eq 1 ] || { cat "$TMP/out" >&2; fail "qemu-img compare of different images exited $rc, expected 1"; }
grep -q "offset 20971520" "$TMP/out" || { cat "$TMP/out" >&2; fail "qemu-img compare: wrong mismatch offset"; }

qemu-img convert -f raw -O raw "$NBD_URI" "$TMP/out.img" || fail "qemu-img convert out of blockd failed"
cmp "$TMP/src.img" "$TMP/out.img" || fail "converted-out image differs from the source"

# Out-of-order writes from 16 coroutines at once (-W -m 16), small requests.
head -c 32M /dev/urandom > "$TMP/src2.img"
qemu-img convert -n -W -m 16 -S 0 -f raw -O raw "$TMP/src2.img" "$NBD_URI" \
  || fail "qemu-img convert -W -m 16 into blockd failed"
qemu-img compare -f raw -F raw "$TMP/src2.img" "$NBD_URI" > "$TMP/out" 2>&1 \
  || { cat "$TMP/out" >&2; fail "qemu-img compare after convert -W -m 16 failed"; }

qemu-img info --output=json "$NBD_URI" > "$TMP/info.json" || fail "qemu-img info failed"
"$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(d["virtual-size"] != 32 << 20)' \
  "$TMP/info.json" || { cat "$TMP/info.json" >&2; fail "qemu-img info: wrong virtual size"; }
stop_blockd

# A sparse source (4 MiB of data in 64 MiB) into an empty sparse file:
# the copy is exact and the holes stay holes.
truncate -s 64M "$TMP/sparse-src.img"
head -c 4M /dev/urandom | dd of="$TMP/sparse-src.img" bs=1M seek=30 conv=notrunc status=none
truncate -s 64M "$TMP/sparse.img"
rm -f "$TMP/nbd.sock"
start_blockd "$TMP/sparse.img"
qemu-img convert -n -f raw -O raw "$TMP/sparse-src.img" "$NBD_URI" \
  || fail "qemu-img convert of a sparse image failed"
qemu-img compare -f raw -F raw "$TMP/sparse-src.img" "$NBD_URI" > "$TMP/out" 2>&1 \
  || { cat "$TMP/out" >&2; fail "qemu-img compare (sparse) failed"; }
stop_blockd
cmp "$TMP/sparse-src.img" "$TMP/sparse.img" || fail "sparse copy differs"
a=$(allocated "$TMP/sparse.img")
[ "$a" -le $((8 * 1048576)) ] || fail "sparse copy allocates $a bytes for 4 MiB of data"
echo PASS

#!/usr/bin/env bash
# blockd with nbdcopy (multi-conn, many requests in flight, zero detection):
# copy a half-sparse image in and out and compare; the holes stay holes.
. "$SRCDIR/tests/lib.sh"
require nbdcopy

M=1048576
truncate -s 64M "$TMP/src.img"
for at in 0 9 20 33 63; do
  head -c 1M /dev/urandom | dd of="$TMP/src.img" bs=1M seek=$at conv=notrunc status=none
done
# Old data everywhere in the target, so zeroes must really be written.
head -c 64M /dev/urandom > "$TMP/disk.img"
start_blockd "$TMP/disk.img"

nbdcopy --flush "$TMP/src.img" "$NBD_URI" || fail "nbdcopy into blockd failed"
cmp "$TMP/src.img" "$TMP/disk.img" || fail "file differs after nbdcopy in"
a=$(allocated "$TMP/disk.img")
[ "$a" -le $((16 * M)) ] || fail "nbdcopy in: $((a / M)) MiB allocated for 5 MiB of data (zeroes not punched)"

nbdcopy "$NBD_URI" "$TMP/out.img" || fail "nbdcopy out of blockd failed"
cmp "$TMP/src.img" "$TMP/out.img" || fail "nbdcopy out differs"
# Through nbd to nbd, as a copy between two exports of one server.
stop_blockd
truncate -s 64M "$TMP/b.img"
rm -f "$TMP/nbd.sock"
start_blockd --export "a=$TMP/disk.img" --export "b=$TMP/b.img"
nbdcopy "nbd+unix:///a?socket=$NBD_SOCK" "nbd+unix:///b?socket=$NBD_SOCK" || fail "nbdcopy a -> b failed"
stop_blockd
cmp "$TMP/src.img" "$TMP/b.img" || fail "export b differs after nbdcopy a -> b"
echo PASS

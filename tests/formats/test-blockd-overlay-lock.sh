#!/usr/bin/env bash
# Two blockd processes cannot open one overlay for writing; a base in use
# cannot be opened for writing; blockd-img info reads a served image and says
# it is in use; a changed or missing base is refused with a message naming
# the file.
. "$SRCDIR/tests/lib.sh"
IMG=${BLOCKD_IMG:?BLOCKD_IMG not set}
[ -x "$BLOCKD" ] || skip "blockd not built"
cd "$TMP"

"$IMG" create -s 16M base.img
printf 'base data' | dd of=base.img bs=1 seek=4096 conv=notrunc status=none
"$IMG" create -b base.img mid.ovl
"$IMG" create -b mid.ovl ws.ovl
start_blockd ws.ovl

# second_blockd ARGS...: a second blockd must fail at start; prints its stderr.
second_blockd() {
  local rc=0
  timeout 10 "$BLOCKD" --unix "$TMP/second.sock" "$@" 2>second.err || rc=$?
  [ "$rc" -ne 0 ] || fail "second blockd $* started"
  [ "$rc" -ne 124 ] || fail "second blockd $* did not exit"
  cat second.err
}
second_blockd ws.ovl | grep -q 'ws.ovl: locked by another process' || fail "second writer: $(cat second.err)"
# mid.ovl is ws.ovl's base, opened read-only (shared lock): no writer allowed.
second_blockd mid.ovl | grep -q 'mid.ovl: locked by another process' || fail "writer on a base in use: $(cat second.err)"
# Several readers of a base are fine.
"$IMG" create -b mid.ovl other.ovl
"$BLOCKD" --unix "$TMP/third.sock" --pidfile "$TMP/third.pid" other.ovl 2>third.err &
track $!
wait_for_file "$TMP/third.pid"
# info takes no lock: it reads a served overlay and its bases, and says who
# has them open.
"$IMG" info ws.ovl >info.out 2>info.err || fail "info on a served overlay: $(cat info.err)"
grep -qx "in use: open for writing by another process (these figures may be changing)" info.out ||
  fail "info does not say the overlay is written: $(cat info.out)"
grep -qx "base chain: ws.ovl (overlay) -> mid.ovl (overlay) -> base.img (raw)" info.out ||
  fail "info on a served overlay: $(cat info.out)"
"$IMG" info mid.ovl | grep -qx "in use: open read-only by another process" ||
  fail "info does not say the base is read"
"$IMG" info --json ws.ovl | grep -q '^  "in-use": "write",$' || fail "info --json: no in-use"
stop_blockd
# One file given twice to one blockd, under any name, is said to be so.
second_blockd --export a=ws.ovl --export b=./ws.ovl | grep -qx "blockd: ./ws.ovl: given twice (same file as ws.ovl)" ||
  fail "two exports of one file: $(cat second.err)"
second_blockd --export a=ws.ovl --vhost-user-blk "$TMP/v.sock=ws.ovl,ro" | grep -qx "blockd: ws.ovl: given twice" ||
  fail "an export and a vhost-user device of one file: $(cat second.err)"
second_blockd --export w=ws.ovl --export m=mid.ovl | grep -qx "blockd: mid.ovl: given twice (same file as mid.ovl, the base of ws.ovl)" ||
  fail "a base exported writable: $(cat second.err)"
"$IMG" info ws.ovl >info.out || fail "info after blockd stopped"
! grep -q "in use" info.out || fail "in use after blockd stopped: $(cat info.out)"
"$IMG" info --json ws.ovl | grep -q '^  "in-use": "no",$' || fail "info --json: in use after blockd stopped"

# A changed base: same size, one byte different.
printf 'X' | dd of=base.img bs=1 seek=4096 conv=notrunc status=none
"$IMG" create -b base.img ws2.ovl
printf 'Y' | dd of=base.img bs=1 seek=4096 conv=notrunc status=none
second_blockd ws2.ovl | grep -q "ws2.ovl: base image base.img changed since the overlay was created" ||
  fail "changed base: $(cat second.err)"
rm base.img
second_blockd ws2.ovl | grep -q "ws2.ovl: cannot open base image: base.img: No such file or directory" ||
  fail "missing base: $(cat second.err)"
echo ok

#!/usr/bin/env bash
# blockd-img's command line: help, version, usage errors (exit 2), runtime
# errors (exit 1, one line naming the file), create/info/convert basics, and
# the cost of an overlay over a 100 GiB sparse base (time and space, printed).
. "$SRCDIR/tests/lib.sh"
IMG=${BLOCKD_IMG:?BLOCKD_IMG not set}
cd "$TMP"

# expect STATUS PATTERN CMD...: CMD exits STATUS and its stderr's first line matches PATTERN.
expect() {
  local status=$1 pattern=$2 rc=0; shift 2
  "$@" >out 2>err || rc=$?
  [ "$rc" -eq "$status" ] || fail "$*: exit $rc, expected $status: $(cat err)"
  head -n1 err | grep -qE "$pattern" || fail "$*: stderr '$(head -n1 err)' does not match '$pattern'"
}

# Read whole: grep -q would leave a help longer than a pipe's first write
# to die of SIGPIPE, which pipefail reports.
help=$("$IMG" --help)
grep -q 'create .*-s SIZE FILE' <<<"$help" || fail "--help lacks create"
grep -q 'Exit status' <<<"$help" || fail "--help lacks exit status"
"$IMG" --version | grep -qE '^blockd-img [0-9]' || fail "--version"
expect 2 'missing COMMAND' "$IMG"
expect 2 "unknown command 'frob'" "$IMG" frob
expect 2 'unknown option' "$IMG" --frob
expect 2 'exactly one of -s SIZE' "$IMG" create x.img
expect 2 'exactly one of -s SIZE' "$IMG" create -s 1M -b y x.img
expect 2 "invalid size '12Q'" "$IMG" create -s 12Q x.img
expect 2 'expected one FILE' "$IMG" create -s 1M
expect 2 'invalid cluster size' "$IMG" create -c 3000 -b y x.img
expect 2 'expected SRC and DST' "$IMG" convert a
expect 2 "unknown format 'vmdk'" "$IMG" convert -f vmdk a b
expect 1 '^blockd-img: nothere.img: No such file or directory$' "$IMG" info nothere.img
expect 1 '^blockd-img: nothere.img: No such file or directory$' "$IMG" create -b nothere.img o.ovl
expect 1 'nodir/x.img: No such file or directory' "$IMG" create -s 1M nodir/x.img
[ "$(wc -l <err)" -eq 1 ] || fail "runtime errors must be one line"

# create -s: sparse raw of exactly SIZE.
"$IMG" create -s 1.5G raw.img
[ "$(stat -c %s raw.img)" -eq 1610612736 ] || fail "create -s 1.5G size"
[ "$(allocated raw.img)" -eq 0 ] || fail "create -s allocated $(allocated raw.img)"
"$IMG" info raw.img | grep -q '^format: raw$' || fail "info raw format"

# Detection by content: an overlay named .img, a raw named .ovl.
"$IMG" create -s 64M base.ovl
"$IMG" create -b base.ovl ws.img
"$IMG" info ws.img | grep -q '^format: overlay$' || fail "overlay named .img not detected"
"$IMG" info base.ovl | grep -q '^format: raw$' || fail "raw named .ovl not detected"
"$IMG" info --json ws.img >info.json
$PY - <<'PY' || fail "info --json"
import json
i = json.load(open("info.json"))
assert i["format"] == "overlay" and i["virtual-size"] == 64 << 20, i
assert i["owned-clusters"] == 0 and i["cluster-size"] == 65536, i
assert i["base-filename"] == "base.ovl", i  # recorded relative to the overlay's directory
assert i["base"]["format"] == "raw" and i["base"]["filename"] == "base.ovl", i
PY
# Converting onto the source, or an overlay onto itself, is refused.
expect 1 'ws.img: is the source image or one of its bases' "$IMG" convert ws.img ws.img
expect 1 'ws.img: is the base image itself' "$IMG" create -b ws.img ws.img
# A changed base is refused, naming it.
printf 'x' | dd of=base.ovl bs=1 seek=100 conv=notrunc status=none
expect 1 'ws.img: base image base.ovl changed since the overlay was created' "$IMG" info ws.img
# No progress bar when stderr is not a terminal.
"$IMG" create -s 8M r8.img
"$IMG" convert r8.img c8.img 2>conv.err
[ ! -s conv.err ] || fail "convert wrote to a non-terminal stderr: $(cat conv.err)"
# A progress bar when it is one (script(1) gives the command a terminal).
if command -v script >/dev/null; then
  script -qec "'$IMG' convert r8.img c9.img" /dev/null >tty.out
  grep -q '(100%) \[#*\]' tty.out || fail "no progress bar on a terminal: $(cat tty.out)"
fi

# qcow2 images blockd cannot read are refused by name, with the reason.
if command -v qemu-img >/dev/null; then
  qemu-img create -q -f qcow2 -b base.ovl -F raw rawbacked.qcow2
  # qcow2 is never guessed from the contents (a guest can write a qcow2
  # header into its raw disk): named, it is read.
  expect 1 'rawbacked.qcow2: starts like a qcow2 image.*name the format' "$IMG" info rawbacked.qcow2
  expect 1 'rawbacked.qcow2: backing file .*base.ovl is not a qcow2 image' \
    "$IMG" info -f qcow2 rawbacked.qcow2
  qemu-img create -q -f qcow2 -o compression_type=zstd zstd.qcow2 1M
  expect 1 'zstd.qcow2: qcow2 features 0x8 not supported' "$IMG" info -f qcow2 zstd.qcow2
  expect 1 'raw.img: not a qcow2 image' "$IMG" convert -f qcow2 raw.img out.img
  qemu-img create -q -f qcow2 back.qcow2 1M
  qemu-img create -q -f qcow2 -b back.qcow2 -F qcow2 front.qcow2
  expect 1 'back.qcow2: is the source image or one of its bases' \
    "$IMG" convert -f qcow2 front.qcow2 back.qcow2
  qemu-img check -q back.qcow2 || fail "convert damaged the source's backing file"
  [ ! -e out.img ] || fail "failed convert left its destination behind"
fi

# A base given as a relative path is recorded relative to the overlay's
# directory (a directory of images can move); an absolute one stays absolute.
# A base outside the overlay's directory is followed only beneath a directory
# allowed with --allow-base-dir, and creating such an overlay says so.
mkdir -p d/imgs d/ws
"$IMG" create -s 1M d/imgs/base.img
"$IMG" create -b d/imgs/base.img d/ws/rel.ovl 2>create.err
grep -q 'note: .*outside the image.s directory' create.err || fail "create did not note the base's place: $(cat create.err)"
"$IMG" create -b "$TMP/d/imgs/base.img" d/ws/abs.ovl 2>/dev/null
expect 1 'rel.ovl: cannot open base image: d/ws/../imgs/base.img: outside the image.s directory and every allowed directory' \
  "$IMG" info d/ws/rel.ovl
"$IMG" info --allow-base-dir d/imgs --json d/ws/rel.ovl | grep -q '"base-filename": "../imgs/base.img"' || fail "relative base not recorded relative to the overlay"
mv d moved
"$IMG" info --allow-base-dir moved/imgs moved/ws/rel.ovl >/dev/null || fail "relative base lost after moving the directory"
expect 1 "abs.ovl: cannot open base image: $TMP/d/imgs/base.img: No such file or directory" "$IMG" info --allow-base-dir "$TMP" moved/ws/abs.ovl

# Overlay creation over a 100 GiB sparse base: O(1) time and space.
"$IMG" create -s 100G big.img
start=$(date +%s%N)
"$IMG" create -b big.img big.ovl
end=$(date +%s%N)
alloc=$(allocated big.ovl)
echo "overlay over a 100 GiB sparse base: created in $(( (end - start) / 1000 )) us, allocated $alloc bytes, file size $(stat -c %s big.ovl)"
[ "$alloc" -lt 1048576 ] || fail "overlay over 100 GiB allocated $alloc bytes"
"$IMG" info big.ovl | grep -q 'owned clusters: 0 of 1638400' || fail "100G overlay info"
echo "ok"

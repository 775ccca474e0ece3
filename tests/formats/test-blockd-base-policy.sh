#!/usr/bin/env bash
# Where an overlay's base (and a qcow2's backing file) may be: beneath the
# image's own directory, or beneath a directory allowed with --allow-base-dir.
# A crafted header naming an absolute path, "..", a symlink out, or a FIFO is
# refused with one line and exit 2, quickly; the refusal for a path outside
# reads the same whether that path exists or not.
. "$SRCDIR/tests/lib.sh"
IMG=${BLOCKD_IMG:?BLOCKD_IMG not set}
[ -x "$BLOCKD" ] || skip "blockd not built"
cd "$TMP"
mkdir a b
printf 'SECRET' > b/secret.raw; truncate -s 1M b/secret.raw
"$IMG" create -s 1M a/base.raw

# patch OVERLAY BASEPATH: makes OVERLAY name BASEPATH as its base.
patch() {
  "$PY" -c 'import sys; sys.path.insert(0, sys.argv[3]); import fmtlib; fmtlib.patch_overlay(sys.argv[1], base_path=sys.argv[2])' \
    "$1" "$2" "$SRCDIR/tests/formats"
}

# refused WANT ARGS...: blockd ARGS exits 2 within 5 s with WANT in one line.
refused() {
  local want=$1 rc=0; shift
  timeout 5 "$BLOCKD" --unix "$TMP/x.sock" "$@" 2>err || rc=$?
  [ "$rc" -ne 124 ] || fail "blockd $* hung"
  [ "$rc" -eq 2 ] && [ "$(wc -l < err)" -eq 1 ] && grep -q -- "$want" err ||
    fail "blockd $*: exit $rc, $(cat err) (wanted: $want)"
  echo "refused: $(cat err)"
}

"$IMG" create -b a/base.raw a/ws.ovl
cp a/ws.ovl a/abs.ovl;  patch a/abs.ovl "$TMP/b/secret.raw"
cp a/ws.ovl a/none.ovl; patch a/none.ovl "$TMP/b/no-such-file"
cp a/ws.ovl a/up.ovl;   patch a/up.ovl "../b/secret.raw"
ln -s ../b/secret.raw a/link.raw
cp a/ws.ovl a/link.ovl; patch a/link.ovl "link.raw"
mkfifo a/fifo
cp a/ws.ovl a/fifo.ovl; patch a/fifo.ovl "fifo"

refused "abs.ovl: cannot open base image: $TMP/b/secret.raw: outside the image's directory and every allowed directory" a/abs.ovl
# Existing or not, the same words: a client learns nothing about host paths.
refused "none.ovl: cannot open base image: $TMP/b/no-such-file: outside the image's directory and every allowed directory" a/none.ovl
refused "up.ovl: cannot open base image: a/../b/secret.raw: outside the image's directory" a/up.ovl
refused "link.ovl: cannot open base image: a/link.raw: a symbolic link leads outside" a/link.ovl
refused "fifo.ovl: cannot open base image: a/fifo: not a regular file or block device" a/fifo.ovl
# A FIFO given by the user is refused as quickly.
refused "a/fifo: not a regular file or block device" --export "f=a/fifo,format=raw"

# Allowed: the same paths get as far as the identity check (these headers
# were copied from another overlay), or all the way with a real overlay.
refused "abs.ovl: base image $TMP/b/secret.raw changed since the overlay was created" \
  --allow-base-dir b a/abs.ovl
"$IMG" create -b "$TMP/b/secret.raw" a/real.ovl 2>/dev/null
refused "real.ovl: cannot open base image: $TMP/b/secret.raw: outside" a/real.ovl
start_blockd --allow-base-dir b a/real.ovl
"$PY" -c 'import nbd, sys; h = nbd.NBD(); h.connect_unix(sys.argv[1]); assert h.pread(6, 0) == b"SECRET"' \
  "$NBD_SOCK" || fail "an allowed base is not served"
stop_blockd
refused "allow-base-dir 'nonexistent'" --allow-base-dir nonexistent a/ws.ovl

# qcow2 backing files follow the same rule.
if command -v qemu-img >/dev/null; then
  qemu-img create -q -f qcow2 b/back.qcow2 1M
  qemu-img create -q -f qcow2 -b "$TMP/b/back.qcow2" -F qcow2 a/front.qcow2
  refused "front.qcow2: cannot open backing file: $TMP/b/back.qcow2: outside" --export "q=a/front.qcow2,format=qcow2"
  start_blockd --allow-base-dir b --export "q=a/front.qcow2,format=qcow2"
  stop_blockd
fi
echo PASS

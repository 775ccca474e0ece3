#!/usr/bin/env bash
# Interop checks, one script run once per server (libnbd interop/ style):
#
#   test-interop.sh SERVER [basic|overlay|qcow2]
#
# SERVER is blockd, nbdkit-plugin (nbdkit + nbdkit-blockd-plugin.so),
# qemu-storage-daemon (the reference) or nbdkit-file (nbdkit's own file
# plugin, a second reference).  The same real clients drive every server:
# qemu-img convert/compare, qemu-io patterns, zero and discard, nbdinfo --map,
# nbdcopy.  Every sequence of writes is also applied with qemu-io to a local
# raw file, the expected image, and the server's contents must equal it.
#
# basic:   a sparse raw image.
# overlay: a copy-on-write image over a non-zero raw base: unowned clusters
#          read the base, discarded and zeroed clusters read zeroes, the base
#          is never written, and everything survives a restart.  The servers
#          that serve our overlay format run it; qemu-storage-daemon runs it
#          on a qcow2 overlay as the reference for the same semantics.
# qcow2:   a qcow2 image made by qemu-img (plain and compressed clusters),
#          served read-only: same contents, holes where qemu left clusters
#          unallocated, writes refused; then a writable overlay over it.
# A server that cannot run here (not built, not installed) exits 77.
. "${SRCDIR:?run through meson test}/tests/lib.sh"
. "$SRCDIR/tests/nbdkit/plugin.sh"  # $NBDKIT, plugin_require, plugin_has_format

server=${1:?usage: test-interop.sh SERVER [basic|overlay|qcow2]}
part=${2:-basic}
require qemu-img qemu-io nbdinfo nbdcopy

MiB=$((1024 * 1024))
SOCK=$TMP/nbd.sock
SERVER_PID=
SERVER_LOG=$TMP/server.log

# ---- the servers -----------------------------------------------------------

# server_require: skips unless SERVER can run here.
server_require() {
  case $server in
    blockd)
      [ -x "$BLOCKD" ] || skip "blockd not built ($BLOCKD)" ;;
    nbdkit-plugin)
      plugin_require ;;
    nbdkit-file)
      require nbdkit ;;
    qemu-storage-daemon)
      require qemu-storage-daemon ;;
    *)
      echo "test-interop.sh: unknown server '$server'" >&2; exit 2 ;;
  esac
}

# wait_server PID PIDFILE: waits until the server wrote PIDFILE and its socket exists.
wait_server() {
  local pid=$1 pidfile=$2
  for _ in $(seq 200); do
    [ -s "$pidfile" ] && [ -S "$SOCK" ] && return 0
    kill -0 "$pid" 2>/dev/null || { cat "$SERVER_LOG" >&2; fail "$server exited at start"; }
    sleep 0.05
  done
  cat "$SERVER_LOG" >&2
  fail "$server did not start"
}

# server_start FILE FORMAT [ro]: serves FILE (FORMAT raw, qcow2 or overlay)
# as the default export on $SOCK, read-only with "ro"; sets NBD_URI. Every
# server is told the format (ours never guess qcow2 from the contents).
server_start() {
  local file=$1 format=$2 ro=${3:-} pidfile=$TMP/server.pid qro=off qwr=on
  rm -f "$pidfile" "$SOCK"
  [ "$ro" = ro ] && qro=on qwr=off
  case $server in
    blockd)
      start_blockd --export "=$file,format=$format"
      SERVER_PID=$BLOCKD_PID
      return ;;
    nbdkit-plugin)
      "$NBDKIT" -f -U "$SOCK" -P "$pidfile" "$NBDKIT_PLUGIN" file="$file" format="$format" \
        2>>"$SERVER_LOG" & ;;
    nbdkit-file)
      nbdkit -f -U "$SOCK" -P "$pidfile" file file="$file" 2>>"$SERVER_LOG" & ;;
    qemu-storage-daemon)
      qemu-storage-daemon \
        --blockdev driver=file,node-name=file0,filename="$file",discard=unmap,read-only=$qro \
        --blockdev driver="$format",node-name=disk0,file=file0,discard=unmap,read-only=$qro \
        --nbd-server addr.type=unix,addr.path="$SOCK" \
        --export type=nbd,id=exp0,node-name=disk0,name=,writable=$qwr \
        --pidfile "$pidfile" 2>>"$SERVER_LOG" & ;;
  esac
  SERVER_PID=$!
  track "$SERVER_PID"
  wait_server "$SERVER_PID" "$pidfile"
  NBD_URI="nbd+unix:///?socket=$SOCK"
}

# server_stop: stops the server with SIGTERM and checks that it exits 0.
server_stop() {
  if [ "$server" = blockd ]; then
    stop_blockd
    return
  fi
  kill -TERM "$SERVER_PID"
  local rc=0
  wait "$SERVER_PID" || rc=$?
  [ "$rc" -eq 0 ] || { cat "$SERVER_LOG" >&2; fail "$server exited $rc on SIGTERM"; }
}

# ---- helpers ---------------------------------------------------------------

# qio TARGET QEMU-IO-ARGS...: runs qemu-io on TARGET (the server's URI or a
# local raw file); any failed command, pattern mismatch included, fails the test.
qio() {
  local target=$1 out rc=0
  shift
  out=$(qemu-io -f raw "$@" "$target" 2>&1) || rc=$?
  if [ "$rc" -ne 0 ] || grep -qiE 'fail|error|invalid' <<<"$out"; then
    echo "$out" >&2
    fail "qemu-io $* on $target"
  fi
}

# both QEMU-IO-ARGS...: applies the same commands to the server and to the expected image.
both() {
  qio "$NBD_URI" "$@"
  qio "$EXPECTED" "$@"
}

# same_as_expected WHAT: the server's contents equal the expected image.
same_as_expected() {
  qemu-img compare -q -f raw -F raw "$EXPECTED" "$NBD_URI" ||
    fail "$WHAT: $server contents differ from the expected image ($1)"
}

# map_check START LENGTH WANT: every extent of nbdinfo --map overlapping
# [START, START+LENGTH) has the flag bits WANT ("hole": type & 1, "zero":
# type & 2, "data": not a hole).
map_check() {
  local start=$1 len=$2 want=$3 map
  map=$(nbdinfo --map "$NBD_URI") || fail "nbdinfo --map failed"
  awk -v s="$start" -v e=$((start + len)) -v want="$want" '
    $1 + $2 > s && $1 < e {
      seen = 1
      if (want == "hole" && $3 % 2 != 1) bad = 1
      if (want == "zero" && int($3 / 2) % 2 != 1) bad = 1
      if (want == "data" && $3 % 2 != 0) bad = 1
    }
    END { exit (seen && !bad) ? 0 : 1 }' <<<"$map" || {
    echo "$map" >&2
    fail "nbdinfo --map: [$start, +$len) is not all $want on $server"
  }
}

# random_file FILE SIZE_MIB: a sparse file with random data in a few places.
random_file() {
  truncate -s $(($2 * MiB)) "$1"
  for at in 0 8 20; do
    head -c $((4 * MiB)) /dev/urandom | dd of="$1" bs=1M seek="$at" conv=notrunc status=none
  done
}

# ---- basic: a sparse raw image ---------------------------------------------

part_basic() {
  local img=$TMP/disk.img before after
  EXPECTED=$TMP/expected.img
  WHAT=basic
  truncate -s $((64 * MiB)) "$img"
  server_start "$img" raw

  # qemu-img convert of random data in, compare out.
  random_file "$EXPECTED" 64
  qemu-img convert -n -f raw -O raw "$EXPECTED" "$NBD_URI" || fail "qemu-img convert into $server"
  same_as_expected "after qemu-img convert"

  # nbdcopy round trip, over as many connections as the server allows.
  nbdcopy "$NBD_URI" "$TMP/copy.img" || fail "nbdcopy from $server"
  cmp "$EXPECTED" "$TMP/copy.img" || fail "nbdcopy out of $server differs"
  random_file "$TMP/copy.img" 64
  nbdcopy "$TMP/copy.img" "$NBD_URI" || fail "nbdcopy into $server"
  nbdcopy "$NBD_URI" "$TMP/back.img" || fail "nbdcopy back from $server"
  cmp "$TMP/copy.img" "$TMP/back.img" || fail "nbdcopy round trip through $server differs"
  cp --sparse=always "$TMP/copy.img" "$EXPECTED"
  rm -f "$TMP/copy.img" "$TMP/back.img"

  # qemu-io patterns: plain and FUA writes, unaligned writes, zeroes with
  # and without unmap, discard, each read back with its pattern.
  both -c 'write -P 0xab 32M 64k' -c 'read -P 0xab 32M 64k' \
       -c 'write -f -P 0xcd 33M 4k' -c 'read -P 0xcd 33M 4k' \
       -c 'write -P 0x11 35651585 511' -c 'read -P 0x11 35651585 511' \
       -c 'write -z 32784k 16k' -c 'read -P 0 32784k 16k' \
       -c 'write -P 0xee 34M 1M' -c 'write -z -u 34M 256k' -c 'read -P 0 34M 256k' \
       -c 'read -P 0xee 35072k 768k' \
       -c 'write -P 0x99 36M 1M' -c 'discard 36M 1M' -c 'read -P 0 36M 1M' -c 'flush'
  qio "$NBD_URI" -c 'read -P 0xab 32768k 16k' -c 'read -P 0 32784k 16k' -c 'read -P 0xab 32800k 32k'
  same_as_expected "after qemu-io patterns"

  # Trim: nbdinfo --map shows the hole and the file's blocks go back to the host.
  both -c 'write -P 0x77 40M 8M' -c 'flush'
  map_check $((40 * MiB)) $((8 * MiB)) data
  before=$(allocated "$img")
  both -c 'discard 41M 6M' -c 'flush'
  map_check $((41 * MiB)) $((6 * MiB)) hole
  map_check $((40 * MiB)) $((1 * MiB)) data
  after=$(allocated "$img")
  [ $((before - after)) -ge $((6 * MiB)) ] ||
    fail "discard of 6M gave back $((before - after)) bytes on $server"
  qio "$NBD_URI" -c 'read -P 0 41M 6M' -c 'read -P 0x77 47M 1M'
  same_as_expected "after discard"

  server_stop
  # What was flushed is in the file itself, byte for byte.
  cmp "$EXPECTED" "$img" || fail "$server left a file that differs from what it served"
}

# ---- overlay: copy-on-write over a non-zero base ---------------------------

# make_overlay BASE OVERLAY [BASE_FORMAT]: creates the overlay in the
# server's format; sets OVL_FORMAT.
make_overlay() {
  case $server in
    qemu-storage-daemon)
      OVL_FORMAT=qcow2
      qemu-img create -q -f qcow2 -b "$1" -F "${3:-raw}" "$2" || fail "qemu-img create overlay" ;;
    nbdkit-file)
      skip "nbdkit's file plugin serves no overlay format" ;;
    *)
      OVL_FORMAT=overlay
      [ -n "${BLOCKD_IMG:-}" ] && [ -x "$BLOCKD_IMG" ] || skip "blockd-img not built"
      if [ "$server" = nbdkit-plugin ]; then
        plugin_has_format overlay || skip "overlay format not built into the plugin"
      fi
      "$BLOCKD_IMG" create -b "$1" -F "${3:-raw}" "$2" || fail "blockd-img create -b" ;;
  esac
}

part_overlay() {
  local base=$TMP/base.img ovl=$TMP/disk.ovl sum before after
  EXPECTED=$TMP/expected.img
  WHAT=overlay
  # A base that is non-zero everywhere, so a zero can only come from the overlay.
  head -c $((16 * MiB)) /dev/zero | tr '\0' 'Z' >"$base"
  sum=$(md5sum <"$base")
  cp "$base" "$EXPECTED"
  make_overlay "$base" "$ovl"
  server_start "$ovl" "$OVL_FORMAT"

  qio "$NBD_URI" -c 'read -P 0x5a 0 16M'
  # Whole clusters, a partial write (copy-up), discard, zeroes: ranges are
  # 1M-aligned where the result depends on the cluster size.
  both -c 'write -P 0x11 1M 64k' -c 'read -P 0x11 1M 64k' -c 'read -P 0x5a 1088k 960k' \
       -c 'write -P 0x22 2097664 1k' -c 'read -P 0x5a 2M 512' \
       -c 'read -P 0x22 2097664 1k' -c 'read -P 0x5a 2098688 1047040' \
       -c 'discard 4M 1M' -c 'read -P 0 4M 1M' -c 'read -P 0x5a 5M 1M' \
       -c 'write -z 6M 1M' -c 'read -P 0 6M 1M' \
       -c 'write -z -u 7M 1M' -c 'read -P 0 7M 1M' -c 'flush'
  map_check $((4 * MiB)) $((1 * MiB)) zero
  same_as_expected "after overlay writes"

  # Discarded clusters go back to the host from the overlay file too.
  both -c 'write -P 0x33 8M 4M' -c 'flush'
  before=$(allocated "$ovl")
  both -c 'discard 8M 4M' -c 'read -P 0 8M 4M' -c 'flush'
  after=$(allocated "$ovl")
  [ $((before - after)) -ge $((3 * MiB)) ] ||
    fail "overlay discard of 4M gave back $((before - after)) bytes on $server"
  same_as_expected "after overlay discard"

  # Everything flushed survives a restart; the base is never written.
  server_stop
  [ "$(md5sum <"$base")" = "$sum" ] || fail "$server wrote to the base image"
  server_start "$ovl" "$OVL_FORMAT"
  same_as_expected "after restart"
  qio "$NBD_URI" -c 'read -P 0 4M 1M' -c 'read -P 0 8M 4M' -c 'read -P 0x5a 12M 4M'
  server_stop
}

# ---- qcow2: a read-only qcow2 image made by qemu-img -----------------------

part_qcow2() {
  local src=$TMP/src.raw ovl rc out
  EXPECTED=$TMP/expected.img
  WHAT=qcow2
  case $server in
    nbdkit-file) skip "nbdkit's file plugin serves no qcow2" ;;
    nbdkit-plugin)
      plugin_has_format qcow2 || skip "qcow2 format not built into the plugin" ;;
  esac
  # Random data at 0, 8M and 20M of 32M, zeroes elsewhere (left unallocated).
  random_file "$src" 32
  cp --sparse=always "$src" "$EXPECTED"
  for c in '' -c; do
    qemu-img convert $c -f raw -O qcow2 "$src" "$TMP/disk.qcow2" || fail "qemu-img convert $c"
    server_start "$TMP/disk.qcow2" qcow2 ro
    same_as_expected "qcow2 ${c:-plain}"
    nbdcopy "$NBD_URI" "$TMP/copy.img" || fail "nbdcopy from $server (qcow2 ${c:-plain})"
    cmp "$src" "$TMP/copy.img" || fail "nbdcopy of qcow2 ${c:-plain} differs"
    map_check $((4 * MiB)) $((4 * MiB)) zero
    map_check $((8 * MiB)) $((4 * MiB)) data
    # Writes are refused, and refusing them changes nothing.
    rc=0
    out=$(qemu-io -f raw -c 'write -P 0x11 0 4k' "$NBD_URI" 2>&1) || rc=$?
    [ "$rc" -ne 0 ] || grep -qiE 'fail|error|denied|read-only' <<<"$out" ||
      fail "a write to the read-only qcow2 on $server did not fail: $out"
    same_as_expected "qcow2 after a refused write"
    server_stop
    rm -f "$TMP/copy.img"
  done

  # A writable overlay over the qcow2 base: ours for our servers, qcow2 over
  # qcow2 for qemu-storage-daemon.
  ovl=$TMP/disk.ovl
  make_overlay "$TMP/disk.qcow2" "$ovl" qcow2
  server_start "$ovl" "$OVL_FORMAT"
  same_as_expected "overlay over qcow2"
  both -c 'write -P 0x44 9M 64k' -c 'discard 10M 1M' -c 'write -z 1M 1M' -c 'flush'
  qio "$NBD_URI" -c 'read -P 0x44 9M 64k' -c 'read -P 0 10M 1M' -c 'read -P 0 1M 1M'
  same_as_expected "overlay over qcow2 after writes"
  server_stop
}

server_require
case $part in
  basic) part_basic ;;
  overlay) part_overlay ;;
  qcow2) part_qcow2 ;;
  *) echo "test-interop.sh: unknown part '$part'" >&2; exit 2 ;;
esac
echo "PASS: interop $part against $server"

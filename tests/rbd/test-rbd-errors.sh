#!/usr/bin/env bash
# rbd: names that cannot be served: malformed names and options (refused
# before any connection), a missing cluster, pool, image or snapshot, a
# snapshot opened for writing, an image another blockd writes: each exit 2
# with one line naming the problem. And a snapshot served read-only: its
# data, writes refused; other writers kept out of an image blockd serves.
. "$SRCDIR/tests/lib.sh"
. "$SRCDIR/tests/rbd/cephlib.sh"
require_ceph
require qemu-io nbdinfo
require_py_nbd
[ "${BLOCKD_RBD:-}" = yes ] || skip "blockd built without librbd (librbd-dev)"

# refused EXPECTED ARGS...: blockd ARGS exits 2 with one line matching EXPECTED.
refused() {
  local want=$1 rc=0
  shift
  timeout 30 "$BLOCKD" --unix "$TMP/no.sock" "$@" > "$TMP/out" 2>&1 || rc=$?
  [ "$rc" -eq 2 ] || { cat "$TMP/out" >&2; fail "blockd $*: exit $rc, expected 2"; }
  [ "$(wc -l < "$TMP/out")" -eq 1 ] || { cat "$TMP/out" >&2; fail "blockd $*: not one line"; }
  grep -qE -- "$want" "$TMP/out" || { cat "$TMP/out" >&2; fail "blockd $*: expected '$want'"; }
  [ ! -e "$TMP/no.sock" ] || fail "blockd $*: left its socket"
}

# Malformed: refused by the parser, no cluster needed.
long=$(printf 'x%.0s' $(seq 300))
refused "expected rbd:POOL/IMAGE" --export "a=rbd:"
refused "expected rbd:POOL/IMAGE" --export "a=rbd:pool"
refused "no pool name" --export "a=rbd:/img"
refused "no image name" --export "a=rbd:pool/"
refused "no namespaces" --export "a=rbd:pool/ns/img"
refused "no namespaces" --export "a=rbd:po@ol/img"
refused "no snapshot name" --export "a=rbd:pool/img@"
refused "more than one '@'" --export "a=rbd:pool/img@a@b"
refused "space or control" --export "a=rbd:pool/im g"
refused "space or control" --export "$(printf 'a=rbd:pool/im\tg')"
refused "longer than 255 bytes" --export "a=rbd:pool/$long"
refused "takes no format=" --export "a=rbd:pool/img,format=raw"
refused "takes no cache=none" --export "a=rbd:pool/img,cache=none"
refused "without 'client.'" --export "a=rbd:pool/img,id=client.admin"
refused "id= must be" --export "a=rbd:pool/img,id=a;b"
refused "conf= and id= are for rbd: images" --export "a=$TMP/disk.img,conf=/etc/hosts"
refused "unknown option 'pool=x'" --export "a=rbd:pool/img,pool=x"
refused "conf=$TMP/missing.conf: No such file" --export "a=rbd:pool/img,conf=$TMP/missing.conf"
refused "not a regular file" --export "a=rbd:pool/img,conf=$TMP"
refused "vhost-user-blk.*no image name" --vhost-user-blk "$TMP/vu.sock=rbd:pool/"

# No cluster answering: CEPH_ARGS (set by start_ceph for every client)
# shortens the wait to 3 s here.
printf '[global]\nmon host = v2:127.0.0.1:%s\n' "$(free_port)" > "$TMP/dead.conf"
t0=$SECONDS
CEPH_ARGS="--client_mount_timeout=3" \
  refused "rbd:rbd/ws: cannot connect to the Ceph cluster as client.admin" \
  --export "a=rbd:rbd/ws,conf=$TMP/dead.conf"
[ $((SECONDS - t0)) -le 15 ] || fail "a missing cluster took $((SECONDS - t0)) s"

start_ceph
timeout 20 rbd create --size 16M rbd/ws
refused "pool 'nopool': no such pool" --export "a=rbd:nopool/ws"
refused "no image 'noimg' in pool 'rbd'" --export "a=rbd:rbd/noimg"
refused "no such image or snapshot" --export "a=rbd:rbd/ws@nosnap,readonly"
refused "a snapshot is read-only: add ,readonly" --export "a=rbd:rbd/ws@s1"
# An export that fails stops the ones opened before it.
refused "no image 'noimg'" --export "a=rbd:rbd/ws" --export "b=rbd:rbd/noimg"

# A snapshot: served read-only, as it was when taken, by two exports
# sharing one connection (the default conf comes from $CEPH_CONF).
start_blockd --export "ws=rbd:rbd/ws,id=admin"
URI="nbd+unix:///ws?socket=$NBD_SOCK"
qemu-io -f raw -c "write -P 0x66 0 1M" "$URI" >/dev/null
stop_blockd
timeout 20 rbd snap create rbd/ws@s1 >/dev/null 2>&1
start_blockd --export "ws=rbd:rbd/ws" --export "snap=rbd:rbd/ws@s1,ro"
qemu-io -f raw -c "write -P 0x77 0 1M" "$URI" >/dev/null
SNAP="nbd+unix:///snap?socket=$NBD_SOCK"
out=$(qemu-io -r -f raw -c "read -P 0x66 0 1M" "$SNAP" 2>&1)
case $out in *"read 1048576/1048576"*) ;; *) echo "$out" >&2; fail "snapshot data wrong";; esac
# A write request on the wire (qemu-io would not even send one) gets EPERM.
"$PY" - "$SNAP" <<'PYEOF' || fail "snapshot export took a write"
import errno, sys, nbd
h = nbd.NBD()
h.set_strict_mode(0)  # send the write: the server must refuse it
h.connect_uri(sys.argv[1])
try:
    h.pwrite(b"\x88" * 4096, 0)
    sys.exit("a write to the snapshot succeeded")
except nbd.Error as e:
    assert e.errnum == errno.EPERM, e
assert h.pread(4096, 0) == b"\x66" * 4096
PYEOF
nbdinfo --json "$SNAP" | grep -q '"is_read_only": true' || fail "snapshot export not read-only"
# One writer: a second blockd is refused, and so are another client's writes.
refused "rbd:rbd/ws: in use by another client" --export "a=rbd:rbd/ws"
! timeout 20 rbd bench --io-type write --io-size 4K --io-total 4K rbd/ws >"$TMP/bench.out" 2>&1 ||
  fail "rbd bench wrote to an image blockd serves"
grep -q "Read-only file system" "$TMP/bench.out" || { cat "$TMP/bench.out" >&2; fail "rbd bench: no EROFS"; }
out=$(qemu-io -f raw -c "read -P 0x77 0 1M" "$URI" 2>&1)
case $out in *"read 1048576/1048576"*) ;; *) echo "$out" >&2; fail "image data wrong";; esac
stop_blockd

# An image whose own settings turn librbd's cache back on: blockd says so,
# and FUA writes still reach the cluster (write then flush, on the pool).
timeout 20 rbd create --size 16M rbd/cached
timeout 20 rbd config image set rbd/cached rbd_cache true
# (--cache=none, for every export, leaves rbd: ones as they are.)
start_blockd --cache=none --export "c=rbd:rbd/cached"
grep -q "rbd:rbd/cached: librbd's cache is on" "$TMP/blockd.log" || fail "no warning for a cached image"
qemu-io -f raw -c "write -f -P 0x99 0 64k" "nbd+unix:///c?socket=$NBD_SOCK" >/dev/null
timeout 20 rbd export rbd/cached "$TMP/cached.raw" >/dev/null 2>&1
[ "$(od -An -tx1 -N1 "$TMP/cached.raw" | tr -d ' ')" = 99 ] || fail "FUA write not in the cluster"
stop_blockd
echo PASS

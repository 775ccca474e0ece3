#!/usr/bin/env bash
# The test cluster itself: it starts, takes an RBD image, and leaves nothing
# behind (daemons, directory) when the test using it is killed mid-way.
. "$SRCDIR/tests/lib.sh"
. "$SRCDIR/tests/rbd/cephlib.sh"
require_ceph

# A test that starts the cluster, writes, reports what it made and is then
# killed (SIGTERM, as meson kills a test that times out).
cat > "$TMP/inner.sh" <<'INNER'
. "$SRCDIR/tests/lib.sh"
. "$SRCDIR/tests/rbd/cephlib.sh"
start_ceph
timeout 20 rbd create --size 16M rbd/probe
timeout 20 rbd bench --io-type write --io-size 1M --io-total 4M rbd/probe >/dev/null
echo "$TMP $CEPH_MON_PID $CEPH_OSD_PID $(rbd_du probe)" > "$OUT"
sleep 60 & track $!
wait $!  # interruptible: bash runs its trap once wait returns
INNER
OUT=$TMP/inner.out bash "$TMP/inner.sh" >"$TMP/inner.log" 2>&1 &
inner=$!
track "$inner"
for _ in $(seq 300); do [ -s "$TMP/inner.out" ] && break; sleep 0.1; done
[ -s "$TMP/inner.out" ] || { cat "$TMP/inner.log" >&2; fail "the cluster did not start in 30 s"; }
read -r dir mon osd du < "$TMP/inner.out"
[ "$du" -ge $((4 << 20)) ] || fail "rbd du after 4 MiB written: $du"
kill -0 "$mon" && kill -0 "$osd" || fail "daemons not running"

kill -TERM "$inner"
rc=0; wait "$inner" || rc=$?
[ "$rc" -ne 0 ] || fail "the killed test exited 0"
for p in "$mon" "$osd"; do
  ! kill -0 "$p" 2>/dev/null || fail "ceph daemon $p left running"
done
[ ! -e "$dir" ] || fail "$dir left behind"
grep -o "ceph: cluster up in [0-9]* s" "$TMP/inner.log"
echo PASS

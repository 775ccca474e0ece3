# A throwaway single-node Ceph cluster for the rbd tests. Source it after
# tests/lib.sh:   . "$SRCDIR/tests/lib.sh"; . "$SRCDIR/tests/rbd/cephlib.sh"
#
# start_ceph starts one monitor and one memstore OSD, both listening on
# 127.0.0.1 only, with cephx off, and creates the pool "rbd" (size 1, 8 PGs).
# The cluster itself is tests/rbd/cephcluster.py (bench/run.py --rbd uses it too).
# Everything lives in $TMP/ceph; the daemons are stopped (OSD first: an OSD
# whose monitor went first waits for it) by the test's cleanup, after the
# processes the test tracked (blockd, which flushes to the cluster on exit),
# whether the test passes, fails or is interrupted. A missing package makes
# the test SKIP.

# require_ceph: skip unless the cluster's daemons and tools are installed.
require_ceph() {
  local c
  for c in ceph-mon ceph-osd monmaptool ceph rbd; do
    command -v "$c" >/dev/null 2>&1 ||
      skip "$c not installed (Debian: ceph-mon ceph-osd ceph-common)"
  done
}

# free_port: a TCP port nobody listens on at 127.0.0.1 now.
free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_ceph: starts the cluster (cephcluster.py serve, which runs the
# daemons as its children and stops them when it is stopped); sets CEPH_DIR,
# CEPH_MON_PID, CEPH_OSD_PID, CEPH_CONF (exported, so every ceph/rbd/qemu
# tool and blockd find it) and CEPH_ARGS.
start_ceph() {
  CEPH_DIR=$TMP/ceph
  export CEPH_CONF=$CEPH_DIR/ceph.conf
  # Clients give up on a missing cluster in 5 s, not 10 (the tests expect one).
  export CEPH_ARGS="--client_mount_timeout=5"
  mkdir -p "$CEPH_DIR"
  "$PY" "$SRCDIR/tests/rbd/cephcluster.py" serve "$CEPH_DIR" 2>"$TMP/ceph.log" &
  CEPH_PID=$!
  at_cleanup stop_ceph
  for _ in $(seq 600); do
    [ -s "$CEPH_DIR/ready" ] && break
    kill -0 "$CEPH_PID" 2>/dev/null || { cat "$TMP/ceph.log" >&2; fail "ceph: the cluster did not start"; }
    sleep 0.1
  done
  [ -s "$CEPH_DIR/ready" ] || { cat "$TMP/ceph.log" >&2; fail "ceph: no cluster after 60 s"; }
  read -r CEPH_MON_PID CEPH_OSD_PID _ < "$CEPH_DIR/ready"
  cat "$TMP/ceph.log" >&2
}

# stop_ceph: stops the cluster, OSD then monitor (runs at cleanup; may run early).
stop_ceph() {
  [ -n "${CEPH_PID:-}" ] || return 0
  kill -TERM "$CEPH_PID" 2>/dev/null || true
  # Each daemon gets 5 s before cephcluster.py kills it.
  for _ in $(seq 150); do kill -0 "$CEPH_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$CEPH_PID" 2>/dev/null || true
  wait "$CEPH_PID" 2>/dev/null || true
  CEPH_PID= CEPH_OSD_PID= CEPH_MON_PID=
}

# rbd_du IMAGE: bytes of IMAGE's objects in the cluster (whole 4 MiB objects).
rbd_du() {
  timeout 20 rbd du --format json "rbd/$1" |
    "$PY" -c 'import json, sys; print(json.load(sys.stdin)["images"][0]["used_size"])'
}

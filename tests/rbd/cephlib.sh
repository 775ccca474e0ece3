# A throwaway single-node Ceph cluster for the rbd tests. Source it after
# tests/lib.sh:   . "$SRCDIR/tests/lib.sh"; . "$SRCDIR/tests/rbd/cephlib.sh"
#
# start_ceph starts one monitor and one memstore OSD, both listening on
# 127.0.0.1 only, with cephx off, and creates the pool "rbd" (size 1, 8 PGs).
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

# _ceph_conf PORT: the configuration every daemon and client of the cluster reads.
_ceph_conf() {
  local d=$CEPH_DIR
  cat <<EOF
[global]
fsid = $(cat /proc/sys/kernel/random/uuid)
mon host = v2:127.0.0.1:$1
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
auth cluster required = none
auth service required = none
auth client required = none
# One OSD: one copy, and no warning about it.
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon allow pool delete = true
osd crush chooseleaf type = 0
# Without these the monitor waits about a second per map change (start in
# 11-13 s instead of 3).
paxos propose interval = 0.01
paxos min wait = 0.001
mon mgr mkfs grace = 3600
# A test directory on a nearly full disk must not stop the monitor.
mon data avail crit = 0
mon data avail warn = 0
log file = $d/log/\$name.log
run dir = $d/run
keyring = /dev/null
# A slow shared machine: no client waits minutes for a missing cluster.
client mount timeout = 10

[mon]
mon data = $d/mon
admin socket = $d/run/\$name.asok

[osd]
osd data = $d/osd
osd objectstore = memstore
memstore device bytes = 1073741824
osd op num shards = 1
osd op num threads per shard = 2
osd max object name len = 256
osd max object namespace len = 64
admin socket = $d/run/\$name.asok
EOF
}

# _ceph_logs: the end of the daemons' logs, for a failure.
_ceph_logs() { tail -n 15 "$CEPH_DIR"/*.out "$CEPH_DIR"/log/*.log >&2 2>/dev/null || true; }

# start_ceph: starts the cluster; sets CEPH_DIR, CEPH_CONF (exported, so
# every ceph/rbd/qemu tool and blockd find it) and CEPH_ARGS.
start_ceph() {
  CEPH_DIR=$TMP/ceph
  export CEPH_CONF=$CEPH_DIR/ceph.conf
  # Clients give up on a missing cluster in 5 s, not 10 (the tests expect one).
  export CEPH_ARGS="--client_mount_timeout=5"
  mkdir -p "$CEPH_DIR"/{mon,osd,log,run}
  at_cleanup stop_ceph
  local port uuid id t0=$SECONDS
  port=$(free_port)
  _ceph_conf "$port" > "$CEPH_CONF"

  monmaptool --create --fsid "$(sed -n 's/^fsid = //p' "$CEPH_CONF")" \
    --addv a "[v2:127.0.0.1:$port]" "$CEPH_DIR/monmap" >/dev/null
  ceph-mon --mkfs -i a --monmap "$CEPH_DIR/monmap" >"$CEPH_DIR/mkfs.out" 2>&1 ||
    { cat "$CEPH_DIR/mkfs.out" >&2; fail "ceph-mon --mkfs failed"; }
  # In the foreground, as our children, their output in files: a pipe to us
  # would never close.
  ceph-mon -f -i a >"$CEPH_DIR/mon.out" 2>&1 &
  CEPH_MON_PID=$!

  uuid=$(cat /proc/sys/kernel/random/uuid)
  id=$("$PY" "$SRCDIR/tests/rbd/cephctl.py" osd-new "$uuid" 2>"$CEPH_DIR/ctl.out") ||
    { _ceph_logs; fail "ceph: no monitor: $(cat "$CEPH_DIR/ctl.out")"; }
  [ "$id" = 0 ] || fail "ceph: osd new gave id '$id'"
  ceph-osd --mkfs -i 0 --osd-uuid "$uuid" >"$CEPH_DIR/mkfs-osd.out" 2>&1 ||
    { cat "$CEPH_DIR/mkfs-osd.out" >&2; fail "ceph-osd --mkfs failed"; }
  ceph-osd -f -i 0 >"$CEPH_DIR/osd.out" 2>&1 &
  CEPH_OSD_PID=$!
  "$PY" "$SRCDIR/tests/rbd/cephctl.py" pool rbd 2>"$CEPH_DIR/ctl.out" ||
    { _ceph_logs; fail "ceph: pool rbd: $(cat "$CEPH_DIR/ctl.out")"; }
  echo "ceph: cluster up in $((SECONDS - t0)) s (mon 127.0.0.1:$port)" >&2
}

# _ceph_stop_one PID: SIGTERM, then SIGKILL after 5 s.
_ceph_stop_one() {
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# stop_ceph: stops the OSD, then the monitor (runs at cleanup; may run early).
stop_ceph() {
  [ -n "${CEPH_OSD_PID:-}" ] && _ceph_stop_one "$CEPH_OSD_PID"
  [ -n "${CEPH_MON_PID:-}" ] && _ceph_stop_one "$CEPH_MON_PID"
  CEPH_OSD_PID= CEPH_MON_PID=
}

# rbd_du IMAGE: bytes of IMAGE's objects in the cluster (whole 4 MiB objects).
rbd_du() {
  timeout 20 rbd du --format json "rbd/$1" |
    "$PY" -c 'import json, sys; print(json.load(sys.stdin)["images"][0]["used_size"])'
}

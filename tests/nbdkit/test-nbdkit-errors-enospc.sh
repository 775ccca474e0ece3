#!/usr/bin/env bash
# An engine error reaches the client with its errno (errno_is_preserved):
# writing into an image on a full file system fails with ENOSPC, not EIO, the
# server logs one line naming the file, the operation and the cause, and it
# goes on serving.  The full file system is a 1 MiB tmpfs in a private mount
# namespace, so nothing is mounted outside this test.
. "${SRCDIR:?run through meson test}/tests/lib.sh"
. "$SRCDIR/tests/nbdkit/plugin.sh"
plugin_require
require unshare
require_py_nbd
unshare -m true 2>/dev/null || skip "cannot make a mount namespace here"

mkdir "$TMP/mnt"
cat >"$TMP/client.py" <<'PY'
import sys
import nbd
h = nbd.NBD()
h.connect_unix(sys.argv[1])
try:
    h.pwrite(b"x" * (4 << 20), 0)
    sys.exit("a 4M write into a 1M file system succeeded")
except nbd.Error as e:
    if e.errno != "ENOSPC":
        sys.exit("write failed with %s (%s), want ENOSPC" % (e.errno, e.string))
# Still serving: a read on the same connection works.
assert len(h.pread(4096, 0)) == 4096
h.shutdown()
print("ok: ENOSPC reached the client")
PY

# Everything that needs the mount runs inside the namespace; nbdkit dies with
# the shell that started it (--exit-with-parent) and the tmpfs with both.
rc=0
unshare -m --propagation private bash -euc '
  mount -t tmpfs -o size=1m tmpfs "$1/mnt" || exit 77
  truncate -s 8M "$1/mnt/disk.img"
  "$2" -f --exit-with-parent -U "$1/nbdkit.sock" -P "$1/nbdkit.pid" "$3" \
    file="$1/mnt/disk.img" 2>"$1/nbdkit.log" &
  for _ in $(seq 200); do [ -s "$1/nbdkit.pid" ] && break; sleep 0.05; done
  "$4" "$1/client.py" "$1/nbdkit.sock"
  kill -TERM $!
  wait $!
' errors-enospc "$TMP" "$NBDKIT" "$NBDKIT_PLUGIN" "$PY" || rc=$?
[ "$rc" -ne 77 ] || skip "cannot mount a tmpfs in a private mount namespace here"
[ "$rc" -eq 0 ] || { cat "$TMP/nbdkit.log" >&2; fail "ENOSPC check failed ($rc)"; }
cat "$TMP/nbdkit.log"
grep -qxF "nbdkit: blockd.0: error: $TMP/mnt/disk.img: pwrite: No space left on device" \
  <(sed 's/blockd\.[0-9]*:/blockd.0:/' "$TMP/nbdkit.log") ||
  fail "the server did not log FILE: pwrite: cause"
echo "PASS"

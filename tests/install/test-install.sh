#!/usr/bin/env bash
# meson install into a DESTDIR, found where meson says it installs
# (introspection's installed files), then what was installed is run: blockd
# serves with --print-uri, blockd-img and blockd-launch answer --version and
# --help, the launcher finds the blockd installed beside it, nbdkit loads
# the plugin from its installed path, the example units start the
# installed blockd, and every man page renders without a warning.
. "${SRCDIR:?run through meson test}/tests/lib.sh" || exit 1
require meson man nbdinfo

root=$TMP/root
meson install -C "$BUILDDIR" --no-rebuild --destdir "$root" > "$TMP/install.log" 2>&1 \
  || { cat "$TMP/install.log" >&2; fail "meson install failed"; }

# What meson installs, as NAME<TAB>PATH (PATH without the DESTDIR), and
# the build's version and options, from the files meson keeps for IDEs
# (meson-info/intro-*.json, the same as meson introspect, without its
# start-up time).
"$PY" - "$BUILDDIR/meson-info" "$TMP" <<'PYEOF' || fail "cannot read $BUILDDIR/meson-info"
import json, os, sys
info, tmp = sys.argv[1:]
def load(name):
    with open(os.path.join(info, "intro-%s.json" % name)) as f:
        return json.load(f)
with open(os.path.join(tmp, "installed"), "w") as f:
    for src, dst in sorted(load("installed").items()):
        f.write("%s\t%s\n" % (os.path.basename(dst), dst))
with open(os.path.join(tmp, "options"), "w") as f:
    f.write("version\t%s\n" % load("projectinfo")["version"])
    for o in load("buildoptions"):
        f.write("%s\t%s\n" % (o["name"], o["value"]))
PYEOF
# installed NAME: the installed path of NAME, without the DESTDIR.
installed() {
  local p
  p=$(awk -F '\t' -v n="$1" '$1 == n { print $2 }' "$TMP/installed")
  [ -n "$p" ] || { cat "$TMP/installed" >&2; fail "meson installs no $1"; }
  [ -e "$root$p" ] || fail "$1: meson says $p, but $root$p is missing"
  echo "$p"
}

# Everything meson reports is there, and nothing else.
while IFS=$'\t' read -r name path; do
  [ -e "$root$path" ] || fail "$name: $root$path missing after install"
done < "$TMP/installed"
[ "$(find "$root" -type f | wc -l)" -eq "$(wc -l < "$TMP/installed")" ] \
  || { find "$root" -type f >&2; fail "meson installed files it does not report"; }

# option NAME: the value of the build option NAME (or the version).
option() { awk -F '\t' -v n="$1" '$1 == n { print $2 }' "$TMP/options"; }

version=$(option version)
blockd=$(installed blockd)
img=$(installed blockd-img)
launch=$(installed blockd-launch)
[ "$(dirname "$blockd")" = "$(dirname "$launch")" ] || fail "blockd and blockd-launch are not installed side by side"

# --version and --help of each program.
for p in "$blockd" "$img" "$launch"; do
  name=$(basename "$p")
  out=$("$root$p" --version) || fail "$name --version failed"
  [ "$out" = "$name $version" ] || fail "$name --version printed '$out'"
  "$root$p" --help > "$TMP/help" || fail "$name --help failed"
  grep -q "^Usage: $name" "$TMP/help" || fail "$name --help has no usage line"
done
grep -q -- "--print-uri" <("$root$blockd" --help) || fail "installed blockd --help lacks --print-uri"

# The installed blockd serves.
truncate -s 1M "$TMP/disk.img"
"$root$blockd" --print-uri --unix "$TMP/nbd.sock" --pidfile "$TMP/blockd.pid" "$TMP/disk.img" \
  > "$TMP/uri" 2> "$TMP/blockd.log" &
pid=$!
track "$pid"
wait_started blockd "$pid" "$TMP/blockd.pid" "$TMP/blockd.log"
[ "$(nbdinfo --size "$(cat "$TMP/uri")")" = 1048576 ] || fail "the installed blockd does not serve"
kill -TERM "$pid"
wait "$pid" || fail "the installed blockd exited $? on SIGTERM"

# The installed launcher runs the blockd installed beside it, not the one
# of the build tree nor one on PATH.
head -c 1024 /dev/zero > "$TMP/fake-bzimage"
printf 'HdrS' | dd of="$TMP/fake-bzimage" bs=1 seek=$((0x202)) conv=notrunc status=none
env -u BLOCKD XDG_RUNTIME_DIR="$TMP" "$root$launch" --dry-run --accel tcg --kernel "$TMP/fake-bzimage" \
  --disk "$TMP/disk.img" > "$TMP/dry" 2> "$TMP/dry.err" || { cat "$TMP/dry.err" >&2; fail "installed blockd-launch --dry-run failed"; }
first=$(head -1 "$TMP/dry")
[ "${first%% *}" = "$root$blockd" ] || fail "installed blockd-launch runs '${first%% *}', not $root$blockd"

# The tiny guest, when the build made it: the installed launcher takes it.
if grep -q "^initrd.img"$'\t' "$TMP/installed"; then
  guest=$(dirname "$(installed initrd.img)")
  [ "$(installed vmlinuz)" = "$guest/vmlinuz" ] || fail "the guest's kernel and initrd are not installed together"
  [ "$guest" = "$(option prefix)/$(option datadir)/blockd/guest" ] || fail "guest installed in $guest"
  env -u BLOCKD XDG_RUNTIME_DIR="$TMP" "$root$launch" --dry-run --accel tcg --kernel "$root$guest/vmlinuz" \
    --initrd "$root$guest/initrd.img" --disk "$TMP/disk.img" > /dev/null 2> "$TMP/dry.err" \
    || { cat "$TMP/dry.err" >&2; fail "installed blockd-launch refuses the installed guest"; }
  echo "guest: $guest"
else
  echo "guest: not built (-Dguest)"
fi

# The nbdkit plugin, where nbdkit looks for plugins (unless the build says
# otherwise), loads from its installed path.
if [ -n "${NBDKIT_PLUGIN:-}" ]; then
  require nbdkit
  plugin=$(installed nbdkit-blockd-plugin.so)
  want_dir=$(option nbdkit_plugindir)
  [ -n "$want_dir" ] || want_dir=$(nbdkit --dump-config | sed -n 's/^plugindir=//p')
  [ "$plugin" = "$want_dir/nbdkit-blockd-plugin.so" ] || fail "plugin installed as $plugin, not in $want_dir"
  nbdkit "$root$plugin" --dump-plugin > "$TMP/dump" || fail "nbdkit --dump-plugin of the installed plugin failed"
  grep -qx "blockd_version=$version" "$TMP/dump" || { cat "$TMP/dump" >&2; fail "--dump-plugin: no blockd_version=$version"; }
  echo "plugin: $plugin"
fi

# The example units, installed as documentation, run the installed blockd:
# systemd-analyze checks them, and systemd-socket-activate does what the
# socket unit does (the instance ws1, %t the runtime directory) for the
# service's command line, with the configuration file the service reads.
examples=$(dirname "$(installed blockd@.socket)")
[ "$(installed blockd@.service)" = "$examples/blockd@.service" ] || fail "the units are not installed together"
want=$(option prefix)/$(option datadir)/doc/blockd/examples
[ "$examples" = "$want" ] || fail "units installed in $examples, not $want"
grep -qx "ExecStart=$blockd \$BLOCKD_ARGS" "$root$examples/blockd@.service" \
  || fail "blockd@.service does not run $blockd"
grep -qx "SocketMode=0600" "$root$examples/blockd@.socket" || fail "blockd@.socket: socket not mode 0600"
if command -v systemd-analyze > /dev/null; then
  mkdir "$TMP/units"
  cp "$root$examples/blockd@.socket" "$TMP/units/blockd@ws1.socket"
  sed "s|^ExecStart=$blockd |ExecStart=$root$blockd |" "$root$examples/blockd@.service" \
    > "$TMP/units/blockd@ws1.service"
  systemd-analyze verify --man=no "$TMP/units/blockd@ws1.socket" "$TMP/units/blockd@ws1.service" \
    > "$TMP/verify" 2>&1 || { cat "$TMP/verify" >&2; fail "systemd-analyze verify refuses the units"; }
  [ ! -s "$TMP/verify" ] || { cat "$TMP/verify" >&2; fail "systemd-analyze verify warns about the units"; }
  echo "units: systemd-analyze verify: ok"
else
  echo "units: systemd-analyze not installed, not verified"
fi
if command -v systemd-socket-activate > /dev/null && command -v nbdinfo > /dev/null; then
  listen=$(sed -n 's/^ListenStream=//p' "$root$examples/blockd@.socket")
  sock=${listen//%t/$TMP/rt}; sock=${sock//%i/ws1}
  mkdir -p -m 0700 "$(dirname "$sock")"
  echo "BLOCKD_ARGS=$TMP/disk.img" > "$TMP/ws1.conf"
  cmd=$(sed -n 's/^ExecStart=//p' "$root$examples/blockd@.service")
  # EnvironmentFile= then ExecStart=, as the service manager would.
  ( set -a; . "$TMP/ws1.conf"; set +a
    eval "exec systemd-socket-activate -l \"\$sock\" $root${cmd//\$BLOCKD_ARGS/\$BLOCKD_ARGS}" ) \
    2> "$TMP/unit.err" &
  pid=$!
  track "$pid"
  wait_for_file "$sock"
  [ "$(nbdinfo --size "nbd+unix:///?socket=$sock")" = 1048576 ] \
    || { cat "$TMP/unit.err" >&2; fail "blockd@ws1.service's command does not serve on the socket of blockd@ws1.socket"; }
  kill -TERM "$pid"
  wait "$pid" || fail "blockd@ws1.service's blockd exited $? on SIGTERM"
  grep -q "^blockd: serving export '' (raw, read-write) on unix socket $sock (socket activation)$" "$TMP/unit.err" \
    || { cat "$TMP/unit.err" >&2; fail "blockd@ws1.service's blockd: no start line"; }
  echo "units: socket activation of blockd@ws1: ok"
fi

# Each man page is where man looks for it and renders without a warning.
mandir=
for page in blockd.8 blockd-img.1 blockd-launch.1 blockd-overlay.5 \
            ${NBDKIT_PLUGIN:+nbdkit-blockd-plugin.1}; do
  p=$(installed "$page")
  mandir=${p%/man[0-9]/*}
  sec=${page##*.}
  [ "$p" = "$mandir/man$sec/$page" ] || fail "$page installed as $p"
  found=$(man -M "$root$mandir" -w "$sec" "${page%.*}") || fail "man -M does not find $page"
  [ "$found" = "$root$p" ] || fail "man finds $found for $page"
  warnings=$(MANWIDTH=80 man --warnings -l "$root$p" 2>&1 > "$TMP/page") || fail "man -l $page failed"
  [ -z "$warnings" ] || { echo "$warnings" >&2; fail "$page renders with warnings"; }
  grep -q "^NAME" "$TMP/page" && grep -q "^SEE ALSO" "$TMP/page" || fail "$page: no NAME or SEE ALSO"
done
echo "man pages: $mandir"
echo PASS

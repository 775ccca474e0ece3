#!/usr/bin/env bash
# The plugin meson installs is the one "nbdkit blockd" loads by its short
# name. nbdkit's plugin directory is fixed when nbdkit is built, so the test
# installs into a DESTDIR and, in a private mount namespace, mounts that
# DESTDIR's plugin directory over nbdkit's own; nothing outside changes.
. "${SRCDIR:?run through meson test}/tests/lib.sh" || exit 1
require meson nbdkit nbdinfo unshare
[ -n "${NBDKIT_PLUGIN:-}" ] || skip "the nbdkit plugin is not built"

plugindir=$(nbdkit --dump-config | sed -n 's/^plugindir=//p')
[ -d "$plugindir" ] || skip "nbdkit names no plugin directory"
# A mount namespace: as root, or as a user mapped to root in one of its own.
ns=(unshare --mount --propagation private)
[ "$(id -u)" -eq 0 ] || ns=(unshare --mount --map-root-user --propagation private)
"${ns[@]}" mount --bind "$TMP" "$TMP" 2>/dev/null \
  || skip "cannot mount in a private mount namespace here (${ns[*]})"

root=$TMP/root
meson install -C "$BUILDDIR" --no-rebuild --destdir "$root" > "$TMP/install.log" 2>&1 \
  || { cat "$TMP/install.log" >&2; fail "meson install failed"; }
[ -f "$root$plugindir/nbdkit-blockd-plugin.so" ] \
  || skip "the build installs the plugin elsewhere than $plugindir (-Dnbdkit_plugindir)"

truncate -s 3M "$TMP/disk.img"
"${ns[@]}" bash -c '
  set -e
  mount --bind "$1$2" "$2"
  nbdkit blockd --dump-plugin > "$4/dump"
  nbdkit -U - blockd file="$3" --run "nbdinfo --size \"\$uri\""
' _ "$root" "$plugindir" "$TMP/disk.img" "$TMP" > "$TMP/out" 2> "$TMP/err" \
  || { cat "$TMP/out" "$TMP/err" >&2; fail "nbdkit blockd (by name) failed"; }
grep -E '^(path|name|blockd_[a-z]+)=' "$TMP/dump"
grep -qx "path=$plugindir/nbdkit-blockd-plugin.so" "$TMP/dump" || { cat "$TMP/dump" >&2; fail "nbdkit blockd: not the plugin in $plugindir"; }
grep -qx "blockd_formats=.*overlay.*" "$TMP/dump" || { cat "$TMP/dump" >&2; fail "nbdkit blockd --dump-plugin: no blockd_formats"; }
[ "$(cat "$TMP/out")" = 3145728 ] || fail "nbdkit blockd served '$(cat "$TMP/out")' bytes, not 3145728"
echo "served: 3145728 bytes"
echo PASS

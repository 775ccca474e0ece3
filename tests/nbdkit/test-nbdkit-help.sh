#!/usr/bin/env bash
# nbdkit PLUGIN --help lists every parameter of the plugin.
. "${SRCDIR:?run through meson test}/tests/lib.sh"
. "$SRCDIR/tests/nbdkit/plugin.sh"
plugin_require

out=$("$NBDKIT" "$NBDKIT_PLUGIN" --help) || fail "nbdkit --help exited $?"
for p in 'file=FILE' 'format=raw|qcow2|overlay' 'readonly=true'; do
  grep -qF -- "$p" <<<"$out" || { echo "$out" >&2; fail "--help does not show $p"; }
done
echo "PASS: --help shows file=, format=, readonly="

#!/usr/bin/env bash
# The plugin exports its entry point and nothing else: the formats library
# linked into it stays private (version script + -fvisibility=hidden).
. "${SRCDIR:?run through meson test}/tests/lib.sh"
require nm
[ -n "${NBDKIT_PLUGIN:-}" ] && [ -f "$NBDKIT_PLUGIN" ] || skip "nbdkit-blockd-plugin.so not built"

syms=$(nm -D --defined-only "$NBDKIT_PLUGIN" | awk '{ print $3 }' | sort -u)
[ "$syms" = plugin_init ] || fail "exported symbols are not just plugin_init: $(echo $syms)"
echo "PASS: exports only plugin_init"

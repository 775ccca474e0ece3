#!/usr/bin/env bash
# nbdkit --dump-plugin shows the plugin's own facts and every callback the
# plugin promises (API version 2, parallel, errno preserved, native FUA ...).
. "${SRCDIR:?run through meson test}/tests/lib.sh"
. "$SRCDIR/tests/nbdkit/plugin.sh"
plugin_require

out=$("$NBDKIT" --dump-plugin "$NBDKIT_PLUGIN") || fail "nbdkit --dump-plugin exited $?"
echo "$out"

want=(name=blockd api_version=2 thread_model=parallel errno_is_preserved=1
      magic_config_key=file has_config_help=1 has_dump_plugin=1 has_get_ready=1)
for cb in pread pwrite flush trim zero extents cache get_size block_size can_write \
          can_flush can_trim can_zero can_fast_zero can_extents can_fua can_cache \
          can_multi_conn; do
  want+=("has_$cb=1")
done
for line in "${want[@]}"; do
  grep -qxF "$line" <<<"$out" || fail "--dump-plugin lacks '$line'"
done

version=$(sed -n "s/^ *version *: *'\(.*\)',\$/\1/p" "$SRCDIR/meson.build" | head -1)
grep -qxF "blockd_version=$version" <<<"$out" || fail "blockd_version is not $version"
grep -qxF "version=$version" <<<"$out" || fail "plugin version is not $version"
formats=$(sed -n 's/^blockd_formats=//p' <<<"$out")
[[ ",$formats," == *,raw,* ]] || fail "blockd_formats '$formats' lacks raw"
echo "PASS: blockd_formats=$formats"

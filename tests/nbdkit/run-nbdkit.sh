#!/usr/bin/env bash
# run-nbdkit.sh ARGS...: runs nbdkit ARGS so that it can load $NBDKIT_PLUGIN.
#
# A plugin built with -fsanitize=address (CI's sanitizer build) expects the
# ASan runtime to be in the executable, and Debian's nbdkit is not built with
# it: dlopen fails on undefined __asan_* symbols (clang), or ASan aborts
# because its runtime is not first (gcc).  So preload the runtime into nbdkit
# alone.  LeakSanitizer is turned off there because it would report nbdkit's
# own allocations; every other check stays on.  Clients must not inherit the
# preload, so tests start nbdkit in the background rather than with --run
# (or --run only something trivial).
set -euo pipefail

runtime() {
  local p=$1 lib undef
  # gcc: the runtime is a NEEDED library of the plugin.
  lib=$(ldd "$p" 2>/dev/null | awk '/lib(asan|ubsan)\.so/ { print $3; exit }')
  if [ -n "$lib" ]; then echo "$lib"; return; fi
  # clang: undefined references, the runtime is clang's shared one.
  undef=$(nm -D --undefined-only "$p" 2>/dev/null || true)
  if grep -q ' __asan_' <<<"$undef"; then
    lib=asan
  elif grep -q ' __ubsan_' <<<"$undef"; then
    lib=ubsan_standalone
  else
    return 0
  fi
  clang -print-file-name="libclang_rt.$lib-$(uname -m).so" 2>/dev/null || true
}

rt=
if [ -n "${NBDKIT_PLUGIN:-}" ] && [ -f "$NBDKIT_PLUGIN" ]; then
  rt=$(runtime "$NBDKIT_PLUGIN")
fi
if [ -n "$rt" ] && [ -f "$rt" ]; then
  export LD_PRELOAD="$rt${LD_PRELOAD:+:$LD_PRELOAD}"
  export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
fi
exec nbdkit "$@"

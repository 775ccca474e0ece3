#!/bin/bash
# Runs fuzz targets of a libFuzzer build for SECONDS each, one after the
# other, and prints one line per target: executions, speed, coverage, peak
# memory and the verdict. On demand only: the fuzz suite runs 5 s per target.
# Usage: run-campaign.sh SECONDS [TARGET...]   (default: every target built)
#   FUZZ_BUILD    the -Dfuzzer=true build (default: build-fuzz at the top)
#   CAMPAIGN_OUT  keep logs, new inputs and reproducers in this folder
#                 (otherwise a temporary one, kept only if a target failed)
#   FUZZ_ARGS     more libFuzzer flags, e.g. "-use_value_profile=1"
# New inputs are never added to the committed corpora here. To add them,
# minimise first: copy the corpus to a fresh folder F, run
# `FUZZER -merge=1 -max_len=N F CAMPAIGN_OUT/TARGET/new`, and copy into the
# corpus only F's new files (each under 64 KiB, all corpora under ~1 MiB).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
seconds=${1:?usage: run-campaign.sh SECONDS [TARGET...]}
shift
build=${FUZZ_BUILD:-$here/../../build-fuzz}
# UBSan reports go on by default; a fuzzer must stop and keep the input.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:abort_on_error=1:print_stacktrace=1}
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}

# name, corpus folder, largest input, more flags (as in meson.build)
targets=(
  "fuzz-server corpus 4096"
  "fuzz-handshake corpus-handshake 8192"
  "fuzz-overlay-header corpus-overlay 16384 -entropic_scale_per_exec_time=1"
  "fuzz-qcow2-open corpus-qcow2 65536"
  "fuzz-vhost corpus-vhost 4096 -close_fd_mask=2"
)
if [ -n "${CAMPAIGN_OUT:-}" ]; then
  out=$CAMPAIGN_OUT keep=1
  mkdir -p "$out"
else
  out=$(mktemp -d "${TMPDIR:-/tmp}/blockd-campaign.XXXXXX") keep=0
fi

# Prints the value of libFuzzer's final statistic NAME from LOG.
final_stat() {
  sed -n "s/^stat::$1: *//p" "$2" | tail -n 1
}

failed=0
for t in "${targets[@]}"; do
  read -r name corpus max_len flags <<<"$t"
  if [ $# -gt 0 ] && ! printf '%s\n' "$@" | grep -qx "$name"; then
    continue
  fi
  bin=$build/tests/fuzz/$name
  if [ ! -x "$bin" ]; then
    printf '%-20s not built\n' "$name"
    continue
  fi
  mkdir -p "$out/$name/new"
  log=$out/$name/log
  # shellcheck disable=SC2086 # flags and FUZZ_ARGS are lists of flags
  "$bin" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -max_len="$max_len" \
    -print_final_stats=1 -artifact_prefix="$out/$name/" ${flags:-} ${FUZZ_ARGS:-} \
    "$out/$name/new" "$here/$corpus" >"$log" 2>&1
  rc=$?
  execs=$(final_stat number_of_executed_units "$log")
  speed=$(final_stat average_exec_per_sec "$log")
  rss=$(final_stat peak_rss_mb "$log")
  cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -n 1)
  verdict=ok
  if [ $rc -ne 0 ]; then
    failed=1
    verdict=$(grep -m1 -o -E \
      'ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer): [a-z-]*|runtime error: .*' "$log")
    artifact=$(ls "$out/$name" | grep -E '^(crash|leak|timeout|oom|slow-unit)-' | head -n 1)
    verdict="FAILED (${verdict:-exit $rc}): $artifact"
  fi
  printf '%-20s %10s execs %7s/s  %-22s peak %5s MB  new %4s  %s\n' "$name" "${execs:-?}" \
    "${speed:-?}" "${cov:-cov: ? ft: ?}" "${rss:-?}" "$(ls "$out/$name/new" | wc -l)" "$verdict"
done
if [ $keep -eq 1 ] || [ $failed -eq 1 ]; then
  echo "logs, new inputs and reproducers: $out"
else
  rm -rf "$out"
fi
exit $failed

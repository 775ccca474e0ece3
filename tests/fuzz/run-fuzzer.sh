#!/bin/bash
# Runs the libFuzzer build of a fuzz target for a few seconds over its
# committed corpus; new inputs go to a temporary folder, never into the
# source tree.
# Usage: run-fuzzer.sh FUZZER CORPUS [SECONDS] [MAX_LEN] [FLAG...]
# MAX_LEN: the largest input libFuzzer makes (default 4096; qcow2 images and
# overlay headers with their bitmap need more). FLAGs go to libFuzzer.
set -euo pipefail
fuzzer=$1 corpus=$2 seconds=${3:-5} max_len=${4:-4096}
shift $(($# < 4 ? $# : 4))
new=$(mktemp -d "${TMPDIR:-/tmp}/blockd-fuzz-corpus.XXXXXX")
trap 'rm -rf "$new"' EXIT
"$fuzzer" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -max_len="$max_len" \
  -print_final_stats=1 "$@" "$new" "$corpus"

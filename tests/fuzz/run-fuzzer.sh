#!/bin/bash
# Runs the libFuzzer build of fuzz-server for a few seconds over the committed
# corpus; new inputs go to a temporary folder, never into the source tree.
# Usage: run-fuzzer.sh FUZZER CORPUS [SECONDS]
set -euo pipefail
fuzzer=$1 corpus=$2 seconds=${3:-5}
new=$(mktemp -d "${TMPDIR:-/tmp}/blockd-fuzz-corpus.XXXXXX")
trap 'rm -rf "$new"' EXIT
"$fuzzer" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -max_len=4096 \
  -print_final_stats=1 "$new" "$corpus"

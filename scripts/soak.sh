#!/usr/bin/env bash
# Sustained load on an emulator of its own: an encrypt and a sign publisher at once,
# 150,000 messages at 2,500 msg/s (a minute), one pipeline. Prints msg/s, latency p50
# and p99, CPU, and whether the pipeline's memory stayed flat (largest RSS of the last
# quarter of the run within 20 % of the first quarter's). Fails if a count is wrong.
#
#   scripts/soak.sh                                  # defaults
#   scripts/soak.sh --messages 400000 --rate 4000    # any `bench run` flag
set -euo pipefail
cd "$(dirname "$0")/.."
exec scripts/bench.sh --modes mixed --messages 150000 --rate 2500 --slow-kms-ms 0 --sweep 0 "$@"

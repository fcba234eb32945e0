#!/usr/bin/env bash
# Runs each cargo-fuzz target of fuzz/ for SECONDS (default 600), starting from the
# committed seeds (fuzz/seeds/TARGET); new inputs go to fuzz/corpus/TARGET, crashes to
# fuzz/artifacts/TARGET. Needs the nightly toolchain; installs cargo-fuzz if missing.
#
#   scripts/fuzz.sh 600        # ten minutes per target
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-600}

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
for target in $(cargo +nightly fuzz list); do
  mkdir -p "corpus/$target"
  echo "== $target: $seconds s" >&2
  cargo +nightly fuzz run "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 2>&1 | grep -E '^(#[0-9]+\s+DONE|stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+== ERROR|SUMMARY)' || true
  # A crash leaves its input under artifacts/ and fails the run.
  if compgen -G "artifacts/$target/*" >/dev/null; then
    echo "$target: crash inputs in fuzz/artifacts/$target" >&2
    exit 1
  fi
done

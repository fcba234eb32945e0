#!/usr/bin/env bash
# Builds the workspace, starts a Pub/Sub emulator on a free port, runs every test
# against it, and stops it. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

EMULATOR_STATE_DIR=$(mktemp -d)
export EMULATOR_STATE_DIR
trap 'scripts/emulator.sh stop; rm -rf "$EMULATOR_STATE_DIR"' EXIT

cargo build --workspace --locked
eval "$(scripts/emulator.sh start)"
echo "emulator at $PUBSUB_EMULATOR_HOST" >&2
log=$EMULATOR_STATE_DIR/test.log
cargo test --workspace --locked "$@" 2>&1 | tee "$log"
# One closing line for the whole workspace (cargo prints one per test binary).
awk '/^test result:/ { passed += $4; failed += $6; ignored += $8 }
     END { printf "tests: %d passed, %d failed, %d skipped\n", passed, failed, ignored }' "$log"

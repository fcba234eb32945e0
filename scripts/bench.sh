#!/usr/bin/env bash
# End-to-end benchmark on a Pub/Sub emulator of its own: the real publisher and
# pipeline in encrypt and sign mode beside a plaintext floor, with the local KMS at
# 0 ms and then slowed by 20 ms per call; a sweep of the pipeline's stream count; and
# attest mode with a session key against the KMS signing every message, through a fake
# Cloud KMS slowed by 20 ms. Every case checks its counts; the run fails if one is wrong.
#
#   scripts/bench.sh                      # defaults: 100,000 messages per case
#   scripts/bench.sh --messages 20000     # any `bench run` flag (`bench run --help`)
#   scripts/bench.sh hostile              # only the hostile case (issue 24): 10,000 junk
#                                         # messages under one tenant's key beside a
#                                         # genuine tenant at the article's rotation
#                                         # (a new key every 5), KMS at 20 ms
#
# With no arguments, then the article's rotation (a new key every 5 messages) at 0 and
# 20 ms. Prints Markdown tables (stdout) for docs/PERFORMANCE.md. Takes about 7 minutes here (plus the release build).
set -euo pipefail
cd "$(dirname "$0")/.."

EMULATOR_STATE_DIR=$(mktemp -d)
export EMULATOR_STATE_DIR
trap 'scripts/emulator.sh stop; rm -rf "$EMULATOR_STATE_DIR"' EXIT

cargo build --release --locked -p bench -p publisher -p pipeline >&2
eval "$(scripts/emulator.sh start)"
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB; emulator at $PUBSUB_EMULATOR_HOST"
if [ "${1:-}" = hostile ]; then
  shift
  RUST_LOG="${RUST_LOG:-warn}" "${CARGO_TARGET_DIR:-target}"/release/bench run \
    --emulator-pid "$(cat "$EMULATOR_STATE_DIR/pid")" --modes --sweep 0 --attest-messages 0 \
    --hostile-junk 10000 --hostile-messages 20000 --key-max-messages 5 --slow-kms-ms 20 --window-secs 2 "$@"
  exit
fi
RUST_LOG=${RUST_LOG:-warn} "${CARGO_TARGET_DIR:-target}"/release/bench run --emulator-pid "$(cat "$EMULATOR_STATE_DIR/pid")" "$@"
# The article's rotation (a new data key every 5 messages) with the KMS at 0 and 20 ms:
# the case where a KMS round trip per key once stalled publisher and pipeline. 2 s
# windows, so that the rate measures the work and not the wait for a window to close.
if [ $# -eq 0 ]; then
  RUST_LOG=${RUST_LOG:-warn} "${CARGO_TARGET_DIR:-target}"/release/bench run --emulator-pid "$(cat "$EMULATOR_STATE_DIR/pid")" \
    --key-max-messages 5 --messages 20000 --window-secs 2 --sweep 0 --attest-messages 0 \
    --backlog-messages 20000
fi

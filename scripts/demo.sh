#!/usr/bin/env bash
# The article's whole flow, offline: a Pub/Sub emulator and a local keyring stand in for
# Google Cloud. Starts the pipeline (auto mode) and the subscriber, publishes the
# article's 10 encrypted messages and then 10 signed ones, shows the word counts as they
# arrive, and stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."

window=${WINDOW_SECS:-5}
cargo build --workspace --bins --locked --quiet
bin=${CARGO_TARGET_DIR:-target}/debug
work=$(mktemp -d)
EMULATOR_STATE_DIR=$work/emulator
export EMULATOR_STATE_DIR
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  scripts/emulator.sh stop
  rm -rf "$work"
}
trap cleanup EXIT

eval "$(scripts/emulator.sh start)"
echo "== Pub/Sub emulator at $PUBSUB_EMULATOR_HOST"
export PUBSUB_ENVELOPE_KMS=local:$work/keyring.json
key=projects/tenant-1/locations/us-central1/keyRings/tenant1-keyring/cryptoKeys/key1
$bin/publisher keyring create "$key"
# The pipeline's own key: its output is sealed under it, and only the subscriber given
# it reads (and trusts) the counts.
export PUBSUB_ENVELOPE_PIPELINE_KMS_KEY=projects/df-project/locations/us-central1/keyRings/pipeline-keyring/cryptoKeys/own
$bin/publisher keyring create "$PUBSUB_ENVELOPE_PIPELINE_KMS_KEY"

echo "== pipeline (auto mode, ${window} s windows) and subscriber"
$bin/pipeline --project df-project --input_subscription message-bus --input_topic common-topic \
  --output_topic df_out --mode auto --window_secs "$window" --trusted_kms_key 'projects/tenant-1/*' \
  2>"$work/pipeline.log" &
pids+=($!)
$bin/subscriber --pubsub_project_id df-project --pubsub_subscription df_subscribe --pubsub_topic df_out \
  2>"$work/subscriber.log" &
pids+=($!)
for _ in $(seq 1 100); do grep -q "pipeline started" "$work/pipeline.log" && break; sleep 0.2; done

tenant_flags=(--pubsub_project_id df-project --pubsub_topic common-topic --kms_project_id tenant-1
  --kms_location us-central1 --kms_key_ring_id tenant1-keyring --kms_key_id key1)
echo "== publisher --mode encrypt: 10 lorem paragraphs, a new data key every 5"
$bin/publisher --mode encrypt "${tenant_flags[@]}" 2>&1 | grep -v '^[0-9]*$' | sed 's/^/   /' || true
echo "== publisher --mode sign: 10 more"
$bin/publisher --mode sign "${tenant_flags[@]}" 2>&1 | grep -v '^[0-9]*$' | sed 's/^/   /' || true

echo "== word counts (each window summed over replicas and panes, as the subscriber prints them)"
sleep $((window + 2))
kill -TERM "${pids[0]}"; wait "${pids[0]}" 2>/dev/null || true
sleep 2
echo "== pipeline summary"
grep -o "pipeline stopped: .*" "$work/pipeline.log" | sed "s/^/   /"

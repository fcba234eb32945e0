#!/usr/bin/env bash
# The Pub/Sub emulator that comes with the Google Cloud CLI, on a free loopback port.
#
#   scripts/emulator.sh start   # starts it (if not running), waits until it answers,
#                               # prints `export PUBSUB_EMULATOR_HOST=127.0.0.1:PORT`
#   scripts/emulator.sh start --project P
#                               # the same, then makes in project P the topics and
#                               # subscriptions scripts/gcp-setup.sh makes on Google
#                               # Cloud (so nothing published before a reader starts is
#                               # dropped), and prints `export GOOGLE_CLOUD_PROJECT=P` too
#   scripts/emulator.sh env     # prints that line for the running emulator
#   scripts/emulator.sh stop    # stops it
#
# State (pid, port, log) lives in $EMULATOR_STATE_DIR, default .local/emulator.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
state=${EMULATOR_STATE_DIR:-$root/.local/emulator}

launcher() {
  if ! command -v java >/dev/null 2>&1; then
    echo "Java is missing; the emulator needs Java 11+: apt-get install -y openjdk-17-jre-headless" >&2
    exit 1
  fi
  if ! command -v gcloud >/dev/null 2>&1; then
    echo "The Google Cloud CLI is missing: install it (apt-get install -y google-cloud-cli), then its emulator (apt-get install -y google-cloud-cli-pubsub-emulator, or: gcloud components install pubsub-emulator)" >&2
    exit 1
  fi
  local sdk
  sdk=$(gcloud info --format='value(installation.sdk_root)')
  local path=$sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator
  if [ ! -x "$path" ]; then
    echo "The Pub/Sub emulator is not installed under $sdk: apt-get install -y google-cloud-cli-pubsub-emulator (or: gcloud components install pubsub-emulator)" >&2
    exit 1
  fi
  echo "$path"
}

running() {
  [ -f "$state/pid" ] && kill -0 "$(cat "$state/pid")" 2>/dev/null
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

print_env() {
  echo "export PUBSUB_EMULATOR_HOST=127.0.0.1:$(cat "$state/port")"
  if [ -n "$project" ]; then echo "export GOOGLE_CLOUD_PROJECT=$project"; fi
}

# PUT on the emulator's REST API; an existing resource (409) is left as it is.
put() {
  local code
  code=$(curl -s -o "$state/put.out" -w '%{http_code}' -X PUT -H 'content-type: application/json' \
    --data "$2" "http://127.0.0.1:$(cat "$state/port")/v1/projects/$project/$1")
  case $code in
    200|409) ;;
    *) echo "the emulator refused PUT $1 ($code): $(cat "$state/put.out")" >&2; exit 1 ;;
  esac
}

# The Pub/Sub layout of scripts/gcp-setup.sh (a test checks that the two agree).
make_layout() {
  for topic in common-topic df_out dead-letter undeliverable; do put "topics/$topic" '{}'; done
  for spec in message-bus:common-topic:60 message-bus-debug:common-topic:60 \
              df_subscribe:df_out:10 dead-letter-debug:dead-letter:60 undeliverable-debug:undeliverable:60; do
    IFS=: read -r subscription topic deadline <<<"$spec"
    put "subscriptions/$subscription" \
      "{\"topic\": \"projects/$project/topics/$topic\", \"ackDeadlineSeconds\": $deadline}"
  done
}

ready() {
  if [ -n "$project" ]; then make_layout; fi
  print_env
}

command=${1:-}
shift || true
project=""
while [ $# -gt 0 ]; do
  case $1 in
    --project) project=${2:?--project needs a project id}; shift 2 ;;
    *) echo "usage: $0 start [--project P]|env|stop" >&2; exit 2 ;;
  esac
done

case "$command" in
  start)
    if running; then ready; exit 0; fi
    path=$(launcher)
    mkdir -p "$state"
    port=$(free_port)
    # A session of its own, so that stop can end the launcher and its JVM together.
    setsid "$path" --host=127.0.0.1 --port="$port" >"$state/log" 2>&1 < /dev/null &
    echo $! >"$state/pid"
    echo "$port" >"$state/port"
    for _ in $(seq 1 120); do
      if curl -sf "http://127.0.0.1:$port/" >/dev/null 2>&1; then ready; exit 0; fi
      if ! running; then echo "the emulator exited; its log:" >&2; cat "$state/log" >&2; exit 1; fi
      sleep 0.5
    done
    echo "the emulator did not answer on port $port within 60 s; its log is $state/log" >&2
    exit 1
    ;;
  env)
    running || { echo "no emulator running; run: scripts/emulator.sh start" >&2; exit 1; }
    print_env
    ;;
  stop)
    if running; then
      pid=$(cat "$state/pid")
      kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      kill -9 -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$state/pid" "$state/port"
    ;;
  *)
    echo "usage: $0 start [--project P]|env|stop" >&2
    exit 2
    ;;
esac

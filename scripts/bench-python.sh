#!/usr/bin/env bash
# Seal and open per 1 KiB message in Python: the pubsub_envelope package (release
# build) beside the original's stack (Tink + ExpiringDict), at the article's rotation
# (a new data key every 5 messages) and at 1,000; then the package's open on 1 and 8
# threads. Arguments go to bindings/python/bench/bench_python.py (--messages, --repeat,
# --rotations, --modes).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(scripts/python-env.sh --release)
"$venv/bin/python" bindings/python/bench/bench_python.py "$@"

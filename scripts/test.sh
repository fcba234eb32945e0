#!/usr/bin/env bash
# Builds the workspace, starts a Pub/Sub emulator on a free port, runs every test
# against it (Rust, then the Python package, the Beam pipeline and the deploy files in
# a virtualenv scripts/python-env.sh makes), and stops it. Extra arguments go to `cargo test`;
# PYTHON_TESTS=0 skips the Python half.
set -euo pipefail
cd "$(dirname "$0")/.."

EMULATOR_STATE_DIR=$(mktemp -d)
export EMULATOR_STATE_DIR
trap 'scripts/emulator.sh stop; rm -rf "$EMULATOR_STATE_DIR"' EXIT

# The free disk, before and after the build: a red CI of a full disk then says so.
df -h . >&2
cargo build --workspace --locked
df -h . >&2
# deploy/tests check the alert rules with promtool (Debian's prometheus package) and
# build the container image with podman: where either is missing and apt can install
# it, install it; else those tests say so and skip.
missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v podman >/dev/null 2>&1 || missing+=(podman)
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "== installing ${missing[*]} (apt-get)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
    || echo "could not install ${missing[*]}: the tests that need them will skip" >&2
fi
# The library's public docs, as docs.rs builds them: no broken links, none to private items.
RUSTDOCFLAGS="-D warnings" cargo doc -p pubsub-envelope --no-deps --locked
eval "$(scripts/emulator.sh start)"
echo "emulator at $PUBSUB_EMULATOR_HOST" >&2
log=$EMULATOR_STATE_DIR/test.log
cargo test --workspace --locked "$@" 2>&1 | tee "$log"
if [ "${PYTHON_TESTS:-1}" != 0 ]; then
  venv=$(scripts/python-env.sh)
  # Beam leaves empty beam-temp* folders in the temporary directory: this run's own,
  # removed with the emulator's state.
  export TMPDIR=$EMULATOR_STATE_DIR/tmp
  mkdir -p "$TMPDIR"
  # A run each: each folder's conftest.py sets up its own imports.
  for suite in bindings/python/tests pipelines/beam/tests deploy/tests; do
    (cd "$(dirname "$suite")" && "$venv/bin/python" -m pytest -q -p no:cacheprovider tests) 2>&1 | tee -a "$log"
  done
fi
# One closing line for the whole workspace (cargo prints one per test binary).
awk '/^test result:/ { passed += $4; failed += $6; ignored += $8 }
     # The closing line of pytest: "N passed, M skipped in 3.2s".
     /^(=+ )?[0-9]+ (passed|failed|skipped)/ {
       for (i = 1; i < NF; i++) {
         if ($(i + 1) ~ /^passed/) passed += $i
         if ($(i + 1) ~ /^failed/) failed += $i
         if ($(i + 1) ~ /^skipped/) ignored += $i
       }
     }
     END { printf "tests: %d passed, %d failed, %d skipped\n", passed, failed, ignored }' "$log"

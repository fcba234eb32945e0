#!/usr/bin/env bash
# Mutation testing of the envelope crate with cargo-mutants: each mutant (an operator
# flipped, a branch or a function body replaced) is built and the crate's own tests run
# against it; a mutant that no test notices is a missed one. A developer tool, not part
# of the README's test command: a full run builds hundreds of mutants (hours on 2 cores).
#
#   scripts/mutants.sh                      # the files of issue 9's target
#   scripts/mutants.sh src/attest/verify.rs # one file (paths inside crates/envelope)
#   SHARD=3/8 scripts/mutants.sh            # one eighth of them (a session's worth)
#
# Mutants are made in place (cargo-mutants restores each file after its mutant), so that
# each build reuses target/: about 25 s a mutant on a 2-core machine, against 90 s in a
# copied tree. The work tree must be clean. The 429 mutants of 1.0 (327 distinct:
# cargo-mutants lists format.rs twice, see tests/mutants.md) still take about
# three hours: run them in shards (SHARD=k/n, k from 0), each writing mutants.out-k/.
# Results land in mutants.out/ (missed.txt, caught.txt, unviable.txt); mutants that
# survive by being equivalent are listed, each with why, in
# crates/envelope/tests/mutants.md.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-mutants >/dev/null || cargo install cargo-mutants --locked
files=("$@")
[ ${#files[@]} -gt 0 ] || files=(src/open.rs src/crypto.rs src/format.rs src/seal.rs src/attest/*.rs)
args=()
for file in "${files[@]}"; do args+=(--file "crates/envelope/$file"); done
# Each mutant needs only the envelope crate's tests (the e2e suite needs an emulator and
# would not add much: it opens messages through the same code).
if [ -n "$(git status --porcelain -- crates/envelope)" ]; then
  echo "mutants.sh: commit or stash crates/envelope first (mutants are made in place)" >&2
  exit 1
fi
out=.
if [ -n "${SHARD:-}" ]; then
  args+=(--shard "$SHARD")
  out=mutants.out-${SHARD%/*}
  mkdir -p "$out"
fi
# Doc tests are left out: each links the whole crate again, and the integration tests
# cover the same calls.
CARGO_INCREMENTAL=0 cargo mutants --package pubsub-envelope "${args[@]}" \
  --features internals --timeout 120 --no-shuffle --in-place --output "$out" -- --lib --tests
grep -c . "$out"/mutants.out/{caught,missed,unviable,timeout}.txt 2>/dev/null || true

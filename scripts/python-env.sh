#!/usr/bin/env bash
# Makes (or reuses) the virtualenv the Python tests and benchmarks run in, builds the
# `pubsub_envelope` wheel from this checkout and installs it there. Prints the
# virtualenv's path on stdout; everything else goes to stderr.
#
#   scripts/python-env.sh            # a debug build of the wheel (tests)
#   scripts/python-env.sh --release  # an optimised one (benchmarks, Dataflow)
#
# The virtualenv is .local/venv (or $PUBSUB_ENVELOPE_VENV), made again whenever
# bindings/python/requirements-dev.txt changes. The wheel is left in .local/wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
venv=${PUBSUB_ENVELOPE_VENV:-$root/.local/venv}
requirements=bindings/python/requirements-dev.txt

if ! cmp -s "$requirements" "$venv/.requirements" 2>/dev/null; then
  echo "== making the Python virtualenv $venv (apache-beam[gcp] takes a minute or two)" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements" >&2
  cp "$requirements" "$venv/.requirements"
fi

wheels=$root/.local/wheels
rm -rf "$wheels"
build=(build --locked --interpreter "$venv/bin/python" --out "$wheels")
[ "${1:-}" = --release ] && build+=(--release)
echo "== building the pubsub_envelope wheel (${1:---debug})" >&2
(cd bindings/python && "$venv/bin/maturin" "${build[@]}" >&2)
"$venv/bin/pip" install --quiet --disable-pip-version-check --force-reinstall --no-deps "$wheels"/*.whl >&2
echo "$venv"

"""Fixtures of the Beam pipeline's tests; the emulator and keyring ones are the package's."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
# The pipeline's package, and the package tests' fixtures and Pub/Sub helpers.
sys.path[:0] = [str(HERE.parent), str(REPO / "bindings" / "python" / "tests")]

from conftest_shared import bin_dir, emulator, keyring, kms, project  # noqa: E402,F401

"""Fixtures of the package's tests: keyrings, a Pub/Sub emulator, the Rust binaries.

The tests run from `scripts/test.sh`, which builds the workspace, starts an emulator
and exports PUBSUB_EMULATOR_HOST; run on their own, they start an emulator themselves
(scripts/emulator.sh) and stop it at the end.
"""

import os
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

import pubsub_envelope as pe

REPO = Path(__file__).resolve().parents[3]
KEY = "projects/tenant-1/locations/us-central1/keyRings/tenant1-keyring/cryptoKeys/key1"
OTHER_KEY = "projects/tenant-2/locations/us-central1/keyRings/tenant2-keyring/cryptoKeys/key1"
SIGNER = "projects/tenant-1/locations/us-central1/keyRings/tenant1-keyring/cryptoKeys/signer"
SIGNER_VERSION = SIGNER + "/cryptoKeyVersions/1"
TENANT = "tenant-1"


@pytest.fixture
def keyring(tmp_path):
    """A local keyring file with tenant 1's and tenant 2's keys and tenant 1's signing key."""
    path = tmp_path / "keyring.json"
    pe.create_local_key(path, KEY)
    pe.create_local_key(path, OTHER_KEY)
    pe.create_local_key(path, SIGNER, purpose="sign")
    return path


@pytest.fixture
def kms(keyring):
    return pe.LocalKms(keyring)


@pytest.fixture(scope="session")
def emulator():
    """`host:port` of a running Pub/Sub emulator."""
    if os.environ.get("PUBSUB_EMULATOR_HOST"):
        yield os.environ["PUBSUB_EMULATOR_HOST"]
        return
    with tempfile.TemporaryDirectory() as state:
        env = {**os.environ, "EMULATOR_STATE_DIR": state}
        script = str(REPO / "scripts" / "emulator.sh")
        line = subprocess.run([script, "start"], env=env, check=True, capture_output=True, text=True).stdout
        host = line.strip().split("=", 1)[1]
        os.environ["PUBSUB_EMULATOR_HOST"] = host
        try:
            yield host
        finally:
            subprocess.run([script, "stop"], env=env, check=False)
            del os.environ["PUBSUB_EMULATOR_HOST"]


@pytest.fixture(scope="session")
def bin_dir():
    """Where `cargo build` put the Rust binaries."""
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    folder = target / "debug"
    missing = [name for name in ("publisher", "pipeline", "fake-kms") if not (folder / name).exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} not built in {folder}: run `cargo build --workspace` (scripts/test.sh does)")
    return folder


@pytest.fixture
def project():
    """A project id of its own for each test, so that topics never collide."""
    return f"py-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def fake_cloud_kms(bin_dir):
    """The endpoint of a local fake of the Cloud KMS REST API (crates/fake-kms), real AES-GCM inside."""
    fake = subprocess.Popen([str(bin_dir / "fake-kms")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        yield fake.stdout.readline().strip()
    finally:
        fake.stdin.close()
        fake.wait(timeout=10)

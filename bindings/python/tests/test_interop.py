"""Python and the Rust binaries, through the Pub/Sub emulator: what the Rust publisher
seals, Python opens; what Python seals, the Rust pipeline counts (and dead-letters what
was tampered with)."""

import collections
import os
import re
import signal
import subprocess
import time

import pytest

import pubsub_envelope as pe
from conftest_shared import KEY, SIGNER, SIGNER_VERSION, TENANT
from pubsub_helpers import LINES, Bus, summed



@pytest.mark.parametrize("mode", ["encrypt", "sign", "attest"])
def test_python_opens_what_the_rust_publisher_sealed(emulator, bin_dir, keyring, project, mode):
    """Messages from `publisher --mode MODE` open in Python to the lines and attribute sent."""
    bus = Bus(project)
    subscription = bus.subscription("common-topic", "from-rust")
    key = SIGNER if mode == "attest" else KEY
    command = [
        str(bin_dir / "publisher"), "--mode", mode, "--pubsub_project_id", project, "--pubsub_topic", "common-topic",
        "--kms", f"local:{keyring}", "--kms_key", key, "--tenant_id", TENANT, "--key_max_messages", "2",
        "--attribute", "lang=en",
    ]
    for line in LINES:
        command += ["--message", line]
    subprocess.run(command, check=True, capture_output=True, timeout=120)

    received = bus.pull(subscription, until=lambda messages: len(messages) >= len(LINES))
    opener = pe.Opener(pe.LocalKms(keyring), tenant_id=TENANT, trusted_kms_keys=["projects/tenant-1/*"])
    # As Google's client hands them over: a protobuf map, not a dict.
    opened = [opener.open(message.data, message.attributes) for message in received]
    assert sorted(o.data.decode() for o in opened) == sorted(LINES)
    assert all(o.attributes == {"lang": "en"} and o.mode == mode for o in opened)
    if mode == "attest":
        assert all(SIGNER_VERSION in o.attested_by for o in opened)


def test_the_rust_pipeline_counts_what_python_sealed(emulator, bin_dir, keyring, project, tmp_path):
    """Python-sealed messages (encrypt and sign) are counted exactly by `pipeline`; a tampered one is dead-lettered."""
    bus = Bus(project)
    out = bus.subscription("df_out", "counts")
    dead = bus.subscription("dead-letter", "dead")
    bus.subscription("common-topic", "message-bus")
    log = open(tmp_path / "pipeline.log", "w")
    pipeline = subprocess.Popen(
        [
            str(bin_dir / "pipeline"), "--project", project, "--input_subscription", "message-bus",
            "--input_topic", "common-topic", "--output_topic", "df_out", "--mode", "auto", "--window_secs", "2",
            "--trusted_kms_key", "projects/tenant-1/*", "--kms", f"local:{keyring}", "--tenant_id", TENANT,
        ],
        stderr=log,
        env={**os.environ, "RUST_LOG": "info"},
    )
    try:
        deadline = time.monotonic() + 60
        while "pipeline started" not in (tmp_path / "pipeline.log").read_text():
            assert pipeline.poll() is None and time.monotonic() < deadline, (tmp_path / "pipeline.log").read_text()
            time.sleep(0.2)

        kms = pe.LocalKms(keyring)
        sealers = [pe.Sealer.encrypt(kms, KEY, TENANT, max_messages=3), pe.Sealer.sign(kms, KEY, TENANT)]
        expected = collections.Counter()
        for i in range(20):
            line = LINES[i % len(LINES)]
            data, attributes = sealers[i % 2].seal(line.encode(), {"n": str(i)})
            bus.publish("common-topic", data, attributes)
            expected.update(re.findall(r"[\w']+", line))
        data, attributes = sealers[0].seal(b"forged words", {})
        bus.publish("common-topic", data[:-1] + bytes([data[-1] ^ 1]), attributes)

        counts = bus.pull(out, until=lambda messages: summed(messages) == expected, timeout=90)
        assert summed(counts) == expected
        dead_letters = bus.pull(dead, until=lambda messages: len(messages) >= 1)
        assert [m.attributes["reject_reason"] for m in dead_letters] == ["tampered"]
    finally:
        pipeline.send_signal(signal.SIGTERM)
        pipeline.wait(timeout=60)
        log.close()

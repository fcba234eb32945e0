"""The Beam pipeline as a user runs it, streaming on the local DirectRunner against the
Pub/Sub emulator: messages sealed in Python go in, exact counts and a dead letter come out.

Sized for the local runner: offline it cannot fetch Prism and falls back to the
BundleBasedDirectRunner, which measured exact only up to about 20 messages a second on
short runs and silently drops late data when it falls behind. So 200 messages at
10 a second, and counts compared once every message was published.
"""

import collections
import json
import os
import re
import subprocess
import sys
import threading
import time

import pubsub_envelope as pe
from conftest import HERE
from conftest_shared import KEY, TENANT
from pubsub_helpers import LINES, Bus, summed

MESSAGES = 200
RATE = 10  # messages a second


def subscriber_totals(records):
    """The Rust subscriber's totals: the latest record of each window, summed over windows."""
    latest = {}
    for record in records:
        latest[record["window_start"]] = record["counts"]
    totals = collections.Counter()
    for counts in latest.values():
        totals.update(counts)
    return totals


def test_streaming_counts_on_the_direct_runner(emulator, bin_dir, keyring, project, tmp_path):
    """200 sealed messages at 10 msg/s are counted exactly (and summed so by the Rust `subscriber`);
    a tampered one reaches the dead-letter topic."""
    bus = Bus(project)
    bus.topic("common-topic")
    out = bus.subscription("df_out", "counts")
    dead = bus.subscription("dead-letter", "dead")
    bus.subscription("df_out", "df_subscribe")
    subscriber = subprocess.Popen(
        [str(bin_dir / "subscriber"), "--json", "--pubsub_project_id", project, "--pubsub_subscription", "df_subscribe",
         "--pubsub_topic", "df_out"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    records = []
    reader = threading.Thread(target=lambda: records.extend(json.loads(line) for line in subscriber.stdout), daemon=True)
    reader.start()
    log_path = tmp_path / "beam.log"
    with open(log_path, "w") as log:
        beam = subprocess.Popen(
            [
                sys.executable, "-m", "envelope_wordcount", "--input_topic", "common-topic", "--output_topic", "df_out",
                "--dead_letter_topic", "dead-letter", "--project", project, "--mode", "auto", "--tenant_id", TENANT,
                "--trusted_kms_key", "projects/tenant-1/*", "--kms", f"local:{keyring}", "--window_secs", "5",
                "--runner", "DirectRunner",
            ],
            cwd=HERE.parent,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(HERE.parent)},
        )
    try:
        # The pipeline makes its own subscription when it starts reading: publish only after.
        deadline = time.monotonic() + 120
        while not bus.subscriber.list_subscriptions(request={"project": f"projects/{project}"}).subscriptions or not any(
            s.topic.endswith("/common-topic")
            for s in bus.subscriber.list_subscriptions(request={"project": f"projects/{project}"})
        ):
            assert beam.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "the Beam pipeline did not subscribe within 120 s:\n" + log_path.read_text()
            time.sleep(0.5)
        time.sleep(2)

        kms = pe.LocalKms(keyring)
        sealers = [pe.Sealer.encrypt(kms, KEY, TENANT, max_messages=5), pe.Sealer.sign(kms, KEY, TENANT, max_messages=5)]
        expected = collections.Counter()
        started = time.monotonic()
        for i in range(MESSAGES):
            line = f"{LINES[i % len(LINES)]} message{i % 7}"
            data, attributes = sealers[i % 2].seal(line.encode(), {"n": str(i)})
            bus.publish("common-topic", data, attributes)
            expected.update(re.findall(r"[\w']+", line))
            time.sleep(max(0.0, started + (i + 1) / RATE - time.monotonic()))
        data, attributes = sealers[0].seal(b"tampered", {})
        bus.publish("common-topic", data[:-1] + bytes([data[-1] ^ 1]), attributes)

        counts = bus.pull(out, until=lambda messages: summed(messages) == expected, timeout=120)
        assert summed(counts) == expected, log_path.read_text()[-3000:]
        dead_letters = bus.pull(dead, until=lambda messages: len(messages) >= 1, timeout=60)
        assert [m.attributes["reject_reason"] for m in dead_letters] == ["tampered"]
        # The toolkit's subscriber reads the Beam pipeline's output as it reads pipeline's.
        deadline = time.monotonic() + 30
        while subscriber_totals(list(records)) != expected and time.monotonic() < deadline:
            time.sleep(0.5)
        assert subscriber_totals(list(records)) == expected
        assert all(record["replicas"] == 1 for record in records)
    finally:
        beam.kill()
        beam.wait(timeout=30)
        subscriber.terminate()
        subscriber.wait(timeout=30)

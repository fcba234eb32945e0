"""The Beam transforms on a bounded input (TestPipeline): sealed messages in, exact
per-window counts and dead letters out."""

import apache_beam as beam
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

import pubsub_envelope as pe
from conftest_shared import KEY, OTHER_KEY, TENANT
from envelope_wordcount import CountSealedWords, OpenSettings

START = 1_699_999_995  # a multiple of 15: windows start here and 15 s later


def count(pipeline, messages, settings):
    """`CountSealedWords` over `((data, attributes), publish time)` pairs, message ids their indexes."""
    return (
        pipeline
        | beam.Create(
            [beam.window.TimestampedValue(PubsubMessage(d, a, message_id=str(i)), t) for i, ((d, a), t) in enumerate(messages)]
        )
        | CountSealedWords(settings, window_secs=15, replica="test")
    )


def test_counts_per_window_and_dead_letters(keyring):
    """Each window's words counted exactly, a copy counted once, and bad messages dead-lettered with their reason."""
    kms = pe.LocalKms(keyring)
    encrypt = pe.Sealer.encrypt(kms, KEY, TENANT, max_messages=2)
    sign = pe.Sealer.sign(kms, KEY, TENANT)
    first = encrypt.seal(b"the fox and the dog", {"lang": "en"})
    messages = [
        (first, START + 1),
        (first, START + 2),  # a copy, published again: counted once
        (sign.seal(b"the fox", {}), START + 14),
        (encrypt.seal(b"it's a fox's den", {}), START + 15),
        (encrypt.seal(b"dog", {}), START + 29),
    ]
    data, attributes = encrypt.seal(b"tampered words", {})
    tampered = (data[:-1] + bytes([data[-1] ^ 1]), attributes)
    untrusted = pe.Sealer.encrypt(kms, OTHER_KEY, "tenant-2").seal(b"other tenant", {})
    messages += [(tampered, START + 3), (untrusted, START + 4)]
    settings = OpenSettings(tenant_id=TENANT, trusted_kms_keys=["projects/tenant-1/*"], kms=f"local:{keyring}")

    with test_pipeline.TestPipeline() as pipeline:
        results = count(pipeline, messages, settings)
        counts = results["counts"] | "Counts" >> beam.Map(
            lambda m: (m.attributes["window_start"], m.attributes["window_end"], m.attributes["replica"], m.data.decode())
        )
        w1 = ("2023-11-14T22:13:15Z", "2023-11-14T22:13:30Z", "test")
        w2 = ("2023-11-14T22:13:30Z", "2023-11-14T22:13:45Z", "test")
        assert_that(
            counts,
            equal_to(
                [w1 + ("the: 3",), w1 + ("fox: 2",), w1 + ("and: 1",), w1 + ("dog: 1",)]
                + [w2 + ("it's: 1",), w2 + ("a: 1",), w2 + ("fox's: 1",), w2 + ("den: 1",), w2 + ("dog: 1",)]
            ),
            label="counts",
        )
        dead = results["dead_letter"] | "Dead" >> beam.Map(
            lambda m: (m.attributes["reject_reason"], m.attributes["original_message_id"], m.data)
        )
        assert_that(dead, equal_to([("tampered", "5", tampered[0]), ("untrusted_key", "6", untrusted[0])]), label="dead")


def test_a_tenant_that_steers_its_tag_onto_another_tenants_message_suppresses_nothing(tmp_path):
    """Two tenants' messages with one AES-GCM tag (tenant-3 steered its own onto tenant-1's, as
    any tenant can with its own data key) are both counted: dedup keys on the fingerprint,
    which binds the sealer's key, not on the tag."""
    import base64
    import json

    from conftest_shared import REPO

    vectors_dir = REPO / "crates" / "envelope" / "tests" / "vectors"
    vectors = json.loads((vectors_dir / "encrypt.json").read_text())
    kek = json.loads((vectors_dir / "keyring_wrap.json").read_text())
    # The vectors' data keys were wrapped by the local keyring under keyring_wrap.json's KEK.
    keys = [
        {"name": w["kms_key"], "purpose": "ENCRYPT_DECRYPT", "primary": kek["version"],
         "versions": [{"version": kek["version"], "material": kek["kek"]}]}
        for w in vectors["wrapped_keys"]
    ]
    keyring = tmp_path / "vectors-keyring.json"
    keyring.write_text(json.dumps({"format": "pubsub-envelope-keyring/1", "keys": keys}))
    by_name = {case["name"]: case for case in vectors["valid"]}
    victim = by_name["the article's message with attributes"]
    steered = next(case for name, case in by_name.items() if name.startswith("tenant-3"))
    tag = lambda case: base64.b64decode(case["sealed"]["data"])[-16:]  # noqa: E731
    assert tag(victim) == tag(steered), "the vectors share a tag"
    messages = [victim, steered]
    settings = OpenSettings(tenant_id=TENANT, trusted_kms_keys=vectors["trusted_kms_keys"], kms=f"local:{keyring}")

    with test_pipeline.TestPipeline() as pipeline:
        results = (
            pipeline
            | beam.Create(
                [
                    beam.window.TimestampedValue(
                        PubsubMessage(base64.b64decode(c["sealed"]["data"]), c["sealed"]["attributes"], message_id=str(i)),
                        START + 1,
                    )
                    for i, c in enumerate(messages)
                ]
            )
            | CountSealedWords(settings, window_secs=15, replica="test")
        )
        counts = results["counts"] | "Counts" >> beam.Map(lambda m: m.data.decode())
        # "the quick brown fox jumps over the lazy dog" and tenant-3's words, each counted.
        assert_that(
            counts | "Words" >> beam.Filter(lambda line: line.split(":")[0] in ("the", "fox", "another", "tag")),
            equal_to(["the: 2", "fox: 1", "another: 1", "tag: 1"]),
        )


def test_batches_of_messages_keep_each_messages_window_and_each_failure_in_place(keyring):
    """Opened 100 at a time, 250 messages over three windows count exactly, and the bad ones among them are dead-lettered."""
    kms = pe.LocalKms(keyring)
    sealer = pe.Sealer.encrypt(kms, KEY, TENANT, max_messages=7)
    messages, expected, dead = [], {}, []
    for n in range(250):
        second = START + (n * 45) // 250  # spread over three 15 s windows
        if n % 37 == 5:
            data, attributes = sealer.seal(b"forged", {})
            messages.append(((data[:-1] + bytes([data[-1] ^ 1]), attributes), second))
            dead.append(("tampered", str(n)))
            continue
        word = f"w{n % 11}"
        messages.append((sealer.seal(word.encode(), {}), second))
        window = (second - START) // 15
        expected[(window, word)] = expected.get((window, word), 0) + 1
    settings = OpenSettings(tenant_id=TENANT, trusted_kms_keys=["projects/tenant-1/*"], kms=f"local:{keyring}")

    with test_pipeline.TestPipeline() as pipeline:
        results = count(pipeline, messages, settings)
        windows = {"2023-11-14T22:13:15Z": 0, "2023-11-14T22:13:30Z": 1, "2023-11-14T22:13:45Z": 2}
        counts = results["counts"] | "Counts" >> beam.Map(
            lambda m: (windows[m.attributes["window_start"]],) + tuple(m.data.decode().split(": "))
        )
        assert_that(counts, equal_to([(w, word, str(c)) for (w, word), c in expected.items()]), label="counts")
        reasons = results["dead_letter"] | "Dead" >> beam.Map(
            lambda m: (m.attributes["reject_reason"], m.attributes["original_message_id"])
        )
        assert_that(reasons, equal_to(dead), label="dead")

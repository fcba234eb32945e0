"""The article's pipeline on Beam's DirectRunner, batch mode: messages opened and counted
per second, and the counts checked exact.

Seals --messages 1 KiB messages (encrypt, a new data key every --rotation), then runs
`CountSealedWords` over them (open, window, count) in a bounded pipeline and prints the
wall time of the run and messages per second, at each --batches size (`open_many` per
that many messages). `--transforms PATH` runs the transforms of another file instead
(an older `transforms.py`, for a before-and-after).

    python bench_beam.py [--messages 100000] [--rotation 5] [--batches 1,100] [--repeat 1]
"""

import argparse
import importlib.util
import os
import sys
import tempfile
import time

import apache_beam as beam
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.options.pipeline_options import PipelineOptions

import pubsub_envelope as pe

KEY = "projects/bench/locations/global/keyRings/bench/cryptoKeys/tenant-1"
TENANT = "tenant-1"
START = 1_699_999_995


def transforms(path):
    if path is None:
        sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "pipelines", "beam"))
        import envelope_wordcount.transforms as module

        return module
    spec = importlib.util.spec_from_file_location("transforms_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rotation", type=int, default=5)
    parser.add_argument("--batches", default="1,100")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--transforms", default=None)
    args = parser.parse_args()
    module = transforms(args.transforms)
    words = os.urandom(256).hex()  # 512 characters: one word
    text = " ".join([words[:64]] * 16).encode()  # 1 KiB, 16 words
    with tempfile.TemporaryDirectory() as folder:
        keyring = os.path.join(folder, "keyring.json")
        pe.create_local_key(keyring, KEY)
        sealer = pe.Sealer.encrypt(pe.LocalKms(keyring), KEY, TENANT, max_messages=args.rotation)
        sealed = sealer.seal_many([(text, {})] * args.messages)
        messages = [
            beam.window.TimestampedValue(PubsubMessage(data, attributes, message_id=str(n)), START + n % 60)
            for n, (data, attributes) in enumerate(sealed)
        ]
        settings = module.OpenSettings(tenant_id=TENANT, trusted_kms_keys=[KEY], kms=f"local:{keyring}")
        print(f"{args.messages} messages of 1 KiB (16 words), a new data key every {args.rotation}; DirectRunner, batch")
        print("| open | seconds | messages/s | counted |")
        print("|---|---:|---:|---:|")
        for batch in [int(b) for b in args.batches.split(",")] if args.transforms is None else [None]:
            for _ in range(args.repeat):
                counted = os.path.join(folder, "counted")
                start = time.perf_counter()
                with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as pipeline:
                    count = (
                        module.CountSealedWords(settings, window_secs=15, replica="bench")
                        if batch is None
                        else module.CountSealedWords(settings, window_secs=15, replica="bench", batch=batch)
                    )
                    results = pipeline | beam.Create(messages) | count
                    (
                        results["counts"]
                        | beam.Map(lambda m: int(m.data.decode().rsplit(": ", 1)[1]))
                        | beam.WindowInto(beam.window.GlobalWindows())
                        | beam.CombineGlobally(sum)
                        | beam.Map(lambda total: open(counted, "w").write(str(total)))
                    )
                elapsed = time.perf_counter() - start
                total = int(open(counted).read())
                assert total == 16 * args.messages, f"counted {total} words, expected {16 * args.messages}"
                label = "one at a time (the older transforms)" if batch is None else f"open_many of {batch}"
                print(f"| {label} | {elapsed:.1f} | {args.messages / elapsed:,.0f} | {total:,} words, exact |", flush=True)


if __name__ == "__main__":
    main()

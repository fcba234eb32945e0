"""`python -m envelope_wordcount`: the article's Dataflow pipeline, with the article's flags.

    python -m envelope_wordcount --input_subscription projects/P/subscriptions/message-bus \\
        --output_topic projects/P/topics/df_out --mode auto \\
        --trusted_kms_key 'projects/tenant-1/*' --tenant_id tenant-1 \\
        --runner DataflowRunner --project P --region us-central1 \\
        --temp_location gs://BUCKET/temp --setup_file ./setup.py \\
        --extra_package dist/pubsub_envelope-1.0.0-cp310-abi3-manylinux_2_34_x86_64.whl

Flags this module does not know (`--runner`, `--project`, `--region`, `--temp_location`,
`--setup_file`, `--extra_package`, ...) go to Beam.
"""

import argparse
import logging

import apache_beam as beam
import pubsub_envelope
from apache_beam.io.gcp.pubsub import ReadFromPubSub, WriteToPubSub
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, StandardOptions

from .transforms import DEAD_LETTER, CountSealedWords, OpenSettings

MODES = ["auto", "decrypt", "verify", "attest"]


def topic_path(name, project, kind="topics"):
    """A full name from an id and the project, as the Rust binaries accept either."""
    if name.startswith("projects/"):
        return name
    if not project:
        raise SystemExit(f"`{name}` is not a full name (projects/P/{kind}/ID) and no --project was given")
    return f"projects/{project}/{kind}/{name}"


def parse(argv=None):
    parser = argparse.ArgumentParser(prog="python -m envelope_wordcount", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input_topic", help="The shared bus topic (Beam makes a subscription of its own)")
    source.add_argument("--input_subscription", help="A subscription on the bus")
    parser.add_argument("--output_topic", required=True, help="Where `word: count` messages go")
    parser.add_argument("--dead_letter_topic", default="dead-letter", help="Where messages that cannot be opened go")
    parser.add_argument("--mode", choices=MODES, default="auto", help="Which envelopes to accept (default: auto)")
    parser.add_argument(
        "--tenant_id", default=pubsub_envelope.DEFAULT_TENANT_ID,
        help=f"Tenant id bound into every wrap (default: the article's {pubsub_envelope.DEFAULT_TENANT_ID})",
    )
    parser.add_argument(
        "--trusted_kms_key", action="append", default=[],
        help="A KMS key to accept, or a prefix ending in /* (repeatable, or comma-separated)",
    )
    parser.add_argument("--trusted_signer", action="append", default=[], help="Attest: a service account to accept")
    parser.add_argument("--kms", default="gcp", help="gcp (Cloud KMS, default) or local:PATH (a keyring file)")
    parser.add_argument("--kms_endpoint", help="Another Cloud KMS endpoint, such as a local fake")
    parser.add_argument("--max_message_age_secs", type=float, help="Refuse messages sealed longer ago than this")
    parser.add_argument(
        "--max_certificate_lifetime_secs", type=float,
        help="Attest: refuse session certificates valid for longer than this (default 3660)",
    )
    parser.add_argument("--window_secs", type=int, default=15, help="Fixed window size (default 15)")
    parser.add_argument("--replica", default="beam", help="The `replica` attribute of the counts")
    parser.add_argument(
        "--dangerous_trust_any_kms_key", action="store_true",
        help="Accept messages under ANY key the workers' credentials can use (trials only)",
    )
    known, beam_args = parser.parse_known_args(argv)
    known.trusted_kms_key = [key for entry in known.trusted_kms_key for key in entry.split(",") if key]
    known.trusted_signer = [signer for entry in known.trusted_signer for signer in entry.split(",") if signer]
    if known.window_secs < 1:
        parser.error("--window_secs must be at least 1")
    return known, beam_args


def run(argv=None):
    args, beam_args = parse(argv)
    options = PipelineOptions(beam_args)
    options.view_as(StandardOptions).streaming = True
    project = options.view_as(GoogleCloudOptions).project
    settings = OpenSettings(
        tenant_id=args.tenant_id,
        trusted_kms_keys=args.trusted_kms_key,
        kms=args.kms,
        kms_endpoint=args.kms_endpoint,
        mode=args.mode,
        trusted_signers=args.trusted_signer,
        max_message_age_secs=args.max_message_age_secs,
        dangerous_trust_any_kms_key=args.dangerous_trust_any_kms_key,
        max_certificate_lifetime_secs=args.max_certificate_lifetime_secs,
    )
    # Fail at launch, not on the workers: the same settings build the workers' openers.
    try:
        settings.build()
    except (ValueError, pubsub_envelope.EnvelopeError) as error:
        raise SystemExit(f"envelope_wordcount: {error} (see --trusted_kms_key, --trusted_signer, --kms)") from None
    with beam.Pipeline(options=options) as pipeline:
        if args.input_subscription:
            read = ReadFromPubSub(subscription=topic_path(args.input_subscription, project, "subscriptions"), with_attributes=True)
        else:
            read = ReadFromPubSub(topic=topic_path(args.input_topic, project), with_attributes=True)
        results = pipeline | "Read" >> read | "CountSealedWords" >> CountSealedWords(settings, args.window_secs, args.replica)
        results["counts"] | "WriteCounts" >> WriteToPubSub(topic_path(args.output_topic, project), with_attributes=True)
        results[DEAD_LETTER] | "WriteDeadLetters" >> WriteToPubSub(
            topic_path(args.dead_letter_topic, project), with_attributes=True
        )


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    run()

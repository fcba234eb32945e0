"""The pipeline's transforms, apart from any source or sink so that tests feed them directly."""

import hashlib
import re
from datetime import datetime, timezone

import apache_beam as beam
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.transforms import window
from apache_beam.utils.windowed_value import WindowedValue

# The article's tokenizer, which the Rust pipeline's word splitting is tested against.
WORDS = re.compile(r"[\w']+")

# What the Rust pipeline writes (crates/runner/src/lib.rs, crates/runner/src/dead_letter.rs).
WINDOW_START_ATTR = "window_start"
WINDOW_END_ATTR = "window_end"
PANE_ATTR = "pane"
REPLICA_ATTR = "replica"
DEAD_LETTER = "dead_letter"
# Pub/Sub allows 100 attributes; the dead letter's own take 7 of them.
MAX_ORIGINAL_ATTRIBUTES = 93


class OpenSettings:
    """What a worker needs to build its opener: plain values, so it pickles anywhere.

    The opener itself is built once per DoFn instance, in `setup` (one per worker thread
    pool on Dataflow; each unwraps a data key once and caches it). `kms` is `gcp` for
    Cloud KMS (the worker's service account, through Application Default Credentials;
    or `kms_endpoint` for a local fake) or `local:PATH` for a keyring file.
    """

    def __init__(
        self,
        tenant_id,
        trusted_kms_keys=(),
        kms="gcp",
        kms_endpoint=None,
        mode="auto",
        trusted_signers=(),
        max_message_age_secs=None,
        dangerous_trust_any_kms_key=False,
        max_certificate_lifetime_secs=None,
    ):
        self.tenant_id = tenant_id
        self.trusted_kms_keys = list(trusted_kms_keys)
        self.kms = kms
        self.kms_endpoint = kms_endpoint
        self.mode = mode
        self.trusted_signers = list(trusted_signers)
        self.max_message_age_secs = max_message_age_secs
        self.dangerous_trust_any_kms_key = dangerous_trust_any_kms_key
        self.max_certificate_lifetime_secs = max_certificate_lifetime_secs

    def build(self):
        import pubsub_envelope as pe

        if self.kms.startswith("local:"):
            kms = pe.LocalKms(self.kms[len("local:"):])
        elif self.kms == "gcp":
            kms = pe.CloudKms(endpoint=self.kms_endpoint)
        else:
            raise ValueError(f"--kms must be gcp or local:PATH, not {self.kms!r}")
        # The package's default unless given (`LIMITS` names it).
        lifetime = self.max_certificate_lifetime_secs or pe.LIMITS["default_max_certificate_lifetime_secs"]
        return pe.Opener(
            kms,
            max_certificate_lifetime_secs=lifetime,
            tenant_id=self.tenant_id,
            trusted_kms_keys=self.trusted_kms_keys,
            trusted_signers=self.trusted_signers,
            mode=self.mode,
            max_message_age_secs=self.max_message_age_secs,
            dangerous_trust_any_kms_key=self.dangerous_trust_any_kms_key,
        )


def dead_letter(message, reason, detail):
    """The dead letter the Rust pipeline would send: the original data and attributes, plus
    the reason. The original's own attributes come first so that ours win any clash."""
    attributes = dict(sorted(message.attributes.items())[:MAX_ORIGINAL_ATTRIBUTES])
    attributes.update(
        reject_reason=reason,
        reject_detail=detail[:1000],
        original_message_id=message.message_id or "",
        original_data_bytes=str(len(message.data)),
        original_data_sha256=hashlib.sha256(message.data).hexdigest(),
        original_attribute_count=str(len(message.attributes)),
    )
    return PubsubMessage(message.data, attributes)


class OpenMessages(beam.DoFn):
    """Opens messages a batch at a time: their texts go to the main output, keyed by
    fingerprint; what will never open goes to the `dead_letter` output; a transient
    failure (KMS unreachable) raises, so the runner retries the bundle and nothing is
    lost or acknowledged early.

    Messages are buffered, each with its timestamp and window, and opened `BATCH` at a
    time with `Opener.open_many` (one crossing into Rust, the GIL released), at the
    latest when the bundle finishes; each result goes out with its own message's
    timestamp and window, so windows and counts are as if opened one by one."""

    BATCH = 100

    def __init__(self, settings, batch=BATCH):
        self.settings = settings
        self.batch = batch
        self.opener = None
        self.pending = []

    def setup(self):
        self.opener = self.settings.build()

    def start_bundle(self):
        self.pending = []

    def process(self, message, timestamp=beam.DoFn.TimestampParam, window=beam.DoFn.WindowParam):
        self.pending.append((message, timestamp, window))
        if len(self.pending) >= self.batch:
            yield from self._open_pending()

    def finish_bundle(self):
        yield from self._open_pending()

    def _open_pending(self):
        import pubsub_envelope as pe

        pending, self.pending = self.pending, []
        if not pending:
            return
        results = self.opener.open_many([(message.data, message.attributes or {}) for message, _, _ in pending])
        for result in results:
            if isinstance(result, pe.OpenError) and result.transient:
                raise result
        for (message, timestamp, window), result in zip(pending, results):
            if isinstance(result, pe.OpenError):
                dead = dead_letter(message, result.reason, str(result))
                yield beam.pvalue.TaggedOutput(DEAD_LETTER, WindowedValue(dead, timestamp, [window]))
                continue
            try:
                text = result.data.decode("utf-8")
            except UnicodeDecodeError as error:
                dead = dead_letter(message, "not_utf8", str(error))
                yield beam.pvalue.TaggedOutput(DEAD_LETTER, WindowedValue(dead, timestamp, [window]))
                continue
            yield WindowedValue((result.fingerprint, text), timestamp, [window])


class AnyOne(beam.CombineFn):
    """Keeps one of a key's values: copies of a sealed message (same fingerprint) count once."""

    def create_accumulator(self):
        return None

    def add_input(self, kept, value):
        return value if kept is None else kept

    def merge_accumulators(self, accumulators):
        return next((kept for kept in accumulators if kept is not None), None)

    def extract_output(self, kept):
        return kept


def rfc3339(timestamp):
    return datetime.fromtimestamp(float(timestamp), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class FormatCounts(beam.DoFn):
    """`word: count`, with the attributes the toolkit's subscriber sums windows by."""

    def __init__(self, replica):
        self.replica = replica

    def process(self, word_count, win=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        word, count = word_count
        yield PubsubMessage(
            f"{word}: {count}".encode(),
            {
                WINDOW_START_ATTR: rfc3339(win.start),
                WINDOW_END_ATTR: rfc3339(win.end),
                PANE_ATTR: str(pane.index),
                REPLICA_ATTR: self.replica,
            },
        )


class CountSealedWords(beam.PTransform):
    """PubsubMessages in; `{"counts": PubsubMessages, "dead_letter": PubsubMessages}` out.
    `batch`: messages opened at once (`OpenMessages`)."""

    def __init__(self, settings, window_secs=15, replica="beam", batch=OpenMessages.BATCH):
        super().__init__()
        self.settings = settings
        self.window_secs = window_secs
        self.replica = replica
        self.batch = batch

    def expand(self, messages):
        opened = messages | "Open" >> beam.ParDo(OpenMessages(self.settings, self.batch)).with_outputs(DEAD_LETTER, main="texts")
        counts = (
            opened.texts
            | "Window" >> beam.WindowInto(window.FixedWindows(self.window_secs))
            | "CountCopiesOnce" >> beam.CombinePerKey(AnyOne())
            | "Words" >> beam.FlatMap(lambda fingerprint_text: WORDS.findall(fingerprint_text[1]))
            | "Count" >> beam.combiners.Count.PerElement()
            | "Format" >> beam.ParDo(FormatCounts(self.replica))
        )
        return {"counts": counts, DEAD_LETTER: opened[DEAD_LETTER]}

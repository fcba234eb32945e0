//! Prometheus metrics of a consumer (pipeline, subscriber, debug-subscriber): what the runner
//! records, rendered as text (the binaries serve it on `--metrics_addr`).
//!
//! Message outcomes and window emit latency are recorded as they happen; messages in
//! flight are counted per worker ([`InFlight`]) and summed at each scrape, as are KMS
//! calls and key-cache hits and misses, read from the opener and the KMS counter, so
//! the hot path pays little for them.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_utils::CachePadded;

use envelope::Opener;
use envelope::kms::{Counted, Kms};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The KMS backend as the binaries build it, its calls counted.
pub type CountedKms = Arc<Counted<Arc<dyn Kms>>>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MessageLabels {
    outcome: &'static str,
    reason: &'static str,
}

/// A consumer's metrics.
pub struct Metrics {
    registry: Registry,
    messages: Family<MessageLabels, Counter>,
    /// The `counted` series of `messages`, held once made: nearly every message of the
    /// pipeline ends there, and finding a series in the family takes a lock and a hash
    /// that every worker would otherwise contend on for each message. Made on first
    /// use, so that a consumer that counts nothing shows no such series.
    counted: std::sync::OnceLock<Counter>,
    /// Each worker's messages in flight (and one for callers without a worker), summed
    /// at a scrape.
    in_flight: Arc<Mutex<Vec<Arc<InFlight>>>>,
    /// The stripe [`received`](Self::received) and [`settled`](Self::settled) count on.
    shared_in_flight: Arc<InFlight>,
    emit_latency: Histogram,
    early_flushes: Counter,
    ready: Arc<Readiness>,
}

/// Ready is pulling (the runner's say) and Pub/Sub answering (a watcher's say): the
/// Google client retries a lost streaming pull for ever, silently, so pulling alone
/// would stay ready through an outage.
#[derive(Debug)]
struct Readiness {
    pulling: std::sync::atomic::AtomicBool,
    answering: std::sync::atomic::AtomicBool,
}

impl Readiness {
    fn get(&self) -> bool {
        self.pulling.load(Ordering::Relaxed) && self.answering.load(Ordering::Relaxed)
    }
}

impl Metrics {
    /// Metrics with, when given, the opener's cache and KMS figures.
    pub fn new(envelope: Option<(Arc<Opener>, CountedKms)>) -> Self {
        let mut registry = Registry::with_prefix("pubsub_envelope");
        let messages = Family::<MessageLabels, Counter>::default();
        registry.register("messages", "Messages handled, by outcome and reason", messages.clone());
        let shared_in_flight = Arc::new(InFlight::default());
        let in_flight = Arc::new(Mutex::new(vec![shared_in_flight.clone()]));
        registry.register_collector(Box::new(InFlightCollector(in_flight.clone())));
        // From the window's end to its pane published: 0.25 s of grace, then Pub/Sub.
        let buckets = [0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0];
        let emit_latency = Histogram::new(buckets);
        registry.register(
            "window_emit_latency_seconds",
            "Time from a window's end to its pane being published",
            emit_latency.clone(),
        );
        let early_flushes = Counter::default();
        registry.register(
            "early_flushes",
            "Times the open panes held more distinct words than --max_pane_words and were all published before \
             their windows ended (a pane more per window)",
            early_flushes.clone(),
        );
        let ready = Arc::new(Readiness {
            pulling: std::sync::atomic::AtomicBool::new(false),
            answering: std::sync::atomic::AtomicBool::new(true),
        });
        registry.register_collector(Box::new(ReadyCollector(ready.clone())));
        if let Some((opener, kms)) = envelope {
            registry.register_collector(Box::new(EnvelopeCollector { opener, kms }));
        }
        Self {
            registry,
            messages,
            counted: std::sync::OnceLock::new(),
            in_flight,
            shared_in_flight,
            emit_latency,
            early_flushes,
            ready,
        }
    }

    /// Counts one message with `outcome` (and a reason code, or `""`).
    pub fn message(&self, outcome: &'static str, reason: &'static str) {
        self.messages.get_or_create(&MessageLabels { outcome, reason }).inc();
    }

    /// Counts `messages` whose words were counted: [`message`](Self::message) with
    /// outcome `counted`, without looking the series up each time.
    pub fn counted(&self, messages: u64) {
        let series = || self.messages.get_or_create(&MessageLabels { outcome: "counted", reason: "" }).clone();
        self.counted.get_or_init(series).inc_by(messages);
    }

    /// `messages` were received: they are in flight until [`settled`](Self::settled).
    /// For a consumer without workers; a pipeline worker counts on its own
    /// [`InFlight`].
    pub fn received(&self, messages: usize) {
        self.shared_in_flight.add(messages as i64);
    }

    /// `messages` were acked or nacked.
    pub fn settled(&self, messages: usize) {
        self.shared_in_flight.add(-(messages as i64));
    }

    /// A new counter of messages in flight, for one worker: on a cache line of its own,
    /// so that workers counting messages in never share one.
    pub fn in_flight(&self) -> Arc<InFlight> {
        let counter = Arc::new(InFlight::default());
        self.in_flight.lock().expect("not poisoned").push(counter.clone());
        counter
    }

    /// Records a pane published `seconds` after its window ended.
    pub fn window_emitted(&self, seconds: f64) {
        self.emit_latency.observe(seconds);
    }

    /// Records that the open panes went over their word budget and were published early.
    pub fn early_flush(&self) {
        self.early_flushes.inc();
    }

    /// The metrics in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }

    /// Says whether the consumer is pulling (`true`) or not yet, or no longer (a
    /// drain).
    pub fn set_ready(&self, ready: bool) {
        self.ready.pulling.store(ready, Ordering::Relaxed);
    }

    /// Says whether Pub/Sub answers (`true` until told otherwise).
    pub fn set_answering(&self, answering: bool) {
        self.ready.answering.store(answering, Ordering::Relaxed);
    }

    /// Whether the consumer is pulling and Pub/Sub answers, as `GET /readyz` and the
    /// `ready` gauge report.
    pub fn is_ready(&self) -> bool {
        self.ready.get()
    }
}

/// Messages received and not yet acked or nacked by one worker. Held deliveries
/// ([`Held`](crate::Held)) count themselves in and out.
#[derive(Debug, Default)]
pub struct InFlight(CachePadded<AtomicI64>);

impl InFlight {
    /// Adds `messages` (negative: settled).
    pub fn add(&self, messages: i64) {
        self.0.fetch_add(messages, Ordering::Relaxed);
    }

    /// Messages in flight now.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Sums the workers' [`InFlight`] counters at each scrape.
#[derive(Debug)]
struct InFlightCollector(Arc<Mutex<Vec<Arc<InFlight>>>>);

impl Collector for InFlightCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let sum: i64 = self.0.lock().expect("not poisoned").iter().map(|counter| counter.get()).sum();
        let gauge = ConstGauge::new(sum);
        let help = "Messages received and not yet acked or nacked";
        gauge.encode(encoder.encode_descriptor("messages_in_flight", help, None, gauge.metric_type())?)
    }
}

/// Whether the consumer is ready, as `/readyz` says it: a gauge an alert can watch
/// across replicas (`/readyz` is seen only by the one prober that asks).
#[derive(Debug)]
struct ReadyCollector(Arc<Readiness>);

impl Collector for ReadyCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let gauge = ConstGauge::new(i64::from(self.0.get()));
        let help = "1 while the consumer is pulling and Pub/Sub answers (GET /readyz answers 200), else 0";
        gauge.encode(encoder.encode_descriptor("ready", help, None, gauge.metric_type())?)
    }
}

/// A labelled family of counters read at a scrape: name, help, label name, and each
/// label value with its count.
type CounterFamily<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, u64)]);

/// Reads the opener's cache figures and the KMS call count at each scrape.
struct EnvelopeCollector {
    opener: Arc<Opener>,
    kms: CountedKms,
}

impl std::fmt::Debug for EnvelopeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EnvelopeCollector")
    }
}

impl Collector for EnvelopeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let cache = self.opener.cache_stats();
        let counters = [
            ("kms_calls", "Calls to the KMS (wraps, unwraps, signs, public-key fetches)", self.kms.calls()),
            ("key_cache_hits", "Opens that found their data key cached", cache.hits),
            ("key_cache_misses", "Opens that had to unwrap their data key", cache.misses),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)?;
        }
        // What opening messages cost the KMS, and what the budget spared it
        // (docs/THREATS.md, "Cost under hostile load").
        let kms = self.opener.kms_stats();
        let families: [CounterFamily<'_>; 2] = [
            (
                "kms_opener_calls",
                "KMS calls made to open messages (unwraps, public-key fetches), by outcome",
                "outcome",
                &[("ok", kms.ok), ("refused", kms.refused), ("failed", kms.failed)],
            ),
            (
                "kms_calls_spared",
                "Opens that needed a KMS call and were answered without one: a remembered refusal, or the trust \
                 entry's failure budget spent (kms_budget_exhausted)",
                "why",
                &[("remembered", kms.remembered), ("over_budget", kms.over_budget)],
            ),
        ];
        for (name, help, label, values) in families {
            let mut family =
                encoder.encode_descriptor(name, help, None, prometheus_client::metrics::MetricType::Counter)?;
            for &(value_label, value) in values {
                ConstCounter::new(value).encode(family.encode_family(&[(label, value_label)])?)?;
            }
        }
        Ok(())
    }
}

//! Prometheus metrics of a consumer (pipeline, debug-subscriber), served as text on
//! `--metrics_addr`.
//!
//! Message outcomes, messages in flight and window emit latency are recorded as they
//! happen; KMS calls and key-cache hits and misses are read from the opener and the
//! KMS counter at each scrape, so the hot path pays nothing for them.

use std::net::SocketAddr;
use std::sync::Arc;

use envelope::Opener;
use envelope::kms::{Counted, Kms};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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
    in_flight: Gauge,
    emit_latency: Histogram,
    ready: std::sync::atomic::AtomicBool,
}

impl Metrics {
    /// Metrics with, when given, the opener's cache and KMS figures.
    pub fn new(envelope: Option<(Arc<Opener>, CountedKms)>) -> Self {
        let mut registry = Registry::with_prefix("pubsub_envelope");
        let messages = Family::<MessageLabels, Counter>::default();
        registry.register("messages", "Messages handled, by outcome and reason", messages.clone());
        let in_flight = Gauge::default();
        registry.register("messages_in_flight", "Messages received and not yet acked or nacked", in_flight.clone());
        // From the window's end to its pane published: 0.25 s of grace, then Pub/Sub.
        let buckets = [0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0];
        let emit_latency = Histogram::new(buckets);
        registry.register(
            "window_emit_latency_seconds",
            "Time from a window's end to its pane being published",
            emit_latency.clone(),
        );
        if let Some((opener, kms)) = envelope {
            registry.register_collector(Box::new(EnvelopeCollector { opener, kms }));
        }
        Self {
            registry,
            messages,
            counted: std::sync::OnceLock::new(),
            in_flight,
            emit_latency,
            ready: std::sync::atomic::AtomicBool::new(false),
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
    pub fn received(&self, messages: usize) {
        self.in_flight.inc_by(messages as i64);
    }

    /// `messages` were acked or nacked.
    pub fn settled(&self, messages: usize) {
        self.in_flight.dec_by(messages as i64);
    }

    /// Records a pane published `seconds` after its window ended.
    pub fn window_emitted(&self, seconds: f64) {
        self.emit_latency.observe(seconds);
    }

    /// The metrics in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }

    /// Says whether the consumer is pulling (`true`) or not yet, or no longer, as
    /// `GET /readyz` reports.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the consumer is pulling.
    pub fn is_ready(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Binds `addr` (port 0 picks a free one) and serves, until the process ends:
    /// `GET /metrics`; `GET /healthz`, 200 while the process serves at all (liveness);
    /// `GET /readyz`, 200 once the consumer is pulling and 503 before that and while it
    /// drains (readiness). A bind that fails is an error, returned at once: a consumer
    /// whose metrics were asked for must not run without them unnoticed.
    pub async fn serve(self: Arc<Self>, addr: SocketAddr) -> anyhow::Result<SocketAddr> {
        use axum::http::StatusCode;
        use axum::routing::get;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        tracing::info!(addr = %bound, "serving metrics on /metrics, health on /healthz and /readyz");
        let metrics = self.clone();
        let app = axum::Router::new()
            .route(
                "/metrics",
                get(move || async move {
                    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
                    ([(axum::http::header::CONTENT_TYPE, content_type)], metrics.render())
                }),
            )
            .route("/healthz", get(|| async { "ok\n" }))
            .route(
                "/readyz",
                get(move || async move {
                    if self.is_ready() {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not pulling\n")
                    }
                }),
            );
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "the metrics server stopped");
            }
        });
        Ok(bound)
    }
}

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
        Ok(())
    }
}

//! The emitter: publishes each ready pane and each dead letter, then acks the
//! deliveries they hold (or nacks them, if the publish failed), and sums the run up.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt as _;
use google_cloud_pubsub::client::Publisher;
use google_cloud_pubsub::model::Message;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use wordcount::Pane;

use crate::held::{Ack, Held};
use crate::intake::{DeadLetter, Shared};
use crate::metrics::Metrics;

/// Output attribute: the window's start, RFC 3339.
pub const WINDOW_START_ATTR: &str = "window_start";
/// Output attribute: the window's end, RFC 3339.
pub const WINDOW_END_ATTR: &str = "window_end";
/// Output attribute: the pane number within the window for this replica.
pub const PANE_ATTR: &str = "pane";
/// Output attribute: the id of the pipeline process that counted the pane.
pub const REPLICA_ATTR: &str = "replica";
/// Output attribute: how many words (so how many messages) the pane has, so that a
/// reader can tell a pane it saw whole from one it saw part of.
pub const PANE_WORDS_ATTR: &str = "pane_words";

/// Counts of one pane being published at once, at most.
const OUTPUT_IN_FLIGHT: usize = 1000;

/// How often ready panes are looked for.
const TICK: Duration = Duration::from_millis(100);

/// Where panes and dead letters are published: a Pub/Sub [`Publisher`] in the product.
pub trait Output: Clone + Send + Sync + 'static {
    /// Publishes `message`; `Ok` once it is safely stored.
    fn publish(&self, message: Message) -> impl Future<Output = Result<(), String>> + Send;
}

impl Output for Publisher {
    async fn publish(&self, message: Message) -> Result<(), String> {
        Publisher::publish(self, message).await.map(drop).map_err(|error| error.to_string())
    }
}

/// What a run did, for the final log line and for tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Messages whose words were counted.
    pub counted: u64,
    /// Copies of messages already counted in an open pane (redeliveries, replays).
    pub duplicates: u64,
    /// Messages sent to the dead-letter topic, by reason.
    pub dead_lettered: BTreeMap<String, u64>,
    /// Messages nacked for a transient failure.
    pub retried: u64,
    /// Panes published.
    pub panes: u64,
    /// Panes and dead letters that could not be published; their messages were nacked,
    /// so Pub/Sub redelivers them.
    pub unpublished: u64,
    /// From the first message received to the last pane or dead letter settled.
    pub active: Duration,
}

impl std::fmt::Display for Summary {
    /// One line a person reads: `counted 20 messages in 3 panes, 1 dead-lettered
    /// (unwrap_rejected 1), 0 duplicates, 0 retried, 0 unpublished; 6.3 msg/s`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dead: u64 = self.dead_lettered.values().sum();
        let plural = |n: u64, one: &'static str, many: &'static str| if n == 1 { one } else { many };
        write!(
            f,
            "counted {} {} in {} {}, {dead} dead-lettered",
            self.counted,
            plural(self.counted, "message", "messages"),
            self.panes,
            plural(self.panes, "pane", "panes")
        )?;
        if dead > 0 {
            let reasons: Vec<String> = self.dead_lettered.iter().map(|(reason, n)| format!("{reason} {n}")).collect();
            write!(f, " ({})", reasons.join(", "))?;
        }
        write!(
            f,
            ", {} duplicates, {} retried, {} unpublished; {:.1} msg/s",
            self.duplicates,
            self.retried,
            self.unpublished,
            self.messages_per_sec()
        )
    }
}

impl Summary {
    /// Messages settled per second of [`active`](Self::active) time.
    pub fn messages_per_sec(&self) -> f64 {
        let settled = self.counted + self.dead_lettered.values().sum::<u64>();
        settled as f64 / self.active.as_secs_f64().max(1e-9)
    }
}

/// Publishes what the intakes counted and rejected, and settles their deliveries.
pub(crate) struct Emitter<P, A: Ack> {
    pub(crate) shared: Arc<Shared<P, A>>,
    pub(crate) rejected: mpsc::UnboundedReceiver<DeadLetter<A>>,
    /// Ends once every intake has.
    pub(crate) ended: mpsc::Receiver<()>,
    pub(crate) replica: String,
}

impl<P, A: Ack> Emitter<P, A> {
    /// Publishes each ready pane to `output` and each dead letter to `dead_letter`, and
    /// acks their deliveries once published, until every intake has ended; then
    /// flushes the open panes the same way and sums up.
    pub(crate) async fn run<O: Output, D: Output>(mut self, output: O, dead_letter: D) -> anyhow::Result<Summary> {
        let shared = self.shared.clone();
        let metrics = &shared.metrics;
        let mut summary = Summary::default();
        let mut publishing = JoinSet::new();
        let mut tick = tokio::time::interval(TICK);
        let mut last_settled = None;
        let publish_dead = |publishing: &mut JoinSet<bool>, summary: &mut Summary, (message, held, reason)| {
            *summary.dead_lettered.entry(String::from(reason)).or_default() += 1;
            metrics.message("dead_lettered", reason);
            publishing.spawn(publish_dead_letter(dead_letter.clone(), message, held));
        };
        let publish = |publishing: &mut JoinSet<bool>, summary: &mut Summary, pane| {
            summary.panes += 1;
            publishing.spawn(publish_pane(output.clone(), pane, self.replica.clone(), metrics.clone()));
        };
        loop {
            tokio::select! {
                Some(dead) = self.rejected.recv() => publish_dead(&mut publishing, &mut summary, dead),
                _ = tick.tick() => {
                    let panes = if shared.windows.over_budget() {
                        // Publishing early costs a pane more per window; waiting for the
                        // windows to end would let one tenant's message of distinct words
                        // grow the pipeline past its memory (docs/THREATS.md).
                        tracing::warn!(
                            words = shared.windows.open_words(),
                            "the open panes hold more distinct words than --max_pane_words: publishing them early"
                        );
                        metrics.early_flush();
                        shared.windows.take_all()
                    } else {
                        shared.windows.take_ready(SystemTime::now())
                    };
                    for pane in panes {
                        publish(&mut publishing, &mut summary, pane);
                    }
                }
                Some(published) = publishing.join_next(), if !publishing.is_empty() => {
                    last_settled = Some(Instant::now());
                    summary.unpublished += u64::from(!published?);
                }
                None = self.ended.recv() => break,
            }
        }
        while let Ok(dead) = self.rejected.try_recv() {
            publish_dead(&mut publishing, &mut summary, dead);
        }
        tracing::info!(held = shared.windows.held(), "input ended: flushing open windows");
        for pane in shared.windows.take_all() {
            publish(&mut publishing, &mut summary, pane);
        }
        while let Some(published) = publishing.join_next().await {
            last_settled = Some(Instant::now());
            summary.unpublished += u64::from(!published?);
        }
        summary.counted = shared.tally.counted.load(Ordering::Relaxed);
        summary.duplicates = shared.tally.duplicates.load(Ordering::Relaxed);
        summary.retried = shared.tally.retried.load(Ordering::Relaxed);
        if let (Some(first), Some(last)) = (shared.first_received.get(), last_settled) {
            summary.active = last.saturating_duration_since(*first);
        }
        Ok(summary)
    }
}

/// Publishes a dead letter, then acks its delivery; `false` if it could not be
/// published (the delivery is nacked instead).
async fn publish_dead_letter<A: Ack>(dead_letter: impl Output, message: Message, held: Held<A>) -> bool {
    match dead_letter.publish(message).await {
        Ok(()) => {
            held.ack();
            true
        }
        Err(error) => {
            tracing::error!(%error, "could not publish to the dead-letter topic; nacking");
            held.nack();
            false
        }
    }
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

/// Publishes a pane's counts, then acks its deliveries; `false` if any count could not
/// be published (its deliveries are nacked, to be counted again).
async fn publish_pane<A: Ack>(
    output: impl Output,
    pane: Pane<Held<A>>,
    replica: String,
    metrics: Arc<Metrics>,
) -> bool {
    let attributes = HashMap::from([
        (WINDOW_START_ATTR.to_owned(), rfc3339(pane.window.start())),
        (WINDOW_END_ATTR.to_owned(), rfc3339(pane.window.end())),
        (PANE_ATTR.to_owned(), pane.number.to_string()),
        (REPLICA_ATTR.to_owned(), replica),
        (PANE_WORDS_ATTR.to_owned(), pane.counts.len().to_string()),
    ]);
    // At most OUTPUT_IN_FLIGHT counts at once: a pane of a million words made a
    // million messages and futures at once, hundreds of MB; the client batches them on
    // the wire all the same.
    let mut sending = futures_util::stream::FuturesUnordered::new();
    let mut failures = 0;
    for (word, count) in &pane.counts {
        if sending.len() == OUTPUT_IN_FLIGHT {
            failures += usize::from(sending.next().await.is_some_and(|sent: Result<(), String>| sent.is_err()));
        }
        let message = Message::new().set_data(format!("{word}: {count}")).set_attributes(attributes.clone());
        sending.push(output.publish(message));
    }
    while let Some(sent) = sending.next().await {
        failures += usize::from(sent.is_err());
    }
    let start = rfc3339(pane.window.start());
    if failures == 0 {
        tracing::info!(window_start = %start, pane = pane.number, words = pane.counts.len(), messages = pane.holds.len(), "published pane");
        metrics.window_emitted(SystemTime::now().duration_since(pane.window.end()).unwrap_or_default().as_secs_f64());
        pane.holds.into_iter().for_each(Held::ack);
        true
    } else {
        tracing::error!(window_start = %start, pane = pane.number, failures, "could not publish the pane; nacking its messages for a recount");
        pane.holds.into_iter().for_each(Held::nack);
        false
    }
}

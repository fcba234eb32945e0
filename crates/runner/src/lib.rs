//! What the `pipeline` binary runs: take deliveries from the bus, open each envelope,
//! count words per fixed window of publish time, publish `word: count` per window,
//! then ack.
//!
//! ```text
//!  worker thread 1 (own runtime)                       calling thread
//!  ┌──────────────────────────────────┐
//!  │ Source ──Feed──▶ Intake ─spawn─▶ │  open + count    ┌──────────────────────┐
//!  │ (streaming      (batch task per  │ ───────────────▶ │ Windows (shared,     │
//!  │  pulls)          ≤64 deliveries) │   Held in pane   │ sharded)             │
//!  └──────────────────────────────────┘                  └──────────┬───────────┘
//!  worker thread 2 … (the same)          dead letters ─┐            │ ready panes
//!                                                      ▼            ▼
//!                                                 ┌──────────────────────┐
//!                                                 │ Emitter: publish,    │──▶ output topic
//!                                                 │ then ack what it held│──▶ dead-letter topic
//!                                                 └──────────────────────┘
//! ```
//!
//! Who owns what: a worker's [`Source`] (Pub/Sub streaming pulls in the product, memory
//! in the benchmark and tests) delivers into its `Intake` (`intake.rs`), which wraps each
//! delivery in a [`Held`] (the ack handle, settled exactly once) and opens and counts
//! a batch per task. A counted message's `Held` goes into its window's pane; a message
//! that can never open goes to the emitter as a dead letter; a transient failure is
//! nacked after a pause. The `Emitter` (`emit.rs`) is the only one that acks: a pane's
//! deliveries once its counts are published, a dead letter's once it is. Dropping a
//! `Held` unsettled nacks it, so nothing is acked before its result is safe, and
//! nothing is lost on an error path.
//!
//! Every core works: each worker thread runs a single-thread runtime of its own, so a
//! message is decoded, opened, counted and freed on one core (one runtime for all
//! workers passed most messages between cores: docs/PERFORMANCE.md). The workers share
//! the opener and the [`Windows`], so copies of a message meet and
//! count once, and each window is one pane. On shutdown the sources stop, every open
//! pane is flushed, published and acked, then [`run`] returns. docs/ARCHITECTURE.md
//! follows one message through the crates.
#![cfg_attr(test, allow(unused_crate_dependencies, reason = "unit tests build with the dev-dependencies too"))]
#![forbid(unsafe_code)]

pub mod dead_letter;
mod emit;
mod held;
mod intake;
pub mod metrics;
pub mod own_key;
mod source;

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub use emit::{Output, PANE_ATTR, PANE_WORDS_ATTR, REPLICA_ATTR, Summary, WINDOW_END_ATTR, WINDOW_START_ATTR};
pub use held::{Ack, Held};
pub use intake::{Open, Text};
use metrics::Metrics;
pub use source::{Delivery, Feed, PubSubSource, Source};
use wordcount::Windows;

/// How the pipeline windows and names its output.
#[derive(Debug, Clone)]
pub struct Config {
    /// Fixed window size.
    pub window: Duration,
    /// This process's id in the output, unique per run.
    pub replica: String,
    /// Messages being opened and counted at once by one worker, at most
    /// ([`MAX_IN_FLIGHT`] in the product). Messages waiting on a slow KMS call count
    /// here, so this must be well above what one slow key holds back; memory is
    /// bounded anyway by the subscription's flow control.
    pub max_in_flight: usize,
    /// The pipeline's own key: when given, its output is sealed under it and its dead
    /// letters carry receipts made with it ([`own_key`]).
    pub own_key: Option<Arc<own_key::OwnKey>>,
    /// Distinct words the open panes may hold before they are all published early, as a
    /// pane more of their windows ([`DEFAULT_MAX_PANE_WORDS`] in the product): what
    /// bounds the pipeline's memory whatever its input (docs/THREATS.md).
    pub max_pane_words: usize,
}

/// Distinct words in the open panes, by default, before they are published early: a
/// million, about 170 MB (measured: 165-168 bytes a word, counting and publishing
/// included; docs/PERFORMANCE.md).
pub const DEFAULT_MAX_PANE_WORDS: usize = 1_000_000;

/// Messages opened at once per worker by default: enough that a key whose KMS call
/// takes seconds holds back only its own messages, few enough to bound the tasks.
pub const MAX_IN_FLIGHT: usize = 4096;

/// A window's first pane is emitted this long after the window ends.
const GRACE: Duration = Duration::from_millis(250);
/// A pane opened after its window was emitted waits this long for more late data.
const SETTLE: Duration = Duration::from_secs(1);

/// Runs the pipeline: a worker thread per source, and the emitter on this task, until
/// `shutdown` resolves or every source ends; then flushes and sums up.
///
/// Counts go to `output` and messages that can never open to `dead_letter` (both
/// sealed under [`Config::own_key`] when given). A worker that fails (its source
/// breaks) stops the others, and the run returns its error once everything delivered
/// is settled.
pub async fn run<S: Source, P: Open, O: Output, D: Output>(
    sources: Vec<S>,
    opener: Arc<P>,
    output: O,
    dead_letter: D,
    config: Config,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Summary> {
    let workers = sources.len().max(1);
    let (dead_letters, rejected) = tokio::sync::mpsc::unbounded_channel();
    let (alive, ended) = tokio::sync::mpsc::channel(1);
    let shared = Arc::new(intake::Shared {
        opener,
        windows: Windows::new(config.window, GRACE, SETTLE, workers).with_word_budget(config.max_pane_words),
        metrics: metrics.clone(),
        tally: intake::Tally::default(),
        dead_letters,
        first_received: OnceLock::new(),
    });
    let emitter = emit::Emitter { shared: shared.clone(), rejected, ended, replica: config.replica.clone() };

    // Stopping is a value rather than an event: a worker still starting when it is set
    // sees it all the same.
    let stop = Arc::new(tokio::sync::watch::Sender::new(false));
    let mut ready = Vec::with_capacity(workers);
    let mut finished = Vec::with_capacity(workers);
    for (worker, source) in sources.into_iter().enumerate() {
        let intake = intake::Intake::new(shared.clone(), config.max_in_flight, alive.clone());
        let (started, is_ready) = tokio::sync::oneshot::channel();
        let (done, is_done) = tokio::sync::oneshot::channel();
        let stop = stop.clone();
        std::thread::Builder::new().name(format!("worker-{worker}")).spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|runtime| runtime.block_on(work(source, intake, started, &stop)));
            // A worker that failed stops the others: the run ends, and its error with it.
            if result.is_err() {
                stop.send_replace(true);
            }
            let _ = done.send(result);
        })?;
        ready.push(is_ready);
        finished.push(is_done);
    }
    // Only the intakes hold it now: the emitter flushes once each has let go.
    drop(alive);
    for started in ready {
        // A worker that could not start says why when it ends.
        let _ = started.await;
    }
    tracing::info!(window = ?config.window, workers, replica = %config.replica, "pipeline started");
    metrics.set_ready(true);
    // On shutdown the sources stop delivering, which ends each worker's intake; what
    // was already delivered is still counted, published and acked.
    let stopper = tokio::spawn({
        let (stop, metrics) = (stop.clone(), metrics.clone());
        async move {
            let mut stopped = stop.subscribe();
            tokio::select! {
                () = shutdown => {}
                _ = stopped.wait_for(|stop| *stop) => {}
            }
            // Draining: a load balancer or Kubernetes stops counting on this replica.
            metrics.set_ready(false);
            stop.send_replace(true);
        }
    });
    let summary = match &config.own_key {
        Some(key) => {
            let output = own_key::SealedOutput { inner: output, key: key.clone() };
            emitter.run(output, own_key::Receipted { inner: dead_letter, key: key.clone() }).await
        }
        None => emitter.run(output, dead_letter).await,
    };
    // However it ended, the workers stop; each ends once every message its source
    // delivered is acked or nacked.
    stop.send_replace(true);
    stopper.await?;
    let mut failed = None;
    for done in finished {
        let result = done.await.unwrap_or_else(|_| Err(anyhow::anyhow!("a worker panicked")));
        if let Err(error) = result {
            failed.get_or_insert(error);
        }
    }
    if let Some(error) = failed {
        return Err(error);
    }
    let summary = summary?;
    // The field repeats the rate for machines: `scripts/bench.sh` and JSON logs read it.
    tracing::info!(messages_per_sec = summary.messages_per_sec(), "pipeline stopped: {summary}");
    Ok(summary)
}

/// One worker, on its thread's runtime: the source delivers, the intake opens and
/// counts, until both are done. An intake that fails (a failed delivery) stops every
/// worker now, rather than once this one's messages are acked (which can take a
/// window).
async fn work<S: Source, P: Open>(
    source: S,
    intake: intake::Intake<P, S::Ack>,
    started: tokio::sync::oneshot::Sender<()>,
    stop: &tokio::sync::watch::Sender<bool>,
) -> anyhow::Result<()> {
    let (deliveries, received) = tokio::sync::mpsc::channel(1024);
    let delivering = tokio::spawn(source.deliver(Feed::new(deliveries, started, stop.subscribe())));
    let taken = intake.run(received).await;
    if taken.is_err() {
        stop.send_replace(true);
    }
    let delivered = delivering.await.map_err(|_| anyhow::anyhow!("a source panicked")).and_then(|result| result);
    taken.and(delivered)
}

//! What the `pipeline` binary runs: pull from the bus, open each envelope, count words
//! per fixed window of publish time, publish `word: count` per window, then ack.
//!
//! Nothing is acknowledged before its result is safe:
//! * a message that opens is held (its lease kept alive by the Pub/Sub client) until the
//!   pane it was counted in has been published, then acked; if that publish fails it is
//!   nacked and counted again on redelivery;
//! * a message that can never open is published to the dead-letter topic with its
//!   reason, and acked only once that publish succeeded;
//! * a message that failed for a transient reason (KMS unreachable) is nacked for
//!   redelivery after a pause, so that an outage does not become a busy loop.
//!
//! On shutdown every open pane is flushed, published and acked before returning.
//!
//! Every core works: each worker thread runs a runtime of its own with its own
//! streaming pulls, and opens and counts what they deliver there ([`Intake`]): what the
//! streams delivered together is opened and counted as one task (at most
//! [`Settings::max_in_flight`] messages at once per worker), and within it a message
//! waiting on the KMS for its key is set aside and holds up no other. The counts live
//! in [`Windows`], shared by every worker and sharded so that workers rarely share a
//! lock; one [`Emitter`] publishes each window as one pane and acks. [`process`] is that
//! core on one runtime, fed by any source of deliveries; [`run`] feeds it from Pub/Sub.
#![cfg_attr(test, allow(unused_crate_dependencies, reason = "unit tests build with the dev-dependencies too"))]
#![forbid(unsafe_code)]

pub mod dead_letter;
pub mod own_key;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cli::metrics::Metrics;
use envelope::{OpenError, Opener};
use futures_util::StreamExt as _;
use google_cloud_pubsub::client::Publisher;
use google_cloud_pubsub::model::Message;
use google_cloud_pubsub::subscriber::ShutdownToken;
use google_cloud_pubsub::subscriber::handler::Handler;
use tokio::task::JoinSet;
use wordcount::{Fingerprint, Pane, Windows};

/// Output attribute: the window's start, RFC 3339.
pub const WINDOW_START_ATTR: &str = "window_start";
/// Output attribute: the window's end, RFC 3339.
pub const WINDOW_END_ATTR: &str = "window_end";
/// Output attribute: the pane number within the window for this replica.
pub const PANE_ATTR: &str = "pane";
/// Output attribute: the id of the pipeline process that counted the pane.
pub const REPLICA_ATTR: &str = "replica";

/// What the pipeline reads, writes and how it windows.
#[derive(Debug, Clone)]
pub struct Config {
    /// Full name of the subscription on the bus.
    pub input_subscription: String,
    /// Full name of the topic counts go to.
    pub output_topic: String,
    /// Full name of the topic messages that cannot be opened go to.
    pub dead_letter_topic: String,
    /// Fixed window size.
    pub window: Duration,
    /// Messages held unacknowledged at most (flow control), shared out between the
    /// streams. Messages are held for a window, so this must cover a window's input.
    pub max_outstanding_messages: i64,
    /// Streaming-pull streams opened on the subscription. Pub/Sub (and the emulator)
    /// feeds each stream at a bounded rate, so a busy subscriber needs several, as
    /// Google's own clients do. Shared out between the workers, at least one each.
    pub streams: usize,
    /// How far each lease extension reaches; also how soon Pub/Sub redelivers the
    /// messages of a pipeline that died.
    pub lease_extension: Duration,
    /// This process's id in the output, unique per run.
    pub replica: String,
    /// Threads that open and count; see [`Settings::workers`].
    pub workers: usize,
    /// The pipeline's own key: when given, its output is sealed under it and its dead
    /// letters carry receipts made with it ([`own_key`]).
    pub own_key: Option<Arc<own_key::OwnKey>>,
}

/// A window's first pane is emitted this long after the window ends.
const GRACE: Duration = Duration::from_millis(250);
/// A pane opened after its window was emitted waits this long for more late data.
const SETTLE: Duration = Duration::from_secs(1);
/// How long a message that failed for a transient reason is held before it is nacked.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Deliveries taken in one turn of the pipeline's loop, at most.
const BATCH: usize = 64;
/// How often ready panes are looked for.
const TICK: Duration = Duration::from_millis(100);

/// What the pipeline counts of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text {
    /// The message's data, authenticated and decrypted.
    pub data: Bytes,
    /// Equal for every copy of the message, so that copies in one pane count once.
    pub fingerprint: Fingerprint,
}

/// How the pipeline gets at a message's text: [`Opener`] in the product; the
/// benchmark's plaintext floor passes the data through untouched.
pub trait Open: Send + Sync + 'static {
    /// The message's text once authenticated (and decrypted), or why it cannot be.
    fn open(&self, message: &Message) -> impl Future<Output = Result<Text, OpenError>> + Send;
}

/// Fingerprints by the envelope's fingerprint rather than Pub/Sub's message id: a
/// redelivery keeps both, but a copy published again (a replay) gets a new message id
/// and keeps its fingerprint.
impl Open for Opener {
    async fn open(&self, message: &Message) -> Result<Text, OpenError> {
        let opened = Opener::open(self, &message.data, &message.attributes).await?;
        if let Some(attestation) = &opened.attestation {
            tracing::debug!(message_id = %message.message_id, %attestation, "attested message");
        }
        Ok(Text { data: opened.data, fingerprint: opened.fingerprint })
    }
}

/// What a run did, for the final log line and for tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Messages whose words were counted.
    pub counted: u64,
    /// Redeliveries of messages already counted in an open pane.
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
        write!(f, "counted {} messages in {} panes, {dead} dead-lettered", self.counted, self.panes)?;
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

/// Acknowledgement of one delivery: Pub/Sub's [`Handler`] in the product, a counter in
/// the benchmark.
pub trait Ack: Send + 'static {
    /// The message is done with: never deliver it again.
    fn ack(self);
    /// The message was not dealt with: deliver it again.
    fn nack(self);
}

impl Ack for Handler {
    fn ack(self) {
        Handler::ack(self);
    }

    fn nack(self) {
        Handler::nack(self);
    }
}

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

/// One message as the bus delivered it, with its acknowledgement; or why the delivery
/// stream failed.
pub type Delivery<A> = anyhow::Result<(Message, A)>;

/// How the core of the pipeline counts, whatever delivers its input.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Fixed window size.
    pub window: Duration,
    /// This process's id in the output, unique per run.
    pub replica: String,
    /// Threads that open and count; the windows are sharded so that this many can count
    /// at once.
    pub workers: usize,
    /// Messages being opened and counted at once by one worker's intake, at most.
    /// Messages waiting on a slow KMS call count here, so this must be well above what
    /// one slow key holds back; memory is bounded anyway by the subscription's flow
    /// control.
    pub max_in_flight: usize,
}

/// Messages opened at once by default: enough that a key whose KMS call takes seconds
/// holds back only its own messages, few enough to bound the tasks waiting.
pub const MAX_IN_FLIGHT: usize = 4096;

/// Runs the pipeline until `shutdown` resolves or the streams end, then flushes.
///
/// Each of [`Config::workers`] threads runs a single-thread runtime of its own, with its
/// own Pub/Sub client and share of the streaming pulls, and opens and counts what they
/// deliver: a message is decoded, opened, counted and freed on one core, where one
/// runtime for all workers passed most messages between cores on the way (measured in
/// docs/PERFORMANCE.md). The workers share the opener and the windows, so copies of a
/// message still meet and count once, and each window is still one pane; this thread
/// publishes the panes and dead letters and acks (the [`Emitter`]).
pub async fn run(
    pubsub: &bus::PubSub,
    opener: Arc<impl Open>,
    config: Config,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Summary> {
    let workers = config.workers.max(1);
    // Every worker pulls for itself, so each needs a stream at least.
    let streams = config.streams.max(workers);
    let per_stream = (config.max_outstanding_messages + streams as i64 - 1) / streams as i64;
    let settings =
        Settings { window: config.window, replica: config.replica.clone(), workers, max_in_flight: MAX_IN_FLIGHT };
    let (intake, emitter) = core(opener, &settings, metrics.clone());
    let output = pubsub.publisher(&config.output_topic).await?;
    let dead_letter = pubsub.publisher(&config.dead_letter_topic).await?;

    // Stopping is a value rather than an event: a worker still starting when it is set
    // sees it all the same.
    let stop = Arc::new(tokio::sync::watch::Sender::new(false));
    let mut ready = Vec::with_capacity(workers);
    let mut finished = Vec::with_capacity(workers);
    for worker in 0..workers {
        let pull = Pull {
            pubsub: pubsub.clone(),
            subscription: config.input_subscription.clone(),
            streams: streams / workers + usize::from(worker < streams % workers),
            per_stream,
            lease_extension: config.lease_extension,
        };
        let (started, is_ready) = tokio::sync::oneshot::channel();
        let (done, is_done) = tokio::sync::oneshot::channel();
        let (intake, stop) = (intake.clone(), stop.clone());
        std::thread::Builder::new().name(format!("worker-{worker}")).spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|runtime| runtime.block_on(pull.run(intake, started, stop.clone())));
            // A worker that failed stops the others: the run ends, and its error with it.
            if result.is_err() {
                stop.send_replace(true);
            }
            let _ = done.send(result);
        })?;
        ready.push(is_ready);
        finished.push(is_done);
    }
    // Only the workers hold the intake now: the emitter ends once each has let go.
    drop(intake);
    for started in ready {
        // A worker that could not start says why when it ends.
        let _ = started.await;
    }
    tracing::info!(subscription = %config.input_subscription, output = %config.output_topic, window = ?config.window, streams, workers, replica = %config.replica, "pipeline started");
    metrics.set_ready(true);
    // On shutdown the streams stop pulling and end, which ends each worker's intake;
    // what was already delivered is still counted, published and acked.
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
    // However it ended, the workers stop; each ends once every message its streams
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
        return Err(error.context(format!("streaming pull from {}", config.input_subscription)));
    }
    let summary = summary?;
    // The field repeats the rate for machines: `scripts/bench.sh` and JSON logs read it.
    tracing::info!(messages_per_sec = summary.messages_per_sec(), "pipeline stopped: {summary}");
    Ok(summary)
}

/// One worker's streaming pulls.
struct Pull {
    pubsub: bus::PubSub,
    subscription: String,
    streams: usize,
    /// Messages each stream holds unacknowledged at most.
    per_stream: i64,
    lease_extension: Duration,
}

impl Pull {
    /// Pulls on this thread's runtime and hands what arrives to `intake`, until `stop`
    /// is set or the streams end; returns once every message delivered is settled.
    async fn run<P: Open>(
        self,
        intake: Intake<P, Handler>,
        started: tokio::sync::oneshot::Sender<()>,
        stop: Arc<tokio::sync::watch::Sender<bool>>,
    ) -> anyhow::Result<()> {
        let subscriber = self.pubsub.subscriber(self.streams).await?;
        // `MessageStream::next` is not cancel-safe, so one task owns each stream and
        // hands messages over a channel, which the intake can take from safely.
        let (deliveries, received) = tokio::sync::mpsc::channel(1024);
        let mut stop_streams = Vec::with_capacity(self.streams);
        let mut pullers = JoinSet::new();
        for _ in 0..self.streams {
            let mut stream = subscriber
                .subscribe(&self.subscription)
                .set_max_outstanding_messages(self.per_stream)
                .set_max_outstanding_bytes(1 << 30)
                .set_max_lease_extension(self.lease_extension)
                .set_max_lease(Duration::from_secs(3600))
                .build();
            stop_streams.push(stream.shutdown_token());
            let deliveries = deliveries.clone();
            pullers.spawn(async move {
                while let Some(delivery) = stream.next().await {
                    if deliveries.send(delivery.map_err(anyhow::Error::from)).await.is_err() {
                        break;
                    }
                }
            });
        }
        drop(deliveries);
        let _ = started.send(());
        let done = Arc::new(tokio::sync::Notify::new());
        let stopper = tokio::spawn({
            let done = done.clone();
            let mut stopped = stop.subscribe();
            async move {
                tokio::select! {
                    _ = stopped.wait_for(|stop| *stop) => {}
                    () = done.notified() => {}
                }
                futures_util::future::join_all(stop_streams.iter().map(ShutdownToken::shutdown)).await;
            }
        });
        let taken = intake.run(received).await;
        // A stream that failed stops every worker now, rather than once this one's
        // messages are acked (which can take a window).
        if taken.is_err() {
            stop.send_replace(true);
        }
        // Whether it ended by shutdown or not, stop the streams; this completes once
        // each message they still held is acked or nacked, by the emitter on another
        // thread, so this runtime lives until then.
        done.notify_one();
        stopper.await?;
        while let Some(puller) = pullers.join_next().await {
            puller?;
        }
        taken
    }
}

/// The pipeline's core on one runtime: opens and counts what `deliveries` brings on as
/// many tasks at once as `settings` allows, publishes each ready pane to `output` and
/// each message that can never open to `dead_letter`, and acks each message once its
/// result is published. Returns once `deliveries` has ended and everything it brought
/// is settled. [`run`] splits the same core over a runtime per worker.
pub async fn process<A: Ack, O: Output, P: Open>(
    deliveries: tokio::sync::mpsc::Receiver<Delivery<A>>,
    output: O,
    dead_letter: O,
    opener: Arc<P>,
    settings: Settings,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Summary> {
    let (intake, emitter) = core(opener, &settings, metrics);
    let taken = tokio::spawn(intake.run(deliveries));
    let summary = emitter.run(output, dead_letter).await;
    taken.await??;
    summary
}

/// The pipeline's core, in two parts: one [`Intake`] per worker, which opens and counts,
/// and one [`Emitter`], which publishes what they counted and acks it. They share the
/// opener and the windows, so that copies of a message meet wherever they arrive.
pub fn core<A: Ack, P: Open>(
    opener: Arc<P>,
    settings: &Settings,
    metrics: Arc<Metrics>,
) -> (Intake<P, A>, Emitter<P, A>) {
    let (dead_letters, rejected) = tokio::sync::mpsc::unbounded_channel();
    let (alive, ended) = tokio::sync::mpsc::channel(1);
    let shared = Arc::new(Shared {
        opener,
        windows: Windows::new(settings.window, GRACE, SETTLE, settings.workers),
        metrics,
        tally: Tally::default(),
        dead_letters,
        first_received: OnceLock::new(),
    });
    // Bounded so that taking every permit back at the end is one `acquire_many` (u32).
    let max_in_flight = settings.max_in_flight.clamp(1, u32::MAX as usize).min(tokio::sync::Semaphore::MAX_PERMITS);
    let intake = Intake { shared: shared.clone(), max_in_flight, _alive: alive };
    let emitter = Emitter { shared, rejected, ended, replica: settings.replica.clone() };
    (intake, emitter)
}

/// Opens and counts one worker's deliveries; clone it for each worker.
pub struct Intake<P, A> {
    shared: Arc<Shared<P, A>>,
    max_in_flight: usize,
    /// Dropped when the intake ends: the emitter flushes once every clone has.
    _alive: tokio::sync::mpsc::Sender<()>,
}

impl<P, A> Clone for Intake<P, A> {
    fn clone(&self) -> Self {
        Self { shared: self.shared.clone(), max_in_flight: self.max_in_flight, _alive: self._alive.clone() }
    }
}

impl<P: Open, A: Ack> Intake<P, A> {
    /// Opens and counts what `deliveries` brings, on tasks of the current runtime, until
    /// it ends; returns once each message it brought is counted, dead-lettered or set to
    /// be retried. A failed delivery stream ends it with that error, once the messages
    /// already taken are settled.
    pub async fn run(self, mut deliveries: tokio::sync::mpsc::Receiver<Delivery<A>>) -> anyhow::Result<()> {
        // This loop is the one part of a worker that every message passes in turn, so it
        // does as little per message as it can: take a permit, take a delivery, spawn.
        // The tasks tally their own outcomes. Permits are the worker's own, so that
        // they never move between cores.
        let worker =
            Arc::new(Worker { shared: self.shared.clone(), permits: tokio::sync::Semaphore::new(self.max_in_flight) });
        let mut failed = None;
        loop {
            let permit = worker.permits.acquire().await.expect("the semaphore is never closed");
            let first = match deliveries.recv().await {
                None => break,
                Some(Err(error)) => {
                    failed = Some(error);
                    break;
                }
                Some(Ok(first)) => first,
            };
            self.shared.first_received.get_or_init(Instant::now);
            permit.forget();
            let mut batch = Vec::with_capacity(BATCH);
            batch.push(first);
            // Whatever else is already delivered goes into the same batch: a trip around
            // this loop per message cost more than the work it hands out.
            let mut input_ended = false;
            while batch.len() < BATCH {
                let Ok(more) = worker.permits.try_acquire() else { break };
                match deliveries.try_recv() {
                    Ok(Ok(delivery)) => {
                        more.forget();
                        batch.push(delivery);
                    }
                    Ok(Err(error)) => {
                        failed = Some(error);
                        input_ended = true;
                        break;
                    }
                    Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                    Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                        input_ended = true;
                        break;
                    }
                }
            }
            // Once a turn, not once a message: the gauge is one more cache line that
            // every worker would otherwise pass around.
            self.shared.metrics.received(batch.len());
            // A task per batch, not per message: a batch is opened and counted on one
            // thread, and a message waiting on the KMS holds up no other (see
            // `open_and_count`). The permits taken above come back through `InFlight`.
            let in_flight = InFlight { worker: worker.clone(), permits: batch.len() };
            tokio::spawn(open_and_count(in_flight, batch));
            if input_ended {
                break;
            }
        }
        // Every task done: each returns its permits last.
        let all = u32::try_from(self.max_in_flight).expect("clamped to u32 above");
        let _all = worker.permits.acquire_many(all).await.expect("the semaphore is never closed");
        failed.map_or(Ok(()), Err)
    }
}

/// Publishes what the intakes counted, and acks it.
pub struct Emitter<P, A> {
    shared: Arc<Shared<P, A>>,
    rejected: tokio::sync::mpsc::UnboundedReceiver<DeadLetter<A>>,
    /// Ends once every intake has.
    ended: tokio::sync::mpsc::Receiver<()>,
    replica: String,
}

impl<P: Open, A: Ack> Emitter<P, A> {
    /// Publishes each ready pane to `output` and each dead letter to `dead_letter`, and
    /// acks their messages once published, until every intake has ended; then flushes
    /// the open panes the same way and sums up.
    pub async fn run<O: Output, D: Output>(mut self, output: O, dead_letter: D) -> anyhow::Result<Summary> {
        let shared = self.shared.clone();
        let metrics = &shared.metrics;
        let mut summary = Summary::default();
        let mut publishing = JoinSet::new();
        let mut tick = tokio::time::interval(TICK);
        let mut last_settled = None;
        let publish_dead_letters = |publishing: &mut JoinSet<bool>, summary: &mut Summary, (message, ack, reason)| {
            *summary.dead_lettered.entry(String::from(reason)).or_default() += 1;
            metrics.message("dead_lettered", reason);
            publishing.spawn(publish_dead_letter(dead_letter.clone(), message, ack, metrics.clone()));
        };
        loop {
            tokio::select! {
                Some(dead) = self.rejected.recv() => publish_dead_letters(&mut publishing, &mut summary, dead),
                _ = tick.tick() => {
                    for pane in shared.windows.take_ready(SystemTime::now()) {
                        summary.panes += 1;
                        publishing.spawn(publish_pane(output.clone(), pane, self.replica.clone(), metrics.clone()));
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
            publish_dead_letters(&mut publishing, &mut summary, dead);
        }
        tracing::info!(held = shared.windows.held(), "input ended: flushing open windows");
        for pane in shared.windows.take_all() {
            summary.panes += 1;
            publishing.spawn(publish_pane(output.clone(), pane, self.replica.clone(), metrics.clone()));
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

/// What every worker and the emitter share.
struct Shared<P, A> {
    opener: Arc<P>,
    windows: Windows<A>,
    metrics: Arc<Metrics>,
    tally: Tally,
    dead_letters: tokio::sync::mpsc::UnboundedSender<DeadLetter<A>>,
    first_received: OnceLock<Instant>,
}

/// One worker's part, behind one `Arc` that only its thread touches: a batch's task
/// costs one reference count, on the cache of the core it runs on.
struct Worker<P, A> {
    shared: Arc<Shared<P, A>>,
    /// Messages in flight on this worker, at most `Settings::max_in_flight`.
    permits: tokio::sync::Semaphore,
}

/// A batch's task's hold on its [`Worker`], and the permits of its messages not yet
/// settled: given back as they settle, and the rest when the task ends, even by a
/// panic, so that the intake's final `acquire_many` cannot hang.
struct InFlight<P, A> {
    worker: Arc<Worker<P, A>>,
    permits: usize,
}

impl<P, A> InFlight<P, A> {
    /// `messages` of the batch are settled and tallied.
    fn give_back(&mut self, messages: usize) {
        debug_assert!(messages <= self.permits);
        self.permits -= messages;
        self.worker.permits.add_permits(messages);
    }
}

impl<P, A> Drop for InFlight<P, A> {
    fn drop(&mut self) {
        self.worker.permits.add_permits(self.permits);
    }
}

/// Opens and counts a batch on one thread. Each message is polled once in turn, which
/// is all that one under a cached key needs; one that must wait (a KMS call for its key)
/// then waits beside the others in `waiting`, so it holds up none of them. The batch's
/// tallies and permits go back once for all that settled at once, then one by one.
async fn open_and_count<P: Open, A: Ack>(mut in_flight: InFlight<P, A>, batch: Vec<(Message, A)>) {
    let worker = in_flight.worker.clone();
    let shared = &worker.shared;
    let one = |(message, ack)| Box::pin(handle(shared.opener.as_ref(), &shared.windows, message, ack, &shared.metrics));
    let mut waiting = futures_util::stream::FuturesUnordered::new();
    let mut counted = 0;
    for delivery in batch {
        let mut message = one(delivery);
        match futures_util::poll!(message.as_mut()) {
            std::task::Poll::Ready(outcome) => counted += u64::from(shared.record(outcome)),
            std::task::Poll::Pending => waiting.push(message),
        }
    }
    shared.counted(counted);
    in_flight.give_back(in_flight.permits - waiting.len());
    while let Some(outcome) = waiting.next().await {
        shared.counted(u64::from(shared.record(outcome)));
        in_flight.give_back(1);
    }
}

#[allow(clippy::large_enum_variant)] // one per message, never stored
enum Outcome<A> {
    Counted,
    Duplicate,
    DeadLetter(Message, A, &'static str),
    Retry(&'static str),
}

/// A message to dead-letter, its ack, and why.
type DeadLetter<A> = (Message, A, &'static str);

/// Outcomes, tallied by the tasks themselves (see [`Shared::record`]).
#[derive(Default)]
struct Tally {
    counted: AtomicU64,
    duplicates: AtomicU64,
    retried: AtomicU64,
}

impl<P, A> Shared<P, A> {
    /// Tallies `outcome`, but for a count: whether it was one is returned, for
    /// [`counted`](Self::counted) to add up once a batch. A dead letter is handed over
    /// to be published.
    fn record(&self, outcome: Outcome<A>) -> bool {
        let (counter, label, reason) = match outcome {
            Outcome::Counted => return true,
            Outcome::Duplicate => (&self.tally.duplicates, "duplicate", ""),
            Outcome::Retry(reason) => (&self.tally.retried, "retried", reason),
            Outcome::DeadLetter(message, ack, reason) => {
                // The receiver lives until every permit is back.
                let _ = self.dead_letters.send((message, ack, reason));
                return false;
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.metrics.message(label, reason);
        false
    }

    /// Tallies `messages` counted.
    fn counted(&self, messages: u64) {
        if messages > 0 {
            self.tally.counted.fetch_add(messages, Ordering::Relaxed);
            self.metrics.counted(messages);
        }
    }
}

async fn handle<A: Ack>(
    opener: &impl Open,
    windows: &Windows<A>,
    message: Message,
    ack: A,
    metrics: &Arc<Metrics>,
) -> Outcome<A> {
    let message_id = &message.message_id;
    match opener.open(&message).await {
        Ok(opened) => match std::str::from_utf8(&opened.data) {
            Ok(text) => {
                let published = publish_time(&message);
                match windows.add(published, opened.fingerprint, text, ack, SystemTime::now()) {
                    wordcount::Added::Counted => Outcome::Counted,
                    wordcount::Added::Duplicate => Outcome::Duplicate,
                }
            }
            Err(_) => {
                tracing::warn!(%message_id, reason = "not_utf8", "rejected: data is not UTF-8 text");
                let rejected = dead_letter::copy(&message, "not_utf8", "the opened data is not UTF-8 text");
                Outcome::DeadLetter(rejected, ack, "not_utf8")
            }
        },
        Err(error) if error.is_transient() => {
            tracing::warn!(%message_id, reason = error.reason(), %error, "transient failure, nacking for redelivery");
            // Pub/Sub redelivers a nacked message at once: nacking straight away would
            // turn a KMS outage into a loop of calls as fast as the bus can turn.
            let metrics = metrics.clone();
            tokio::spawn(async move {
                tokio::time::sleep(RETRY_AFTER).await;
                ack.nack();
                metrics.settled(1);
            });
            Outcome::Retry(error.reason())
        }
        Err(error) => {
            tracing::warn!(%message_id, reason = error.reason(), %error, "rejected");
            let rejected = dead_letter::copy(&message, error.reason(), &error.to_string());
            Outcome::DeadLetter(rejected, ack, error.reason())
        }
    }
}

fn publish_time(message: &Message) -> SystemTime {
    message
        .publish_time
        .as_ref()
        .map(|t| UNIX_EPOCH + Duration::new(t.seconds().max(0) as u64, t.nanos().max(0) as u32))
        .unwrap_or_else(SystemTime::now)
}

/// Publishes a dead letter, then acks its message; `false` if it could not be published
/// (the message is nacked instead).
async fn publish_dead_letter<A: Ack>(
    dead_letter: impl Output,
    message: Message,
    ack: A,
    metrics: Arc<Metrics>,
) -> bool {
    let published = match dead_letter.publish(message).await {
        Ok(()) => {
            ack.ack();
            true
        }
        Err(error) => {
            tracing::error!(%error, "could not publish to the dead-letter topic; nacking");
            ack.nack();
            false
        }
    };
    metrics.settled(1);
    published
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

/// Publishes a pane's counts, then acks its messages; `false` if any count could not be
/// published (its messages are nacked, to be counted again).
async fn publish_pane<A: Ack>(output: impl Output, pane: Pane<A>, replica: String, metrics: Arc<Metrics>) -> bool {
    let attributes = HashMap::from([
        (WINDOW_START_ATTR.to_owned(), rfc3339(pane.window.start())),
        (WINDOW_END_ATTR.to_owned(), rfc3339(pane.window.end())),
        (PANE_ATTR.to_owned(), pane.number.to_string()),
        (REPLICA_ATTR.to_owned(), replica),
    ]);
    let sends: Vec<_> = pane
        .counts
        .iter()
        .map(|(word, count)| {
            output.publish(Message::new().set_data(format!("{word}: {count}")).set_attributes(attributes.clone()))
        })
        .collect();
    let failures = futures_util::future::join_all(sends).await.into_iter().filter(Result::is_err).count();
    let start = rfc3339(pane.window.start());
    if failures == 0 {
        tracing::info!(window_start = %start, pane = pane.number, words = pane.counts.len(), messages = pane.holds.len(), "published pane");
        metrics.window_emitted(SystemTime::now().duration_since(pane.window.end()).unwrap_or_default().as_secs_f64());
        metrics.settled(pane.holds.len());
        pane.holds.into_iter().for_each(Ack::ack);
        true
    } else {
        tracing::error!(window_start = %start, pane = pane.number, failures, "could not publish the pane; nacking its messages for a recount");
        metrics.settled(pane.holds.len());
        pane.holds.into_iter().for_each(Ack::nack);
        false
    }
}

//! A worker's intake: opens each delivery and counts its words into the shared
//! windows, or hands it to the emitter as a dead letter, or holds it to be nacked.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use envelope::{OpenError, Opener};
use futures_util::StreamExt as _;
use google_cloud_pubsub::model::Message;
use tokio::sync::{Semaphore, mpsc};
use wordcount::{Fingerprint, Windows};

use crate::dead_letter;
use crate::held::{Ack, Held};
use crate::metrics::{InFlight, Metrics};
use crate::source::Delivery;

/// How long a message that failed for a transient reason is held before it is nacked.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Deliveries taken in one turn of the intake's loop, at most.
const BATCH: usize = 64;

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

/// What every worker and the emitter share.
pub(crate) struct Shared<P, A: Ack> {
    pub(crate) opener: Arc<P>,
    pub(crate) windows: Windows<Held<A>>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) tally: Tally,
    pub(crate) dead_letters: mpsc::UnboundedSender<DeadLetter<A>>,
    pub(crate) first_received: OnceLock<Instant>,
}

/// A message to dead-letter, its delivery, and why.
pub(crate) type DeadLetter<A> = (Message, Held<A>, &'static str);

/// Outcomes, tallied by the tasks themselves (see [`Shared::record`]).
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) counted: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) retried: AtomicU64,
}

/// Opens and counts one worker's deliveries.
pub(crate) struct Intake<P, A: Ack> {
    shared: Arc<Shared<P, A>>,
    max_in_flight: usize,
    /// This worker's messages in flight, on its own cache line.
    in_flight: Arc<InFlight>,
    /// Dropped when the intake ends: the emitter flushes once every intake's has.
    _alive: mpsc::Sender<()>,
}

impl<P: Open, A: Ack> Intake<P, A> {
    pub(crate) fn new(shared: Arc<Shared<P, A>>, max_in_flight: usize, alive: mpsc::Sender<()>) -> Self {
        // Bounded so that taking every permit back at the end is one `acquire_many` (u32).
        let max_in_flight = max_in_flight.clamp(1, u32::MAX as usize).min(Semaphore::MAX_PERMITS);
        let in_flight = shared.metrics.in_flight();
        Self { shared, max_in_flight, in_flight, _alive: alive }
    }

    /// Opens and counts what `deliveries` brings, on tasks of the current runtime, until
    /// it ends; returns once each message it brought is counted, dead-lettered or set to
    /// be retried. A failed delivery ends it with that error, once the messages already
    /// taken are settled.
    pub(crate) async fn run(self, mut deliveries: mpsc::Receiver<Delivery<A>>) -> anyhow::Result<()> {
        // This loop is the one part of a worker that every message passes in turn, so it
        // does as little per message as it can: take a permit, take a delivery, spawn.
        // The tasks tally their own outcomes. Permits are the worker's own, so that
        // they never move between cores.
        let worker = Arc::new(Worker { shared: self.shared.clone(), permits: Semaphore::new(self.max_in_flight) });
        let hold = |(message, ack)| (message, Held::new(ack, self.in_flight.clone()));
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
            batch.push(hold(first));
            // Whatever else is already delivered goes into the same batch: a trip around
            // this loop per message cost more than the work it hands out.
            let mut input_ended = false;
            while batch.len() < BATCH {
                let Ok(more) = worker.permits.try_acquire() else { break };
                match deliveries.try_recv() {
                    Ok(Ok(delivery)) => {
                        more.forget();
                        batch.push(hold(delivery));
                    }
                    Ok(Err(error)) => {
                        failed = Some(error);
                        input_ended = true;
                        break;
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        input_ended = true;
                        break;
                    }
                }
            }
            // A task per batch, not per message: a batch is opened and counted on one
            // thread, and a message waiting on the KMS holds up no other (see
            // `open_and_count`). The permits taken above come back through `Permits`.
            let permits = Permits { worker: worker.clone(), held: batch.len() };
            tokio::spawn(open_and_count(permits, batch));
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

/// One worker's part, behind one `Arc` that only its thread touches: a batch's task
/// costs one reference count, on the cache of the core it runs on.
struct Worker<P, A: Ack> {
    shared: Arc<Shared<P, A>>,
    /// Messages being opened and counted on this worker, at most `max_in_flight`.
    permits: Semaphore,
}

/// A batch's task's hold on its [`Worker`], and the permits of its messages not yet
/// counted or handed on: given back as they are, and the rest when the task ends, even
/// by a panic, so that the intake's final `acquire_many` cannot hang.
struct Permits<P, A: Ack> {
    worker: Arc<Worker<P, A>>,
    held: usize,
}

impl<P, A: Ack> Permits<P, A> {
    fn give_back(&mut self, messages: usize) {
        debug_assert!(messages <= self.held);
        self.held -= messages;
        self.worker.permits.add_permits(messages);
    }
}

impl<P, A: Ack> Drop for Permits<P, A> {
    fn drop(&mut self) {
        self.worker.permits.add_permits(self.held);
    }
}

/// Opens and counts a batch on one thread. Each message is polled once in turn, which
/// is all that one under a cached key needs; one that must wait (a KMS call for its key)
/// then waits beside the others in `waiting`, so it holds up none of them. The batch's
/// tallies and permits go back once for all that finished at once, then one by one.
async fn open_and_count<P: Open, A: Ack>(mut permits: Permits<P, A>, batch: Vec<(Message, Held<A>)>) {
    let worker = permits.worker.clone();
    let shared = &worker.shared;
    let one = |(message, held)| Box::pin(handle(shared.opener.as_ref(), &shared.windows, message, held));
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
    permits.give_back(permits.held - waiting.len());
    while let Some(outcome) = waiting.next().await {
        shared.counted(u64::from(shared.record(outcome)));
        permits.give_back(1);
    }
}

#[allow(clippy::large_enum_variant)] // one per message, never stored
pub(crate) enum Outcome<A: Ack> {
    /// Counted into its window, where its delivery is held until the pane is published.
    Counted,
    /// A copy of a message counted in the same pane: held there too, not counted.
    Duplicate,
    /// Can never open: for the dead-letter topic.
    DeadLetter(Message, Held<A>, &'static str),
    /// Failed for a transient reason: nacked after [`RETRY_AFTER`].
    Retry(&'static str),
}

impl<P, A: Ack> Shared<P, A> {
    /// Tallies `outcome`, but for a count: whether it was one is returned, for
    /// [`counted`](Self::counted) to add up once a batch. A dead letter is handed over
    /// to be published.
    fn record(&self, outcome: Outcome<A>) -> bool {
        let (counter, label, reason) = match outcome {
            Outcome::Counted => return true,
            Outcome::Duplicate => (&self.tally.duplicates, "duplicate", ""),
            Outcome::Retry(reason) => (&self.tally.retried, "retried", reason),
            Outcome::DeadLetter(message, held, reason) => {
                // The emitter takes dead letters until every intake has ended.
                let _ = self.dead_letters.send((message, held, reason));
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

async fn handle<A: Ack>(opener: &impl Open, windows: &Windows<Held<A>>, message: Message, held: Held<A>) -> Outcome<A> {
    let message_id = &message.message_id;
    match opener.open(&message).await {
        Ok(opened) => match std::str::from_utf8(&opened.data) {
            Ok(text) => match windows.add(publish_time(&message), opened.fingerprint, text, held, SystemTime::now()) {
                wordcount::Added::Counted => Outcome::Counted,
                wordcount::Added::Duplicate => Outcome::Duplicate,
            },
            Err(_) => {
                tracing::warn!(%message_id, reason = "not_utf8", "rejected: data is not UTF-8 text");
                let rejected = dead_letter::copy(&message, "not_utf8", "the opened data is not UTF-8 text");
                Outcome::DeadLetter(rejected, held, "not_utf8")
            }
        },
        Err(error) if error.is_transient() => {
            tracing::warn!(%message_id, reason = error.reason(), %error, "transient failure, nacking for redelivery");
            // Pub/Sub redelivers a nacked message at once: nacking straight away would
            // turn a KMS outage into a loop of calls as fast as the bus can turn.
            tokio::spawn(async move {
                tokio::time::sleep(RETRY_AFTER).await;
                held.nack();
            });
            Outcome::Retry(error.reason())
        }
        Err(error) => {
            tracing::warn!(%message_id, reason = error.reason(), %error, "rejected");
            let rejected = dead_letter::copy(&message, error.reason(), &error.to_string());
            Outcome::DeadLetter(rejected, held, error.reason())
        }
    }
}

/// When Pub/Sub received the message: what its window is chosen by.
fn publish_time(message: &Message) -> SystemTime {
    message
        .publish_time
        .as_ref()
        .map(|t| UNIX_EPOCH + Duration::new(t.seconds().max(0) as u64, t.nanos().max(0) as u32))
        .unwrap_or_else(SystemTime::now)
}

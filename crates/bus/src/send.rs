//! Publishing many messages: paced, with a bounded number in flight, each result
//! reported as it arrives, failures counted, and a Pub/Sub that stopped answering named
//! once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use google_cloud_pubsub::client::Publisher;
use google_cloud_pubsub::error::PublishError;
use google_cloud_pubsub::model::Message;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Interval;

/// How long one publish may take, the client's own retries included, before it counts
/// as failed: an unreachable Pub/Sub fails the run instead of hanging it.
pub const PUBLISH_DEADLINE: Duration = Duration::from_secs(60);

/// How long a publish may go unanswered before the run says Pub/Sub is not answering:
/// well before [`PUBLISH_DEADLINE`], so that a user whose emulator died hears of it in
/// seconds, not a minute later from a wall of identical errors.
pub const QUIET_WARNING: Duration = Duration::from_secs(10);

/// Why a message was not published.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Pub/Sub refused it, or the client gave up.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// No answer within [`PUBLISH_DEADLINE`].
    #[error("no answer from Pub/Sub within {} s", PUBLISH_DEADLINE.as_secs())]
    Deadline,
}

/// Publishes outstanding at most: enough to fill the client's batches, bounded so that
/// a fast source cannot grow memory without end.
const MAX_IN_FLIGHT: usize = 10_000;

/// What a publish task tells the reporter.
enum Event {
    /// Its result.
    Done(Result<String, SendError>),
    /// It has waited [`QUIET_WARNING`] without an answer.
    Quiet,
}

/// Sends messages through one [`Publisher`] and reports each result as it arrives.
///
/// The Google client batches behind [`Publisher::publish`]; this paces the caller,
/// bounds how many results are awaited at once, and hands each result to the caller's
/// `on_result` on a task of its own, so that message ids and progress appear as Pub/Sub
/// acknowledges them, whatever the input is doing.
pub struct Sender {
    publisher: Publisher,
    pacing: Option<Interval>,
    room: Arc<Semaphore>,
    events: mpsc::UnboundedSender<Event>,
    reporter: JoinHandle<()>,
    queued: u64,
    failed: Arc<AtomicU64>,
}

impl Sender {
    /// Sends through `publisher`, at most `rate` messages per second when given, calling
    /// `on_result` with `Some` of each message id or failure as it arrives, and `None`
    /// whenever no further result is waiting (the moment to flush what was written). A
    /// failure is also logged, but not every one of a run of the same error: the first,
    /// then at most one a [`QUIET_WARNING`], each with the count so far.
    pub fn new<F>(publisher: Publisher, rate: Option<f64>, on_result: F) -> Self
    where
        F: FnMut(Option<Result<String, SendError>>) + Send + 'static,
    {
        // The flags allow at least 0.001 msg/s; a period past that is not a useful pace.
        let pacing = rate.map(|rate| tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1e-3))));
        let (events, received) = mpsc::unbounded_channel();
        let failed = Arc::new(AtomicU64::new(0));
        let reporter = tokio::spawn(report(received, on_result, failed.clone()));
        Self { publisher, pacing, room: Arc::new(Semaphore::new(MAX_IN_FLIGHT)), events, reporter, queued: 0, failed }
    }

    /// Queues `message`, first waiting for its turn under the rate and for room in flight.
    pub async fn send(&mut self, message: Message) {
        if let Some(pacing) = &mut self.pacing {
            pacing.tick().await;
        }
        let permit = self.room.clone().acquire_owned().await.expect("the semaphore is never closed");
        let publish = self.publisher.publish(message);
        let events = self.events.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::sleep(PUBLISH_DEADLINE);
            tokio::pin!(publish, deadline);
            let quiet = tokio::time::sleep(QUIET_WARNING);
            tokio::pin!(quiet);
            let mut warned = false;
            let result = loop {
                tokio::select! {
                    result = &mut publish => break result.map_err(SendError::from),
                    () = &mut deadline => break Err(SendError::Deadline),
                    () = &mut quiet, if !warned => {
                        warned = true;
                        let _ = events.send(Event::Quiet);
                    }
                }
            };
            // The reporter goes on until every sender is gone, so this is read.
            let _ = events.send(Event::Done(result));
            drop(permit);
        });
        self.queued += 1;
    }

    /// Messages handed to the publisher so far.
    pub fn queued(&self) -> u64 {
        self.queued
    }

    /// Messages still awaiting their result.
    pub fn in_flight(&self) -> usize {
        MAX_IN_FLIGHT - self.room.available_permits()
    }

    /// Waits for every queued message and its report; returns how many could not be
    /// published.
    pub async fn finish(self) -> u64 {
        let Self { events, reporter, failed, .. } = self;
        // Each publish task holds a sender: the reporter ends once the last is done.
        drop(events);
        if let Err(error) = reporter.await {
            tracing::error!(%error, "the publish reporter failed");
        }
        failed.load(Ordering::Relaxed)
    }
}

/// Hands each result to `on_result` as it arrives; says once that Pub/Sub is not
/// answering (again after it answers and goes quiet again); logs failures without
/// repeating one error a thousand times.
async fn report<F>(mut events: mpsc::UnboundedReceiver<Event>, mut on_result: F, failed: Arc<AtomicU64>)
where
    F: FnMut(Option<Result<String, SendError>>),
{
    let mut said_quiet = false;
    let mut last_logged: Option<(String, tokio::time::Instant)> = None;
    while let Some(event) = events.recv().await {
        match event {
            Event::Quiet if !said_quiet => {
                said_quiet = true;
                let emulator = std::env::var("PUBSUB_EMULATOR_HOST").ok().filter(|host| !host.is_empty());
                let fix = match &emulator {
                    Some(host) => format!(
                        "is the emulator at {host} still running? (`eval \"$(scripts/emulator.sh start)\"` starts one)"
                    ),
                    None => "check the network and the credentials' access to the topic".to_owned(),
                };
                tracing::warn!(
                    "Pub/Sub has not acknowledged a publish for {} s: {fix}. Each message waits up to {} s, then \
                     counts as failed",
                    QUIET_WARNING.as_secs(),
                    PUBLISH_DEADLINE.as_secs()
                );
            }
            Event::Quiet => {}
            Event::Done(result) => {
                match &result {
                    Ok(_) => said_quiet = false,
                    Err(error) => {
                        let so_far = failed.fetch_add(1, Ordering::Relaxed) + 1;
                        let text = error.to_string();
                        let now = tokio::time::Instant::now();
                        let repeat = last_logged
                            .as_ref()
                            .is_some_and(|(last, at)| *last == text && now.duration_since(*at) < QUIET_WARNING);
                        if !repeat {
                            tracing::error!(%error, failed_so_far = so_far, "publish failed");
                            last_logged = Some((text, now));
                        }
                    }
                }
                on_result(Some(result));
                if events.is_empty() {
                    on_result(None);
                }
            }
        }
    }
}

//! Publishing many messages: paced, with a bounded number in flight, failures counted.

use std::time::Duration;

use google_cloud_pubsub::client::Publisher;
use google_cloud_pubsub::error::PublishError;
use google_cloud_pubsub::model::Message;
use tokio::task::JoinSet;
use tokio::time::Interval;

/// How long one publish may take, the client's own retries included, before it counts
/// as failed: an unreachable Pub/Sub fails the run instead of hanging it.
pub const PUBLISH_DEADLINE: Duration = Duration::from_secs(60);

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

/// Sends messages through one [`Publisher`] and reports each result.
///
/// The Google client batches behind [`Publisher::publish`]; this only paces the caller
/// and bounds how many results are awaited at once.
pub struct Sender<F> {
    publisher: Publisher,
    pacing: Option<Interval>,
    in_flight: JoinSet<Result<String, SendError>>,
    on_result: F,
    queued: u64,
    failed: u64,
}

impl<F: FnMut(Result<String, SendError>)> Sender<F> {
    /// Sends through `publisher`, at most `rate` messages per second when given, calling
    /// `on_result` with each message id or failure as it arrives.
    pub fn new(publisher: Publisher, rate: Option<f64>, on_result: F) -> Self {
        // The flags allow at least 0.001 msg/s; a period past that is not a useful pace.
        let pacing = rate.map(|rate| tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1e-3))));
        Self { publisher, pacing, in_flight: JoinSet::new(), on_result, queued: 0, failed: 0 }
    }

    /// Queues `message`, first waiting for its turn under the rate and for room in flight.
    pub async fn send(&mut self, message: Message) {
        if let Some(pacing) = &mut self.pacing {
            pacing.tick().await;
        }
        let publish = self.publisher.publish(message);
        self.in_flight.spawn(async move {
            match tokio::time::timeout(PUBLISH_DEADLINE, publish).await {
                Ok(result) => result.map_err(SendError::from),
                Err(_) => Err(SendError::Deadline),
            }
        });
        self.queued += 1;
        while self.in_flight.len() >= MAX_IN_FLIGHT {
            self.settle_one().await;
        }
    }

    /// Messages handed to the publisher so far.
    pub fn queued(&self) -> u64 {
        self.queued
    }

    /// Messages still awaiting their result.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Waits for every queued message; returns how many could not be published.
    pub async fn finish(mut self) -> u64 {
        while !self.in_flight.is_empty() {
            self.settle_one().await;
        }
        self.failed
    }

    async fn settle_one(&mut self) {
        let result = match self.in_flight.join_next().await {
            Some(Ok(result)) => result,
            Some(Err(error)) => {
                tracing::error!(%error, "publish task failed");
                self.failed += 1;
                return;
            }
            None => return,
        };
        self.failed += u64::from(result.is_err());
        (self.on_result)(result);
    }
}

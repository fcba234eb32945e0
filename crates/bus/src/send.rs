//! Publishing many messages: paced, with a bounded number in flight, failures counted.

use std::time::Duration;

use google_cloud_pubsub::client::Publisher;
use google_cloud_pubsub::error::PublishError;
use google_cloud_pubsub::model::Message;
use tokio::task::JoinSet;
use tokio::time::Interval;

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
    in_flight: JoinSet<Result<String, PublishError>>,
    on_result: F,
    failed: u64,
}

impl<F: FnMut(Result<String, PublishError>)> Sender<F> {
    /// Sends through `publisher`, at most `rate` messages per second when given, calling
    /// `on_result` with each message id or failure as it arrives.
    pub fn new(publisher: Publisher, rate: Option<f64>, on_result: F) -> Self {
        let pacing = rate.map(|rate| tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1e-3))));
        Self { publisher, pacing, in_flight: JoinSet::new(), on_result, failed: 0 }
    }

    /// Queues `message`, first waiting for its turn under the rate and for room in flight.
    pub async fn send(&mut self, message: Message) {
        if let Some(pacing) = &mut self.pacing {
            pacing.tick().await;
        }
        self.in_flight.spawn(self.publisher.publish(message));
        while self.in_flight.len() >= MAX_IN_FLIGHT {
            self.settle_one().await;
        }
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

//! Where a worker's deliveries come from: Pub/Sub streaming pulls in the product
//! ([`PubSubSource`]), memory in the benchmark and tests; each worker runs one on its
//! own thread.

use std::future::Future;
use std::time::Duration;

use google_cloud_pubsub::model::Message;
use google_cloud_pubsub::subscriber::ShutdownToken;
use google_cloud_pubsub::subscriber::handler::Handler;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::held::Ack;

/// One message as the source delivered it, with its acknowledgement; or why the source
/// failed (which ends the run, once what was delivered is settled).
pub type Delivery<A> = anyhow::Result<(Message, A)>;

/// One worker's source of deliveries. [`run`](crate::run) calls
/// [`deliver`](Self::deliver) on the worker's thread, beside the worker's intake.
pub trait Source: Send + 'static {
    /// The acknowledgement each delivery carries.
    type Ack: Ack;

    /// Delivers into `feed` until the source is exhausted or the stop signal
    /// ([`Feed::into_stop`]) turns true, dropping every sender of the feed then (the worker's intake ends once
    /// they are gone); returns once each message it delivered is settled, if its acks
    /// need that wait.
    fn deliver(self, feed: Feed<Self::Ack>) -> impl Future<Output = anyhow::Result<()>> + Send + 'static;
}

/// What a [`Source`] delivers into, and how it learns to stop.
pub struct Feed<A> {
    deliveries: mpsc::Sender<Delivery<A>>,
    started: Option<oneshot::Sender<()>>,
    stop: watch::Receiver<bool>,
}

impl<A> Feed<A> {
    pub(crate) fn new(
        deliveries: mpsc::Sender<Delivery<A>>,
        started: oneshot::Sender<()>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        Self { deliveries, started: Some(started), stop }
    }

    /// Says that the source is delivering: the pipeline is ready once every worker's
    /// source is. A source that ends without saying so makes none ready.
    pub fn started(&mut self) {
        if let Some(started) = self.started.take() {
            let _ = started.send(());
        }
    }

    /// Delivers one message, or a failure; `false` once the intake has stopped taking.
    pub async fn send(&self, delivery: Delivery<A>) -> bool {
        self.deliveries.send(delivery).await.is_ok()
    }

    /// Another sender into the feed, for tasks of the source's own.
    pub fn sender(&self) -> mpsc::Sender<Delivery<A>> {
        self.deliveries.clone()
    }

    /// Splits the feed: the senders go (only the tasks' own clones remain), the stop
    /// signal stays; it turns true once the pipeline stops (a shutdown, or another
    /// worker failed).
    pub fn into_stop(self) -> watch::Receiver<bool> {
        self.stop
    }
}

/// A worker's streaming pulls on one Pub/Sub subscription.
pub struct PubSubSource {
    pubsub: bus::PubSub,
    subscription: String,
    streams: usize,
    /// Messages each stream holds unacknowledged at most.
    per_stream: i64,
    lease_extension: Duration,
}

impl PubSubSource {
    /// One source per worker on `subscription`: `streams` streaming pulls (at least one
    /// per worker) shared out between them, holding `max_outstanding_messages` at most
    /// in all, each lease extended by `lease_extension` at a time.
    pub fn per_worker(
        pubsub: &bus::PubSub,
        subscription: &str,
        workers: usize,
        streams: usize,
        max_outstanding_messages: i64,
        lease_extension: Duration,
    ) -> Vec<Self> {
        let workers = workers.max(1);
        // Every worker pulls for itself, so each needs a stream at least.
        let streams = streams.max(workers);
        let per_stream = (max_outstanding_messages + streams as i64 - 1) / streams as i64;
        (0..workers)
            .map(|worker| Self {
                pubsub: pubsub.clone(),
                subscription: subscription.to_owned(),
                streams: streams / workers + usize::from(worker < streams % workers),
                per_stream,
                lease_extension,
            })
            .collect()
    }
}

impl Source for PubSubSource {
    type Ack = Handler;

    /// Pulls until stopped or the streams end, then stops the streams: that completes
    /// once each message they delivered is acked or nacked (by the emitter, on another
    /// thread), so the worker's runtime lives until then.
    async fn deliver(self, mut feed: Feed<Handler>) -> anyhow::Result<()> {
        let subscriber = self.pubsub.subscriber(self.streams).await?;
        // `MessageStream::next` is not cancel-safe, so one task owns each stream and
        // hands messages over the feed's channel, which the intake takes from safely.
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
            let deliveries = feed.sender();
            let subscription = self.subscription.clone();
            pullers.spawn(async move {
                while let Some(delivery) = stream.next().await {
                    let delivery = delivery.map_err(|error| {
                        anyhow::Error::from(error).context(format!("streaming pull from {subscription}"))
                    });
                    if deliveries.send(delivery).await.is_err() {
                        break;
                    }
                }
            });
        }
        feed.started();
        let mut stop = feed.into_stop();
        // Stopped, or every stream ended by itself (a failure the intake has seen).
        let mut ended = Vec::new();
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => {}
            () = async { while let Some(puller) = pullers.join_next().await { ended.push(puller) } } => {}
        }
        futures_util::future::join_all(stop_streams.iter().map(ShutdownToken::shutdown)).await;
        for puller in ended {
            puller?;
        }
        while let Some(puller) = pullers.join_next().await {
            puller?;
        }
        Ok(())
    }
}

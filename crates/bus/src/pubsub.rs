//! Pub/Sub clients, configured once for the emulator or for Google Cloud.

use std::time::Duration;

use anyhow::Context as _;
use google_cloud_auth::credentials::{Credentials, anonymous};
use google_cloud_gax::error::rpc::Code;
use google_cloud_gax::options::RequestOptionsBuilder;
use google_cloud_gax::retry_policy::NeverRetry;
use google_cloud_pubsub::client::{Publisher, Subscriber, SubscriptionAdmin, TopicAdmin};
use google_cloud_pubsub::model::Message;
use google_cloud_pubsub::subscriber::handler::Handler;

use crate::credentials::{self, OFFLINE_PUBSUB, Origin};

/// `next`'s output, or `None` if `idle` passes first (saying so): how a reader told to
/// stop once nothing arrives (`debug-subscriber --idle_exit_secs`) waits for each
/// message. Without `idle`, `next`'s output.
pub async fn unless_idle<T>(idle: Option<Duration>, next: impl Future<Output = T>) -> Option<T> {
    let Some(idle) = idle else { return Some(next.await) };
    let next = tokio::time::timeout(idle, next).await.ok();
    if next.is_none() {
        tracing::info!("nothing arrived for {} s: stopping", idle.as_secs());
    }
    next
}

/// What one answer to a start-up probe or a readiness check says about Pub/Sub: both
/// read it here, so that they agree.
enum Reply {
    /// Pub/Sub answered: with the resource, or with a refusal to describe it (the
    /// publisher and subscriber roles may not), which only a Pub/Sub that answers gives.
    Answers,
    /// The topic or subscription does not exist.
    Missing,
    /// The credentials were refused.
    Unauthenticated(google_cloud_gax::error::Error),
    /// No answer: unreachable, unavailable, or any other failure, which may pass.
    Silent(google_cloud_gax::error::Error),
}

impl Reply {
    fn of(reply: Result<(), google_cloud_gax::error::Error>) -> Self {
        let Err(error) = reply else { return Reply::Answers };
        match error.status().map(|status| status.code) {
            Some(Code::PermissionDenied) => Reply::Answers,
            Some(Code::NotFound) => Reply::Missing,
            Some(Code::Unauthenticated) => Reply::Unauthenticated(error),
            _ if error.is_authentication() => Reply::Unauthenticated(error),
            _ => Reply::Silent(error),
        }
    }
}

/// Where clients connect, and with which credentials.
#[derive(Clone)]
pub struct PubSub {
    /// `http://host:port` when talking to the emulator.
    emulator: Option<String>,
    credentials: Credentials,
    /// Where `credentials` came from, to say why they failed.
    origin: Origin,
}

impl PubSub {
    /// The emulator when `PUBSUB_EMULATOR_HOST` is set (anonymous, as Google's clients
    /// do); otherwise Google Cloud with the credentials of `source`, asked for only then.
    pub fn from_env(source: &impl credentials::Source) -> anyhow::Result<Self> {
        match std::env::var("PUBSUB_EMULATOR_HOST").ok().filter(|host| !host.is_empty()) {
            Some(host) => Ok(Self::emulator(&host)),
            None => Ok(Self { emulator: None, credentials: source.credentials()?, origin: source.origin() }),
        }
    }

    /// Clients for the emulator at `host:port`.
    pub fn emulator(host: &str) -> Self {
        Self {
            emulator: Some(format!("http://{host}")),
            credentials: anonymous::Builder::new().build(),
            origin: Origin::ApplicationDefault,
        }
    }

    /// A batching publisher for `topic`.
    pub async fn publisher(&self, topic: &str) -> anyhow::Result<Publisher> {
        let mut builder = Publisher::builder(topic).with_credentials(self.credentials.clone());
        if let Some(endpoint) = &self.emulator {
            builder = builder.with_endpoint(endpoint);
        }
        builder.build().await.with_context(|| format!("cannot build a publisher for {topic}"))
    }

    /// A subscriber client; `streams` gRPC channels back its streaming pulls.
    pub async fn subscriber(&self, streams: usize) -> anyhow::Result<Subscriber> {
        let mut builder =
            Subscriber::builder().with_credentials(self.credentials.clone()).with_grpc_subchannel_count(streams.max(1));
        if let Some(endpoint) = &self.emulator {
            builder = builder.with_endpoint(endpoint);
        }
        builder.build().await.context("cannot build a subscriber")
    }

    /// Receives from `subscription`, handing each message to `handle`, until `shutdown`
    /// resolves (the binaries pass SIGINT or SIGTERM), nothing arrives for `idle_exit`
    /// (see [`unless_idle`]), or the stream ends; then shuts the stream down so that
    /// pending acks reach Pub/Sub before the process exits.
    pub async fn tail(
        &self,
        subscription: &str,
        shutdown: impl Future<Output = ()>,
        idle_exit: Option<Duration>,
        mut handle: impl AsyncFnMut(Message, Handler) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let client = self.subscriber(1).await?;
        let mut stream = client.subscribe(subscription).build();
        let stop = stream.shutdown_token();
        let signal = shutdown;
        tokio::pin!(signal);
        loop {
            // A message lost to the cancelled `next()` when the signal wins was never
            // acked: Pub/Sub redelivers it.
            let delivery = tokio::select! {
                () = &mut signal => break,
                next = unless_idle(idle_exit, stream.next()) => next,
            };
            let Some(Some(delivery)) = delivery else { break }; // idle, or the stream ended
            let (message, handler) = delivery.with_context(|| format!("streaming pull from {subscription} failed"))?;
            handle(message, handler).await?;
        }
        stop.shutdown().await;
        Ok(())
    }

    /// Checks at start-up, within [`PROBE_DEADLINE`], that Pub/Sub answers these
    /// credentials by asking for `topic`; fails with a headline that names the remedy.
    /// A topic that does not exist fails only on Google Cloud (the emulator's are made
    /// on demand); a refusal to describe it (the publisher role may not) counts as an
    /// answer.
    pub async fn probe_topic(&self, topic: &str) -> anyhow::Result<()> {
        let admin = self.topic_admin().await?;
        self.probe(topic, "topic", async || once(admin.get_topic().set_topic(topic)).send().await.map(drop)).await
    }

    /// As [`probe_topic`](Self::probe_topic), for a subscription.
    pub async fn probe_subscription(&self, subscription: &str) -> anyhow::Result<()> {
        let admin = self.subscription_admin().await?;
        let ask = async || once(admin.get_subscription().set_subscription(subscription)).send().await.map(drop);
        self.probe(subscription, "subscription", ask).await
    }

    /// Asks for `subscription` every `every`, one attempt each within
    /// [`PROBE_DEADLINE`], for as long as it is polled, and calls `report` with whether
    /// Pub/Sub answers each time that changes (`false` first at the first failure). A
    /// refusal to describe the subscription (the subscriber role may not) is an answer.
    /// The Google client retries a lost streaming pull for ever without a word, so
    /// this is how a consumer learns that Pub/Sub is gone, and back.
    pub async fn watch_subscription(&self, subscription: &str, every: Duration, mut report: impl FnMut(bool)) {
        let Ok(admin) = self.subscription_admin().await else { return };
        let mut answering = true;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let ask = once(admin.get_subscription().set_subscription(subscription)).send();
            let now = match tokio::time::timeout(PROBE_DEADLINE, ask).await {
                Ok(reply) => match Reply::of(reply.map(drop)) {
                    Reply::Answers => Ok(()),
                    // The emulator's subscriptions exist by now: the consumer made its own.
                    Reply::Missing => Err(format!("subscription {subscription} does not exist")),
                    Reply::Unauthenticated(error) | Reply::Silent(error) => Err(error.to_string()),
                },
                Err(_) => Err(format!("no answer within {} s", PROBE_DEADLINE.as_secs())),
            };
            match (&now, answering) {
                (Err(error), true) => {
                    tracing::warn!(%subscription, %error, "Pub/Sub does not answer: not ready until it does");
                }
                (Ok(()), false) => tracing::info!(%subscription, "Pub/Sub answers again: ready"),
                _ => continue,
            }
            answering = now.is_ok();
            report(answering);
        }
    }

    async fn probe(
        &self,
        name: &str,
        kind: &str,
        mut ask: impl AsyncFnMut() -> Result<(), google_cloud_gax::error::Error>,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + PROBE_DEADLINE;
        loop {
            let Ok(reply) = tokio::time::timeout_at(deadline, ask()).await else {
                return Err(self.unreachable(None));
            };
            let error = match Reply::of(reply) {
                Reply::Answers => return Ok(()),
                Reply::Missing if self.emulator.is_some() => return Ok(()),
                Reply::Missing => anyhow::bail!(
                    "{kind} {name} does not exist: create it (scripts/gcp-setup.sh makes every topic and \
                     subscription), or name another with the flag"
                ),
                Reply::Unauthenticated(error) => {
                    return Err(credentials::refused(&self.origin, OFFLINE_PUBSUB, &error));
                }
                Reply::Silent(error) => error,
            };
            if tokio::time::Instant::now() + PROBE_RETRY >= deadline {
                return Err(self.unreachable(Some(error)));
            }
            tracing::debug!(%error, "Pub/Sub did not answer yet; asking again");
            tokio::time::sleep(PROBE_RETRY).await;
        }
    }

    /// The error for a Pub/Sub that did not answer, naming the fix.
    fn unreachable(&self, last: Option<google_cloud_gax::error::Error>) -> anyhow::Error {
        let seconds = PROBE_DEADLINE.as_secs();
        let headline = match &self.emulator {
            Some(endpoint) => format!(
                "the Pub/Sub emulator at {endpoint} (PUBSUB_EMULATOR_HOST) did not answer within {seconds} s: start it \
                 (`scripts/emulator.sh start`), or unset PUBSUB_EMULATOR_HOST to use Google Cloud"
            ),
            None => format!(
                "Pub/Sub did not answer within {seconds} s: check the network (and HTTPS_PROXY), and the credentials \
                 (`gcloud auth application-default login`, or --service_account KEY.json)"
            ),
        };
        match last {
            Some(error) => anyhow::Error::new(error).context(headline),
            None => anyhow::anyhow!(headline),
        }
    }

    /// Deletes `topic` (tests, and tearing a trial down).
    pub async fn delete_topic(&self, topic: &str) -> anyhow::Result<()> {
        self.topic_admin().await?.delete_topic().set_topic(topic).send().await?;
        Ok(())
    }

    /// Deletes `subscription` (tests).
    pub async fn delete_subscription(&self, subscription: &str) -> anyhow::Result<()> {
        self.subscription_admin().await?.delete_subscription().set_subscription(subscription).send().await?;
        Ok(())
    }

    async fn topic_admin(&self) -> anyhow::Result<TopicAdmin> {
        let mut builder = TopicAdmin::builder().with_credentials(self.credentials.clone());
        if let Some(endpoint) = &self.emulator {
            builder = builder.with_endpoint(endpoint);
        }
        Ok(builder.build().await?)
    }

    async fn subscription_admin(&self) -> anyhow::Result<SubscriptionAdmin> {
        let mut builder = SubscriptionAdmin::builder().with_credentials(self.credentials.clone());
        if let Some(endpoint) = &self.emulator {
            builder = builder.with_endpoint(endpoint);
        }
        Ok(builder.build().await?)
    }

    /// On the emulator, whether `topic` has a subscription: a topic without one drops
    /// what is published to it. `None` on real Pub/Sub (a publisher's account may not
    /// list subscriptions, and topics there are the platform team's) or when the
    /// emulator does not say.
    pub async fn topic_has_subscription(&self, topic: &str) -> Option<bool> {
        self.emulator.as_ref()?;
        let admin = self.topic_admin().await.ok()?;
        let listed = admin.list_topic_subscriptions().set_topic(topic).set_page_size(1).send().await.ok()?;
        Some(!listed.subscriptions.is_empty())
    }

    /// On the emulator, creates `topic` unless it exists. Does nothing on real Pub/Sub,
    /// where topics are the platform team's to create.
    pub async fn ensure_topic(&self, topic: &str) -> anyhow::Result<()> {
        if self.emulator.is_none() {
            return Ok(());
        }
        let admin = self.topic_admin().await?;
        match admin.create_topic().set_name(topic).send().await {
            Ok(_) => tracing::info!(topic, "created topic on the emulator"),
            Err(error) if already_exists(&error) => {}
            Err(error) => return Err(error).with_context(|| format!("cannot create topic {topic}")),
        }
        Ok(())
    }

    /// On the emulator, creates `topic` and then `subscription` on it unless they exist,
    /// with the given ack deadline. Does nothing on real Pub/Sub.
    pub async fn ensure_subscription(
        &self,
        subscription: &str,
        topic: &str,
        ack_deadline: Duration,
    ) -> anyhow::Result<()> {
        if self.emulator.is_none() {
            return Ok(());
        }
        self.ensure_topic(topic).await?;
        let admin = self.subscription_admin().await?;
        let request = admin
            .create_subscription()
            .set_name(subscription)
            .set_topic(topic)
            .set_ack_deadline_seconds(ack_deadline.as_secs().clamp(10, 600) as i32)
            .send();
        match request.await {
            Ok(_) => tracing::info!(subscription, topic, "created subscription on the emulator"),
            Err(error) if already_exists(&error) => {}
            Err(error) => return Err(error).with_context(|| format!("cannot create subscription {subscription}")),
        }
        Ok(())
    }
}

/// A probe's request: one attempt, no retries, within the probe's deadline (the probe
/// repeats it itself, keeping the last error to report).
fn once<R: RequestOptionsBuilder>(request: R) -> R {
    request.with_retry_policy(NeverRetry).with_attempt_timeout(PROBE_DEADLINE)
}

fn already_exists(error: &google_cloud_gax::error::Error) -> bool {
    error.status().is_some_and(|status| status.code == Code::AlreadyExists) || error.http_status_code() == Some(409)
}

/// How long a binary waits at start-up for Pub/Sub to answer before it gives up with a
/// remedy (instead of the client's own minutes of retries).
pub const PROBE_DEADLINE: Duration = Duration::from_secs(10);
/// Pause between start-up probes while Pub/Sub (or, in `cli`, the credentials) does
/// not answer yet (an emulator, or a metadata server, starting).
pub const PROBE_RETRY: Duration = Duration::from_millis(500);
/// Pub/Sub's limit on one message, data and attributes together.
pub const MAX_MESSAGE_BYTES: usize = 10_000_000;
/// Pub/Sub's limit on attributes per message.
pub const MAX_ATTRIBUTES: usize = 100;

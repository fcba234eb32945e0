//! Pub/Sub clients, configured once for the emulator or for Google Cloud.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use google_cloud_auth::credentials::{self, Credentials, anonymous, service_account};
use google_cloud_gax::error::rpc::Code;
use google_cloud_pubsub::client::{Publisher, Subscriber, SubscriptionAdmin, TopicAdmin};
use google_cloud_pubsub::model::Message;
use google_cloud_pubsub::subscriber::handler::Handler;
use sha2::{Digest as _, Sha256};

/// Where clients connect, and with which credentials.
#[derive(Clone)]
pub struct PubSub {
    /// `http://host:port` when talking to the emulator.
    emulator: Option<String>,
    credentials: Credentials,
}

impl PubSub {
    /// Reads `PUBSUB_EMULATOR_HOST`; otherwise loads `service_account` (a key file) or
    /// Application Default Credentials.
    pub fn from_env(service_account: Option<&Path>) -> anyhow::Result<Self> {
        match std::env::var("PUBSUB_EMULATOR_HOST").ok().filter(|host| !host.is_empty()) {
            Some(host) => Ok(Self::emulator(&host)),
            None => Ok(Self { emulator: None, credentials: load_credentials(service_account)? }),
        }
    }

    /// Clients for the emulator at `host:port`.
    pub fn emulator(host: &str) -> Self {
        Self { emulator: Some(format!("http://{host}")), credentials: anonymous::Builder::new().build() }
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

    /// Receives from `subscription`, handing each message to `handle`, until SIGINT or
    /// SIGTERM or the end of the stream; then shuts the stream down so that pending
    /// acks reach Pub/Sub before the process exits.
    pub async fn tail(
        &self,
        subscription: &str,
        mut handle: impl AsyncFnMut(Message, Handler) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let client = self.subscriber(1).await?;
        let mut stream = client.subscribe(subscription).build();
        let stop = stream.shutdown_token();
        let signal = crate::shutdown_signal();
        tokio::pin!(signal);
        loop {
            // A message lost to the cancelled `next()` when the signal wins was never
            // acked: Pub/Sub redelivers it.
            let delivery = tokio::select! {
                () = &mut signal => break,
                next = stream.next() => next,
            };
            let Some(delivery) = delivery else { break };
            let (message, handler) = delivery.with_context(|| format!("streaming pull from {subscription} failed"))?;
            handle(message, handler).await?;
        }
        stop.shutdown().await;
        Ok(())
    }

    /// On the emulator, creates `topic` unless it exists. Does nothing on real Pub/Sub,
    /// where topics are the platform team's to create.
    pub async fn ensure_topic(&self, topic: &str) -> anyhow::Result<()> {
        let Some(endpoint) = &self.emulator else { return Ok(()) };
        let admin =
            TopicAdmin::builder().with_endpoint(endpoint).with_credentials(self.credentials.clone()).build().await?;
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
        let Some(endpoint) = &self.emulator else { return Ok(()) };
        self.ensure_topic(topic).await?;
        let admin = SubscriptionAdmin::builder()
            .with_endpoint(endpoint)
            .with_credentials(self.credentials.clone())
            .build()
            .await?;
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

fn already_exists(error: &google_cloud_gax::error::Error) -> bool {
    error.status().is_some_and(|status| status.code == Code::AlreadyExists) || error.http_status_code() == Some(409)
}

fn load_credentials(service_account: Option<&Path>) -> anyhow::Result<Credentials> {
    match service_account {
        Some(path) => {
            let text = zeroize::Zeroizing::new(
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read service account file {}", path.display()))?,
            );
            let json = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
            service_account::Builder::new(json)
                .build()
                .with_context(|| format!("{} is not a service account key", path.display()))
        }
        None => credentials::Builder::default().build().context("no Application Default Credentials"),
    }
}

/// Pub/Sub's limit on one message, data and attributes together.
pub const MAX_MESSAGE_BYTES: usize = 10_000_000;
/// Pub/Sub's limit on attributes per message.
pub const MAX_ATTRIBUTES: usize = 100;
/// Room left under [`MAX_MESSAGE_BYTES`] for the request's own framing.
const FRAMING_BYTES: usize = 4096;

/// A copy of a message that could not be opened, for the dead-letter topic: its
/// original data and attributes, plus `reject_reason` (a stable code), `reject_detail`
/// (a sentence) and `original_message_id`.
///
/// A hostile message can sit right at Pub/Sub's limits, so that the copy with three more
/// attributes would not publish, and would be nacked forever. Such a copy keeps the
/// reject attributes and `original_data_bytes`, `original_data_sha256` and
/// `original_attribute_count`, then as many of the original attributes (in key order)
/// and as much of the data as still fit.
pub fn reject(original: &Message, reason: &str, detail: &str) -> Message {
    // Inserted last, so that an original attribute of the same name cannot pose as them.
    let mut ours = vec![
        ("reject_reason".to_owned(), reason.to_owned()),
        ("reject_detail".to_owned(), detail.chars().take(1000).collect()),
        ("original_message_id".to_owned(), original.message_id.clone()),
    ];
    let whole =
        attribute_bytes(ours.iter().map(|(k, v)| (k, v))) + attribute_bytes(&original.attributes) + original.data.len();
    if ours.len() + original.attributes.len() <= MAX_ATTRIBUTES && whole <= MAX_MESSAGE_BYTES - FRAMING_BYTES {
        let mut attributes = original.attributes.clone();
        attributes.extend(ours);
        return Message::new().set_data(original.data.clone()).set_attributes(attributes);
    }
    let digest: String = Sha256::digest(&original.data).iter().map(|byte| format!("{byte:02x}")).collect();
    ours.push(("original_data_bytes".to_owned(), original.data.len().to_string()));
    ours.push(("original_data_sha256".to_owned(), digest));
    ours.push(("original_attribute_count".to_owned(), original.attributes.len().to_string()));
    let mut kept: Vec<_> = original.attributes.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    kept.sort_unstable();
    kept.truncate(MAX_ATTRIBUTES - ours.len());
    let mut attributes: HashMap<String, String> = kept.into_iter().collect();
    attributes.extend(ours);
    let room = (MAX_MESSAGE_BYTES - FRAMING_BYTES).saturating_sub(attribute_bytes(&attributes));
    let data = original.data.slice(..original.data.len().min(room));
    Message::new().set_data(data).set_attributes(attributes)
}

fn attribute_bytes<'a>(pairs: impl IntoIterator<Item = (&'a String, &'a String)>) -> usize {
    pairs.into_iter().map(|(key, value)| key.len() + value.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(data: Vec<u8>, attributes: usize) -> Message {
        let attributes: HashMap<_, _> = (0..attributes).map(|i| (format!("k{i:03}"), "v".to_owned())).collect();
        Message::new().set_data(data).set_attributes(attributes).set_message_id("42")
    }

    fn bytes_of(message: &Message) -> usize {
        message.data.len() + attribute_bytes(&message.attributes)
    }

    #[test]
    fn a_dead_letter_is_the_whole_message_with_the_reason() {
        let mut original = message(b"payload".to_vec(), 3);
        original.attributes.insert("reject_reason".into(), "forged by the sender".into());
        let dead = reject(&original, "tampered", "message failed authentication");
        assert_eq!(dead.data, original.data);
        assert_eq!(dead.attributes["reject_reason"], "tampered", "the sender cannot choose the reason");
        assert_eq!(dead.attributes["original_message_id"], "42");
        assert_eq!(dead.attributes["k002"], "v");
        assert!(!dead.attributes.contains_key("original_data_sha256"), "nothing was cut");
    }

    #[test]
    fn a_dead_letter_of_a_message_at_the_size_limit_still_fits() {
        let original = message(vec![7; MAX_MESSAGE_BYTES - 100], 2);
        let dead = reject(&original, "tampered", "detail");
        assert!(bytes_of(&dead) <= MAX_MESSAGE_BYTES - FRAMING_BYTES, "{}", bytes_of(&dead));
        assert_eq!(dead.attributes["original_data_bytes"], (MAX_MESSAGE_BYTES - 100).to_string());
        let digest: String = Sha256::digest(&original.data).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(dead.attributes["original_data_sha256"], digest);
        assert_eq!(dead.attributes["k001"], "v", "the attributes are kept");
        assert_eq!(&dead.data[..], &original.data[..dead.data.len()], "a prefix of the data");
    }

    #[test]
    fn a_dead_letter_of_a_message_with_every_attribute_pubsub_allows_still_fits() {
        let original = message(b"payload".to_vec(), MAX_ATTRIBUTES);
        let dead = reject(&original, "tampered", "detail");
        assert_eq!(dead.attributes.len(), MAX_ATTRIBUTES);
        assert_eq!(dead.attributes["original_attribute_count"], "100");
        assert_eq!(dead.attributes["reject_reason"], "tampered");
        assert_eq!(dead.data, original.data, "the data fits whole");
        assert!(dead.attributes.contains_key("k000") && !dead.attributes.contains_key("k099"), "kept in key order");
    }
}
